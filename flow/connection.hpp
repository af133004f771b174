// A connection as the product shows it: the counters that move between two reads, what the
// devices counted, one client's view of a connection, and a connections answer. Plain values,
// no CAF: the cores build them, messages/ carries them.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bpf/netlens_records.h"
#include "flow/flow_key.hpp"

namespace netlens {

// The counters that can move between two reads of one connection.
struct conn_counters {
  uint64_t bytes_sent = 0;
  uint64_t bytes_recv = 0;
  uint64_t packets_sent = 0;
  uint64_t packets_recv = 0;
  uint64_t retransmits = 0;
};

// What the TC classifiers of the connection's namespace counted for its tuple, over every
// device there: in is what arrived (ingress), out what left (egress). IP-level bytes.
struct device_counts {
  uint64_t packets_in = 0;
  uint64_t bytes_in = 0;
  uint64_t packets_out = 0;
  uint64_t bytes_out = 0;
};

// A flow one device saw in one direction that no traced connection of that namespace matches
// (forwarded traffic, a socket the tracer did not see): reported as seen only at the device.
struct device_flow {
  uint32_t netns = 0;
  uint32_t ifindex = 0;
  std::string device;   // the device's name, "" when it is gone
  uint8_t family = 0;   // AF_INET or AF_INET6
  uint8_t protocol = 0; // IPPROTO_TCP or IPPROTO_UDP
  bool ingress = false; // false: egress
  ct_endpoints ends;    // as the packets carried them
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// One connection as a client sees it: monotonic totals in conn, and what moved since that
// client's previous call in last.
struct connection_view {
  nl_conn conn;
  bool closed = false;
  conn_counters last;
  bool has_nat = false;
  ct_endpoints nat;         // the other direction as conntrack translated it, when has_nat
  std::string container_id; // from the process's cgroup, "" when not in a container
  bool has_device = false;
  device_counts device; // when has_device
};

// Named figures an actor reports about itself (map fill, lost records, ...).
using counter_list = std::vector<std::pair<std::string, uint64_t>>;

struct connections_reply {
  std::vector<connection_view> connections;
  // Closed connections were left for this client's next call (it asked for at most so many).
  bool more_closed = false;
  counter_list telemetry;
  std::vector<device_flow> device_flows; // seen only at a device (see device_flow)
  // A paged answer (conns_page) comes a page at a time so that no actor holds all of it:
  // closed connections first, then the active ones in map order. Ask for the next page with
  // listing until last; more_closed, telemetry and device_flows come with the last page.
  uint64_t listing = 0;
  bool last = true;
};

} // namespace netlens
