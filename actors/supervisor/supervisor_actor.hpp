// The supervisor: spawns the children in dependency order, restarts a crashed child (and the
// children that depend on it) within a budget, and runs the ordered shutdown of DESIGN.md:
// stop -> purge -> exit, each phase with a deadline, then closes the exit channel.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/common/counted_actor.hpp"
#include "actors/supervisor/message_rate.hpp"
#include "actors/supervisor/phase_tracker.hpp"
#include "actors/supervisor/restart_budget.hpp"
#include "config/config.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// Internal to the supervisor: timers it sets for itself.
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;

// Its public interface, its timers, and the fault switch of test builds: fault, child, how
// makes the named child throw ("throw") or quit with an error ("exit") and answers what it did.
// The API's /fault sends it through an untyped handle, so no public interface names it.
using supervisor_self_actor = supervisor_actor::extend<
    caf::reacts_to<restart_atom, std::string>, caf::reacts_to<deadline_atom, std::string>,
    caf::replies_to<fault_atom, std::string, std::string>::with<std::string>>;

// The handles of the children running now, by name.
using child_directory = std::unordered_map<std::string, caf::actor>;

struct child_spec {
  std::string name;
  std::vector<std::string> depends_on; // restarted with them, started after them
  bool stop_phase = false;             // asked to stop in phase 1
  bool purge_phase = false;            // asked to purge in phase 2
  std::function<lifecycle_actor(caf::actor_system&, const child_directory&)> spawn;
  // A configuration reload: sends the running child its part of the configuration now in
  // force. Empty: nothing of this child changes live.
  std::function<void(const caf::actor&, const config&)> reload = nullptr;
  // The children it finds through the registry (messages/registry.hpp) and asks when they
  // run; it works without them while they are missing or restarting. Shown in the start
  // order the supervisor logs, with depends_on.
  std::vector<std::string> finds = {};
};

struct supervisor_hooks {
  std::function<void()> on_ready;                         // every child answered init
  std::function<void(int code, std::string why)> on_exit; // the exit channel
};

// Exit codes of the agent.
constexpr int k_exit_ok = 0;
constexpr int k_exit_child_failed = 1; // restart budget exhausted
constexpr int k_exit_startup = 3;      // a child could not start (BPF, privileges, socket)

enum class supervisor_phase { starting, running, stopping, purging, exiting, done };

struct supervisor_state {
  static inline const char* name = "supervisor";

  struct child {
    child_spec spec;
    caf::actor handle; // invalid while not running
    std::unique_ptr<restart_budget> budget;
    bool expected_down = false;
    std::string last_error;
    caf::actor_clock::time_point spawned_at;
    message_rate rate;
  };

  supervisor_config cfg;
  supervisor_hooks hooks;
  std::vector<child> children;
  supervisor_phase phase = supervisor_phase::starting;
  size_t next_to_start = 0;
  int exit_code = k_exit_ok;
  std::string exit_reason;
  std::unique_ptr<phase_tracker> current;
  size_t downs_awaited = 0;
  uint64_t handled = 0;
  caf::actor_clock::time_point shutdown_began;
  caf::actor_clock::time_point started_at;
  message_rate rate; // the supervisor's own
  // Told of each shutdown phase as it ends. A listener that is one of the children (the
  // console) exits after the others, so it can still report the exit phase.
  std::vector<caf::actor> phase_listeners;
  // Configuration reloads (SIGHUP): how many ran and failed, and the last one's report.
  uint64_t reloads = 0;
  uint64_t reload_failures = 0;
  reload_report last_reload;
  // Connection answers asked of the tracer on a client's behalf, by request number. CAF 0.17
  // drops the promise an actor holds when it dies, so without these a client whose answer was
  // in flight when the tracer died would wait for its own timeout: its down message fails them.
  struct pending_answer {
    std::string child;
    caf::typed_response_promise<connections_reply> promise;
  };
  std::map<uint64_t, pending_answer> pending_answers;
  uint64_t next_answer = 0;
};

supervisor_self_actor::behavior_type
supervisor_fn(counted_self<supervisor_self_actor, supervisor_state> self, supervisor_config cfg,
              std::vector<child_spec> specs, supervisor_hooks hooks);

} // namespace netlens
