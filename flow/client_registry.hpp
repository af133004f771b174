// The tracer's per-client state, as the reference agent keeps it: a bounded buffer of closed
// connections with one read cursor per client, and for each client the counters it saw last
// so every answer carries the delta since that client's previous call. No CAF, no kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "flow/closed_ring.hpp"
#include "flow/connect_failure.hpp"
#include "flow/connection.hpp"

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
  uint64_t closed_translations = 0; // NAT translations kept for buffered closed records
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
  // translation); the others have none. Records already dropped are skipped. A record without
  // a local address (a per-peer flow of a socket bound to the wildcard) takes the hit's.
  void resolve_nat(uint64_t first_seq, size_t n, const nat_hits& hits);

  // The answer for one client: every closed connection it has not seen yet (once), up to the
  // first whose translation is still pending, then every active one not among them, each with
  // its delta since this client's previous call.
  // max_closed: hand out at most this many closed connections; the rest wait for the next call.
  // Returns true when some were left for it (the answer does not hold everything closed yet).
  // The same as a listing read in one page.
  bool collect(const std::string& client, const std::vector<nl_conn>& active, uint64_t now_ns,
               std::vector<connection_view>& out, size_t max_closed = SIZE_MAX);

  // The same answer in pages, so that no one holds all of it at once (65,536 connections are
  // ~20 MB of views): begin_listing sets aside the closed connections the client has not seen
  // (up to max_closed) and returns the listing's id (never 0); closed_page hands them out, then
  // active_page gives the views of the active connections read for it, a page at a time;
  // end_listing closes it and says whether closed connections were left for the next call.
  // A connection not seen in an answer keeps its last counters for one more answer: it may
  // have closed while the listing was read, and its closed record then comes with the next.
  uint64_t begin_listing(const std::string& client, uint64_t now_ns, size_t max_closed = SIZE_MAX);
  // Appends up to max closed views; false once the listing has none left (or is unknown).
  bool closed_page(uint64_t listing, uint64_t now_ns, size_t max,
                   std::vector<connection_view>& out);
  // Appends a view for each of conns (active connections) not handed out closed in it.
  void active_page(uint64_t listing, uint64_t now_ns, const nl_conn* conns, size_t n,
                   std::vector<connection_view>& out);
  bool end_listing(uint64_t listing);
  bool has_listing(uint64_t listing) const { return listings_.count(listing) != 0; }
  size_t open_listings() const { return listings_.size(); }
  // Drops listings whose reader went away: not touched for idle_ns. Returns how many.
  size_t expire_listings(uint64_t now_ns, uint64_t idle_ns);

  // Forgets clients not seen for client_expiry_ns. Returns how many were dropped.
  size_t expire_clients(uint64_t now_ns);

  client_registry_stats stats() const;

private:
  // What a client saw of a connection in its answer number round. start_ns tells a new socket
  // that reused a raw_tp build's sock_id from the one before.
  struct seen {
    conn_counters counters;
    uint64_t start_ns = 0;
    uint64_t round = 0;
  };
  struct client_state {
    uint64_t cursor = 0; // sequence number of the next closed record to hand out
    uint64_t last_seen_ns = 0;
    uint64_t round = 0;                      // answers begun
    std::unordered_map<uint64_t, seen> last; // by sock_id
  };
  struct listing {
    std::string client;
    uint64_t round = 0;
    uint64_t next_seq = 0; // closed records [next_seq, end_seq) are still to hand out
    uint64_t end_seq = 0;
    bool more_closed = false;
    uint64_t touched_ns = 0;
    std::unordered_set<uint64_t> closed_ids; // handed out closed: not listed again as active
  };

  client_state& client(const std::string& name, uint64_t now_ns);
  listing* touch(uint64_t id, uint64_t now_ns);
  conn_counters delta_for(client_state& st, const nl_conn& c, uint64_t round);
  void trim();

  client_registry_limits limits_;
  // A closed record as the buffer keeps it, which may be every record of a mass close until its
  // clients ask (65,536 at 208 B each were 13.6 MB of the agent's peak): nl_conn packed without
  // the kernel's byte and segment bases (nothing reads them after the close), 152 B. The NAT
  // translation, which most closed connections lack, lives out of line (nat_, by sequence number).
  struct closed_entry {
    static constexpr size_t k_head = offsetof(nl_conn, base_acked);
    static constexpr size_t k_tail_at = offsetof(nl_conn, base_segs_in) + sizeof(uint32_t);
    static constexpr size_t k_tail = sizeof(nl_conn) - k_tail_at;
    unsigned char head[k_head];
    unsigned char tail[k_tail];
    bool has_nat = false;
    bool nat_pending = false;

    void pack(const nl_conn& c);
    nl_conn unpack() const; // the kernel's bases 0
    // The record's local address, when it has none (all zero).
    void fill_local(const uint8_t (&addr)[16]);
  };
  // Drops the n oldest records (and their translations).
  void pop_closed(size_t n);

  closed_ring<closed_entry> closed_;
  std::unordered_map<uint64_t, ct_endpoints> nat_; // of closed_ records that have one, by seq
  uint64_t closed_base_seq_ = 0;                   // sequence number of closed_.front()
  std::unordered_map<std::string, client_state> clients_;
  std::unordered_map<uint64_t, listing> listings_;
  uint64_t next_listing_ = 1;
  client_registry_stats stats_;
};

conn_counters counters_of(const nl_conn& c);

} // namespace netlens
