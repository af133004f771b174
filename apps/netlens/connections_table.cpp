#include "apps/netlens/connections_table.hpp"

#include <cstdio>

namespace netlens {
namespace {

std::string endpoint(const nlohmann::json& c, const char* addr, const char* port) {
  std::string a = c.value(addr, "");
  std::string p = std::to_string(c.value(port, 0));
  return c.value("family", "v4") == "v6" ? "[" + a + "]:" + p : a + ":" + p;
}

// The reply direction conntrack translated the connection to, or "-".
std::string nat_reply(const nlohmann::json& c) {
  auto it = c.find("nat");
  if (it == c.end() || !it->is_object())
    return "-";
  nlohmann::json n = *it;
  n["family"] = c.value("family", "v4");
  return endpoint(n, "saddr", "sport") + ">" + endpoint(n, "daddr", "dport");
}

} // namespace

std::string format_connections_table(const nlohmann::json& body) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof(line), "%-5s %-12s %-28s %-28s %-8s %-8s %-15s %12s %12s %8s %s\n",
                "Proto", "State", "Local", "Peer", "Dir", "PID", "Command", "Sent", "Recv",
                "RTT(us)", "NAT(reply)");
  out += line;
  for (const auto& c : body.value("connections", nlohmann::json::array())) {
    std::string state = c.value("closed", false) ? "CLOSED" : c.value("tcp_state", "");
    if (state.empty())
      state = "-";
    std::snprintf(line, sizeof(line),
                  "%-5s %-12s %-28s %-28s %-8s %-8llu %-15s %12llu %12llu %8llu %s\n",
                  c.value("type", "").c_str(), state.c_str(),
                  endpoint(c, "saddr", "sport").c_str(), endpoint(c, "daddr", "dport").c_str(),
                  c.value("direction", "").c_str(),
                  static_cast<unsigned long long>(c.value("pid", 0ull)),
                  c.value("comm", "").c_str(),
                  static_cast<unsigned long long>(c.value("bytes_sent", 0ull)),
                  static_cast<unsigned long long>(c.value("bytes_recv", 0ull)),
                  static_cast<unsigned long long>(c.value("rtt_us", 0ull)),
                  nat_reply(c).c_str());
    out += line;
  }
  return out;
}

} // namespace netlens
