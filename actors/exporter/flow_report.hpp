// One report of one connection to the fleet pipelines: what moved since that connection's
// previous report, with the context the exporter sends alongside. The IPFIX encoder and the
// traffic metrics both read it; neither needs CAF or the kernel.
#pragma once

#include <cstdint>
#include <string>

#include "bpf/netlens_records.h"
#include "messages/types.hpp"

namespace netlens {

// Why a report ends what it covers, as IPFIX flowEndReason (IE 136) numbers it. none: a live
// sample that is not exported as a flow record (the traffic metrics see every poll).
enum class flow_end_reason : uint8_t {
  none = 0,
  idle_timeout = 1,      // a UDP flow idle past tracer.udp_idle_timeout_s
  active_timeout = 2,    // still open; reported every export.ipfix.active_timeout_s
  end_of_flow = 3,       // the socket closed
  forced_end = 4,        // the agent is shutting down with the connection still open
  lack_of_resources = 5, // the agent lost track of it (closed record dropped, bound reached)
};

struct flow_report {
  // Totals at this report. family is normalized: AF_INET addresses in the first 4 bytes of
  // saddr/daddr. saddr/sport are the local socket's, daddr/dport the peer's; direction says who
  // initiated (NL_DIR_OUTGOING: the local socket).
  nl_conn conn{};
  // What moved since this connection's previous report (the first report: since it began).
  // bytes_* are transport payload (exact); packets_* are the socket's segments (TCP) or
  // datagrams (UDP).
  conn_counters delta;
  uint64_t start_unix_ms = 0; // flow start, wall clock (ms since the epoch)
  uint64_t end_unix_ms = 0;   // last activity seen, wall clock
  flow_end_reason reason = flow_end_reason::none;
  bool first_report = false; // the first report of this connection (metrics count it opened)
  bool has_nat = false;
  ct_endpoints nat; // the reply direction as conntrack translated it, when has_nat
  // IP-level packets and bytes the TC classifiers counted for it since its previous report,
  // when the connection's namespace has classifiers on the devices it used (has_device).
  bool has_device = false;
  device_counts device_delta;
  std::string container_id; // "" when not in a container
};

} // namespace netlens
