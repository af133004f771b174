#include "actors/api/connection_json.hpp"

#include <arpa/inet.h>
#include <cstring>

#include "actors/common/clock.hpp"

namespace netlens {

std::string address_text(uint16_t family, const uint8_t* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!inet_ntop(family == AF_INET ? AF_INET : AF_INET6, addr, buf, sizeof(buf)))
    return "?";
  return buf;
}

const char* tcp_state_name(uint8_t state) {
  static const char* names[] = {"",          "ESTABLISHED", "SYN_SENT",   "SYN_RECV",
                                "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",  "CLOSE",
                                "CLOSE_WAIT", "LAST_ACK",   "LISTEN",     "CLOSING",
                                "NEW_SYN_RECV"};
  return state < sizeof(names) / sizeof(names[0]) ? names[state] : "UNKNOWN";
}

bool is_intra_host(const nl_conn& c) {
  if (c.family == AF_INET) {
    if (c.daddr[0] == 127 || c.saddr[0] == 127)
      return true;
    return std::memcmp(c.saddr, c.daddr, 4) == 0;
  }
  static const uint8_t loopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  if (std::memcmp(c.daddr, loopback6, 16) == 0 || std::memcmp(c.saddr, loopback6, 16) == 0)
    return true;
  return std::memcmp(c.saddr, c.daddr, 16) == 0;
}

nlohmann::json connection_to_json(const connection_view& v, uint64_t mono_now, uint64_t real_now) {
  const nl_conn& c = v.conn;
  auto wall = [&](uint64_t mono) -> uint64_t {
    return mono <= mono_now ? real_now - (mono_now - mono) : real_now;
  };
  std::string comm(c.comm, strnlen(c.comm, sizeof(c.comm)));
  nlohmann::json j = {
      {"family", c.family == AF_INET ? "v4" : "v6"},
      {"type", c.protocol == 6 ? "tcp" : "udp"},
      {"saddr", address_text(c.family, c.saddr)},
      {"sport", c.sport},
      {"daddr", address_text(c.family, c.daddr)},
      {"dport", c.dport},
      {"netns", c.netns},
      {"pid", c.pid},
      {"comm", comm},
      {"direction", c.direction == NL_DIR_OUTGOING   ? "outgoing"
                    : c.direction == NL_DIR_INCOMING ? "incoming"
                                                     : "none"},
      {"intra_host", is_intra_host(c)},
      {"bytes_sent", c.bytes_sent},
      {"bytes_recv", c.bytes_recv},
      {"packets_sent", c.packets_sent},
      {"packets_recv", c.packets_recv},
      {"retransmits", c.retransmits},
      {"rtt_us", c.srtt_us},
      {"rtt_var_us", c.rttvar_us},
      {"tcp_state", c.protocol == 6 ? tcp_state_name(c.tcp_state) : ""},
      {"closed", v.closed},
      {"cookie", c.cookie},
      {"start_time_ns", wall(c.start_ns)},
      {"last_activity_ns", wall(c.last_ns)},
      {"preexisting", (c.flags & NL_FLAG_PREEXISTING) != 0},
      {"idle_expired", (c.flags & NL_FLAG_IDLE_EXPIRED) != 0},
      {"nat", nullptr},
      {"last",
       {{"bytes_sent", v.last.bytes_sent},
        {"bytes_recv", v.last.bytes_recv},
        {"packets_sent", v.last.packets_sent},
        {"packets_recv", v.last.packets_recv},
        {"retransmits", v.last.retransmits}}},
  };
  return j;
}

std::string render_connections(const connections_reply& reply) {
  uint64_t mono = monotonic_now_ns(), real = realtime_now_ns();
  nlohmann::json conns = nlohmann::json::array();
  for (const auto& v : reply.connections)
    conns.push_back(connection_to_json(v, mono, real));
  nlohmann::json tel = nlohmann::json::object();
  for (const auto& [k, val] : reply.telemetry)
    tel[k] = val;
  nlohmann::json body = {{"connections", std::move(conns)}, {"telemetry", std::move(tel)}};
  return body.dump();
}

std::string render_stats(const agent_stats& stats) {
  nlohmann::json actors = nlohmann::json::object();
  nlohmann::json top = nlohmann::json::object();
  // The figures operators look for first, lifted out of the actors that own them.
  static const std::pair<const char*, const char*> headline[] = {
      {"perf_consumer", "records_received"}, {"perf_consumer", "records_lost"},
      {"perf_consumer", "records_malformed"}, {"tracer", "kernel_closed_lost"},
      {"tracer", "map_entries"},            {"tracer", "map_capacity"},
      {"tracer", "failed_inserts"},         {"tracer", "closed_dropped"}};
  for (const auto& a : stats.actors) {
    nlohmann::json counters = nlohmann::json::object();
    for (const auto& [k, v] : a.counters) {
      counters[k] = v;
      for (const auto& [owner, key] : headline)
        if (a.name == owner && k == key)
          top[k] = v;
    }
    actors[a.name] = {{"state", a.state},
                      {"messages_handled", a.messages_handled},
                      {"restarts", a.restarts},
                      {"last_error", a.last_error},
                      {"counters", std::move(counters)}};
  }
  top["actors"] = std::move(actors);
  return top.dump();
}

} // namespace netlens
