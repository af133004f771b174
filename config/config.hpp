// The agent's effective configuration: every key of netlens.toml with its default.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>

namespace netlens {

enum class closed_buffer_kind { ring, perf };

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
  uint32_t closed_batch_size = 4;        // closed records per batch (wakeup), [1, 64]
  uint32_t closed_flush_interval_ms = 100; // longest a closed record waits, [1, 10000]
};

struct compact_ticker_config {
  uint32_t interval_ms = 10000;          // tracer idle expiry, [10, 3600000]
  uint32_t compact_interval_ms = 60000;  // conntrack orphan compaction, [10, 3600000]
};

struct conntrack_config {
  bool enabled = true;                        // resolve NAT through netfilter conntrack
  bool required = false;                      // false: run degraded when conntrack is unusable
  uint32_t max_entries = 131072;              // NAT'd entries cached, [1024, 16777216]
  uint32_t orphan_ttl_s = 120;                // [1, 86400]
  int64_t rate_limit = -1;                    // events/s, -1 (none) or [1, 100000000]
  uint32_t receive_buffer_bytes = 8u << 20;   // netlink socket, [65536, 1 GiB]
  uint32_t dump_timeout_ms = 10000;           // initial dump, [100, 600000]
  uint32_t resync_interval_s = 300;           // re-dump while dumped entries may go stale, [1, 86400]
};

struct supervisor_config {
  uint32_t restart_budget = 3;       // restarts allowed per window, [0, 100]
  uint32_t restart_window_s = 60;    // [1, 86400]
  uint32_t restart_backoff_ms = 250; // first delay, doubled per restart in window, [0, 60000]
  uint32_t stop_timeout_ms = 2000;   // [1, 600000]
  uint32_t purge_timeout_ms = 2000;  // [1, 600000]
  uint32_t exit_timeout_ms = 2000;   // [1, 600000]
};

struct config {
  agent_config agent;
  tracer_config tracer;
  compact_ticker_config compact_ticker;
  conntrack_config conntrack;
  supervisor_config supervisor;
};

// Equality lets a reload tell whether anything changed and lets tests compare against config{}.
// The structured bindings stop compiling when a member is added, so a new key cannot be left out
// of the comparison by accident.
inline bool operator==(const agent_config &a, const agent_config &b) {
  const auto &[a0, a1, a2] = a;
  const auto &[b0, b1, b2] = b;
  return std::tie(a0, a1, a2) == std::tie(b0, b1, b2);
}

inline bool operator==(const tracer_config &a, const tracer_config &b) {
  const auto &[a0, a1, a2, a3, a4, a5, a6, a7, a8] = a;
  const auto &[b0, b1, b2, b3, b4, b5, b6, b7, b8] = b;
  return std::tie(a0, a1, a2, a3, a4, a5, a6, a7, a8) ==
         std::tie(b0, b1, b2, b3, b4, b5, b6, b7, b8);
}

inline bool operator==(const compact_ticker_config &a, const compact_ticker_config &b) {
  const auto &[a0, a1] = a;
  const auto &[b0, b1] = b;
  return std::tie(a0, a1) == std::tie(b0, b1);
}

inline bool operator==(const conntrack_config &a, const conntrack_config &b) {
  const auto &[a0, a1, a2, a3, a4, a5, a6, a7] = a;
  const auto &[b0, b1, b2, b3, b4, b5, b6, b7] = b;
  return std::tie(a0, a1, a2, a3, a4, a5, a6, a7) == std::tie(b0, b1, b2, b3, b4, b5, b6, b7);
}

inline bool operator==(const supervisor_config &a, const supervisor_config &b) {
  const auto &[a0, a1, a2, a3, a4, a5] = a;
  const auto &[b0, b1, b2, b3, b4, b5] = b;
  return std::tie(a0, a1, a2, a3, a4, a5) == std::tie(b0, b1, b2, b3, b4, b5);
}

inline bool operator==(const config &a, const config &b) {
  const auto &[a0, a1, a2, a3, a4] = a;
  const auto &[b0, b1, b2, b3, b4] = b;
  return std::tie(a0, a1, a2, a3, a4) == std::tie(b0, b1, b2, b3, b4);
}

inline bool operator!=(const agent_config &a, const agent_config &b) {
  return !(a == b);
}
inline bool operator!=(const tracer_config &a, const tracer_config &b) {
  return !(a == b);
}
inline bool operator!=(const compact_ticker_config &a, const compact_ticker_config &b) {
  return !(a == b);
}
inline bool operator!=(const conntrack_config &a, const conntrack_config &b) {
  return !(a == b);
}
inline bool operator!=(const supervisor_config &a, const supervisor_config &b) {
  return !(a == b);
}
inline bool operator!=(const config &a, const config &b) {
  return !(a == b);
}

} // namespace netlens
