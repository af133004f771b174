#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>

#include "flow/connection_assembler.hpp"
#include "tests/support/conn_builder.hpp"

using namespace netlens;
using netlens::testing::make_conn;

namespace {

constexpr uint64_t k_s = 1000000000ull;
constexpr uint8_t k_fin_wait1 = 4;

// The active map as a sorted table: pages in sock_id order, the cursor's token the next key.
class fake_table : public active_table {
public:
  std::map<uint64_t, nl_conn> entries;
  std::set<uint64_t> closed_meanwhile; // remove_active finds these gone (their close raced)
  mutable int refreshes = 0;
  mutable int pages = 0;

  void put(const nl_conn& c) { entries[c.sock_id] = c; }

  void read_active_page(active_cursor& cursor, std::vector<nl_conn>& out,
                        uint32_t max) const override {
    if (cursor.done)
      return;
    if (!cursor.started && cursor.refresh)
      ++refreshes;
    ++pages;
    auto it = cursor.started ? entries.lower_bound(cursor.token) : entries.begin();
    for (uint32_t n = 0; it != entries.end() && n < max; ++it, ++n)
      out.push_back(it->second);
    cursor.started = true;
    if (it == entries.end())
      cursor.done = true;
    else
      cursor.token = it->first;
  }
  bool remove_active(uint64_t sock_id) override {
    if (closed_meanwhile.count(sock_id))
      return false;
    return entries.erase(sock_id) != 0;
  }
};

// The kernel's socket tables: live cookies per namespace, or why one cannot be read.
class fake_sockets : public live_sockets {
public:
  std::map<uint32_t, live_cookies> tables;
  std::vector<uint32_t> asked;

  live_cookies tcp_cookies(uint32_t netns, const std::vector<const nl_conn*>&) override {
    asked.push_back(netns);
    auto it = tables.find(netns);
    if (it == tables.end())
      return std::string("no such namespace");
    return it->second;
  }
};

nl_conn tcp(uint64_t id, uint16_t sport, uint32_t netns = 1) {
  nl_conn c = make_conn(id, "10.0.0.1", sport, "10.0.0.2", 80);
  c.netns = netns;
  c.tcp_state = 1; // ESTABLISHED
  c.bytes_sent = 10 * id;
  c.last_ns = 100 * k_s;
  return c;
}

nl_conn udp(uint64_t id, uint16_t sport, uint64_t last_ns) {
  nl_conn c = make_conn(id, "10.0.0.1", sport, "10.0.0.3", 53, 17);
  c.netns = 1;
  c.bytes_sent = 40;
  c.packets_sent = 1;
  c.last_ns = last_ns;
  return c;
}

std::set<uint64_t> ids_of(const std::vector<connection_view>& views) {
  std::set<uint64_t> out;
  for (const auto& v : views)
    out.insert(v.conn.sock_id);
  return out;
}

std::set<uint64_t> ids_of(const std::vector<nl_conn>& conns) {
  std::set<uint64_t> out;
  for (const auto& c : conns)
    out.insert(c.sock_id);
  return out;
}

const connection_view& view_of(const std::vector<connection_view>& views, uint64_t id) {
  auto it = std::find_if(views.begin(), views.end(),
                         [&](const connection_view& v) { return v.conn.sock_id == id; });
  REQUIRE(it != views.end());
  return *it;
}

ct_hit translation(uint16_t port) {
  ct_hit h{};
  h.nat.saddr[0] = 192;
  h.nat.saddr[3] = 7;
  h.nat.sport = port;
  h.nat.dport = 4000;
  return h;
}

assembler_settings small_pages(uint32_t page_size) {
  assembler_settings s;
  s.clients = client_registry_limits{1000, 300 * k_s};
  s.page_size = page_size;
  return s;
}

} // namespace

TEST_CASE("a whole answer holds each active and closed connection once, NAT on its own",
          "[assembler]") {
  fake_table table;
  fake_sockets sockets;
  connection_assembler flows(table, sockets, small_pages(4096));
  table.put(tcp(1, 1001));
  table.put(tcp(2, 1002));
  // Connection 3 closed: its record comes from the kernel, and it is no longer in the map.
  flows.buffer_closed(flows.admit_closed({tcp(3, 1003)}), false);

  std::vector<nl_conn> active = flows.read_active();
  CHECK(table.refreshes == 1); // an answer brings the live TCP counters in first
  REQUIRE(active.size() == 2);
  // Conntrack found a translation for the second connection read only.
  uint32_t translated = active[1].sock_id == 2 ? 1 : 0;
  nat_hits nat{{translated, translation(5555)}};
  connections_reply reply = flows.answer("x", SIZE_MAX, active, &nat, 200 * k_s);

  CHECK(reply.connections.size() == 3);
  CHECK(ids_of(reply.connections) == std::set<uint64_t>{1, 2, 3});
  CHECK(view_of(reply.connections, 3).closed);
  CHECK_FALSE(view_of(reply.connections, 1).has_nat);
  const connection_view& two = view_of(reply.connections, 2);
  CHECK(two.has_nat);
  CHECK(two.nat.sport == 5555);
  CHECK(two.last.bytes_sent == 20); // first sight for this client: all of it
  CHECK_FALSE(reply.more_closed);

  // The closed one is handed out once.
  reply = flows.answer("x", SIZE_MAX, flows.read_active(), nullptr, 201 * k_s);
  CHECK(ids_of(reply.connections) == std::set<uint64_t>{1, 2});
}

TEST_CASE("an active per-peer flow of a wildcard-bound socket takes its translation's local "
          "address",
          "[assembler]") {
  fake_table table;
  fake_sockets sockets;
  connection_assembler flows(table, sockets, small_pages(4096));
  nl_conn wild = udp(1, 5353, 100 * k_s);
  std::memset(wild.saddr, 0, sizeof wild.saddr);
  table.put(wild);
  table.put(tcp(2, 1002));
  std::vector<nl_conn> active = flows.read_active();
  REQUIRE(active.size() == 2);
  nat_hits nat;
  for (uint32_t i = 0; i < 2; ++i) {
    ct_hit h = translation(static_cast<uint16_t>(6000 + active[i].sock_id));
    h.local[0] = 192; // what the cache found each one under
    h.local[3] = static_cast<uint8_t>(active[i].sock_id);
    nat.emplace_back(i, h);
  }
  connections_reply reply = flows.answer("x", SIZE_MAX, active, &nat, 200 * k_s);
  const connection_view& one = view_of(reply.connections, 1);
  CHECK(one.has_nat);
  CHECK(one.nat.sport == 6001);
  const uint8_t filled[16] = {192, 0, 0, 1};
  CHECK(std::memcmp(one.conn.saddr, filled, 16) == 0);
  // A connection with a local address keeps its own.
  const connection_view& two = view_of(reply.connections, 2);
  CHECK(two.nat.sport == 6002);
  CHECK(std::memcmp(two.conn.saddr, tcp(2, 1002).saddr, 16) == 0);
}

TEST_CASE("a paged answer holds what a whole one does, a bounded page at a time", "[assembler]") {
  fake_table table;
  fake_sockets sockets;
  assembler_settings s = small_pages(3);
  s.listing_id_prefix = uint64_t{7} << 32;
  connection_assembler flows(table, sockets, s);
  for (uint64_t id = 1; id <= 7; ++id)
    table.put(tcp(id, static_cast<uint16_t>(1000 + id)));
  flows.buffer_closed({tcp(20, 2000), tcp(21, 2001)}, false);

  uint64_t id = flows.open_listing("x", 100 * k_s, SIZE_MAX);
  CHECK((id >> 32) == 7);
  CHECK((id & 0xffffffffu) != 0);
  std::set<uint64_t> seen;
  size_t handed = 0, pages = 0, translated = 0, pages_with_active = 0;
  bool last = false;
  uint64_t map_entries = 0;
  while (!last) {
    page_read page;
    REQUIRE(flows.read_page(id, 100 * k_s, page));
    // Translate whatever active connection this page read first.
    nat_hits nat;
    if (!page.active.empty()) {
      nat.emplace_back(0, translation(static_cast<uint16_t>(page.active[0].sock_id)));
      ++pages_with_active;
    }
    REQUIRE(flows.finish_page(id, 100 * k_s, page, &nat));
    CHECK(page.reply.connections.size() <= 3);
    CHECK(page.reply.listing == id);
    for (const auto& v : page.reply.connections) {
      seen.insert(v.conn.sock_id);
      if (v.has_nat) {
        CHECK(v.nat.sport == v.conn.sock_id);
        ++translated;
      }
    }
    handed += page.reply.connections.size();
    last = page.reply.last;
    if (last)
      for (const auto& [name, value] : page.reply.telemetry)
        if (name == "map_entries")
          map_entries = value;
    ++pages;
    REQUIRE(pages < 10);
  }
  CHECK(handed == 9); // nothing twice
  CHECK(translated == pages_with_active);
  CHECK(pages_with_active >= 3);
  CHECK(seen == std::set<uint64_t>{1, 2, 3, 4, 5, 6, 7, 20, 21});
  CHECK(pages >= 3);
  CHECK(map_entries == 7);
  CHECK(flows.stats().pages_served == pages);
  // The last page ended the listing.
  page_read after;
  CHECK_FALSE(flows.read_page(id, 100 * k_s, after));
  CHECK(flows.open_listings() == 0);
}

TEST_CASE("listings past the bound end the oldest, and an idle one ends at the tick",
          "[assembler]") {
  fake_table table;
  fake_sockets sockets;
  assembler_settings s = small_pages(2);
  s.max_listings = 2;
  s.listing_idle_ns = 30 * k_s;
  connection_assembler flows(table, sockets, s);
  table.put(tcp(1, 1001));
  uint64_t a = flows.open_listing("x", 100 * k_s, SIZE_MAX);
  uint64_t b = flows.open_listing("y", 100 * k_s, SIZE_MAX);
  uint64_t c = flows.open_listing("z", 100 * k_s, SIZE_MAX);
  CHECK_FALSE(flows.has_listing(a));
  CHECK(flows.has_listing(b));
  CHECK(flows.has_listing(c));

  page_read page;
  CHECK_FALSE(flows.read_page(a, 100 * k_s, page)); // the caller answers "unknown listing"
  REQUIRE(flows.read_page(c, 120 * k_s, page));     // c is read on: not idle
  flows.tick(140 * k_s);
  CHECK_FALSE(flows.has_listing(b));
  CHECK(flows.has_listing(c));
}

TEST_CASE("the tick ends idle UDP flows and nothing else, and takes them out of the map",
          "[assembler]") {
  fake_table table;
  fake_sockets sockets;
  assembler_settings s = small_pages(2);
  s.udp_idle_ns = 60 * k_s;
  connection_assembler flows(table, sockets, s);
  table.put(udp(1, 5001, 10 * k_s)); // quiet for 90 s
  table.put(udp(2, 5002, 80 * k_s)); // quiet for 20 s
  nl_conn old_tcp = tcp(3, 1003);
  old_tcp.last_ns = 1 * k_s; // TCP ends by its own close, never by idling
  table.put(old_tcp);
  table.put(udp(4, 5004, 20 * k_s));
  table.closed_meanwhile.insert(4); // its socket closed just now: its record is on the way

  tick_result r = flows.tick(100 * k_s);
  CHECK(table.refreshes == 0); // the tick needs no live TCP counters
  REQUIRE(r.ended.size() == 1);
  CHECK(r.ended[0].sock_id == 1);
  CHECK((r.ended[0].flags & NL_FLAG_IDLE_EXPIRED) != 0);
  CHECK(flows.stats().idle_expired == 1);
  CHECK(ids_of(flows.read_active()) == std::set<uint64_t>{2, 3, 4});
}

TEST_CASE("a closed UDP socket ends its peers' flows, before an answer or at the tick",
          "[assembler]") {
  fake_table table;
  fake_sockets sockets;
  connection_assembler flows(table, sockets, small_pages(2));
  // Socket 10 (unconnected) talked to two peers; each peer is a flow of its own.
  nl_conn socket_entry = udp(10, 6000, 50 * k_s);
  socket_entry.flags |= NL_FLAG_UDP_PEERS;
  socket_entry.bytes_sent = socket_entry.packets_sent = 0; // every datagram went to a peer
  for (uint64_t id : {11, 12}) {
    nl_conn peer = udp(id, 6000, 40 * k_s);
    peer.parent_sock_id = 10;
    peer.start_ns = 30 * k_s;
    table.put(peer);
  }
  table.put(tcp(1, 1001));

  // Its close: the empty socket entry is no flow of its own.
  CHECK(flows.admit_closed({socket_entry}).empty());
  std::vector<nl_conn> ended = flows.end_peer_flows();
  CHECK(ids_of(ended) == std::set<uint64_t>{11, 12});
  CHECK(flows.stats().udp_peer_flows_ended == 2);
  CHECK(ids_of(flows.read_active()) == std::set<uint64_t>{1});

  // A socket closed between two ticks: the tick ends its peers' flows, and only those that
  // started before the close (a later socket may have the same address on raw_tp builds).
  socket_entry.last_ns = 60 * k_s;
  nl_conn before = udp(13, 6000, 55 * k_s), after = udp(14, 6000, 70 * k_s);
  before.parent_sock_id = after.parent_sock_id = 10;
  before.start_ns = 55 * k_s;
  after.start_ns = 65 * k_s;
  table.put(before);
  table.put(after);
  CHECK(flows.admit_closed({socket_entry}).empty());
  tick_result r = flows.tick(71 * k_s);
  CHECK(ids_of(r.ended) == std::set<uint64_t>{13});
  CHECK((r.ended[0].flags & NL_FLAG_IDLE_EXPIRED) == 0);
}

TEST_CASE("many closed UDP sockets end their peers' flows at once, with the closed records",
          "[assembler]") {
  fake_table table;
  fake_sockets sockets;
  assembler_settings s = small_pages(16);
  s.udp_closes_held = 2;
  connection_assembler flows(table, sockets, s);
  std::vector<nl_conn> closes;
  for (uint64_t sock = 100; sock < 102; ++sock) {
    nl_conn entry = udp(sock, static_cast<uint16_t>(sock), 50 * k_s);
    entry.flags |= NL_FLAG_UDP_PEERS;
    entry.bytes_sent = entry.packets_sent = 0;
    closes.push_back(entry);
    nl_conn peer = udp(sock + 1000, static_cast<uint16_t>(sock), 40 * k_s);
    peer.parent_sock_id = sock;
    peer.start_ns = 10 * k_s;
    table.put(peer);
  }
  closes.push_back(tcp(1, 1001));
  std::vector<nl_conn> admitted = flows.admit_closed(closes);
  CHECK(ids_of(admitted) == std::set<uint64_t>{1, 1100, 1101});
  CHECK(table.entries.empty());
}

TEST_CASE("the tick reconciles closing TCP entries the kernel no longer has, in each namespace",
          "[assembler]") {
  fake_table table;
  fake_sockets sockets;
  connection_assembler flows(table, sockets, small_pages(2));
  auto closing = [](uint64_t id, uint32_t netns) {
    nl_conn c = tcp(id, static_cast<uint16_t>(1000 + id), netns);
    c.tcp_state = k_fin_wait1;
    c.last_ns = 10 * k_s; // unchanged for longer than verify_closing_after_ns at 100 s
    return c;
  };
  table.put(closing(1, 1)); // gone from namespace 1's socket table
  table.put(closing(2, 1)); // still there
  table.put(closing(3, 2)); // namespace 2's table cannot be read
  nl_conn recent = closing(4, 1);
  recent.last_ns = 90 * k_s; // moved 10 s ago: not checked yet
  table.put(recent);
  nl_conn no_cookie = closing(5, 1);
  no_cookie.cookie = 0; // a raw_tp entry whose socket has no cookie yet: checked next time
  table.put(no_cookie);
  sockets.tables[1] = std::unordered_set<uint64_t>{2};

  tick_result r = flows.tick(100 * k_s);
  REQUIRE(r.ended.size() == 1);
  CHECK(r.ended[0].sock_id == 1);
  CHECK((r.ended[0].flags & NL_FLAG_RECONCILED) != 0);
  CHECK(r.reconciled == 1);
  CHECK(flows.stats().tcp_reconciled == 1);
  CHECK(flows.stats().tcp_reconcile_failures == 1);
  REQUIRE(r.reconcile_failures.size() == 1);
  CHECK(r.reconcile_failures[0] ==
        "1 stalled TCP entries of network namespace 2: no such namespace");
  std::sort(sockets.asked.begin(), sockets.asked.end());
  CHECK(sockets.asked == std::vector<uint32_t>{1, 2}); // one read per namespace
  CHECK(ids_of(flows.read_active()) == std::set<uint64_t>{2, 3, 4, 5});
}
