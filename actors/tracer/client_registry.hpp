// The tracer's per-client state, as the reference agent keeps it: a bounded buffer of closed
// connections with one read cursor per client, and for each client the counters it saw last
// so every answer carries the delta since that client's previous call. No CAF, no kernel.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "messages/types.hpp"

namespace netlens {

struct client_registry_limits {
  size_t max_closed_buffered = 65536;
  uint64_t client_expiry_ns = 300ull * 1000000000ull;
};

struct client_registry_stats {
  uint64_t closed_received = 0;
  uint64_t closed_dropped = 0; // pushed out of the full buffer before every client read them
  uint64_t clients = 0;
  uint64_t clients_expired = 0;
  uint64_t closed_buffered = 0;
};

class client_registry {
public:
  explicit client_registry(client_registry_limits limits) : limits_(limits) {}

  // Appends closed connections; past the bound the oldest are dropped and counted.
  void add_closed(const nl_conn* records, size_t n);
  void add_closed(const std::vector<nl_conn>& records) { add_closed(records.data(), records.size()); }

  // The answer for one client: every closed connection it has not seen yet (once), then every
  // active one not among them, each with its delta since this client's previous call.
  void collect(const std::string& client, const std::vector<nl_conn>& active, uint64_t now_ns,
               std::vector<connection_view>& out);

  // Forgets clients not seen for client_expiry_ns. Returns how many were dropped.
  size_t expire_clients(uint64_t now_ns);

  client_registry_stats stats() const;

private:
  struct client_state {
    uint64_t cursor = 0; // sequence number of the next closed record to hand out
    uint64_t last_seen_ns = 0;
    std::unordered_map<uint64_t, conn_counters> last; // by socket cookie
  };

  void trim();

  client_registry_limits limits_;
  std::deque<nl_conn> closed_;
  uint64_t closed_base_seq_ = 0; // sequence number of closed_.front()
  std::unordered_map<std::string, client_state> clients_;
  client_registry_stats stats_;
};

conn_counters counters_of(const nl_conn& c);

} // namespace netlens
