// The API actor: owns the HTTP server on the unix socket. The server thread asks the
// supervisor for each answer; it never touches actor state.
#pragma once

#include <memory>
#include <string>

#include "actors/api/http_server.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

struct api_state {
  static inline const char* name = "api";
  std::string socket_path;
  uint32_t allowed_uid = 0;
  supervisor_actor supervisor;
  std::unique_ptr<http_server> server;
  uint64_t handled = 0;
  uint64_t served_before = 0; // requests of servers already stopped
  uint64_t refused_before = 0;
  std::string state = "starting";
};

api_actor::behavior_type api_fn(api_actor::stateful_pointer<api_state> self,
                                std::string socket_path, uint32_t allowed_uid,
                                supervisor_actor supervisor);

// The request handler, usable without the actor (tests, benchmarks).
http_response serve_api_request(caf::actor_system& sys, const supervisor_actor& supervisor,
                                const http_request& req);

} // namespace netlens
