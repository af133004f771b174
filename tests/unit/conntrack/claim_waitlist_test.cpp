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
  CHECK(r.hits[0].second.nat == own.reply);

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
  CHECK(answers[0].hits[0].second.nat == own.reply);
  CHECK(answers[0].hits[1].first == 1);
  CHECK(answers[0].hits[1].second.nat == first.reply);
  CHECK(answers[0].hits[2].first == 2);
  CHECK(answers[0].hits[2].second.nat == first.orig);
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
  CHECK(answers[0].hits[0].second.nat == e.reply);
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

namespace {

// The consumers, as the actor's sync_fn sees them: each request gets the next number; a
// namespace without a consumer gets 0.
struct fake_syncs {
  std::vector<std::pair<uint32_t, uint64_t>> asked;
  uint64_t next = 0;
  uint32_t without = 0; // a namespace with no consumer
  claim_waitlist::sync_fn fn() {
    return [this](uint32_t netns) -> uint64_t {
      if (netns == without)
        return 0;
      asked.emplace_back(netns, ++next);
      return next;
    };
  }
};

struct sync_fixture {
  uint64_t now = 5000 * k_ms;
  conntrack_cache cache{1024, 120'000 * k_ms, [this] { return now; }};
  fake_syncs syncs;
  claim_waitlist waits{k_own, k_wait, 4096, syncs.fn()};
};

} // namespace

TEST_CASE("a claim that misses waits for its consumer's sync and gets the entry its events "
          "bring",
          "[claim_waitlist]") {
  sync_fixture f;
  const ct_entry found = dnat(k_own, 40000);
  const ct_entry late = dnat(k_own, 40001); // its NEW event is still unread
  f.cache.insert(found, true);
  auto r = f.waits.claim(f.cache, {client_of(found), client_of(late)}, f.now);
  REQUIRE(r.ticket);
  CHECK(r.hits.empty());
  REQUIRE(f.syncs.asked.size() == 1);
  CHECK(f.syncs.asked[0] == std::make_pair(k_own, uint64_t{1}));
  CHECK(f.waits.stats().synced == 1);
  CHECK(f.waits.stats().waited == 0);
  CHECK_FALSE(f.cache.lookup(client_of(found))); // claimed at once all the same
  auto marker = f.waits.marker();
  REQUIRE(marker);

  // A sync asked for earlier, or another namespace's, answers nothing.
  CHECK(f.waits.synced(f.cache, k_own, 0).empty());
  CHECK(f.waits.synced(f.cache, k_new, 1).empty());
  // The event is read and applied, then the sync batch arrives.
  f.cache.insert(late, true);
  auto answers = f.waits.synced(f.cache, k_own, 1);
  REQUIRE(answers.size() == 2);
  CHECK(answers[0].ticket == *r.ticket);
  REQUIRE(answers[0].hits.size() == 2);
  CHECK(answers[0].hits[0].first == 0);
  CHECK(answers[0].hits[0].second.nat == found.reply);
  CHECK(answers[0].hits[1].first == 1);
  CHECK(answers[0].hits[1].second.nat == late.reply);
  CHECK(answers[1].ticket == *marker);
  CHECK(f.waits.stats().pending == 0);
  CHECK(f.waits.stats().timed_out == 0);
  CHECK_FALSE(f.cache.lookup(client_of(late))); // handed out once
}

TEST_CASE("a tuple that is not translated stays a miss after the sync, and a later sync answers "
          "earlier claims",
          "[claim_waitlist]") {
  sync_fixture f;
  const ct_entry plain = dnat(k_own, 40000); // never inserted: no NAT on it
  auto a = f.waits.claim(f.cache, {client_of(plain)}, f.now);
  auto b = f.waits.claim(f.cache, {server_of(plain)}, f.now);
  REQUIRE(a.ticket);
  REQUIRE(b.ticket);
  REQUIRE(f.syncs.asked.size() == 2);
  // The consumer answers the later request only (it read dry once for both).
  auto answers = f.waits.synced(f.cache, k_own, 2);
  REQUIRE(answers.size() == 2);
  CHECK(answers[0].hits.empty());
  CHECK(answers[1].hits.empty());
  CHECK(f.waits.stats().synced == 2);
}

TEST_CASE("a namespace without a consumer answers a miss at once", "[claim_waitlist]") {
  sync_fixture f;
  f.syncs.without = k_own;
  auto r = f.waits.claim(f.cache, {client_of(dnat(k_own, 40000))}, f.now);
  CHECK_FALSE(r.ticket);
  CHECK(r.hits.empty());
  CHECK(f.waits.stats().synced == 0);
  CHECK(f.waits.stats().pending == 0);
}

TEST_CASE("a first dump without a claim's entry is followed by a sync that brings it",
          "[claim_waitlist]") {
  sync_fixture f;
  f.waits.follow_namespaces();
  f.waits.joined(k_new);
  const ct_entry dumped = dnat(k_new, 40001); // listed by the dump
  const ct_entry after = dnat(k_new, 40002);  // made after the dump passed it: events only
  auto a = f.waits.claim(f.cache, {client_of(dumped)}, f.now);
  auto b = f.waits.claim(f.cache, {client_of(after)}, f.now);
  REQUIRE(a.ticket);
  REQUIRE(b.ticket);
  CHECK(f.syncs.asked.empty()); // waiting for the dump, not a sync
  CHECK(f.waits.stats().waited == 2);

  f.cache.insert(dumped, false);
  auto answers = f.waits.dumped(f.cache, k_new);
  // The first has its entry; the second waits for one sync, asked for after the dump is in.
  REQUIRE(answers.size() == 1);
  CHECK(answers[0].ticket == *a.ticket);
  CHECK(answers[0].hits.size() == 1);
  REQUIRE(f.syncs.asked.size() == 1);
  CHECK(f.syncs.asked[0].first == k_new);
  CHECK(f.waits.stats().synced == 1);

  f.cache.insert(after, true);
  answers = f.waits.synced(f.cache, k_new, f.syncs.asked[0].second);
  REQUIRE(answers.size() == 1);
  CHECK(answers[0].ticket == *b.ticket);
  REQUIRE(answers[0].hits.size() == 1);
  CHECK(answers[0].hits[0].second.nat == after.reply);
  CHECK(f.waits.stats().timed_out == 0);
}

TEST_CASE("a sync that never comes is answered at the bound, and the namespace stays ready",
          "[claim_waitlist]") {
  sync_fixture f;
  f.waits.follow_namespaces();
  f.waits.joined(k_new);
  CHECK(f.waits.dumped(f.cache, k_new).empty());
  const ct_entry e = dnat(k_new, 40001);
  auto r = f.waits.claim(f.cache, {client_of(e)}, f.now);
  REQUIRE(r.ticket);
  CHECK(f.waits.next_deadline_ns() == f.now + k_wait);
  f.cache.insert(e, true);
  auto answers = f.waits.expire(f.cache, f.now + k_wait);
  REQUIRE(answers.size() == 1);
  CHECK(answers[0].hits.size() == 1); // what the cache holds by then
  CHECK(f.waits.stats().timed_out == 1);
  // Still ready (not late): the next miss asks for a sync again.
  CHECK(f.waits.claim(f.cache, {client_of(dnat(k_new, 40002))}, f.now + k_wait).ticket);
  CHECK(f.syncs.asked.size() == 2);
  // Its consumer goes (the namespace left): what waits on it is answered now.
  answers = f.waits.abandoned(f.cache, k_new, true);
  CHECK(answers.size() == 1);
}

TEST_CASE("a lookup of an active connection that misses waits for the sync and takes nothing",
          "[claim_waitlist]") {
  sync_fixture f;
  const ct_entry e = dnat(k_own, 40000); // made a moment ago: its NEW event is unread
  auto r = f.waits.claim(f.cache, {client_of(e)}, f.now, false);
  REQUIRE(r.ticket);
  REQUIRE(f.syncs.asked.size() == 1);
  f.cache.insert(e, true);
  auto answers = f.waits.synced(f.cache, k_own, f.syncs.asked[0].second);
  REQUIRE(answers.size() == 1);
  REQUIRE(answers[0].hits.size() == 1);
  CHECK(answers[0].hits[0].second.nat == e.reply);
  // Still there for the next answer and for the claim at its close.
  CHECK(f.cache.holds(client_of(e)));
  r = f.waits.claim(f.cache, {client_of(e)}, f.now, false);
  CHECK_FALSE(r.ticket);
  CHECK(r.hits.size() == 1);
  CHECK(f.cache.holds(client_of(e)));
}
