#include "actors/api/connection_json.hpp"

#include "actors/api/connection_query.hpp"

#include <arpa/inet.h>
#include <cstring>

#include <nlohmann/json.hpp>

#include "flow/clock.hpp"
#include "flow/connect_failure.hpp"
#include "flow/decimal_text.hpp"

namespace netlens {
namespace {

// JSON string; bytes that are not printable ASCII are escaped, so the output is always valid
// UTF-8 whatever a process put in its comm.
void append_string(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(ch));
    } else if (ch < 0x20 || ch >= 0x7f) {
      out.append("\\u00");
      out.push_back(hex[ch >> 4]);
      out.push_back(hex[ch & 0xf]);
    } else {
      out.push_back(static_cast<char>(ch));
    }
  }
  out.push_back('"');
}

void field(std::string& out, const char* name, uint64_t v) {
  out.push_back('"');
  out.append(name);
  out.append("\":");
  append_uint(out, v);
  out.push_back(',');
}

void field(std::string& out, const char* name, std::string_view v) {
  out.push_back('"');
  out.append(name);
  out.append("\":");
  append_string(out, v);
  out.push_back(',');
}

void field_bool(std::string& out, const char* name, bool v) {
  out.push_back('"');
  out.append(name);
  out.append(v ? "\":true," : "\":false,");
}

} // namespace

const char* tcp_state_name(uint8_t state) {
  static const char* names[] = {
      "",      "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
      "CLOSE", "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV"};
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

void append_connection_json(std::string& out, const connection_view& v, uint64_t mono_now,
                            uint64_t real_now) {
  const nl_conn& c = v.conn;
  auto wall = [&](uint64_t mono) -> uint64_t {
    return mono <= mono_now ? real_now - (mono_now - mono) : real_now;
  };
  bool tcp = c.protocol == 6;
  out.push_back('{');
  field(out, "family", c.family == AF_INET ? "v4" : "v6");
  field(out, "type", tcp ? "tcp" : "udp");
  char addr[INET6_ADDRSTRLEN];
  field(out, "saddr", format_address(c.family, c.saddr, addr));
  field(out, "sport", c.sport);
  field(out, "daddr", format_address(c.family, c.daddr, addr));
  field(out, "dport", c.dport);
  field(out, "netns", c.netns);
  field(out, "pid", c.pid);
  field(out, "comm", std::string_view(c.comm, strnlen(c.comm, sizeof(c.comm))));
  field(out, "direction",
        c.direction == NL_DIR_OUTGOING   ? "outgoing"
        : c.direction == NL_DIR_INCOMING ? "incoming"
                                         : "none");
  field_bool(out, "intra_host", is_intra_host(c));
  field(out, "bytes_sent", c.bytes_sent);
  field(out, "bytes_recv", c.bytes_recv);
  field(out, "packets_sent", c.packets_sent);
  field(out, "packets_recv", c.packets_recv);
  field(out, "retransmits", c.retransmits);
  field(out, "rtt_us", c.srtt_us);
  field(out, "rtt_var_us", c.rttvar_us);
  field(out, "tcp_state", tcp ? tcp_state_name(c.tcp_state) : "");
  field_bool(out, "closed", v.closed);
  field_bool(out, "failed", connection_failed(v));
  // Why it failed: "refused", "timeout", "reset", "unreachable", "aborted" (closed by the
  // application first), "other" or "unknown" (the prebuilt build cannot read the error).
  if (connection_failed(v))
    field(out, "failure", connect_failure_name(classify_connect_failure(c.sk_err)));
  else
    out.append("\"failure\":null,");
  field(out, "cookie", c.cookie);
  field(out, "start_time_ns", wall(c.start_ns));
  field(out, "last_activity_ns", wall(c.last_ns));
  field_bool(out, "preexisting", (c.flags & NL_FLAG_PREEXISTING) != 0);
  field_bool(out, "idle_expired", (c.flags & NL_FLAG_IDLE_EXPIRED) != 0);
  field_bool(out, "close_reconciled", (c.flags & NL_FLAG_RECONCILED) != 0);
  if (v.has_nat) {
    // The reply direction as netfilter translated it (for the reply tuple: the original).
    out.append("\"nat\":{");
    field(out, "saddr", format_address(c.family, v.nat.saddr, addr));
    field(out, "sport", v.nat.sport);
    field(out, "daddr", format_address(c.family, v.nat.daddr, addr));
    field(out, "dport", v.nat.dport);
    out.back() = '}';
    out.push_back(',');
  } else {
    out.append("\"nat\":null,");
  }
  field(out, "container_id", v.container_id);
  if (v.has_device) {
    // What the TC classifiers of the connection's namespace counted for it (IP-level bytes).
    out.append("\"device\":{");
    field(out, "packets_in", v.device.packets_in);
    field(out, "bytes_in", v.device.bytes_in);
    field(out, "packets_out", v.device.packets_out);
    field(out, "bytes_out", v.device.bytes_out);
    out.back() = '}';
    out.push_back(',');
  } else {
    out.append("\"device\":null,");
  }
  out.append("\"last\":{");
  field(out, "bytes_sent", v.last.bytes_sent);
  field(out, "bytes_recv", v.last.bytes_recv);
  field(out, "packets_sent", v.last.packets_sent);
  field(out, "packets_recv", v.last.packets_recv);
  field(out, "retransmits", v.last.retransmits);
  out.back() = '}'; // replaces the trailing comma
  out.push_back('}');
}

void append_device_flow_json(std::string& out, const device_flow& f) {
  char addr[INET6_ADDRSTRLEN];
  out.push_back('{');
  field(out, "netns", f.netns);
  field(out, "ifindex", f.ifindex);
  field(out, "device", f.device);
  field(out, "direction", f.ingress ? "ingress" : "egress");
  field(out, "family", f.family == AF_INET ? "v4" : "v6");
  field(out, "type", f.protocol == IPPROTO_TCP ? "tcp" : "udp");
  field(out, "saddr", format_address(f.family, f.ends.saddr, addr));
  field(out, "sport", f.ends.sport);
  field(out, "daddr", format_address(f.family, f.ends.daddr, addr));
  field(out, "dport", f.ends.dport);
  field(out, "packets", f.packets);
  field(out, "bytes", f.bytes);
  out.back() = '}';
}

connections_json_stream::connections_json_stream(const chunk_writer& write, size_t chunk_bytes)
    : write_(write), chunk_bytes_(chunk_bytes), mono_(monotonic_now_ns()),
      real_(realtime_now_ns()) {
  chunk_.reserve(chunk_bytes + 1024);
  chunk_.append("{\"connections\":[");
}

bool connections_json_stream::flush_if_full() {
  if (ok_ && chunk_.size() >= chunk_bytes_) {
    ok_ = write_(chunk_);
    chunk_.clear();
  }
  return ok_;
}

bool connections_json_stream::add(const std::vector<connection_view>& views) {
  for (const auto& v : views) {
    if (!ok_)
      return false;
    if (!first_)
      chunk_.push_back(',');
    first_ = false;
    append_connection_json(chunk_, v, mono_, real_);
    flush_if_full();
  }
  return ok_;
}

bool connections_json_stream::finish(const std::vector<device_flow>& flows,
                                     const counter_list& telemetry, const std::string* error) {
  chunk_.append("],\"device_flows\":[");
  bool first = true;
  for (const auto& f : flows) {
    if (!ok_)
      return false;
    if (!first)
      chunk_.push_back(',');
    first = false;
    append_device_flow_json(chunk_, f);
    flush_if_full();
  }
  chunk_.append("],\"telemetry\":{");
  for (size_t i = 0; i < telemetry.size(); ++i) {
    if (i)
      chunk_.push_back(',');
    append_string(chunk_, telemetry[i].first);
    chunk_.push_back(':');
    append_uint(chunk_, telemetry[i].second);
  }
  chunk_.push_back('}');
  if (error) {
    chunk_.append(",\"error\":");
    append_string(chunk_, *error);
  }
  chunk_.push_back('}');
  if (ok_)
    ok_ = write_(chunk_);
  chunk_.clear();
  return ok_;
}

void stream_connections(const connections_reply& reply, const chunk_writer& write,
                        size_t chunk_bytes) {
  connections_json_stream out(write, chunk_bytes);
  if (out.add(reply.connections))
    out.finish(reply.device_flows, reply.telemetry);
}

std::string render_connections(const connections_reply& reply) {
  std::string out;
  stream_connections(reply, [&](std::string_view s) {
    out.append(s);
    return true;
  });
  return out;
}

std::string render_stats(const agent_stats& stats) {
  nlohmann::json actors = nlohmann::json::object();
  nlohmann::json top = nlohmann::json::object();
  // The figures operators look for first, lifted out of the actors that own them.
  static const std::pair<const char*, const char*> headline[] = {
      {"perf_consumer", "records_received"},
      {"perf_consumer", "records_lost"},
      {"perf_consumer", "records_malformed"},
      {"tracer", "kernel_closed_lost"},
      {"tracer", "map_entries"},
      {"tracer", "map_capacity"},
      {"tracer", "failed_inserts"},
      {"tracer", "closed_dropped"}};
  for (const auto& a : stats.actors) {
    nlohmann::json counters = nlohmann::json::object();
    for (const auto& [k, v] : a.counters) {
      counters[k] = v;
      for (const auto& [owner, key] : headline)
        if (a.name == owner && k == key)
          top[k] = v;
    }
    nlohmann::json info = nlohmann::json::object();
    for (const auto& [k, v] : a.info)
      info[k] = v;
    if (a.name == "tracer")
      for (const auto& [k, v] : a.info)
        if (k == "mode")
          top["tracer_mode"] = v;
    if (a.name == "conntrack")
      top["conntrack"] = {
          {"state", actor_state_name(a.state)},
          {"degraded", a.state == actor_state::degraded || a.state == actor_state::failed},
          {"reason", a.last_error}};
    actors[a.name] = {{"state", actor_state_name(a.state)},
                      {"messages_handled", a.messages_handled},
                      {"restarts", a.restarts},
                      {"last_error", a.last_error},
                      {"counters", std::move(counters)},
                      {"info", std::move(info)}};
  }
  top["actors"] = std::move(actors);
  return top.dump();
}

std::string render_error(const std::string& what) {
  return nlohmann::json{{"error", what}}.dump();
}

} // namespace netlens
