#include "actors/console/console_format.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstdio>
#include <cstring>
#include <map>
#include <netinet/in.h>
#include <sys/socket.h>

namespace netlens {
namespace {

template <class... Ts> std::string fmt(const char* f, Ts... args) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), f, args...);
  return buf;
}

std::string display_state(const actor_stats& a) {
  return a.answered ? actor_state_name(a.state) : "not answering";
}

std::string mailbox_text(const actor_stats& a) {
  return a.answered && a.mailbox_size >= 0 ? std::to_string(a.mailbox_size) : "-";
}

std::string rate_text(double r) {
  return r >= 100 ? fmt("%.0f", r) : fmt("%.1f", r);
}

const char* protocol_name(uint8_t p) {
  return p == IPPROTO_TCP ? "tcp" : p == IPPROTO_UDP ? "udp" : "?";
}

const char* tcp_state_name(uint8_t s) {
  static const char* names[] = {
      "-",     "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
      "CLOSE", "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV"};
  return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

bool same_address(const conn_filter::address& a, uint16_t family, const uint8_t* bytes) {
  if (a.family != family)
    return false;
  return std::memcmp(a.bytes.data(), bytes, family == AF_INET ? 4 : 16) == 0;
}

} // namespace

std::string format_uptime(uint64_t ms) {
  uint64_t s = ms / 1000;
  if (s < 60)
    return fmt("%.1fs", static_cast<double>(ms) / 1000.0);
  if (s < 3600)
    return fmt("%llum%02llus", static_cast<unsigned long long>(s / 60),
               static_cast<unsigned long long>(s % 60));
  if (s < 86400)
    return fmt("%lluh%02llum", static_cast<unsigned long long>(s / 3600),
               static_cast<unsigned long long>(s / 60 % 60));
  return fmt("%llud%02lluh", static_cast<unsigned long long>(s / 86400),
             static_cast<unsigned long long>(s / 3600 % 24));
}

std::string format_endpoint(uint16_t family, const uint8_t* addr, uint16_t port) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (family == AF_INET)
    inet_ntop(AF_INET, addr, text, sizeof(text));
  else if (family == AF_INET6)
    inet_ntop(AF_INET6, addr, text, sizeof(text));
  return family == AF_INET6 ? "[" + std::string(text) + "]:" + std::to_string(port)
                            : std::string(text) + ":" + std::to_string(port);
}

std::string format_actors_table(const agent_stats& stats) {
  std::string out = fmt("%-15s %6s %-14s %7s %10s %8s %8s %9s  %s\n", "ACTOR", "ID", "STATE",
                        "MAILBOX", "HANDLED", "MSG/S", "RESTARTS", "UPTIME", "LAST ERROR");
  for (auto& a : stats.actors) {
    bool up = a.id != 0;
    out +=
        fmt("%-15s %6s %-14s %7s %10s %8s %8u %9s  %s\n", a.name.c_str(),
            up ? std::to_string(a.id).c_str() : "-", display_state(a).c_str(),
            mailbox_text(a).c_str(), a.answered ? std::to_string(a.messages_handled).c_str() : "-",
            a.answered ? rate_text(a.messages_per_s).c_str() : "-", a.restarts,
            up ? format_uptime(a.uptime_ms).c_str() : "-",
            a.last_error.empty() ? "-" : a.last_error.c_str());
  }
  return out;
}

bool format_inspect(const agent_stats& stats, const std::string& name, std::string& out) {
  auto it = std::find_if(stats.actors.begin(), stats.actors.end(),
                         [&](const actor_stats& a) { return a.name == name; });
  if (it == stats.actors.end()) {
    out = "no actor named '" + name + "'; actors:";
    for (auto& a : stats.actors)
      out += " " + a.name;
    return false;
  }
  const actor_stats& a = *it;
  out = fmt("%-18s %s\n", "actor", a.name.c_str());
  out += fmt("%-18s %s\n", "id", a.id ? std::to_string(a.id).c_str() : "-");
  out += fmt("%-18s %s\n", "state", display_state(a).c_str());
  out += fmt("%-18s %s\n", "mailbox", mailbox_text(a).c_str());
  out +=
      fmt("%-18s %llu\n", "messages handled", static_cast<unsigned long long>(a.messages_handled));
  out += fmt("%-18s %s\n", "messages/s", rate_text(a.messages_per_s).c_str());
  out += fmt("%-18s %u\n", "restarts", a.restarts);
  out += fmt("%-18s %s\n", "uptime", a.id ? format_uptime(a.uptime_ms).c_str() : "-");
  out += fmt("%-18s %s\n", "last error", a.last_error.empty() ? "-" : a.last_error.c_str());
  if (!a.answered) {
    out += "(no answer in time: its own counters are not available)\n";
    return true;
  }
  if (a.counters.empty()) {
    out += "(no counters of its own)\n";
    return true;
  }
  size_t width = 0;
  for (auto& [k, v] : a.counters)
    width = std::max(width, k.size());
  out += "counters:\n";
  for (auto& [k, v] : a.counters)
    out += "  " + k + std::string(width - k.size() + 2, ' ') + std::to_string(v) + "\n";
  return true;
}

bool connection_matches(const connection_view& v, const conn_filter& f) {
  const nl_conn& c = v.conn;
  if (f.pid && c.pid != *f.pid)
    return false;
  if (f.netns && c.netns != *f.netns)
    return false;
  if (f.protocol && c.protocol != *f.protocol)
    return false;
  if (f.port) {
    bool hit = c.sport == *f.port || c.dport == *f.port ||
               (v.has_nat && (v.nat.sport == *f.port || v.nat.dport == *f.port));
    if (!hit)
      return false;
  }
  if (f.addr) {
    bool hit = same_address(*f.addr, c.family, c.saddr) ||
               same_address(*f.addr, c.family, c.daddr) ||
               (v.has_nat && (same_address(*f.addr, c.family, v.nat.saddr) ||
                              same_address(*f.addr, c.family, v.nat.daddr)));
    if (!hit)
      return false;
  }
  return true;
}

std::string format_connections(const connections_reply& reply, const conn_filter& f) {
  std::string out = fmt("%-5s %-12s %-30s %-30s %8s %10s %-15s %12s %12s  %s\n", "PROTO", "STATE",
                        "LOCAL", "PEER", "PID", "NETNS", "COMMAND", "SENT", "RECV", "NAT(REPLY)");
  size_t shown = 0;
  for (auto& v : reply.connections) {
    if (!connection_matches(v, f))
      continue;
    ++shown;
    const nl_conn& c = v.conn;
    std::string comm(c.comm, strnlen(c.comm, sizeof(c.comm)));
    for (char& ch : comm)
      if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) >= 0x7f)
        ch = '?'; // a process names itself: never let it write to the operator's terminal
    std::string state = v.closed                    ? "CLOSED"
                        : c.protocol == IPPROTO_TCP ? tcp_state_name(c.tcp_state)
                                                    : "-";
    std::string nat = v.has_nat ? format_endpoint(c.family, v.nat.saddr, v.nat.sport) + ">" +
                                      format_endpoint(c.family, v.nat.daddr, v.nat.dport)
                                : "-";
    out +=
        fmt("%-5s %-12s %-30s %-30s %8u %10u %-15s %12llu %12llu  %s\n", protocol_name(c.protocol),
            state.c_str(), format_endpoint(c.family, c.saddr, c.sport).c_str(),
            format_endpoint(c.family, c.daddr, c.dport).c_str(), c.pid, c.netns,
            comm.empty() ? "-" : comm.c_str(), static_cast<unsigned long long>(c.bytes_sent),
            static_cast<unsigned long long>(c.bytes_recv), nat.c_str());
  }
  out += fmt("%zu of %zu connections%s\n", shown, reply.connections.size(),
             f.empty() ? "" : " match the filter");
  return out;
}

std::string format_cache(const conntrack_listing& listing) {
  std::string out =
      fmt("%-5s %10s %-46s %-46s %s\n", "PROTO", "NETNS", "ORIGINAL", "REPLY", "ORPHAN");
  for (auto& row : listing.rows) {
    const ct_entry& e = row.entry;
    std::string orig = format_endpoint(e.family, e.orig.saddr, e.orig.sport) + ">" +
                       format_endpoint(e.family, e.orig.daddr, e.orig.dport);
    std::string reply = format_endpoint(e.family, e.reply.saddr, e.reply.sport) + ">" +
                        format_endpoint(e.family, e.reply.daddr, e.reply.dport);
    out += fmt("%-5s %10u %-46s %-46s %s\n", protocol_name(e.protocol), e.netns, orig.c_str(),
               reply.c_str(), row.orphan ? "yes" : "no");
  }
  out += fmt("%zu of %llu cache entries\n", listing.rows.size(),
             static_cast<unsigned long long>(listing.total));
  return out;
}

std::string format_phase(const shutdown_phase_report& r) {
  std::string out = fmt("phase %s: done in %.1f ms", r.phase.c_str(),
                        static_cast<double>(r.duration_us) / 1000.0);
  if (!r.no_answer.empty()) {
    out += "; no answer from:";
    for (auto& who : r.no_answer)
      out += " " + who;
  }
  return out + "\n";
}

std::string format_top(const agent_stats& now, const agent_stats& previous, double seconds,
                       const std::string& clock_text) {
  std::string out = "netlens top, " + clock_text + " (any key ends it)\n\n";
  out += format_actors_table(now);
  std::map<std::string, uint64_t> before;
  for (auto& a : previous.actors)
    for (auto& [k, v] : a.counters)
      before[a.name + "." + k] = v;
  std::vector<std::pair<std::string, double>> rates;
  if (seconds > 0)
    for (auto& a : now.actors)
      for (auto& [k, v] : a.counters) {
        auto it = before.find(a.name + "." + k);
        if (it != before.end() && v > it->second)
          rates.emplace_back(a.name + "." + k, static_cast<double>(v - it->second) / seconds);
      }
  out += "\nevent rates (per second):\n";
  if (rates.empty())
    out += previous.actors.empty() ? "  (from the next refresh)\n" : "  (nothing moved)\n";
  std::sort(rates.begin(), rates.end(), [](auto& a, auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  for (auto& [name, r] : rates)
    out += fmt("  %-44s %12s\n", name.c_str(), rate_text(r).c_str());
  return out;
}

} // namespace netlens
