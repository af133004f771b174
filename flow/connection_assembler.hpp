// The connection assembler: the product's core. It joins what the kernel holds (the active
// map), what has closed (the client registry's buffer) and what conntrack translated into one
// client's answer, whole or a page at a time, and runs the tick that ends what the kernel
// cannot end itself: idle UDP flows, the peers' flows of closed UDP sockets, and TCP entries
// whose close was missed (reconciled against the kernel's socket tables).
//
// No CAF and no kernel: the map and the socket tables come through active_table and
// live_sockets. The tracer actor is the shell around it: it asks conntrack and the netns
// actor, and hands their answers here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "flow/active_table.hpp"
#include "flow/client_registry.hpp"
#include "flow/connection.hpp"
#include "flow/flow_key.hpp"
#include "flow/udp_peer_flows.hpp"

namespace netlens {

struct assembler_settings {
  client_registry_limits clients;
  uint64_t udp_idle_ns = 60ull * 1000000000ull;
  // A page of a paged answer, and of the tick's reads, holds at most this many connections
  // (~1.3 MB of views).
  uint32_t page_size = 4096;
  // Paged answers open at once; past this the oldest is ended (a reader that went away).
  size_t max_listings = 16;
  // A paged answer whose reader asks for no page this long is ended by the tick.
  uint64_t listing_idle_ns = 30ull * 1000000000ull;
  // A TCP entry in a closing state that has not moved for this long is checked against the
  // kernel's socket table: its close may have been missed.
  uint64_t verify_closing_after_ns = 30ull * 1000000000ull;
  // Closes of UDP sockets with peers' flows held before those flows are ended at once, not at
  // the next tick: each is a few bytes, but a client that makes a socket per query closes many.
  size_t udp_closes_held = 4096;
  // High bits of every listing id (e.g. the actor's id), so that ids stay unique across
  // restarts of whoever holds the assembler.
  uint64_t listing_id_prefix = 0;
};

struct assembler_stats {
  uint64_t idle_expired = 0;           // UDP flows ended by idle expiry
  uint64_t udp_peer_flows_ended = 0;   // peers' flows ended with their socket
  uint64_t pages_served = 0;           // pages of paged answers
  uint64_t tcp_reconciled = 0;         // entries whose close was missed, found gone
  uint64_t tcp_reconcile_failures = 0; // namespaces whose socket table could not be read
};

// What one tick ended, already admitted (admit_closed): buffered as it is. And what it could not
// do.
struct tick_result {
  std::vector<nl_conn> ended;
  uint64_t reconciled = 0;
  // "N stalled TCP entries of network namespace I: why" for each namespace not checked.
  std::vector<std::string> reconcile_failures;
};

// One page of a paged answer between its two halves: the closed views and the active entries
// read for it, which conntrack translates before finish_page makes their views.
struct page_read {
  connections_reply reply;
  std::vector<nl_conn> active;
  bool last = false;
};

class connection_assembler {
public:
  connection_assembler(active_table& table, live_sockets& sockets, assembler_settings s);

  // Closed records as the kernel reported them: the ones that are flows (an unconnected UDP
  // socket's own entry that counted nothing is none), with the peers' flows of closed sockets
  // appended when many such closes wait. The caller buffers what comes back.
  std::vector<nl_conn> admit_closed(std::vector<nl_conn> records);
  // Into the clients' buffer; nat_pending as client_registry::add_closed. Returns the first's
  // sequence number.
  uint64_t buffer_closed(const std::vector<nl_conn>& records, bool nat_pending) {
    return clients_.add_closed(records, nat_pending);
  }
  void resolve_nat(uint64_t first_seq, size_t n, const nat_hits& hits) {
    clients_.resolve_nat(first_seq, n, hits);
  }

  // Removes the peers' flows of every UDP socket closed since the last sweep from the map (one
  // read of it) and returns them, to be reported closed before an answer.
  std::vector<nl_conn> end_peer_flows();

  // A whole answer: the active map read at request time (empty socket entries dropped, the
  // family normalized), then the answer from it and the translations conntrack found for it
  // (null: none asked or none came). Telemetry is the caller's.
  std::vector<nl_conn> read_active();
  connections_reply answer(const std::string& client, size_t max_closed,
                           const std::vector<nl_conn>& active, const nat_hits* nat,
                           uint64_t now_ns);

  // A paged answer: open_listing returns its id (never 0) after ending idle ones and making
  // room. read_page fills the closed views for the next page and reads active entries after
  // them; finish_page makes their views with their translations (null: none) and, on the last
  // page, ends the listing. Both return false when the listing is unknown (ended, expired,
  // or never was); the caller answers that as an error.
  uint64_t open_listing(const std::string& client, uint64_t now_ns, size_t max_closed);
  bool read_page(uint64_t id, uint64_t now_ns, page_read& page);
  bool finish_page(uint64_t id, uint64_t now_ns, page_read& page, const nat_hits* nat);
  bool has_listing(uint64_t id) const { return pages_.count(id) != 0; }
  size_t open_listings() const { return pages_.size(); }

  // Expires clients and listings, and sweeps the map a page at a time: peers' flows of closed
  // sockets, idle UDP flows, and closing TCP entries the kernel no longer has.
  tick_result tick(uint64_t now_ns);

  const assembler_stats& stats() const { return stats_; }
  client_registry_stats client_stats() const { return clients_.stats(); }
  client_registry& clients() { return clients_; }

private:
  struct paged {
    uint64_t listing = 0; // the registry's
    active_cursor cursor;
    uint64_t entries = 0; // active connections read so far
  };

  void end_idle_listings(uint64_t now_ns, size_t room_for);
  void reconcile(const std::vector<nl_conn>& candidates, tick_result& out);

  active_table& table_;
  live_sockets& sockets_;
  assembler_settings settings_;
  client_registry clients_;
  udp_socket_closes udp_closes_;
  std::unordered_map<uint64_t, paged> pages_;
  std::vector<nl_conn> scratch_; // one page of the map, reused
  assembler_stats stats_;
};

// The translations (by index into active) set on the views of those connections among
// views[from...]; closed views are left alone.
void apply_nat(std::vector<connection_view>& views, size_t from, const std::vector<nl_conn>& active,
               const nat_hits& nat);

// A connection's lookup key: its namespace, family, protocol and endpoints.
ct_tuple tuple_of(const nl_conn& c);

} // namespace netlens
