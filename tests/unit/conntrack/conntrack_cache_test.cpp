#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "actors/conntrack/conntrack_cache.hpp"

using namespace netlens;

namespace {

constexpr uint64_t k_s = 1'000'000'000ull;
constexpr uint64_t k_ttl = 120 * k_s;

// A clock the test moves by hand.
struct fake_clock {
  uint64_t now = 1000 * k_s;
  conntrack_cache::clock_fn fn() {
    return [this] { return now; };
  }
};

ct_endpoints v4(const char* src, uint16_t sport, const char* dst, uint16_t dport) {
  ct_endpoints e;
  REQUIRE(inet_pton(AF_INET, src, e.saddr) == 1);
  REQUIRE(inet_pton(AF_INET, dst, e.daddr) == 1);
  e.sport = sport;
  e.dport = dport;
  return e;
}

ct_endpoints v6(const char* src, uint16_t sport, const char* dst, uint16_t dport) {
  ct_endpoints e;
  REQUIRE(inet_pton(AF_INET6, src, e.saddr) == 1);
  REQUIRE(inet_pton(AF_INET6, dst, e.daddr) == 1);
  e.sport = sport;
  e.dport = dport;
  return e;
}

ct_entry entry(const ct_endpoints& orig, const ct_endpoints& reply, uint32_t netns = 1,
               uint8_t family = AF_INET, uint8_t protocol = IPPROTO_TCP) {
  ct_entry e;
  e.netns = netns;
  e.family = family;
  e.protocol = protocol;
  e.orig = orig;
  e.reply = reply;
  return e;
}

// A container at 10.0.0.<i> talking to 1.2.3.4:443, SNAT'd to the host's 192.168.1.1:<40000+i>.
ct_entry snat(int i, uint32_t netns = 1) {
  const std::string local = "10.0.0." + std::to_string(i % 250 + 1);
  const auto port = static_cast<uint16_t>(30000 + i);
  return entry(v4(local.c_str(), port, "1.2.3.4", 443),
               v4("1.2.3.4", 443, "192.168.1.1", static_cast<uint16_t>(40000 + i)), netns);
}

ct_tuple orig_of(const ct_entry& e) {
  return tuple_of(e, e.orig);
}
ct_tuple reply_of(const ct_entry& e) {
  return tuple_of(e, e.reply);
}

bool present(conntrack_cache& c, const ct_entry& e) {
  return c.lookup(orig_of(e)).has_value();
}

} // namespace

TEST_CASE("a NAT'd entry answers by both tuples with the other direction", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  const ct_entry e = snat(1);
  c.insert(e, false);
  REQUIRE(c.size() == 1);

  auto by_orig = c.lookup(orig_of(e));
  REQUIRE(by_orig);
  CHECK(by_orig->nat == e.reply);
  auto by_reply = c.lookup(reply_of(e));
  REQUIRE(by_reply);
  CHECK(by_reply->nat == e.orig);

  // The reversed original is what a non-NAT'd reply would look like: not a key.
  CHECK_FALSE(c.lookup(tuple_of(e, reversed(e.orig))));
  const auto s = c.stats();
  CHECK(s.lookups_hit == 2);
  CHECK(s.lookups_miss == 1);
  CHECK(s.entries == 1);
  CHECK(s.inserted == 1);
}

TEST_CASE("entries without NAT are refused and counted", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  const ct_endpoints o = v4("10.0.0.1", 1234, "10.0.0.2", 80);
  c.insert(entry(o, reversed(o)), false);
  c.insert(entry(o, reversed(o)), true);
  CHECK(c.size() == 0);
  CHECK(c.stats().non_nat_skipped == 2);
  CHECK(c.stats().inserted == 0);
  CHECK_FALSE(c.lookup(tuple_of(entry(o, reversed(o)), o)));
}

TEST_CASE("the tuple's padding bytes are not part of the key", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  ct_entry e = snat(1);
  e.pad[0] = 0x55;
  c.insert(e, false);
  ct_tuple t = orig_of(snat(1));
  t.pad[1] = 0xaa;
  CHECK(c.lookup(t));
}

TEST_CASE("orphans from the event stream expire after the TTL", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  c.insert(snat(1), true);
  clk.now += 10 * k_s;
  c.insert(snat(2), true);
  CHECK(c.stats().orphans == 2);

  clk.now += k_ttl - 10 * k_s - 1; // 1 ns before the first expires
  CHECK(c.compact() == 0);
  CHECK(c.size() == 2);

  clk.now += 1;
  CHECK(c.compact() == 1);
  CHECK(c.size() == 1);
  CHECK(c.stats().orphans_expired == 1);
  CHECK(c.stats().orphans == 1);

  clk.now += 10 * k_s;
  CHECK(c.compact() == 1);
  CHECK(c.size() == 0);
  CHECK(c.stats().orphans_expired == 2);
  // Both keys went with it.
  CHECK_FALSE(c.lookup(orig_of(snat(1))));
  CHECK_FALSE(c.lookup(reply_of(snat(2))));
}

TEST_CASE("a lookup claims an orphan so it no longer expires", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  c.insert(snat(1), true);
  c.insert(snat(2), true);
  clk.now += k_s;
  REQUIRE(c.lookup(reply_of(snat(2)))); // by the reply tuple claims as well
  CHECK(c.stats().orphans == 1);

  clk.now += 10 * k_ttl;
  CHECK(c.compact() == 1);
  CHECK_FALSE(present(c, snat(1)));
  CHECK(present(c, snat(2)));

  // An event for a claimed entry does not make it an orphan again.
  c.insert(snat(2), true);
  CHECK(c.stats().orphans == 0);
  clk.now += 10 * k_ttl;
  CHECK(c.compact() == 0);
  CHECK(present(c, snat(2)));
}

TEST_CASE("dumped entries never expire, and a dump adopts an orphan", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  c.insert(snat(1), false);
  c.insert(snat(2), true);
  c.insert(snat(2), false); // the dump lists the orphan too
  CHECK(c.stats().orphans == 0);
  CHECK(c.stats().updated == 1);
  clk.now += 100 * k_ttl;
  CHECK(c.compact() == 0);
  CHECK(c.size() == 2);
}

TEST_CASE("a repeated event restarts an orphan's time to live", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  c.insert(snat(1), true);
  c.insert(snat(2), true);
  clk.now += k_ttl - k_s;
  c.insert(snat(1), true);
  CHECK(c.stats().orphans == 2);
  clk.now += k_s;
  CHECK(c.compact() == 1); // only snat(2)
  CHECK(present(c, snat(1)));
  CHECK_FALSE(present(c, snat(2)));
}

TEST_CASE("at capacity the least recently used entry goes first", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(3, k_ttl, clk.fn());
  CHECK(c.capacity() == 3);
  c.insert(snat(1), false);
  c.insert(snat(2), false);
  c.insert(snat(3), false);
  REQUIRE(c.lookup(reply_of(snat(1)))); // 1 is now the most recent; 2 is the oldest

  c.insert(snat(4), false);
  CHECK(c.size() == 3);
  CHECK(c.stats().evictions == 1);
  CHECK_FALSE(c.lookup(orig_of(snat(2))));
  CHECK_FALSE(c.lookup(reply_of(snat(2))));

  // Re-inserting refreshes as well: 3 becomes the most recent, 1 the oldest.
  c.insert(snat(3), true);
  c.insert(snat(5), false);
  CHECK(c.stats().evictions == 2);
  CHECK_FALSE(c.lookup(orig_of(snat(1))));
  CHECK(c.lookup(orig_of(snat(3))));
  CHECK(c.lookup(orig_of(snat(4))));
  CHECK(c.lookup(orig_of(snat(5))));
}

TEST_CASE("an evicted orphan leaves the orphan list", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(2, k_ttl, clk.fn());
  c.insert(snat(1), true);
  c.insert(snat(2), true);
  c.insert(snat(3), false);
  CHECK(c.stats().evictions == 1);
  CHECK(c.stats().orphans == 1);
  clk.now += k_ttl;
  CHECK(c.compact() == 1);
  CHECK(c.size() == 1);
  CHECK(present(c, snat(3)));
}

TEST_CASE("remove by either tuple removes both keys", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  c.insert(snat(1), true);
  c.insert(snat(2), false);

  CHECK(c.remove(reply_of(snat(1))));
  CHECK_FALSE(c.lookup(orig_of(snat(1))));
  CHECK_FALSE(c.lookup(reply_of(snat(1))));
  CHECK(c.stats().orphans == 0);

  CHECK(c.remove(orig_of(snat(2))));
  CHECK_FALSE(c.lookup(reply_of(snat(2))));
  CHECK_FALSE(c.remove(orig_of(snat(2))));
  CHECK(c.size() == 0);
  CHECK(c.stats().removed == 2);

  // The freed records are usable again.
  c.insert(snat(3), false);
  CHECK(present(c, snat(3)));
}

TEST_CASE("release gives up one side's key, the entry goes with the second side",
          "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  const ct_entry e = snat(1);
  c.insert(e, false);

  // The client end closes first: the server end on this host still finds its translation.
  CHECK(c.release(orig_of(e)));
  CHECK_FALSE(c.lookup(orig_of(e)));
  auto other = c.lookup(reply_of(e));
  REQUIRE(other);
  CHECK(other->nat == e.orig);
  CHECK(c.size() == 1);
  CHECK_FALSE(c.release(orig_of(e))); // already given up

  CHECK(c.release(reply_of(e)));
  CHECK(c.size() == 0);
  CHECK_FALSE(c.lookup(reply_of(e)));
  CHECK(c.stats().released == 2);

  // A half-released entry is still removed whole by its other key, and evicts cleanly. (A
  // destroy event names the entry by its original tuple; when that key was released, the
  // actor removes by the reply tuple.)
  c.insert(snat(6), false);
  CHECK(c.release(orig_of(snat(6))));
  CHECK_FALSE(c.remove(orig_of(snat(6))));
  CHECK(c.remove(reply_of(snat(6))));
  CHECK(c.size() == 0);
  c.insert(snat(2), true);
  CHECK(c.release(reply_of(snat(2))));
  CHECK(c.remove(orig_of(snat(2))));
  CHECK(c.size() == 0);
  CHECK(c.stats().orphans == 0);
  conntrack_cache small(2, k_ttl, clk.fn());
  small.insert(snat(3), false);
  CHECK(small.release(orig_of(snat(3))));
  small.insert(snat(4), false);
  small.insert(snat(5), false); // evicts the half-released snat(3)
  CHECK_FALSE(small.lookup(reply_of(snat(3))));
  CHECK(small.lookup(orig_of(snat(4))));
  CHECK(small.lookup(orig_of(snat(5))));
  CHECK(small.size() == 2);
}

TEST_CASE("purge empties the cache, keeps counters, and the orphan list works afterwards",
          "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(4, k_ttl, clk.fn());
  for (int i = 0; i < 6; ++i)
    c.insert(snat(i), i % 2 == 0);
  c.purge();
  CHECK(c.size() == 0);
  CHECK(c.stats().orphans == 0);
  CHECK(c.stats().inserted == 6);
  CHECK(c.stats().evictions == 2);
  for (int i = 0; i < 6; ++i)
    CHECK_FALSE(c.lookup(orig_of(snat(i))));

  c.insert(snat(10), true);
  c.insert(snat(11), false);
  CHECK(c.stats().orphans == 1);
  clk.now += k_ttl;
  CHECK(c.compact() == 1);
  CHECK_FALSE(present(c, snat(10)));
  CHECK(present(c, snat(11)));
  // Capacity is whole again after the purge.
  for (int i = 20; i < 24; ++i)
    c.insert(snat(i), false);
  CHECK(c.size() == 4);
  CHECK(c.stats().evictions == 3);
}

TEST_CASE("a resync sweeps only the unrefreshed entries of its namespace", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(64, k_ttl, clk.fn());
  for (int i = 0; i < 4; ++i) {
    c.insert(snat(i, 1), false);
    c.insert(snat(i, 2), i % 2 == 0);
  }
  c.begin_resync(1);
  c.insert(snat(0, 1), false); // in the new dump
  c.insert(snat(1, 1), true);  // an event during the dump counts too
  c.insert(snat(9, 1), false); // new
  c.insert(snat(3, 2), false); // another namespace: irrelevant
  CHECK(c.end_resync(1) == 2);
  CHECK(c.stats().swept == 2);

  CHECK(present(c, snat(0, 1)));
  CHECK(present(c, snat(1, 1)));
  CHECK_FALSE(present(c, snat(2, 1)));
  CHECK_FALSE(c.lookup(reply_of(snat(3, 1))));
  CHECK(present(c, snat(9, 1)));
  for (int i = 0; i < 4; ++i)
    CHECK(present(c, snat(i, 2)));

  // No resync in progress: nothing to sweep.
  CHECK(c.end_resync(2) == 0);
  CHECK(c.end_resync(1) == 0);
}

TEST_CASE("overlapping resyncs of two namespaces keep their own marks", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(64, k_ttl, clk.fn());
  c.insert(snat(1, 1), false);
  c.insert(snat(2, 1), false);
  c.insert(snat(1, 2), false);
  c.insert(snat(2, 2), false);
  c.begin_resync(1);
  c.insert(snat(1, 1), false);
  c.begin_resync(2);
  c.insert(snat(2, 1), false); // after begin(1) as well: refreshed for 1
  c.insert(snat(2, 2), false);
  CHECK(c.end_resync(1) == 0);
  CHECK(c.end_resync(2) == 1);
  CHECK_FALSE(present(c, snat(1, 2)));
  CHECK(c.size() == 3);
}

TEST_CASE("re-inserting an entry updates its reply", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  ct_entry e = snat(1);
  c.insert(e, false);
  const ct_tuple old_reply = reply_of(e);
  e.reply.dport = 50000;
  c.insert(e, false);
  CHECK(c.size() == 1);
  CHECK(c.stats().updated == 1);
  CHECK(c.stats().inserted == 1);
  CHECK_FALSE(c.lookup(old_reply));
  auto got = c.lookup(orig_of(e));
  REQUIRE(got);
  CHECK(got->nat.dport == 50000);
  auto back = c.lookup(reply_of(e));
  REQUIRE(back);
  CHECK(back->nat == e.orig);
}

TEST_CASE("a newer entry taking an older one's tuple removes the older one entirely",
          "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  const ct_entry a = snat(1);
  c.insert(a, true);

  SECTION("its reply tuple is the older entry's reply tuple") {
    ct_entry b = snat(2);
    b.reply = a.reply;
    c.insert(b, false);
    CHECK(c.size() == 1);
    CHECK(c.stats().displaced == 1);
    CHECK_FALSE(c.lookup(orig_of(a)));
    auto got = c.lookup(reply_of(b));
    REQUIRE(got);
    CHECK(got->nat == b.orig);
  }
  SECTION("its original tuple is the older entry's reply tuple") {
    const ct_entry b = entry(a.reply, v4("5.5.5.5", 1, "6.6.6.6", 2));
    c.insert(b, false);
    CHECK(c.size() == 1);
    CHECK_FALSE(c.lookup(orig_of(a)));
    auto got = c.lookup(orig_of(b));
    REQUIRE(got);
    CHECK(got->nat == b.reply);
  }
  SECTION("an update moves its reply onto another entry's original tuple") {
    const ct_entry b = snat(2);
    c.insert(b, false);
    ct_entry a2 = a;
    a2.reply = b.orig;
    c.insert(a2, false);
    CHECK(c.size() == 1);
    CHECK(c.stats().displaced == 1);
    CHECK_FALSE(c.lookup(reply_of(b)));
    auto got = c.lookup(orig_of(b)); // now a's reply tuple
    REQUIRE(got);
    CHECK(got->nat == a.orig);
  }
  // The orphan list never holds a dropped entry.
  clk.now += k_ttl;
  c.compact();
  CHECK(c.stats().orphans == 0);
}

TEST_CASE("v6 entries", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  const ct_entry e = entry(v6("fd00::1", 5000, "2001:db8::10", 443),
                           v6("2001:db8::10", 443, "2001:db8:ffff::1", 61000), 1, AF_INET6);
  c.insert(e, false);
  auto got = c.lookup(reply_of(e));
  REQUIRE(got);
  CHECK(got->nat == e.orig);
  // The same bytes under another family are another key.
  ct_tuple t = orig_of(e);
  t.family = AF_INET;
  CHECK_FALSE(c.lookup(t));
}

TEST_CASE("namespaces and protocols do not collide", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  ct_entry a = snat(1, 7);
  ct_entry b = snat(1, 8);
  b.reply.dport = 1111;
  ct_entry u = snat(1, 7);
  u.protocol = IPPROTO_UDP;
  u.reply.dport = 2222;
  c.insert(a, false);
  c.insert(b, false);
  c.insert(u, false);
  CHECK(c.size() == 3);
  auto reply_dport = [&](const ct_tuple& t) { return c.lookup(t).value_or(ct_hit{}).nat.dport; };
  CHECK(reply_dport(orig_of(a)) == a.reply.dport);
  CHECK(reply_dport(orig_of(b)) == 1111);
  CHECK(reply_dport(orig_of(u)) == 2222);
  CHECK(c.remove(orig_of(b)));
  CHECK(c.lookup(orig_of(a)));
  CHECK(c.lookup(orig_of(u)));
  ct_tuple other = orig_of(a);
  other.netns = 9;
  CHECK_FALSE(c.lookup(other));
}

TEST_CASE("an entry whose two tuples are equal is one key", "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  const ct_endpoints o = v4("10.0.0.1", 1, "10.0.0.2", 2);
  const ct_entry e = entry(o, o);
  c.insert(e, false);
  CHECK(c.size() == 1);
  CHECK(c.lookup(orig_of(e)).value_or(ct_hit{}).nat == o);
  CHECK(c.remove(orig_of(e)));
  CHECK(c.size() == 0);
  CHECK_FALSE(c.lookup(orig_of(e)));
}

TEST_CASE("a full cache under heavy churn keeps every key findable", "[conntrack_cache]") {
  // Many inserts and evictions through a small index: backward-shift deletion must never
  // strand a key behind a hole.
  fake_clock clk;
  conntrack_cache c(1000, k_ttl, clk.fn());
  for (int i = 0; i < 20000; ++i) {
    c.insert(snat(i), i % 3 == 0);
    if (i % 7 == 0 && i >= 3)
      c.remove(reply_of(snat(i - 3)));
  }
  size_t by_orig = 0, by_reply = 0;
  for (int i = 0; i < 20000; ++i) {
    by_orig += c.lookup(orig_of(snat(i))).has_value();
    by_reply += c.lookup(reply_of(snat(i))).has_value();
  }
  CHECK(c.size() == 999); // full, less the remove that followed the last insert (19999 % 7 == 0)
  CHECK(by_orig == c.size());
  CHECK(by_reply == c.size());
  // The newest entry was never removed nor evicted.
  CHECK(present(c, snat(19999)));
  CHECK(c.memory_bytes() > 1000 * sizeof(ct_entry));
}

TEST_CASE("entries only dumps have listed are counted until an event mentions them",
          "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(3, k_ttl, clk.fn());
  c.insert(snat(1), false);
  c.insert(snat(2), false);
  c.insert(snat(3), true);
  CHECK(c.dump_only_entries() == 2);
  c.insert(snat(1), false); // another dump: still only dumps
  CHECK(c.dump_only_entries() == 2);
  c.insert(snat(1), true); // an event: it has the event extension after all
  CHECK(c.dump_only_entries() == 1);
  c.insert(snat(1), false);
  CHECK(c.dump_only_entries() == 1);
  CHECK(c.remove(reply_of(snat(2))));
  CHECK(c.dump_only_entries() == 0);
  c.insert(snat(4), false);
  c.insert(snat(5), false); // evicts snat(3), which events had mentioned
  CHECK(c.dump_only_entries() == 2);
  c.insert(snat(6), false); // evicts snat(1)
  CHECK(c.dump_only_entries() == 3);
  c.begin_resync(1);
  CHECK(c.end_resync(1) == 3);
  CHECK(c.dump_only_entries() == 0);
  c.insert(snat(7), false);
  c.purge();
  CHECK(c.dump_only_entries() == 0);
}

TEST_CASE("a wildcard-bound UDP socket's per-peer flow finds its entry and its local address",
          "[conntrack_cache]") {
  fake_clock clk;
  conntrack_cache c(16, k_ttl, clk.fn());
  // A DNS server bound to 0.0.0.0:5353 behind a DNAT of 10.99.0.53:53, and a client at
  // 10.99.0.1:40001 that asked the virtual address.
  const ct_entry dns = entry(v4("10.99.0.1", 40001, "10.99.0.53", 53),
                             v4("10.99.0.2", 5353, "10.99.0.1", 40001), 1, AF_INET, IPPROTO_UDP);
  c.insert(dns, true);
  auto wildcard = [](ct_tuple t) {
    std::memset(t.ends.saddr, 0, sizeof t.ends.saddr);
    return t;
  };
  uint8_t server[16] = {}, client[16] = {};
  REQUIRE(inet_pton(AF_INET, "10.99.0.2", server) == 1);
  REQUIRE(inet_pton(AF_INET, "10.99.0.1", client) == 1);

  // The server's flow (0.0.0.0:5353 with peer 10.99.0.1:40001): the original direction, and
  // the address the client's datagrams reached.
  auto srv = c.lookup(wildcard(reply_of(dns)));
  REQUIRE(srv);
  CHECK(srv->nat == dns.orig);
  CHECK(std::memcmp(srv->local, server, 16) == 0);
  // A sender on a wildcard socket (0.0.0.0:40001 to 10.99.0.53:53): the reply direction.
  auto cli = c.lookup(wildcard(orig_of(dns)));
  REQUIRE(cli);
  CHECK(cli->nat == dns.reply);
  CHECK(std::memcmp(cli->local, client, 16) == 0);
  // An exact hit says the address asked.
  auto exact = c.lookup(reply_of(dns));
  REQUIRE(exact);
  CHECK(std::memcmp(exact->local, server, 16) == 0);
  CHECK(c.stats().lookups_wildcard == 2);

  // Only UDP keeps per-peer flows on a wildcard socket: a TCP tuple without its address misses.
  ct_entry tcp = dns;
  tcp.protocol = IPPROTO_TCP;
  c.insert(tcp, false);
  CHECK_FALSE(c.lookup(wildcard(reply_of(tcp))));
  CHECK(c.stats().lookups_wildcard == 2);
  CHECK(c.remove(orig_of(tcp)));
  ct_tuple other_ns = wildcard(reply_of(dns));
  other_ns.netns = 2;
  CHECK_FALSE(c.lookup(other_ns));

  // The server's close releases its key through the wildcard; the client's key stays.
  CHECK(c.holds(wildcard(reply_of(dns))));
  CHECK(c.release(wildcard(reply_of(dns))));
  CHECK_FALSE(c.holds(wildcard(reply_of(dns))));
  CHECK_FALSE(c.holds(reply_of(dns)));
  CHECK(c.holds(orig_of(dns)));
  CHECK(c.release(wildcard(orig_of(dns))));
  CHECK(c.size() == 0);

  // Two local addresses answered the same peer port: which one the flow is cannot be told.
  const ct_entry a = entry(v4("10.99.0.1", 40002, "10.99.0.53", 53),
                           v4("10.99.0.2", 5353, "10.99.0.1", 40002), 1, AF_INET, IPPROTO_UDP);
  const ct_entry b = entry(v4("10.99.0.1", 40002, "10.99.0.54", 53),
                           v4("10.99.0.3", 5353, "10.99.0.1", 40002), 1, AF_INET, IPPROTO_UDP);
  c.insert(a, false);
  c.insert(b, false);
  CHECK_FALSE(c.lookup(wildcard(reply_of(a))));
  CHECK(c.stats().lookups_ambiguous == 1);
  CHECK(c.lookup(reply_of(b))); // their own addresses still find them
  CHECK(c.remove(orig_of(a)));
  auto left = c.lookup(wildcard(reply_of(a)));
  REQUIRE(left);
  CHECK(left->nat == b.orig);
}

// --- randomized differential test against a plain reference model ---

namespace {

using model_key = std::tuple<uint32_t, uint8_t, uint8_t, std::string>;

model_key key_of(uint32_t netns, uint8_t family, uint8_t protocol, const ct_endpoints& ends) {
  return model_key{netns, family, protocol,
                   std::string(reinterpret_cast<const char*>(&ends), sizeof ends)};
}
model_key key_of(const ct_tuple& t) {
  return key_of(t.netns, t.family, t.protocol, t.ends);
}

// The rules of the issue written the obvious way: maps, a use stamp per entry, linear scans.
class reference_cache {
public:
  reference_cache(size_t cap, uint64_t ttl) : cap_(cap), ttl_(ttl) {}

  void insert(const ct_entry& e, bool from_events, uint64_t now) {
    if (!has_nat(e)) {
      ++s.non_nat_skipped;
      return;
    }
    const model_key ko = key_of(e.netns, e.family, e.protocol, e.orig);
    const model_key kr = key_of(e.netns, e.family, e.protocol, e.reply);
    auto hit = keys_.find(ko);
    if (hit != keys_.end() && hit->second.second == 0) {
      const int id = hit->second.first;
      rec& r = recs_[id];
      if (r.e.reply != e.reply) {
        erase_key(id, r.e.reply);
        r.e.reply = e.reply;
        r.reply_released = false;
        auto other = keys_.find(kr);
        if (other != keys_.end() && other->second.first != id) {
          drop(other->second.first);
          ++s.displaced;
        }
        keys_[kr] = {id, 1};
        keys_[ko] = {id, 0}; // when kr == ko the original key wins
      }
      r.used = ++clock_;
      r.gen = epoch_;
      r.evented = r.evented || from_events;
      if (r.orphan && !from_events)
        r.orphan = false;
      else if (r.orphan)
        r.deadline = now + ttl_;
      ++s.updated;
      return;
    }
    if (hit != keys_.end()) {
      drop(hit->second.first);
      ++s.displaced;
    }
    if (kr != ko) {
      auto other = keys_.find(kr);
      if (other != keys_.end()) {
        drop(other->second.first);
        ++s.displaced;
      }
    }
    if (recs_.size() == cap_) {
      int lru = recs_.begin()->first;
      for (auto& [id, r] : recs_)
        if (r.used < recs_[lru].used)
          lru = id;
      drop(lru);
      ++s.evictions;
    }
    const int id = next_id_++;
    recs_[id] = rec{e, ++clock_, from_events, now + ttl_, epoch_, from_events, false, false};
    keys_[kr] = {id, 1};
    keys_[ko] = {id, 0};
    ++s.inserted;
  }

  std::optional<ct_hit> lookup(const ct_tuple& t) {
    bool ambiguous = false;
    auto hit = locate(t, &ambiguous);
    if (hit == keys_.end()) {
      ++s.lookups_miss;
      s.lookups_ambiguous += ambiguous;
      return std::nullopt;
    }
    rec& r = recs_[hit->second.first];
    r.orphan = false;
    r.used = ++clock_;
    ++s.lookups_hit;
    ct_hit h;
    h.nat = hit->second.second == 0 ? r.e.reply : r.e.orig;
    const ct_endpoints& found = hit->second.second == 0 ? r.e.orig : r.e.reply;
    std::memcpy(h.local, found.saddr, 16);
    if (std::memcmp(found.saddr, t.ends.saddr, 16) != 0)
      ++s.lookups_wildcard;
    return h;
  }

  bool remove(const ct_tuple& t) {
    auto hit = locate(t);
    if (hit == keys_.end())
      return false;
    drop(hit->second.first);
    ++s.removed;
    return true;
  }

  bool release(const ct_tuple& t) {
    auto hit = locate(t);
    if (hit == keys_.end())
      return false;
    const auto [id, direction] = hit->second;
    rec& r = recs_[id];
    const bool other_gone = direction == 0 ? r.reply_released : r.orig_released;
    if (r.e.orig == r.e.reply || other_gone) {
      drop(id);
    } else {
      keys_.erase(hit);
      (direction == 0 ? r.orig_released : r.reply_released) = true;
    }
    ++s.released;
    return true;
  }

  size_t compact(uint64_t now) {
    std::vector<int> expired;
    for (auto& [id, r] : recs_)
      if (r.orphan && r.deadline <= now)
        expired.push_back(id);
    for (int id : expired)
      drop(id);
    s.orphans_expired += expired.size();
    return expired.size();
  }

  void purge() {
    recs_.clear();
    keys_.clear();
    marks_.clear();
  }

  void begin_resync(uint32_t netns) { marks_[netns] = ++epoch_; }
  size_t end_resync(uint32_t netns) {
    auto m = marks_.find(netns);
    if (m == marks_.end())
      return 0;
    std::vector<int> stale;
    for (auto& [id, r] : recs_)
      if (r.e.netns == netns && r.gen < m->second)
        stale.push_back(id);
    marks_.erase(m);
    for (int id : stale)
      drop(id);
    s.swept += stale.size();
    return stale.size();
  }

  size_t size() const { return recs_.size(); }
  size_t dump_only() const {
    size_t n = 0;
    for (auto& [id, r] : recs_)
      n += !r.evented;
    return n;
  }
  size_t orphans() const {
    size_t n = 0;
    for (auto& [id, r] : recs_)
      n += r.orphan;
    return n;
  }

  conntrack_cache_stats s;

private:
  struct rec {
    ct_entry e;
    uint64_t used;
    bool orphan;
    uint64_t deadline;
    uint64_t gen;
    bool evented; // an event has mentioned it
    bool orig_released, reply_released;
  };

  using key_map = std::map<model_key, std::pair<int, int>>; // key -> record, direction

  // The key t names, or for a UDP tuple without a source address that names none, the one
  // UDP key equal to it but for the source address (none when several are: *ambiguous).
  key_map::iterator locate(const ct_tuple& t, bool* ambiguous = nullptr) {
    auto hit = keys_.find(key_of(t));
    static const uint8_t zero[16] = {};
    if (hit != keys_.end() || t.protocol != IPPROTO_UDP || std::memcmp(t.ends.saddr, zero, 16))
      return hit;
    auto found = keys_.end();
    for (auto it = keys_.begin(); it != keys_.end(); ++it) {
      const ct_entry& e = recs_.at(it->second.first).e;
      const ct_endpoints& ends = it->second.second == 0 ? e.orig : e.reply;
      if (e.netns != t.netns || e.family != t.family || e.protocol != t.protocol ||
          ends.sport != t.ends.sport || ends.dport != t.ends.dport ||
          std::memcmp(ends.daddr, t.ends.daddr, 16) != 0)
        continue;
      if (found != keys_.end()) {
        if (ambiguous)
          *ambiguous = true;
        return keys_.end();
      }
      found = it;
    }
    return found;
  }

  // A record's key leaves the map only while the record holds it: a released key may have
  // gone to another record since.
  void erase_key(int id, const ct_endpoints& ends) {
    const ct_entry& e = recs_[id].e;
    auto it = keys_.find(key_of(e.netns, e.family, e.protocol, ends));
    if (it != keys_.end() && it->second.first == id)
      keys_.erase(it);
  }

  void drop(int id) {
    erase_key(id, recs_[id].e.orig);
    erase_key(id, recs_[id].e.reply);
    recs_.erase(id);
  }

  size_t cap_;
  uint64_t ttl_;
  uint64_t clock_ = 0;
  uint64_t epoch_ = 0;
  int next_id_ = 0;
  std::map<int, rec> recs_;
  key_map keys_;
  std::map<uint32_t, uint64_t> marks_;
};

// Endpoints from a small universe, so that tuples repeat and collide often.
ct_endpoints small_endpoints(std::mt19937& rng, bool six) {
  ct_endpoints e;
  auto addr = [&](uint8_t* a) {
    if (six) {
      a[0] = 0xfd;
      a[15] = static_cast<uint8_t>(1 + rng() % 3);
    } else {
      a[0] = 10;
      a[3] = static_cast<uint8_t>(1 + rng() % 3);
    }
  };
  addr(e.saddr);
  addr(e.daddr);
  e.sport = static_cast<uint16_t>(1 + rng() % 4);
  e.dport = static_cast<uint16_t>(1 + rng() % 4);
  return e;
}

ct_entry random_entry(std::mt19937& rng) {
  const bool six = rng() % 5 == 0;
  ct_entry e;
  e.netns = 1 + rng() % 2;
  e.family = six ? AF_INET6 : AF_INET;
  e.protocol = rng() % 4 == 0 ? IPPROTO_UDP : IPPROTO_TCP;
  e.orig = small_endpoints(rng, six);
  const unsigned shape = rng() % 10;
  if (shape == 0)
    e.reply = reversed(e.orig); // not NAT'd
  else if (shape == 1)
    e.reply = e.orig; // both tuples equal
  else
    e.reply = small_endpoints(rng, six);
  return e;
}

// A tuple of e to ask by: either direction, and a quarter of the time without its source
// address, as a wildcard-bound UDP socket's per-peer flow asks.
ct_tuple asked(std::mt19937& rng, const ct_entry& e) {
  ct_tuple t = rng() % 2 ? tuple_of(e, e.orig) : tuple_of(e, e.reply);
  if (rng() % 4 == 0)
    std::memset(t.ends.saddr, 0, sizeof t.ends.saddr);
  return t;
}

} // namespace

TEST_CASE("randomized operations agree with a reference model", "[conntrack_cache]") {
  uint64_t wildcard_hits = 0, ambiguous = 0; // the wildcard's paths were taken
  for (const size_t cap : {size_t{1}, size_t{7}, size_t{40}, size_t{300}}) {
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      CAPTURE(cap, seed);
      std::mt19937 rng(seed * 7919 + static_cast<uint32_t>(cap));
      fake_clock clk;
      const uint64_t ttl = 50;
      conntrack_cache c(cap, ttl, clk.fn());
      reference_cache ref(cap, ttl);
      std::vector<ct_entry> seen; // tuples to look up, remove and re-insert
      for (int step = 0; step < 6000; ++step) {
        CAPTURE(step);
        const unsigned op = rng() % 100;
        if (op < 40 || seen.empty()) {
          ct_entry e =
              !seen.empty() && rng() % 3 == 0 ? seen[rng() % seen.size()] : random_entry(rng);
          if (rng() % 4 == 0)
            e.reply = small_endpoints(rng, e.family == AF_INET6); // same flow, new reply
          const bool from_events = rng() % 2 == 0;
          c.insert(e, from_events);
          ref.insert(e, from_events, clk.now);
          seen.push_back(e);
          if (seen.size() > 200)
            seen.erase(seen.begin());
        } else if (op < 70) {
          const ct_tuple t = asked(rng, seen[rng() % seen.size()]);
          auto got = c.lookup(t);
          auto want = ref.lookup(t);
          REQUIRE(got.has_value() == want.has_value());
          if (got) {
            REQUIRE(got->nat == want->nat);
            REQUIRE(std::memcmp(got->local, want->local, 16) == 0);
          }
        } else if (op < 76) {
          const ct_tuple t = asked(rng, seen[rng() % seen.size()]);
          REQUIRE(c.release(t) == ref.release(t));
        } else if (op < 83) {
          const ct_tuple t = asked(rng, seen[rng() % seen.size()]);
          REQUIRE(c.remove(t) == ref.remove(t));
        } else if (op < 92) {
          clk.now += rng() % 20;
          REQUIRE(c.compact() == ref.compact(clk.now));
        } else if (op < 95) {
          const uint32_t ns = 1 + rng() % 2;
          c.begin_resync(ns);
          ref.begin_resync(ns);
        } else if (op < 99) {
          const uint32_t ns = 1 + rng() % 2;
          REQUIRE(c.end_resync(ns) == ref.end_resync(ns));
        } else {
          c.purge();
          ref.purge();
        }
        REQUIRE(c.size() == ref.size());
        const auto s = c.stats();
        REQUIRE(s.entries == ref.size());
        REQUIRE(s.orphans == ref.orphans());
        REQUIRE(c.dump_only_entries() == ref.dump_only());
        REQUIRE(s.inserted == ref.s.inserted);
        REQUIRE(s.updated == ref.s.updated);
        REQUIRE(s.non_nat_skipped == ref.s.non_nat_skipped);
        REQUIRE(s.evictions == ref.s.evictions);
        REQUIRE(s.displaced == ref.s.displaced);
        REQUIRE(s.removed == ref.s.removed);
        REQUIRE(s.orphans_expired == ref.s.orphans_expired);
        REQUIRE(s.swept == ref.s.swept);
        REQUIRE(s.lookups_hit == ref.s.lookups_hit);
        REQUIRE(s.lookups_miss == ref.s.lookups_miss);
        REQUIRE(s.lookups_wildcard == ref.s.lookups_wildcard);
        REQUIRE(s.lookups_ambiguous == ref.s.lookups_ambiguous);
        REQUIRE(s.released == ref.s.released);
      }
      wildcard_hits += c.stats().lookups_wildcard;
      ambiguous += c.stats().lookups_ambiguous;
      // Every key the model holds answers the same in the cache.
      for (const ct_entry& e : seen)
        for (const ct_tuple& t : {tuple_of(e, e.orig), tuple_of(e, e.reply)}) {
          auto got = c.lookup(t);
          auto want = ref.lookup(t);
          REQUIRE(got.has_value() == want.has_value());
          if (got)
            REQUIRE(got->nat == want->nat);
        }
    }
  }
  CAPTURE(wildcard_hits, ambiguous);
  CHECK(wildcard_hits > 100);
  CHECK(ambiguous > 5);
}
