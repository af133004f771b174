#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <vector>

#include "actors/conntrack/claim_waitlist.hpp"

using namespace netlens;

namespace {

constexpr uint64_t k_ms = 1'000'000ull;
constexpr uint64_t k_wait = 1000 * k_ms;
constexpr uint32_t k_own = 100; // the agent's namespace
constexpr uint32_t k_new = 200; // a namespace made after start

ct_endpoints v4(const char* src, uint16_t sport, const char* dst, uint16_t dport) {
  ct_endpoints e;
  REQUIRE(inet_pton(AF_INET, src, e.saddr) == 1);
  REQUIRE(inet_pton(AF_INET, dst, e.daddr) == 1);
  e.sport = sport;
  e.dport = dport;
  return e;
}

// 127.0.0.1:<port> -> 127.0.0.1:18181, DNAT'd to 127.0.0.1:19191 (the e2e test's rule).
ct_entry dnat(uint32_t netns, uint16_t port) {
  ct_entry e;
  e.netns = netns;
  e.family = AF_INET;
  e.protocol = IPPROTO_TCP;
  e.orig = v4("127.0.0.1", port, "127.0.0.1", 18181);
  e.reply = v4("127.0.0.1", 19191, "127.0.0.1", port);
  return e;
}

ct_tuple client_of(const ct_entry& e) {
  return tuple_of(e, e.orig);
}
ct_tuple server_of(const ct_entry& e) {
  return tuple_of(e, e.reply);
}

struct fixture {
  uint64_t now = 5000 * k_ms;
  conntrack_cache cache{1024, 120'000 * k_ms, [this] { return now; }};
  claim_waitlist waits{k_own, k_wait};
};

} // namespace

TEST_CASE("a claim for a ready namespace is answered at once", "[claim_waitlist]") {
  fixture f;
  const ct_entry own = dnat(k_own, 40000);
  f.cache.insert(own, true);
  auto r = f.waits.claim(f.cache, {client_of(own)}, f.now);
  REQUIRE_FALSE(r.ticket);
  REQUIRE(r.hits.size() == 1);
  CHECK(r.hits[0].first == 0);
  CHECK(r.hits[0].second == own.reply);

  // A namespace joined and dumped is ready too.
  f.waits.follow_namespaces();
  f.waits.joined(k_new);
  CHECK(f.waits.dumped(f.cache, k_new).empty());
  const ct_entry e = dnat(k_new, 40001);
  f.cache.insert(e, true);
  r = f.waits.claim(f.cache, {server_of(e), client_of(e)}, f.now);
  REQUIRE_FALSE(r.ticket);
  CHECK(r.hits.size() == 2);
  CHECK(f.waits.stats().waited == 0);
  CHECK_FALSE(f.waits.next_deadline_ns());
  // A marker has nothing to wait for.
  CHECK_FALSE(f.waits.marker());
}

TEST_CASE("a claim for a namespace not dumped yet gets its translation from the first dump",
          "[claim_waitlist]") {
  fixture f;
  f.waits.follow_namespaces();
  f.waits.joined(k_new);
  const ct_entry own = dnat(k_own, 40000);
  const ct_entry first = dnat(k_new, 40001); // made before the consumer subscribed
  f.cache.insert(own, true);

  // Index 0 is of the ready namespace: claimed now; 1 and 2 wait for the dump.
  auto r = f.waits.claim(f.cache, {client_of(own), client_of(first), server_of(first)}, f.now);
  REQUIRE(r.ticket);
  CHECK(r.hits.empty());
  CHECK(f.waits.stats().waited == 1);
  CHECK(f.waits.stats().pending == 1);
  CHECK(f.waits.next_deadline_ns() == f.now + k_wait);
  CHECK_FALSE(f.cache.lookup(client_of(own))); // claimed already: its key is gone

  // A marker (the tracer's empty lookup) sent after it waits behind it.
  auto marker = f.waits.marker();
  REQUIRE(marker);
  CHECK(*marker > *r.ticket);

  // The first dump lists the entry: the claim gets it, the marker follows.
  f.cache.insert(first, false);
  f.now += 20 * k_ms;
  auto answers = f.waits.dumped(f.cache, k_new);
  REQUIRE(answers.size() == 2);
  CHECK(answers[0].ticket == *r.ticket);
  REQUIRE(answers[0].hits.size() == 3);
  CHECK(answers[0].hits[0].first == 0);
  CHECK(answers[0].hits[0].second == own.reply);
  CHECK(answers[0].hits[1].first == 1);
  CHECK(answers[0].hits[1].second == first.reply);
  CHECK(answers[0].hits[2].first == 2);
  CHECK(answers[0].hits[2].second == first.orig);
  CHECK(answers[1].ticket == *marker);
  CHECK(answers[1].hits.empty());
  CHECK(f.waits.stats().pending == 0);
  CHECK(f.waits.stats().timed_out == 0);

  // Handed out once: both keys released, the entry is gone; nothing answers again.
  CHECK_FALSE(f.cache.lookup(client_of(first)));
  CHECK_FALSE(f.cache.lookup(server_of(first)));
  CHECK(f.cache.size() == 1); // own's server end has not closed
  CHECK(f.waits.expire(f.cache, f.now + 10 * k_wait).empty());
  CHECK(f.waits.close(&f.cache).empty());
  // The namespace is ready now: the next claim does not wait.
  const ct_entry later = dnat(k_new, 40002);
  f.cache.insert(later, true);
  r = f.waits.claim(f.cache, {client_of(later)}, f.now);
  CHECK_FALSE(r.ticket);
  CHECK(r.hits.size() == 1);
}

TEST_CASE("a claim whose namespace is not dumped in time is answered at the bound, counted",
          "[claim_waitlist]") {
  fixture f;
  f.waits.follow_namespaces();
  f.waits.joined(k_new);
  const ct_entry e = dnat(k_new, 40001);
  auto r = f.waits.claim(f.cache, {client_of(e)}, f.now);
  REQUIRE(r.ticket);

  CHECK(f.waits.expire(f.cache, f.now + k_wait - 1).empty());
  // An event brought the entry meanwhile: the answer at the bound carries what the cache holds.
  f.cache.insert(e, true);
  auto answers = f.waits.expire(f.cache, f.now + k_wait);
  REQUIRE(answers.size() == 1);
  CHECK(answers[0].ticket == *r.ticket);
  CHECK(answers[0].hits.size() == 1);
  CHECK(f.waits.stats().timed_out == 1);
  CHECK(f.waits.stats().waited == 1);
  CHECK(f.waits.stats().pending == 0);

  // Late: later claims for it no longer wait, until its dump arrives.
  const ct_entry second = dnat(k_new, 40002);
  r = f.waits.claim(f.cache, {client_of(second)}, f.now + k_wait);
  CHECK_FALSE(r.ticket);
  CHECK(r.hits.empty());
  CHECK(f.waits.dumped(f.cache, k_new).empty());
  CHECK(f.waits.stats().timed_out == 1);
}

TEST_CASE("a namespace not handed over yet waits only once namespaces are followed",
          "[claim_waitlist]") {
  fixture f;
  const ct_entry e = dnat(k_new, 40001);
  // The netns actor hands no namespace over (netns disabled): nothing to wait for.
  auto r = f.waits.claim(f.cache, {client_of(e)}, f.now);
  CHECK_FALSE(r.ticket);

  f.waits.follow_namespaces();
  r = f.waits.claim(f.cache, {client_of(e)}, f.now);
  REQUIRE(r.ticket);
  f.waits.joined(k_new); // the namespace arrives; its dump is on the way
  CHECK(f.waits.expire(f.cache, f.now + 1).empty());
  f.cache.insert(e, false);
  auto answers = f.waits.dumped(f.cache, k_new);
  REQUIRE(answers.size() == 1);
  REQUIRE(answers[0].hits.size() == 1);
  CHECK(answers[0].hits[0].second == e.reply);
  CHECK(f.waits.stats().timed_out == 0);
}

TEST_CASE("a tuple is claimed once however many claims wait for it", "[claim_waitlist]") {
  fixture f;
  f.waits.follow_namespaces();
  f.waits.joined(k_new);
  const ct_entry e = dnat(k_new, 40001);
  auto a = f.waits.claim(f.cache, {client_of(e)}, f.now);
  auto b = f.waits.claim(f.cache, {client_of(e)}, f.now + 1);
  REQUIRE(a.ticket);
  REQUIRE(b.ticket);
  f.cache.insert(e, false);
  auto answers = f.waits.dumped(f.cache, k_new);
  REQUIRE(answers.size() == 2);
  CHECK(answers[0].hits.size() == 1);
  CHECK(answers[1].hits.empty());
}

TEST_CASE("a namespace that will not be dumped frees its claims at once", "[claim_waitlist]") {
  fixture f;
  f.waits.follow_namespaces();
  f.waits.joined(k_new);
  const ct_entry e = dnat(k_new, 40001);
  auto r = f.waits.claim(f.cache, {client_of(e)}, f.now);
  REQUIRE(r.ticket);
  // Its consumer could not start: answered now, not counted as a timeout, and claims for it
  // stop waiting.
  auto answers = f.waits.abandoned(f.cache, k_new, false);
  REQUIRE(answers.size() == 1);
  CHECK(answers[0].ticket == *r.ticket);
  CHECK(f.waits.stats().timed_out == 0);
  CHECK_FALSE(f.waits.claim(f.cache, {client_of(e)}, f.now).ticket);

  // A namespace that left: its inode may come back as a new namespace, which waits again.
  f.waits.joined(k_new + 1);
  const ct_entry other = dnat(k_new + 1, 40002);
  r = f.waits.claim(f.cache, {client_of(other)}, f.now);
  REQUIRE(r.ticket);
  CHECK(f.waits.abandoned(f.cache, k_new + 1, true).size() == 1);
  CHECK(f.waits.claim(f.cache, {client_of(other)}, f.now).ticket);
}

TEST_CASE("waiting is bounded in number and ends at stop", "[claim_waitlist]") {
  uint64_t now = 0;
  conntrack_cache cache{1024, 120'000 * k_ms, [&] { return now; }};
  claim_waitlist waits{k_own, k_wait, 2};
  waits.follow_namespaces();
  const ct_entry e = dnat(k_new, 40001);
  CHECK(waits.claim(cache, {client_of(e)}, now).ticket);
  CHECK(waits.claim(cache, {client_of(e)}, now).ticket);
  CHECK_FALSE(waits.claim(cache, {client_of(e)}, now).ticket); // full: answered at once
  CHECK(waits.marker());
  cache.insert(e, true);
  auto answers = waits.close(&cache);
  REQUIRE(answers.size() == 3);
  CHECK(answers[0].hits.size() == 1);
  CHECK(answers[1].hits.empty());
  CHECK(waits.stats().pending == 0);
  CHECK_FALSE(waits.next_deadline_ns());
  // Stopped: no dump is coming, nothing waits any more.
  CHECK_FALSE(waits.claim(cache, {client_of(dnat(k_new, 40002))}, now).ticket);
  CHECK_FALSE(waits.marker());
}
