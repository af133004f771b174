// The tracer's per-client state, as the reference agent keeps it: a bounded buffer of closed
// connections with one read cursor per client, and for each client the counters it saw last
// so every answer carries the delta since that client's previous call. No CAF, no kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/tracer/closed_ring.hpp"
#include "flow/connect_failure.hpp"
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
  // TCP connections that closed before they were established, by connect_failure.
  uint64_t connect_failures[k_connect_failure_kinds] = {};
};

class client_registry {
public:
  explicit client_registry(client_registry_limits limits) : limits_(limits) {}

  // Appends closed connections; past the bound the oldest are dropped and counted. Returns
  // the sequence number of the first. nat_pending: their NAT translation is being looked up;
  // no client is handed them (nor anything closed after them) until resolve_nat.
  uint64_t add_closed(const nl_conn* records, size_t n, bool nat_pending = false);
  uint64_t add_closed(const std::vector<nl_conn>& records, bool nat_pending = false) {
    return add_closed(records.data(), records.size(), nat_pending);
  }

  // The lookup for the n records from first_seq is over: hits are (index from first_seq,
  // translation); the others have none. Records already dropped are skipped.
  void resolve_nat(uint64_t first_seq, size_t n,
                   const std::vector<std::pair<uint32_t, ct_endpoints>>& hits);

  // The answer for one client: every closed connection it has not seen yet (once), up to the
  // first whose translation is still pending, then every active one not among them, each with
  // its delta since this client's previous call.
  // max_closed: hand out at most this many closed connections; the rest wait for the next call.
  // Returns true when some were left for it (the answer does not hold everything closed yet).
  bool collect(const std::string& client, const std::vector<nl_conn>& active, uint64_t now_ns,
               std::vector<connection_view>& out, size_t max_closed = SIZE_MAX);

  // Forgets clients not seen for client_expiry_ns. Returns how many were dropped.
  size_t expire_clients(uint64_t now_ns);

  client_registry_stats stats() const;

private:
  struct client_state {
    uint64_t cursor = 0; // sequence number of the next closed record to hand out
    uint64_t last_seen_ns = 0;
    std::unordered_map<uint64_t, conn_counters> last; // by sock_id
  };

  void trim();

  client_registry_limits limits_;
  struct closed_entry {
    nl_conn conn;
    ct_endpoints nat;
    bool has_nat = false;
    bool nat_pending = false;
  };

  closed_ring<closed_entry> closed_;
  uint64_t closed_base_seq_ = 0; // sequence number of closed_.front()
  std::unordered_map<std::string, client_state> clients_;
  client_registry_stats stats_;
};

conn_counters counters_of(const nl_conn& c);

} // namespace netlens
