// The API actor: owns the HTTP server on the unix socket and, when metrics.port is set, the
// TCP listener that serves only /metrics. The server threads ask the supervisor for each
// answer; they never touch actor state.
#pragma once

#include <memory>
#include <string>

#include "actors/api/http_server.hpp"
#include "actors/common/self_interface.hpp"
#include "config/config.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// Its public interface and the fault switch.
using api_self_actor = self_interface<api_actor>;

struct api_state {
  static inline const char* name = "api";
  std::string socket_path;
  uint32_t allowed_uid = 0;
  metrics_config metrics;
  supervisor_actor supervisor;
  std::unique_ptr<http_server> server;
  std::unique_ptr<http_server> metrics_server; // only when metrics.port != 0
  uint64_t handled = 0;
  uint64_t served_before = 0; // requests of servers already stopped
  uint64_t refused_before = 0;
  uint64_t metrics_served_before = 0;
  uint64_t rejected_before = 0;       // both servers: connections over the bound (503)
  uint64_t timed_out_before = 0;      // both servers: cut at a head or write deadline
  uint64_t metrics_moves = 0;         // reloads that moved the metrics listener
  uint64_t metrics_move_failures = 0; // reloads whose new address or port could not be bound
  actor_state state = actor_state::starting;
};

api_self_actor::behavior_type api_fn(counted_self<api_self_actor, api_state> self,
                                     std::string socket_path, uint32_t allowed_uid,
                                     metrics_config metrics, supervisor_actor supervisor);

// The request handler, usable without the actor (tests, benchmarks).
http_response serve_api_request(caf::actor_system& sys, const supervisor_actor& supervisor,
                                const http_request& req);

// The handler of the TCP metrics port: /metrics and nothing else, whatever the path asks for,
// because a TCP peer has no identity the agent could check.
http_response serve_metrics_request(caf::actor_system& sys, const supervisor_actor& supervisor,
                                    const http_request& req);

} // namespace netlens
