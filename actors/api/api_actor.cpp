#include "actors/api/api_actor.hpp"

#include <arpa/inet.h>
#include <chrono>
#include <netinet/in.h>
#include <variant>

#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/common/lifecycle.hpp"
#include <spdlog/spdlog.h>

#include "actors/api/connection_json.hpp"
#include "actors/api/connection_query.hpp"
#include "actors/api/metrics_text.hpp"
#include "messages/registry.hpp"

namespace netlens {
namespace {

constexpr auto k_request_timeout = std::chrono::seconds(10);

http_response error_response(int status, const std::string& what) {
  return {status, "application/json", render_error(what), {}};
}

// The exporter's traffic families, when it runs: a page without them is still the agent's page
// (an exporter restarting must not fail the scrape of everything else).
void append_traffic_families(caf::actor_system& sys, std::string& page) {
  auto exporter = find_exporter(sys);
  if (!exporter)
    return;
  caf::scoped_actor self{sys};
  self->request(exporter, k_request_timeout, traffic_atom::value)
      .receive([&](std::string& text) { page += text; }, [&](caf::error&) {});
}

http_response metrics_response(caf::actor_system& sys, const supervisor_actor& supervisor) {
  caf::scoped_actor self{sys};
  http_response out{503, "text/plain", "no answer from the agent\n", {}};
  self->request(supervisor, k_request_timeout, stats_atom::value)
      .receive(
          [&](agent_stats& stats) {
            out = {200, k_metrics_content_type, render_metrics(stats), {}};
          },
          [&](caf::error& err) {
            out = {503, "text/plain", sys.render(err) + "\n", {}};
          });
  if (out.status == 200)
    append_traffic_families(sys, out.body);
  return out;
}

// Both servers, or neither: a metrics port that cannot be bound fails the start, and the unix
// server bound before it is released on the way out.
struct bound_servers {
  std::unique_ptr<http_server> api;
  std::unique_ptr<http_server> metrics;
};

// The TCP listener of the metrics port (metrics.port != 0), not started yet.
std::variant<std::unique_ptr<http_server>, std::string>
bind_metrics(caf::actor_system* sys, const supervisor_actor& sup, const metrics_config& m) {
  auto metrics = http_server::bind_tcp(
      m.address, static_cast<uint16_t>(m.port),
      [sys, sup](const http_request& req) { return serve_metrics_request(*sys, sup, req); });
  if (auto* err = std::get_if<std::string>(&metrics))
    return "metrics port (metrics.address, metrics.port): " + *err;
  return std::move(std::get<0>(metrics));
}

std::variant<bound_servers, std::string> bind_servers(caf::actor_system* sys, const api_state& st) {
  auto sup = st.supervisor;
  bound_servers out;
  auto api = http_server::bind(
      st.socket_path,
      [sys, sup](const http_request& req) { return serve_api_request(*sys, sup, req); },
      st.allowed_uid);
  if (auto* err = std::get_if<std::string>(&api))
    return *err;
  out.api = std::move(std::get<0>(api));
  if (st.metrics.port == 0)
    return out;
  auto metrics = bind_metrics(sys, sup, st.metrics);
  if (auto* err = std::get_if<std::string>(&metrics))
    return *err;
  out.metrics = std::move(std::get<0>(metrics));
  return out;
}

bool is_loopback(const std::string& address) {
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  return inet_pton(AF_INET6, address.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

void announce_metrics(const api_state& st) {
  // Anything but loopback publishes the agent's figures to the network.
  bool local = is_loopback(st.metrics.address);
  spdlog::log(local ? spdlog::level::info : spdlog::level::warn,
              "api: serving /metrics on TCP {}:{}{}", st.metrics.address, st.metrics_server->port(),
              local ? "" : " (not loopback: reachable from the network)");
}

void retire_metrics_server(api_state& st) {
  if (!st.metrics_server)
    return;
  st.metrics_server->stop();
  st.metrics_served_before += st.metrics_server->requests();
  st.rejected_before += st.metrics_server->rejected();
  st.timed_out_before += st.metrics_server->timed_out();
  st.metrics_server.reset();
}

// A reload's metrics.address and metrics.port. The new listener is bound before the old one
// closes, so a scrape never finds neither; when it cannot be bound the old one stays.
void move_metrics(caf::actor_system* sys, api_state& st, const metrics_config& next) {
  if (next.port == st.metrics.port && next.address == st.metrics.address)
    return;
  if (!st.server) { // not serving yet (or stopped): init binds what is configured then
    st.metrics = next;
    return;
  }
  std::unique_ptr<http_server> moved;
  if (next.port != 0) {
    auto bound = bind_metrics(sys, st.supervisor, next);
    if (auto* err = std::get_if<std::string>(&bound)) {
      ++st.metrics_move_failures;
      spdlog::error("reload: cannot move the metrics listener: {}; it stays on {}", *err,
                    st.metrics_server ? st.metrics.address + ":" + std::to_string(st.metrics.port)
                                      : std::string("nothing (no TCP port)"));
      return;
    }
    moved = std::move(std::get<0>(bound));
    moved->start();
  }
  retire_metrics_server(st);
  st.metrics_server = std::move(moved);
  st.metrics = next;
  ++st.metrics_moves;
  if (st.metrics_server)
    announce_metrics(st);
  else
    spdlog::info("api: /metrics no longer served on TCP (metrics.port = 0)");
}

} // namespace

// One page of a client's paged answer (listing 0: the first), or why none came.
std::variant<connections_reply, std::string> ask_page(caf::actor_system& sys,
                                                      const supervisor_actor& supervisor,
                                                      const std::string& client, uint64_t listing) {
  caf::scoped_actor self{sys};
  std::variant<connections_reply, std::string> out = std::string("no answer from the agent");
  self->request(supervisor, k_request_timeout, conns_page_atom::value, client, listing)
      .receive([&](connections_reply& r) { out = std::move(r); },
               [&](caf::error& err) { out = sys.render(err); });
  return out;
}

// Writes a /connections answer page by page, asking for the next page once the last one is
// written, so the agent holds one page of it at a time (an ordered query keeps what it selects).
// A page that does not come ends the document with an "error".
void stream_paged_answer(caf::actor_system& sys, const supervisor_actor& supervisor,
                         const std::string& client, const connection_query& query,
                         connections_reply page, const chunk_writer& write) {
  connections_json_stream json(write);
  paged_selection select(query);
  for (;;) {
    select.page(page.connections);
    if (!json.add(page.connections))
      return; // the reader went away; the tracer ends the listing once it idles
    if (page.last)
      break;
    uint64_t listing = page.listing;
    page = connections_reply();
    auto next = ask_page(sys, supervisor, client, listing);
    if (auto* err = std::get_if<std::string>(&next)) {
      if (json.add(select.rest()))
        json.finish({}, {}, err);
      return;
    }
    page = std::move(std::get<connections_reply>(next));
  }
  if (!json.add(select.rest()))
    return;
  if (query.filters())
    page.device_flows.clear(); // they carry no process to filter on
  json.finish(page.device_flows, page.telemetry);
}

http_response serve_metrics_request(caf::actor_system& sys, const supervisor_actor& supervisor,
                                    const http_request& req) {
  if (req.path != "/metrics")
    return {404, "text/plain", "only /metrics is served on this port\n", {}};
  return metrics_response(sys, supervisor);
}

http_response serve_api_request(caf::actor_system& sys, const supervisor_actor& supervisor,
                                const http_request& req) {
  caf::scoped_actor self{sys};
  http_response out = error_response(503, "no answer from the agent");
  if (req.path == "/connections") {
    auto it = req.query.find("client_id");
    std::string client = it == req.query.end() || it->second.empty() ? "default" : it->second;
    if (client.size() > 128)
      return error_response(400, "client_id longer than 128 characters");
    auto parsed = parse_connection_query(req.query);
    if (auto* err = std::get_if<std::string>(&parsed))
      return error_response(400, *err);
    auto query = std::get<connection_query>(parsed);
    // The first page decides the status; the others are asked for as the body is written.
    auto first = ask_page(sys, supervisor, client, 0);
    if (auto* err = std::get_if<std::string>(&first))
      return error_response(503, *err);
    auto page = std::make_shared<connections_reply>(std::move(std::get<connections_reply>(first)));
    out = {200,
           "application/json",
           {},
           [&sys, supervisor, client, query, page](const chunk_writer& write) {
             stream_paged_answer(sys, supervisor, client, query, std::move(*page), write);
           }};
  } else if (req.path == "/stats") {
    self->request(supervisor, k_request_timeout, stats_atom::value)
        .receive(
            [&](agent_stats& stats) {
              out = {200, "application/json", render_stats(stats), {}};
            },
            [&](caf::error& err) { out = error_response(503, sys.render(err)); });
  } else if (req.path == "/metrics") {
    out = metrics_response(sys, supervisor);
  } else if (req.path == "/fault") {
    // Test builds only; the supervisor answers with an error in a release binary. The switch is
    // in no public interface: it goes through an untyped handle.
    auto actor = req.query.find("actor");
    auto how = req.query.find("how");
    if (actor == req.query.end() || how == req.query.end())
      return error_response(400, "/fault needs ?actor=NAME&how=throw|exit");
    self->request(caf::actor_cast<caf::actor>(supervisor), k_request_timeout, fault_atom::value,
                  actor->second, how->second)
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
    out = error_response(404, "no such endpoint: " + req.path +
                                  " (try /connections, /stats, /metrics, /healthz)");
  }
  return out;
}

api_self_actor::behavior_type api_fn(counted_self<api_self_actor, api_state> self,
                                     std::string socket_path, uint32_t allowed_uid,
                                     metrics_config metrics, supervisor_actor supervisor) {
  self->state.socket_path = std::move(socket_path);
  self->state.allowed_uid = allowed_uid;
  self->state.metrics = std::move(metrics);
  self->state.supervisor = supervisor;
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.server)
          return caf::ok_atom::value;
        auto bound = bind_servers(&self->system(), st);
        if (auto* err = std::get_if<std::string>(&bound)) {
          st.state = actor_state::failed;
          return caf::make_error(caf::sec::runtime_error, *err);
        }
        auto& servers = std::get<bound_servers>(bound);
        st.server = std::move(servers.api);
        st.metrics_server = std::move(servers.metrics);
        st.server->start();
        spdlog::info("api: serving on {}", st.socket_path);
        if (st.metrics_server) {
          st.metrics_server->start();
          announce_metrics(st);
        }
        st.state = actor_state::running;
        return caf::ok_atom::value;
      },
      [=](stop_atom) {
        auto& st = self->state;
        if (st.server) {
          st.server->stop();
          st.served_before += st.server->requests();
          st.refused_before += st.server->refused();
          st.rejected_before += st.server->rejected();
          st.timed_out_before += st.server->timed_out();
          st.server.reset();
        }
        retire_metrics_server(st);
        st.state = actor_state::stopped;
        return caf::ok_atom::value;
      },
      nothing_to_purge(self),
      fault_handler(self),
      [=](reload_atom, const std::string& address, uint32_t port) {
        move_metrics(&self->system(), self->state, metrics_config{port, address});
      },
      [=](stats_atom) {
        auto& st = self->state;
        uint64_t served = st.served_before + (st.server ? st.server->requests() : uint64_t{0});
        uint64_t refused = st.refused_before + (st.server ? st.server->refused() : uint64_t{0});
        uint64_t metrics_served =
            st.metrics_served_before + (st.metrics_server ? st.metrics_server->requests() : 0);
        uint64_t rejected = st.rejected_before, timed_out = st.timed_out_before, open = 0;
        for (const auto* server : {st.server.get(), st.metrics_server.get()})
          if (server) {
            rejected += server->rejected();
            timed_out += server->timed_out();
            open += server->open_connections();
          }
        actor_stats s = make_actor_stats("api", st.state, st.handled,
                                         {{"requests", served},
                                          {"peers_refused", refused},
                                          {"metrics_port_requests", metrics_served},
                                          {"connections_open", open},
                                          {"connections_rejected", rejected},
                                          {"connections_timed_out", timed_out},
                                          {"metrics_moves", st.metrics_moves},
                                          {"metrics_move_failures", st.metrics_move_failures}});
        // Where /metrics is served on TCP now: a move a reload could not make leaves it.
        s.info.emplace_back("metrics_listen", st.metrics_server
                                                  ? st.metrics.address + ":" +
                                                        std::to_string(st.metrics_server->port())
                                                  : std::string("none"));
        s.mailbox_size = mailbox_size(self);
        return s;
      },
  };
}

} // namespace netlens
