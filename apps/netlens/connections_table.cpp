#include "apps/netlens/connections_table.hpp"

#include <cctype>
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

std::string percent_encoded(const std::string& value) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : value) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back('%');
      out.push_back(hex[ch >> 4]);
      out.push_back(hex[ch & 15]);
    }
  }
  return out;
}

} // namespace

std::string connections_target(const std::string& client, const connections_filters& f) {
  std::string target = "/connections?client_id=" + percent_encoded(client);
  auto add = [&](const char* name, const std::string& value) {
    if (!value.empty())
      target += std::string("&") + name + "=" + percent_encoded(value);
  };
  add("proto", f.proto);
  add("pid", f.pid);
  add("comm", f.comm);
  add("container", f.container);
  add("port", f.port);
  add("state", f.state);
  add("sort", f.sort);
  add("top", f.top);
  return target;
}

std::string human_size(uint64_t bytes) {
  if (bytes < 1024)
    return std::to_string(bytes);
  static const char units[] = {'K', 'M', 'G', 'T', 'P', 'E'};
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units) {
    v /= 1024;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, v < 10 ? "%.1f%c" : "%.0f%c", v, units[u]);
  return text;
}

std::string format_connections_table(const nlohmann::json& body, bool exact_bytes) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof(line), "%-5s %-18s %-28s %-28s %-8s %-8s %-15s %12s %12s %8s %s\n",
                "Proto", "State", "Local", "Peer", "Dir", "PID", "Command", "Sent", "Recv",
                "RTT(us)", "NAT(reply)");
  out += line;
  for (const auto& c : body.value("connections", nlohmann::json::array())) {
    std::string state = c.value("failed", false)   ? "FAILED"
                        : c.value("closed", false) ? "CLOSED"
                                                   : c.value("tcp_state", "");
    // FAILED:refused, FAILED:timeout, ... (the JSON's "failure")
    if (c.value("failed", false) && c.contains("failure") && c["failure"].is_string())
      state += ":" + c["failure"].get<std::string>();
    if (state.empty())
      state = "-";
    auto size = [&](const char* key) {
      uint64_t n = c.value(key, uint64_t{0});
      return exact_bytes ? std::to_string(n) : human_size(n);
    };
    std::snprintf(
        line, sizeof(line), "%-5s %-18s %-28s %-28s %-8s %-8llu %-15s %12s %12s %8llu %s\n",
        c.value("type", "").c_str(), state.c_str(), endpoint(c, "saddr", "sport").c_str(),
        endpoint(c, "daddr", "dport").c_str(), c.value("direction", "").c_str(),
        static_cast<unsigned long long>(c.value("pid", 0ull)), c.value("comm", "").c_str(),
        size("bytes_sent").c_str(), size("bytes_recv").c_str(),
        static_cast<unsigned long long>(c.value("rtt_us", 0ull)), nat_reply(c).c_str());
    out += line;
  }
  return out;
}

} // namespace netlens
