// The console actor: owns the console server (socket, accept thread, session threads). Session
// threads only send requests to actors and wait for the answers with console.actor_timeout_ms;
// they never touch this actor's state. When an operator types `shutdown`, this actor is the
// shutdown's listener: the supervisor tells it each phase as it ends and lets it go last, so
// the session hears all three.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/common/self_interface.hpp"
#include "actors/console/console_server.hpp"
#include "config/config.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// What a new session starts with; a configuration reload replaces it (sessions already open keep
// theirs). Shared with the server's accept thread, which makes the sessions.
struct console_session_settings {
  std::mutex mutex;
  console_config cfg;
  std::shared_ptr<const std::string> config_text;
};

// Its public interface and the fault switch.
using console_self_actor = self_interface<console_actor>;

struct console_state {
  static inline const char* name = "console";
  console_config cfg;
  std::string config_text; // `config`: the effective configuration, rendered once
  supervisor_actor supervisor;
  std::shared_ptr<console_session_settings> sessions = std::make_shared<console_session_settings>();
  std::unique_ptr<console_server> server;  // destroyed (threads joined) when the actor exits
  console_server_counters before;          // of servers already stopped
  std::vector<caf::actor> phase_listeners; // sessions waiting for the shutdown's phases
  bool shutdown_asked = false;
  uint64_t handled = 0;
  actor_state state = actor_state::starting; // running | unavailable (socket not bound) | stopped
  std::string error;                         // why the socket could not be bound
};

console_self_actor::behavior_type console_fn(counted_self<console_self_actor, console_state> self,
                                             console_config cfg, std::string config_text,
                                             supervisor_actor supervisor);

} // namespace netlens
