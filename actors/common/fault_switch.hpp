#pragma once

// The fault switch of test builds: build/netlens-fault turns it on in main() before the actor
// system starts; the release binary, build/netlens, never does. With it on, an actor's fault
// handler throws (as a bug would), the supervisor injects faults on request (GET /fault), and
// NETLENS_FAULT_TRACER_BUILDS can make tracer builds fail. A switch read at run time, rather
// than a macro, lets both executables link the same actors, compiled once.
namespace netlens::fault_injection {

void enable();
bool enabled();

} // namespace netlens::fault_injection
