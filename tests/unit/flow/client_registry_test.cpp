#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "flow/client_registry.hpp"
#include "flow/idle_expiry.hpp"
#include "tests/support/conn_builder.hpp"

using namespace netlens;
using netlens::testing::make_conn;

namespace {

const connection_view* find(const std::vector<connection_view>& v, uint64_t cookie) {
  auto it = std::find_if(v.begin(), v.end(),
                         [&](const connection_view& x) { return x.conn.cookie == cookie; });
  return it == v.end() ? nullptr : &*it;
}

nl_conn with_bytes(nl_conn c, uint64_t sent, uint64_t recv) {
  c.bytes_sent = sent;
  c.bytes_recv = recv;
  c.packets_sent = sent / 10;
  c.packets_recv = recv / 10;
  return c;
}

} // namespace

TEST_CASE("each client gets the delta since its own previous call", "[registry]") {
  client_registry reg({1000, 1000000000ull});
  nl_conn a = make_conn(1, "10.0.0.1", 1000, "10.0.0.2", 80);
  std::vector<connection_view> out;

  reg.collect("x", {with_bytes(a, 100, 50)}, 1, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].last.bytes_sent == 100); // first sight: delta is everything
  CHECK(out[0].last.bytes_recv == 50);

  reg.collect("x", {with_bytes(a, 250, 80)}, 2, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].conn.bytes_sent == 250); // totals stay totals
  CHECK(out[0].last.bytes_sent == 150);
  CHECK(out[0].last.bytes_recv == 30);
  CHECK(out[0].last.packets_sent == 15);

  // A second client has its own history.
  reg.collect("y", {with_bytes(a, 250, 80)}, 3, out);
  CHECK(out[0].last.bytes_sent == 250);
}

TEST_CASE("a closed connection is reported exactly once per client", "[registry]") {
  client_registry reg({1000, 1000000000ull});
  nl_conn a = make_conn(1, "10.0.0.1", 1000, "10.0.0.2", 80);
  std::vector<connection_view> out;
  reg.collect("x", {with_bytes(a, 100, 0)}, 1, out);
  reg.collect("y", {}, 1, out);

  reg.add_closed({with_bytes(a, 300, 0)});
  reg.collect("x", {}, 2, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].closed);
  CHECK(out[0].last.bytes_sent == 200); // delta against what x saw while it was active
  reg.collect("x", {}, 3, out);
  CHECK(out.empty());

  reg.collect("y", {}, 4, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].last.bytes_sent == 300);
  reg.collect("y", {}, 5, out);
  CHECK(out.empty());
}

TEST_CASE("a connection both closed and still in the active read appears once, closed",
          "[registry]") {
  client_registry reg({1000, 1000000000ull});
  nl_conn a = make_conn(1, "10.0.0.1", 1000, "10.0.0.2", 80);
  std::vector<connection_view> out;
  reg.add_closed({with_bytes(a, 10, 10)});
  reg.collect("x", {with_bytes(a, 10, 10)}, 1, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].closed);
}

TEST_CASE("the closed buffer is bounded and counts what it drops", "[registry]") {
  client_registry reg({3, 1000000000ull});
  std::vector<connection_view> out;
  reg.collect("slow", {}, 1, out);
  std::vector<nl_conn> batch;
  for (uint64_t i = 1; i <= 5; ++i)
    batch.push_back(make_conn(i, "10.0.0.1", static_cast<uint16_t>(i), "10.0.0.2", 80));
  reg.add_closed(batch);
  CHECK(reg.stats().closed_dropped == 2);
  CHECK(reg.stats().closed_buffered == 3);
  reg.collect("slow", {}, 2, out);
  REQUIRE(out.size() == 3);
  CHECK(find(out, 1) == nullptr);
  CHECK(find(out, 3) != nullptr);
  CHECK(find(out, 5) != nullptr);
}

TEST_CASE("records every client has read are released", "[registry]") {
  client_registry reg({100, 1000000000ull});
  std::vector<connection_view> out;
  reg.collect("a", {}, 1, out);
  reg.collect("b", {}, 1, out);
  reg.add_closed({make_conn(1, "10.0.0.1", 1, "10.0.0.2", 2)});
  reg.collect("a", {}, 2, out);
  CHECK(reg.stats().closed_buffered == 1); // b has not read it yet
  reg.collect("b", {}, 2, out);
  CHECK(reg.stats().closed_buffered == 0);
}

TEST_CASE("clients not seen for the expiry are forgotten and stop holding records", "[registry]") {
  client_registry reg({100, 1000});
  std::vector<connection_view> out;
  reg.collect("gone", {}, 0, out);
  reg.collect("here", {}, 0, out);
  reg.add_closed({make_conn(1, "10.0.0.1", 1, "10.0.0.2", 2)});
  reg.collect("here", {}, 1500, out);
  CHECK(reg.expire_clients(1600) == 1);
  CHECK(reg.stats().clients == 1);
  CHECK(reg.stats().clients_expired == 1);
  CHECK(reg.stats().closed_buffered == 0);
}

TEST_CASE("per-client state does not keep connections that vanished", "[registry]") {
  client_registry reg({100, 1000000000ull});
  nl_conn a = make_conn(1, "10.0.0.1", 1000, "10.0.0.2", 80);
  std::vector<connection_view> out;
  reg.collect("x", {with_bytes(a, 100, 0)}, 1, out);
  reg.collect("x", {}, 2, out); // gone without a closed record (lost)
  reg.collect("x", {}, 3, out); // and not back in the answer after: forgotten
  reg.collect("x", {with_bytes(a, 100, 0)}, 4, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].last.bytes_sent == 100); // seen afresh, not as a zero delta
}

TEST_CASE("a connection that closes while an answer is read gets its exact delta with the next",
          "[registry]") {
  // Listed in one answer; gone from the map before the next answer's page reached it (so not
  // in that answer); its closed record then comes with the answer after: the delta is against
  // what the client saw, not the connection's whole total again.
  client_registry reg({100, 1000000000ull});
  nl_conn a = make_conn(1, "10.0.0.1", 1000, "10.0.0.2", 80);
  std::vector<connection_view> out;
  reg.collect("x", {with_bytes(a, 100, 0)}, 1, out);
  reg.collect("x", {}, 2, out);
  reg.add_closed({with_bytes(a, 130, 0)});
  reg.collect("x", {}, 3, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].closed);
  CHECK(out[0].last.bytes_sent == 30);
}

TEST_CASE("a new socket that reuses a sock_id starts from its own zero", "[registry]") {
  // raw_tp builds key sockets by their address, which the kernel reuses: the start time tells
  // the new connection from the old one.
  client_registry reg({100, 1000000000ull});
  nl_conn a = make_conn(1, "10.0.0.1", 1000, "10.0.0.2", 80);
  a.start_ns = 10;
  nl_conn b = make_conn(1, "10.0.0.1", 2000, "10.0.0.3", 80);
  b.start_ns = 20;
  std::vector<connection_view> out;
  reg.collect("x", {with_bytes(a, 100, 0)}, 1, out);
  reg.collect("x", {with_bytes(b, 40, 0)}, 2, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].last.bytes_sent == 40);
}

TEST_CASE("a paged answer is the whole answer, a page at a time", "[registry]") {
  // Two registries fed the same history: one answers whole, the other in pages of 3.
  client_registry whole({100, 1000000000ull}), paged({100, 1000000000ull});
  std::vector<nl_conn> active;
  for (uint64_t i = 1; i <= 10; ++i)
    active.push_back(with_bytes(
        make_conn(i, "10.0.0.1", static_cast<uint16_t>(1000 + i), "10.0.0.2", 80), i * 10, i));
  std::vector<nl_conn> closed;
  for (uint64_t i = 11; i <= 17; ++i)
    closed.push_back(with_bytes(
        make_conn(i, "10.0.0.1", static_cast<uint16_t>(1000 + i), "10.0.0.2", 80), i, 0));
  for (int round = 0; round < 2; ++round) {
    for (auto& c : active)
      c.bytes_sent += 5 * round;
    whole.add_closed(closed);
    paged.add_closed(closed);
    std::vector<connection_view> expected, got, page;
    bool more = whole.collect("x", active, 1, expected);
    uint64_t id = paged.begin_listing("x", 1);
    CHECK(id != 0);
    CHECK(paged.open_listings() == 1);
    int closed_pages = 0;
    for (bool left = true; left; ++closed_pages) {
      page.clear();
      left = paged.closed_page(id, 1, 3, page);
      CHECK(page.size() <= 3);
      got.insert(got.end(), page.begin(), page.end());
    }
    CHECK(closed_pages == 3); // 7 closed: 3 + 3 + 1
    for (size_t at = 0; at < active.size(); at += 3) {
      page.clear();
      paged.active_page(id, 1, active.data() + at, std::min<size_t>(3, active.size() - at), page);
      got.insert(got.end(), page.begin(), page.end());
    }
    CHECK(paged.end_listing(id) == more);
    CHECK(paged.open_listings() == 0);
    REQUIRE(got.size() == expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      CHECK(got[i].conn.sock_id == expected[i].conn.sock_id);
      CHECK(got[i].closed == expected[i].closed);
      CHECK(got[i].last.bytes_sent == expected[i].last.bytes_sent);
    }
    CHECK(paged.stats().closed_buffered == 0); // every record read: released
  }
}

TEST_CASE("a paged answer keeps its closed records until it hands them out", "[registry]") {
  client_registry reg({100, 1000000000ull});
  std::vector<connection_view> out;
  reg.add_closed(
      {make_conn(1, "10.0.0.1", 1, "10.0.0.2", 2), make_conn(2, "10.0.0.1", 2, "10.0.0.2", 2)});
  uint64_t id = reg.begin_listing("only", 1);
  // Another call by the same client must not release what the listing has yet to hand out.
  reg.collect("only", {}, 1, out);
  CHECK(out.empty());
  CHECK(reg.stats().closed_buffered == 2);
  out.clear();
  CHECK_FALSE(reg.closed_page(id, 1, 10, out));
  CHECK(out.size() == 2);
  reg.end_listing(id);
  CHECK(reg.stats().closed_buffered == 0);
}

TEST_CASE("a listing whose reader went away ends, and its unread closed ones wait for the next",
          "[registry]") {
  client_registry reg({100, 1000000000ull});
  std::vector<connection_view> out;
  reg.add_closed(
      {make_conn(1, "10.0.0.1", 1, "10.0.0.2", 2), make_conn(2, "10.0.0.1", 2, "10.0.0.2", 2)});
  uint64_t id = reg.begin_listing("c", 100);
  CHECK(reg.closed_page(id, 100, 1, out)); // one of two read, then the reader goes away
  CHECK(reg.expire_listings(100 + 500, 1000) == 0);
  CHECK(reg.expire_listings(100 + 2000, 1000) == 1);
  CHECK_FALSE(reg.has_listing(id));
  out.clear();
  reg.collect("c", {}, 2200, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].conn.sock_id == 2);
  CHECK(reg.stats().closed_buffered == 0);
}

TEST_CASE("deltas never go negative", "[registry]") {
  client_registry reg({100, 1000000000ull});
  nl_conn a = make_conn(1, "10.0.0.1", 1000, "10.0.0.2", 80);
  std::vector<connection_view> out;
  reg.collect("x", {with_bytes(a, 100, 0)}, 1, out);
  reg.collect("x", {with_bytes(a, 90, 0)}, 2, out);
  CHECK(out[0].last.bytes_sent == 0);
}

TEST_CASE("only UDP flows quiet for the idle timeout expire", "[registry]") {
  std::vector<nl_conn> active = {make_conn(1, "10.0.0.1", 1, "10.0.0.2", 53, 17),
                                 make_conn(2, "10.0.0.1", 2, "10.0.0.2", 53, 17),
                                 make_conn(3, "10.0.0.1", 3, "10.0.0.2", 80, 6)};
  active[0].last_ns = 100;
  active[1].last_ns = 900;
  active[2].last_ns = 0;
  auto idle = idle_udp_flows(active, 1000, 500);
  REQUIRE(idle.size() == 1);
  CHECK(idle[0]->cookie == 1);
}

TEST_CASE("closed records wait, unseen, until their translation is resolved", "[registry]") {
  client_registry reg({100, 1000000000ull});
  std::vector<connection_view> out;
  reg.collect("x", {}, 1, out);
  uint64_t first = reg.add_closed(
      {make_conn(1, "10.0.0.1", 1, "10.0.0.2", 2), make_conn(2, "10.0.0.1", 3, "10.0.0.2", 4)},
      true);
  reg.add_closed({make_conn(3, "10.0.0.1", 5, "10.0.0.2", 6)}); // after them, not pending
  reg.collect("x", {}, 2, out);
  CHECK(out.empty()); // nothing jumps the pending ones, so order and exactly-once hold

  ct_hit nat;
  nat.nat.sport = 8080;
  reg.resolve_nat(first, 2, {{1, nat}});
  reg.collect("x", {}, 3, out);
  REQUIRE(out.size() == 3);
  CHECK(out[0].conn.cookie == 1);
  CHECK_FALSE(out[0].has_nat);
  CHECK(out[1].conn.cookie == 2);
  CHECK(out[1].has_nat);
  CHECK(out[1].nat.sport == 8080);
  CHECK(out[2].conn.cookie == 3);
  reg.collect("x", {}, 4, out);
  CHECK(out.empty());
}

TEST_CASE("a resolution for records already dropped from the buffer is ignored", "[registry]") {
  client_registry reg({2, 1000000000ull});
  std::vector<connection_view> out;
  reg.collect("x", {}, 1, out);
  uint64_t first = reg.add_closed({make_conn(1, "10.0.0.1", 1, "10.0.0.2", 2)}, true);
  reg.add_closed({make_conn(2, "10.0.0.1", 3, "10.0.0.2", 4),
                  make_conn(3, "10.0.0.1", 5, "10.0.0.2", 6)}); // pushes the pending one out
  ct_hit nat;
  reg.resolve_nat(first, 1, {{0, nat}, {7, nat}}); // index 7 is out of the range: ignored
  reg.collect("x", {}, 2, out);
  REQUIRE(out.size() == 2);
  CHECK(out[0].conn.cookie == 2);
  CHECK_FALSE(out[0].has_nat);
}

TEST_CASE("a client that asks for at most n closed gets the rest in order on its next calls",
          "[registry]") {
  client_registry reg({1000, 1000000000ull});
  std::vector<nl_conn> closed;
  for (uint64_t i = 1; i <= 10; ++i)
    closed.push_back(make_conn(i, "10.0.0.1", static_cast<uint16_t>(1000 + i), "10.0.0.2", 80));
  std::vector<connection_view> out;
  reg.collect("api", {}, 0, out); // a second client, known before the closes
  reg.add_closed(closed);
  std::vector<uint64_t> seen;
  CHECK(reg.collect("exp", {}, 1, out, 4)); // more left
  REQUIRE(out.size() == 4);
  for (auto& v : out)
    seen.push_back(v.conn.cookie);
  CHECK(reg.collect("exp", {}, 2, out, 4));
  REQUIRE(out.size() == 4);
  for (auto& v : out)
    seen.push_back(v.conn.cookie);
  CHECK_FALSE(reg.collect("exp", {}, 3, out, 4)); // the last two: nothing left after them
  REQUIRE(out.size() == 2);
  for (auto& v : out)
    seen.push_back(v.conn.cookie);
  std::vector<uint64_t> want{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  CHECK(seen == want);
  // Another client is not limited: all ten at once.
  CHECK_FALSE(reg.collect("api", {}, 4, out));
  CHECK(out.size() == 10);
}

TEST_CASE("closed TCP connections that were never established are counted by why they failed",
          "[registry]") {
  client_registry reg({100, 1000000000ull});
  std::vector<nl_conn> batch;
  auto failed = [&](uint64_t id, uint8_t err) {
    nl_conn c = make_conn(id, "10.0.0.1", static_cast<uint16_t>(40000 + id), "10.0.0.2", 80);
    c.sk_err = err;
    batch.push_back(c);
  };
  failed(1, ECONNREFUSED);
  failed(2, ECONNREFUSED);
  failed(3, ETIMEDOUT);
  failed(4, 0);
  nl_conn ok = make_conn(5, "10.0.0.1", 40005, "10.0.0.2", 80);
  ok.flags = NL_FLAG_TCP_BASE_KNOWN;
  ok.sk_err = ECONNRESET; // reset after establishment: not a failed connect
  batch.push_back(ok);
  batch.push_back(make_conn(6, "10.0.0.1", 40006, "10.0.0.2", 53, 17)); // UDP: never "failed"
  reg.add_closed(batch);
  const auto& f = reg.stats().connect_failures;
  CHECK(f[static_cast<size_t>(connect_failure::refused)] == 2);
  CHECK(f[static_cast<size_t>(connect_failure::timeout)] == 1);
  CHECK(f[static_cast<size_t>(connect_failure::aborted)] == 1);
  CHECK(f[static_cast<size_t>(connect_failure::reset)] == 0);
  uint64_t total = 0;
  for (uint64_t n : f)
    total += n;
  CHECK(total == 4);
}

TEST_CASE("a closed per-peer flow of a wildcard-bound socket takes its translation's local "
          "address",
          "[registry]") {
  client_registry reg({4, 1000000000ull});
  std::vector<connection_view> out;
  reg.collect("x", {}, 1, out);
  nl_conn flow = make_conn(1, "0.0.0.0", 5353, "10.99.0.1", 40001);
  flow.protocol = IPPROTO_UDP;
  nl_conn untranslated = make_conn(2, "0.0.0.0", 5353, "10.99.0.7", 40002);
  untranslated.protocol = IPPROTO_UDP;
  uint64_t first = reg.add_closed({flow, untranslated}, true);
  ct_hit hit;
  hit.nat.sport = 40001;
  hit.nat.dport = 53;
  REQUIRE(inet_pton(AF_INET, "10.99.0.2", hit.local) == 1);
  reg.resolve_nat(first, 2, {{0, hit}});
  reg.collect("x", {}, 2, out);
  REQUIRE(out.size() == 2);
  CHECK(out[0].has_nat);
  CHECK(std::memcmp(out[0].conn.saddr, hit.local, 16) == 0);
  nl_conn want = flow;
  std::memcpy(want.saddr, hit.local, 16);
  CHECK(std::memcmp(&out[0].conn, &want, sizeof(nl_conn)) == 0); // nothing else changed
  CHECK_FALSE(out[1].has_nat);
  CHECK(std::memcmp(&out[1].conn, &untranslated, sizeof(nl_conn)) == 0);
}

TEST_CASE("a buffered closed record comes back whole, and its translation goes with it",
          "[registry]") {
  client_registry reg({2, 1000000000ull});
  std::vector<connection_view> out;
  reg.collect("x", {}, 1, out);
  nl_conn a = make_conn(1, "10.0.0.1", 1000, "10.0.0.2", 80);
  a.bytes_sent = 1234;
  a.bytes_recv = 5678;
  a.packets_sent = 9;
  a.packets_recv = 11;
  a.retransmits = 3;
  a.srtt_us = 250;
  a.pid = 4242;
  a.netns = 4026531840u;
  a.flags = NL_FLAG_TCP_BASE_KNOWN | NL_FLAG_FIN_SENT;
  a.sk_err = 111;
  a.parent_sock_id = 77;
  a.base_acked = 1; // the kernel's own: nothing reads them after the close
  a.base_received = 2;
  a.base_segs_out = 5;
  a.base_segs_in = 6;
  std::strncpy(a.comm, "closer", sizeof(a.comm));
  uint64_t first = reg.add_closed({a}, true);
  ct_hit nat;
  nat.nat.sport = 8080;
  nat.local[0] = 9; // a record that has its local address keeps it
  reg.resolve_nat(first, 1, {{0, nat}});
  CHECK(reg.stats().closed_translations == 1);
  reg.collect("x", {}, 2, out);
  REQUIRE(out.size() == 1);
  nl_conn want = a;
  want.base_acked = want.base_received = 0;
  want.base_segs_out = want.base_segs_in = 0;
  CHECK(std::memcmp(&out[0].conn, &want, sizeof(nl_conn)) == 0);
  CHECK(out[0].has_nat);
  CHECK(out[0].nat.sport == 8080);
  // Handed out to its only client: the record leaves the buffer, and its translation with it.
  CHECK(reg.stats().closed_buffered == 0);
  CHECK(reg.stats().closed_translations == 0);

  // Pushed out of the full buffer unread: the same.
  first = reg.add_closed({make_conn(2, "10.0.0.1", 1, "10.0.0.2", 2)}, true);
  reg.resolve_nat(first, 1, {{0, nat}});
  CHECK(reg.stats().closed_translations == 1);
  reg.add_closed(
      {make_conn(3, "10.0.0.1", 3, "10.0.0.2", 4), make_conn(4, "10.0.0.1", 5, "10.0.0.2", 6)});
  CHECK(reg.stats().closed_dropped == 1);
  CHECK(reg.stats().closed_translations == 0);
}
