// The conntrack event rate sampler with a clock the test moves: the EWMA, the sampling down to
// the limit, and the percentage it reports.
#include <catch2/catch.hpp>

#include <cstdint>

#include "actors/conntrack/rate_sampler.hpp"

using namespace netlens;

namespace {

constexpr uint64_t k_second = 1'000'000'000;

struct fake_clock {
  uint64_t now = 5 * k_second;
  rate_sampler::clock_fn fn() {
    return [this] { return now; };
  }
};

// Offers `per_second` new-entry events evenly spread over `seconds`; returns how many were kept.
uint64_t offer(rate_sampler& s, fake_clock& c, uint64_t per_second, int seconds) {
  uint64_t kept = 0;
  const uint64_t step = k_second / per_second;
  for (uint64_t i = 0; i < per_second * static_cast<uint64_t>(seconds); ++i) {
    kept += s.keep() ? 1 : 0;
    c.now += step;
  }
  return kept;
}

} // namespace

TEST_CASE("without a limit every event is kept", "[rate_sampler]") {
  fake_clock c;
  rate_sampler s(-1, c.fn());
  CHECK(offer(s, c, 50'000, 3) == 150'000);
  CHECK(s.seen() == 150'000);
  CHECK(s.dropped() == 0);
  CHECK(s.sampling_percent() == Approx(100));
  CHECK(s.rate_per_s() == Approx(50'000).epsilon(0.01));
}

TEST_CASE("below the limit nothing is sampled", "[rate_sampler]") {
  fake_clock c;
  rate_sampler s(10'000, c.fn());
  CHECK(offer(s, c, 5'000, 5) == 25'000);
  CHECK(s.sampling_percent() == Approx(100));
}

TEST_CASE("at ten times the limit about a tenth is kept", "[rate_sampler]") {
  fake_clock c;
  rate_sampler s(1'000, c.fn());
  // The first second has no measured rate yet: the per-window cap alone holds the limit.
  uint64_t first = offer(s, c, 10'000, 1);
  CHECK(first <= 1'000);
  for (int second = 0; second < 10; ++second) {
    uint64_t kept = offer(s, c, 10'000, 1);
    INFO("second " << second);
    CHECK(kept >= 950);
    CHECK(kept <= 1'000);
  }
  CHECK(s.sampling_percent() == Approx(10).margin(0.5));
  CHECK(s.rate_per_s() == Approx(10'000).epsilon(0.01));
  CHECK(static_cast<double>(s.dropped()) / static_cast<double>(s.seen()) ==
        Approx(0.9).margin(0.01));
}

TEST_CASE("kept events are spread over the window, not bunched at its start", "[rate_sampler]") {
  fake_clock c;
  rate_sampler s(1'000, c.fn());
  offer(s, c, 10'000, 3);
  // The second half of a window keeps about as many as the first.
  uint64_t a = 0, b = 0;
  for (int i = 0; i < 10'000; ++i) {
    bool k = s.keep();
    (i < 5'000 ? a : b) += k ? 1 : 0;
    c.now += k_second / 10'000;
  }
  CHECK(a == Approx(500).margin(25));
  CHECK(b == Approx(500).margin(25));
}

TEST_CASE("the EWMA converges to a steady rate and follows a change", "[rate_sampler]") {
  fake_clock c;
  rate_sampler s(-1, c.fn());
  offer(s, c, 8'000, 6);
  CHECK(s.rate_per_s() == Approx(8'000).epsilon(0.01));
  offer(s, c, 2'000, 1);
  s.advance(); // closes that window: nothing else has happened since
  double after_one = s.rate_per_s();
  CHECK(after_one < 8'000);
  CHECK(after_one > 2'000); // smoothed, not jumping
  offer(s, c, 2'000, 10);
  CHECK(s.rate_per_s() == Approx(2'000).epsilon(0.01));
}

TEST_CASE("an idle stream's rate decays and the percentage returns to 100", "[rate_sampler]") {
  fake_clock c;
  rate_sampler s(100, c.fn());
  offer(s, c, 1'000, 4);
  CHECK(s.sampling_percent() < 20);
  c.now += 30 * k_second;
  s.advance();
  CHECK(s.rate_per_s() < 1);
  CHECK(s.sampling_percent() == Approx(100));
  // and a flood after the pause is sampled again
  offer(s, c, 1'000, 3);
  CHECK(s.sampling_percent() == Approx(10).margin(1));
}

TEST_CASE("destroy events count in the rate but are never sampled", "[rate_sampler]") {
  fake_clock c;
  rate_sampler s(100, c.fn());
  uint64_t kept = 0;
  for (int i = 0; i < 5 * 1'000; ++i) {
    s.observe(); // a destroy
    if (i % 20 == 0)
      kept += s.keep() ? 1 : 0; // 50 new entries a second: under the limit
    c.now += k_second / 1'000;
  }
  CHECK(kept == 250);
  CHECK(s.dropped() == 0);
  CHECK(s.rate_per_s() == Approx(1'050).epsilon(0.02));
}

TEST_CASE("a limit of zero keeps no new entries", "[rate_sampler]") {
  fake_clock c;
  rate_sampler s(0, c.fn());
  CHECK(offer(s, c, 1'000, 2) == 0);
  CHECK(s.sampling_percent() == Approx(0));
}

TEST_CASE("a new limit takes effect at once, in both directions", "[rate_sampler][reload]") {
  fake_clock c;
  rate_sampler s(-1, c.fn());
  CHECK(offer(s, c, 10'000, 3) == 30'000); // no limit: all of it
  s.set_limit(1'000);                      // a reload sets one mid-flood
  CHECK(s.limit() == 1'000);
  for (int second = 0; second < 3; ++second) {
    uint64_t kept = offer(s, c, 10'000, 1);
    INFO("second " << second << " after the limit was set");
    CHECK(kept <= 1'000);
    CHECK(kept >= 900);
  }
  s.set_limit(-1); // and lifts it
  CHECK(offer(s, c, 10'000, 2) == 20'000);
}
