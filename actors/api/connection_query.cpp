#include "actors/api/connection_query.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>

#include "flow/connect_failure.hpp"

namespace netlens {
namespace {

// A whole decimal number in [lo, hi], or nothing.
std::optional<uint64_t> number(const std::string& text, uint64_t lo, uint64_t hi) {
  if (text.empty() || text.size() > 20 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
  if (errno != 0 || v < lo || v > hi)
    return std::nullopt;
  return v;
}

uint64_t total_bytes(const connection_view& v) {
  return v.conn.bytes_sent + v.conn.bytes_recv;
}

} // namespace

std::variant<connection_query, std::string>
parse_connection_query(const std::map<std::string, std::string>& params) {
  connection_query q;
  for (const auto& [name, value] : params) {
    if (name == "client_id") {
      continue;
    } else if (name == "proto") {
      if (value == "tcp")
        q.protocol = IPPROTO_TCP;
      else if (value == "udp")
        q.protocol = IPPROTO_UDP;
      else
        return "proto: '" + value + "' is not tcp or udp";
    } else if (name == "pid") {
      auto n = number(value, 1, 4194304);
      if (!n)
        return "pid: '" + value + "' is not a process id (1-4194304)";
      q.pid = static_cast<uint32_t>(*n);
    } else if (name == "comm") {
      if (value.empty() || value.size() > 15)
        return "comm: a command name is 1 to 15 characters (the kernel's comm)";
      q.comm = value;
    } else if (name == "container") {
      if (value.empty() || value.size() > 64)
        return "container: a container id (or its prefix) is 1 to 64 characters";
      q.container = value;
    } else if (name == "port") {
      auto n = number(value, 1, 65535);
      if (!n)
        return "port: '" + value + "' is not a port (1-65535)";
      q.port = static_cast<uint16_t>(*n);
    } else if (name == "state") {
      if (value == "open")
        q.state = conn_state_filter::open;
      else if (value == "closed")
        q.state = conn_state_filter::closed;
      else if (value == "failed")
        q.state = conn_state_filter::failed;
      else
        return "state: '" + value + "' is not open, closed or failed";
    } else if (name == "sort") {
      if (value == "bytes")
        q.sort = conn_sort::bytes;
      else if (value == "rtt")
        q.sort = conn_sort::rtt;
      else if (value == "retransmits")
        q.sort = conn_sort::retransmits;
      else if (value == "start")
        q.sort = conn_sort::start;
      else
        return "sort: '" + value + "' is not bytes, rtt, retransmits or start";
    } else if (name == "top") {
      auto n = number(value, 1, 1000000);
      if (!n)
        return "top: '" + value + "' is not a count (1-1000000)";
      q.top = static_cast<size_t>(*n);
    } else {
      return "unknown parameter '" + name +
             "' (known: client_id, proto, pid, comm, container, port, state, sort, top)";
    }
  }
  return q;
}

bool connection_failed(const connection_view& v) {
  return v.closed && closed_before_established(v.conn);
}

void apply_connection_query(const connection_query& q, std::vector<connection_view>& views) {
  auto keep = [&q](const connection_view& v) {
    const nl_conn& c = v.conn;
    if (q.protocol && c.protocol != *q.protocol)
      return false;
    if (q.pid && c.pid != *q.pid)
      return false;
    if (q.comm && std::string(c.comm, strnlen(c.comm, sizeof c.comm)) != *q.comm)
      return false;
    if (q.container && v.container_id.compare(0, q.container->size(), *q.container) != 0)
      return false;
    if (q.port && c.sport != *q.port && c.dport != *q.port)
      return false;
    switch (q.state) {
    case conn_state_filter::any:
      return true;
    case conn_state_filter::open:
      return !v.closed;
    case conn_state_filter::closed:
      return v.closed;
    case conn_state_filter::failed:
      return connection_failed(v);
    }
    return true;
  };
  views.erase(std::remove_if(views.begin(), views.end(), [&](const auto& v) { return !keep(v); }),
              views.end());
  auto by = [&](auto key) {
    std::stable_sort(
        views.begin(), views.end(),
        [&](const connection_view& a, const connection_view& b) { return key(a) > key(b); });
  };
  switch (q.sort) {
  case conn_sort::none:
    break;
  case conn_sort::bytes:
    by([](const connection_view& v) { return total_bytes(v); });
    break;
  case conn_sort::rtt:
    by([](const connection_view& v) { return uint64_t{v.conn.srtt_us}; });
    break;
  case conn_sort::retransmits:
    by([](const connection_view& v) { return uint64_t{v.conn.retransmits}; });
    break;
  case conn_sort::start:
    by([](const connection_view& v) { return v.conn.start_ns; });
    break;
  }
  if (q.top && views.size() > *q.top)
    views.resize(*q.top);
}

void paged_selection::page(std::vector<connection_view>& views) {
  if (q_.sort == conn_sort::none) {
    connection_query q = q_;
    if (q.top)
      q.top = *q.top > written_ ? *q.top - written_ : 0;
    apply_connection_query(q, views);
    written_ += views.size();
    return;
  }
  kept_.reserve(kept_.size() + views.size());
  for (auto& v : views)
    kept_.push_back(std::move(v));
  views.clear();
  apply_connection_query(q_, kept_); // ordered: ties stay in the answer's (page) order
}

void apply_connection_query(const connection_query& q, connections_reply& reply) {
  apply_connection_query(q, reply.connections);
  if (q.filters())
    reply.device_flows.clear();
}

} // namespace netlens
