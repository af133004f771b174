// The agent's effective configuration: every key of netlens.toml with its default.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "bpf/netlens_records.h"

namespace netlens {

enum class closed_buffer_kind { ring, perf };

// How the tracer's programs reach kernel struct fields; auto tries core, runtime, prebuilt.
enum class tracer_mode { auto_select, core, runtime, prebuilt };

struct agent_config {
  std::string log_level = "info"; // trace|debug|info|warn|error|critical|off
  std::string api_socket = "/run/netlens/netlens.sock";
  uint32_t api_allowed_uid = 0; // besides root, who may use the API; 0: root only
};

struct tracer_config {
  uint32_t max_tracked_connections = 65536;                    // [1024, 4194304]
  closed_buffer_kind closed_buffer = closed_buffer_kind::ring; // "ring" | "perf"
  uint32_t ring_buffer_bytes = 4u << 20;                       // power of two, [4096, 1 GiB]
  uint32_t perf_buffer_pages = 64;                             // per CPU, power of two, [1, 4096]
  uint32_t max_closed_connections_buffered = 65536;            // [1, 16777216]
  uint32_t client_expiry_s = 300;                              // [1, 86400]
  uint32_t udp_idle_timeout_s = 120;                           // [1, 86400]
  uint32_t closed_batch_size = NL_BATCH_DEFAULT; // closed records per batch (wakeup), [1, 64]
  uint32_t closed_flush_interval_ms = 100;       // longest a closed record waits, [1, 10000]
  tracer_mode mode = tracer_mode::auto_select;   // "auto" | "core" | "runtime" | "prebuilt"
  std::string cache_dir = "/var/cache/netlens";  // runtime-compiled objects, guessed offsets
};

struct offset_guesser_config {
  uint32_t max_tries = 5;         // guesses before giving up, [1, 5]
  uint32_t try_timeout_ms = 1000; // one guess, [10, 60000]
};

struct console_config {
  std::string socket = "/run/netlens/console.sock";
  uint32_t allowed_uid = 0;         // besides root, who may use the console; 0: root only
  uint32_t max_sessions = 8;        // [1, 64]
  uint32_t max_line_bytes = 4096;   // [64, 65536]
  uint32_t max_commands_per_s = 20; // per session, [1, 1000]
  uint32_t actor_timeout_ms = 50;   // an actor slower than this shows as not answering, [1, 10000]
  uint32_t first_command_timeout_ms =
      10000; // a session that sends no line is closed, [100, 600000]
};

struct metrics_config {
  uint32_t port = 0;                 // TCP port for GET /metrics; 0: only on the API socket
  std::string address = "127.0.0.1"; // IPv4 or IPv6 literal the metrics port binds to
};

struct compact_ticker_config {
  uint32_t interval_ms = 10000;         // tracer idle expiry, [10, 3600000]
  uint32_t compact_interval_ms = 60000; // conntrack orphan compaction, [10, 3600000]
};

struct conntrack_config {
  bool enabled = true;                      // resolve NAT through netfilter conntrack
  bool required = false;                    // false: run degraded when conntrack is unusable
  uint32_t max_entries = 131072;            // NAT'd entries cached, [1024, 16777216]
  uint32_t orphan_ttl_s = 120;              // [1, 86400]
  int64_t rate_limit = -1;                  // events/s, -1 (none) or [1, 100000000]
  uint32_t receive_buffer_bytes = 8u << 20; // netlink socket, [65536, 1 GiB]
  uint32_t dump_timeout_ms = 10000;         // initial dump, [100, 600000]
  uint32_t resync_interval_s = 300;         // re-dump while dumped entries may go stale, [1, 86400]
};

struct netns_config {
  bool enabled = true;                   // follow network namespaces beyond the agent's own
  uint32_t max_namespaces = 4096;        // handles held at most, [1, 1048576]
  uint32_t max_queued_devices = 256;     // devices waiting for one namespace's handle, [1, 65536]
  uint32_t idle_flush_s = 60;            // a namespace with no process and no device, [1, 86400]
  bool follow_processes = true;          // sched exec/exit events find new namespaces at once
  bool tc_enabled = true;                // count packets and bytes per flow at each device
  std::vector<std::string> tc_include{}; // device name prefixes; empty: every device
  std::vector<std::string> tc_exclude{"lo"}; // device name prefixes never attached
  uint32_t tc_max_flows = 65536;             // flows the classifiers keep, [1024, 4194304]
  uint32_t tc_flow_idle_s = 120; // a flow not seen for this long leaves the map, [1, 86400]
  bool tc_tcx = true;            // TCX links where the kernel has them (6.6+)
  bool tc_create_clsact = false; // classic TC: create a clsact qdisc where none exists
};

struct supervisor_config {
  uint32_t restart_budget = 3;       // restarts allowed per window, [0, 100]
  uint32_t restart_window_s = 60;    // [1, 86400]
  uint32_t restart_backoff_ms = 250; // first delay, doubled per restart in window, [0, 60000]
  uint32_t stop_timeout_ms = 2000;   // [1, 600000]
  uint32_t purge_timeout_ms = 2000;  // [1, 600000]
  uint32_t exit_timeout_ms = 2000;   // [1, 600000]
};

enum class ipfix_transport { udp, tcp };

// The smallest IPFIX message (and so export.ipfix.mtu) that holds netlens's largest template
// or data record (a v6 record with NAT, device counts, a full comm and container id: 16 + 4 + 242
// bytes); a smaller one could never carry it. ipfix_layout.cpp asserts the two figures agree.
constexpr uint32_t k_ipfix_min_mtu = 262;

// What a label of the traffic families on /metrics may be; export.metrics.labels picks some.
inline constexpr std::string_view k_traffic_metrics_labels[] = {
    "protocol", "family",       "direction",  "comm",     "container_id",
    "netns",    "peer_address", "local_port", "peer_port"};

struct ipfix_export_config {
  std::vector<std::string> collectors{}; // "host:port", at most 16; empty: no IPFIX export
  ipfix_transport transport = ipfix_transport::udp; // "udp" | "tcp"
  uint32_t observation_domain_id = 1;               // [0, 4294967295]
  uint32_t active_timeout_s = 60;     // a long flow is reported this often, [1, 86400]
  uint32_t flush_interval_ms = 1000;  // a closed flow leaves within this, [10, 60000]
  uint32_t template_refresh_s = 600;  // UDP only, [1, 86400]
  uint32_t mtu = 1400;                // bytes per message, [k_ipfix_min_mtu, 65535]
  uint32_t enterprise_number = 32473; // PEN of netlens's own elements (RFC 5612 placeholder)
};

struct traffic_metrics_config {
  bool enabled = false; // traffic families on /metrics (off: no poll of the tracer for them)
  std::vector<std::string> labels{"protocol", "direction"}; // from k_traffic_metrics_labels
  uint32_t max_series = 5000;                               // [1, 1000000]
  uint32_t interval_ms = 5000; // sampling when IPFIX is off, [100, 600000]
};

// The [export] table and its sub-tables.
struct export_config {
  uint32_t max_queued_records = 65536; // waiting to be encoded and sent, [1, 16777216]
  ipfix_export_config ipfix;           // [export.ipfix]
  traffic_metrics_config metrics;      // [export.metrics]
};

struct config {
  agent_config agent;
  tracer_config tracer;
  compact_ticker_config compact_ticker;
  conntrack_config conntrack;
  netns_config netns;
  supervisor_config supervisor;
  offset_guesser_config offset_guesser;
  console_config console;
  metrics_config metrics;
  export_config exporter; // [export]; `export` is a C++ keyword
};

// Equality lets a reload tell whether anything changed and lets tests compare against config{}.
// The structured bindings stop compiling when a member is added, so a new key cannot be left out
// of the comparison by accident.
inline bool operator==(const agent_config& a, const agent_config& b) {
  const auto& [a0, a1, a2] = a;
  const auto& [b0, b1, b2] = b;
  return std::tie(a0, a1, a2) == std::tie(b0, b1, b2);
}

inline bool operator==(const tracer_config& a, const tracer_config& b) {
  const auto& [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10] = a;
  const auto& [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10] = b;
  return std::tie(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10) ==
         std::tie(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10);
}

inline bool operator==(const offset_guesser_config& a, const offset_guesser_config& b) {
  const auto& [a0, a1] = a;
  const auto& [b0, b1] = b;
  return std::tie(a0, a1) == std::tie(b0, b1);
}

inline bool operator==(const console_config& a, const console_config& b) {
  const auto& [a0, a1, a2, a3, a4, a5, a6] = a;
  const auto& [b0, b1, b2, b3, b4, b5, b6] = b;
  return std::tie(a0, a1, a2, a3, a4, a5, a6) == std::tie(b0, b1, b2, b3, b4, b5, b6);
}

inline bool operator==(const metrics_config& a, const metrics_config& b) {
  const auto& [a0, a1] = a;
  const auto& [b0, b1] = b;
  return std::tie(a0, a1) == std::tie(b0, b1);
}

inline bool operator==(const compact_ticker_config& a, const compact_ticker_config& b) {
  const auto& [a0, a1] = a;
  const auto& [b0, b1] = b;
  return std::tie(a0, a1) == std::tie(b0, b1);
}

inline bool operator==(const conntrack_config& a, const conntrack_config& b) {
  const auto& [a0, a1, a2, a3, a4, a5, a6, a7] = a;
  const auto& [b0, b1, b2, b3, b4, b5, b6, b7] = b;
  return std::tie(a0, a1, a2, a3, a4, a5, a6, a7) == std::tie(b0, b1, b2, b3, b4, b5, b6, b7);
}

inline bool operator==(const netns_config& a, const netns_config& b) {
  const auto& [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] = a;
  const auto& [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11] = b;
  return std::tie(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11) ==
         std::tie(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11);
}

inline bool operator==(const supervisor_config& a, const supervisor_config& b) {
  const auto& [a0, a1, a2, a3, a4, a5] = a;
  const auto& [b0, b1, b2, b3, b4, b5] = b;
  return std::tie(a0, a1, a2, a3, a4, a5) == std::tie(b0, b1, b2, b3, b4, b5);
}

inline bool operator==(const ipfix_export_config& a, const ipfix_export_config& b) {
  const auto& [a0, a1, a2, a3, a4, a5, a6, a7] = a;
  const auto& [b0, b1, b2, b3, b4, b5, b6, b7] = b;
  return std::tie(a0, a1, a2, a3, a4, a5, a6, a7) == std::tie(b0, b1, b2, b3, b4, b5, b6, b7);
}

inline bool operator==(const traffic_metrics_config& a, const traffic_metrics_config& b) {
  const auto& [a0, a1, a2, a3] = a;
  const auto& [b0, b1, b2, b3] = b;
  return std::tie(a0, a1, a2, a3) == std::tie(b0, b1, b2, b3);
}

inline bool operator==(const export_config& a, const export_config& b) {
  const auto& [a0, a1, a2] = a;
  const auto& [b0, b1, b2] = b;
  return std::tie(a0, a1, a2) == std::tie(b0, b1, b2);
}

inline bool operator==(const config& a, const config& b) {
  const auto& [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] = a;
  const auto& [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9] = b;
  return std::tie(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9) ==
         std::tie(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9);
}

inline bool operator!=(const agent_config& a, const agent_config& b) {
  return !(a == b);
}
inline bool operator!=(const tracer_config& a, const tracer_config& b) {
  return !(a == b);
}
inline bool operator!=(const compact_ticker_config& a, const compact_ticker_config& b) {
  return !(a == b);
}
inline bool operator!=(const conntrack_config& a, const conntrack_config& b) {
  return !(a == b);
}
inline bool operator!=(const netns_config& a, const netns_config& b) {
  return !(a == b);
}
inline bool operator!=(const supervisor_config& a, const supervisor_config& b) {
  return !(a == b);
}
inline bool operator!=(const offset_guesser_config& a, const offset_guesser_config& b) {
  return !(a == b);
}
inline bool operator!=(const console_config& a, const console_config& b) {
  return !(a == b);
}
inline bool operator!=(const metrics_config& a, const metrics_config& b) {
  return !(a == b);
}
inline bool operator!=(const ipfix_export_config& a, const ipfix_export_config& b) {
  return !(a == b);
}
inline bool operator!=(const traffic_metrics_config& a, const traffic_metrics_config& b) {
  return !(a == b);
}
inline bool operator!=(const export_config& a, const export_config& b) {
  return !(a == b);
}
inline bool operator!=(const config& a, const config& b) {
  return !(a == b);
}

} // namespace netlens
