// Starting the agent: the child list in dependency order and the actor system around the
// supervisor. Shared by `netlens run` and the tests that run the whole agent in-process.
#pragma once

#include <vector>

#include "actors/supervisor/supervisor_actor.hpp"
#include "config/config.hpp"

namespace netlens {

// conntrack -> tracer -> perf_consumer -> compact_ticker -> api -> console. The offset guesser
// and netns actors slot in before the tracer in their own issues.
std::vector<child_spec> agent_children(const config& cfg);

} // namespace netlens
