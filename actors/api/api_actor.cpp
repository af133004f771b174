#include "actors/api/api_actor.hpp"

#include <chrono>

#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/common/lifecycle.hpp"
#include <spdlog/spdlog.h>

#include "actors/api/connection_json.hpp"

namespace netlens {
namespace {

constexpr auto k_request_timeout = std::chrono::seconds(10);

http_response error_response(int status, const std::string& what) {
  return {status, "application/json", render_error(what), {}};
}

} // namespace

http_response serve_api_request(caf::actor_system& sys, const supervisor_actor& supervisor,
                                const http_request& req) {
  caf::scoped_actor self{sys};
  http_response out = error_response(503, "no answer from the agent");
  if (req.path == "/connections") {
    auto it = req.query.find("client_id");
    std::string client = it == req.query.end() || it->second.empty() ? "default" : it->second;
    if (client.size() > 128)
      return error_response(400, "client_id longer than 128 characters");
    self->request(supervisor, k_request_timeout, get_conns_atom::value, client)
        .receive(
            [&](connections_reply& reply) {
              // The reply stays here while the body streams out of it in bounded chunks.
              auto held = std::make_shared<connections_reply>(std::move(reply));
              out = {200, "application/json", {}, [held](const chunk_writer& write) {
                       stream_connections(*held, write);
                     }};
            },
            [&](caf::error& err) { out = error_response(503, sys.render(err)); });
  } else if (req.path == "/stats") {
    self->request(supervisor, k_request_timeout, stats_atom::value)
        .receive(
            [&](agent_stats& stats) {
              out = {200, "application/json", render_stats(stats), {}};
            },
            [&](caf::error& err) { out = error_response(503, sys.render(err)); });
  } else if (req.path == "/fault") {
    // Test builds only; the supervisor answers with an error in a release binary.
    auto actor = req.query.find("actor");
    auto how = req.query.find("how");
    if (actor == req.query.end() || how == req.query.end())
      return error_response(400, "/fault needs ?actor=NAME&how=throw|exit");
    self->request(supervisor, k_request_timeout, fault_atom::value, actor->second, how->second)
        .receive(
            [&](const std::string& done) {
              out = {200, "text/plain", done + "\n", {}};
            },
            [&](caf::error& err) { out = error_response(400, sys.render(err)); });
  } else if (req.path == "/healthz") {
    self->request(supervisor, k_request_timeout, health_atom::value)
        .receive(
            [&](const std::string& health) {
              out = {health == "ok" ? 200 : 503, "text/plain", health + "\n", {}};
            },
            [&](caf::error& err) {
              out = {503, "text/plain", sys.render(err) + "\n", {}};
            });
  } else {
    out = error_response(404,
                         "no such endpoint: " + req.path + " (try /connections, /stats, /healthz)");
  }
  return out;
}

api_actor::behavior_type api_fn(api_actor::stateful_pointer<api_state> self,
                                std::string socket_path, uint32_t allowed_uid,
                                supervisor_actor supervisor) {
  self->state.socket_path = std::move(socket_path);
  self->state.allowed_uid = allowed_uid;
  self->state.supervisor = supervisor;
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        ++st.handled;
        if (st.server)
          return caf::ok_atom::value;
        caf::actor_system* sys = &self->system();
        auto sup = st.supervisor;
        auto bound = http_server::bind(
            st.socket_path,
            [sys, sup](const http_request& req) { return serve_api_request(*sys, sup, req); },
            st.allowed_uid);
        if (auto* err = std::get_if<std::string>(&bound)) {
          st.state = "failed";
          return caf::make_error(caf::sec::runtime_error, *err);
        }
        st.server = std::move(std::get<0>(bound));
        st.server->start();
        st.state = "running";
        spdlog::info("api: serving on {}", st.socket_path);
        return caf::ok_atom::value;
      },
      [=](stop_atom) {
        auto& st = self->state;
        ++st.handled;
        if (st.server) {
          st.server->stop();
          st.served_before += st.server->requests();
          st.refused_before += st.server->refused();
          st.server.reset();
        }
        st.state = "stopped";
        return caf::ok_atom::value;
      },
      nothing_to_purge(self),
      fault_handler(self),
      [=](stats_atom) {
        auto& st = self->state;
        ++st.handled;
        uint64_t served = st.served_before + (st.server ? st.server->requests() : uint64_t{0});
        uint64_t refused = st.refused_before + (st.server ? st.server->refused() : uint64_t{0});
        return make_actor_stats("api", st.state, st.handled,
                                {{"requests", served}, {"peers_refused", refused}});
      },
  };
}

} // namespace netlens
