#include "actors/conntrack/rate_sampler.hpp"

#include <algorithm>
#include <utility>

namespace netlens {

rate_sampler::rate_sampler(int64_t limit_per_s, clock_fn clock)
    : limit_(limit_per_s), clock_(std::move(clock)), window_start_(clock_()) {}

void rate_sampler::roll(uint64_t now) {
  if (now < window_start_ + k_window_ns)
    return;
  const uint64_t windows = (now - window_start_) / k_window_ns;
  // Each window is one second long, so its count is its rate.
  const auto events = static_cast<double>(window_events_);
  const auto offered = static_cast<double>(window_offered_);
  if (!measured_) {
    rate_ = events;
    offered_rate_ = offered;
    measured_ = true;
  } else {
    rate_ = k_alpha * events + (1 - k_alpha) * rate_;
    offered_rate_ = k_alpha * offered + (1 - k_alpha) * offered_rate_;
  }
  last_percent_ = window_offered_ ? 100.0 * static_cast<double>(window_kept_) / offered : 100.0;
  // Windows that passed without any event each count as a zero.
  for (uint64_t i = 1; i < windows && i <= 64; ++i) {
    rate_ *= 1 - k_alpha;
    offered_rate_ *= 1 - k_alpha;
    last_percent_ = 100.0;
  }
  if (windows > 64)
    rate_ = offered_rate_ = 0;
  window_start_ += windows * k_window_ns;
  window_events_ = window_offered_ = window_kept_ = 0;

  if (limit_ < 0) {
    keep_fraction_ = 1;
    return;
  }
  // The larger of the smoothed rate and the last window's: a rising flood is sampled at once,
  // a falling one is let through gradually.
  const double rate = std::max(offered_rate_, windows == 1 ? offered : 0.0);
  const auto limit = static_cast<double>(limit_);
  keep_fraction_ = rate > limit ? limit / rate : 1.0;
}

bool rate_sampler::keep() {
  roll(clock_());
  ++seen_;
  ++window_events_;
  ++window_offered_;
  if (limit_ < 0) {
    ++window_kept_;
    return true;
  }
  // The cap holds the limit within the first window of a flood, before any rate is measured.
  bool kept = false;
  if (window_kept_ < static_cast<uint64_t>(limit_)) {
    credit_ += keep_fraction_;
    if (credit_ >= 1.0) {
      credit_ -= 1.0;
      kept = true;
    }
  }
  if (kept)
    ++window_kept_;
  else
    ++dropped_;
  return kept;
}

void rate_sampler::set_limit(int64_t limit_per_s) {
  limit_ = limit_per_s;
  if (limit_ < 0) {
    keep_fraction_ = 1;
    return;
  }
  const auto limit = static_cast<double>(limit_);
  keep_fraction_ = measured_ && offered_rate_ > limit ? limit / offered_rate_ : 1.0;
}

void rate_sampler::observe() {
  roll(clock_());
  ++window_events_;
}

void rate_sampler::advance() {
  roll(clock_());
}

double rate_sampler::rate_per_s() const {
  return rate_;
}
double rate_sampler::sampling_percent() const {
  return last_percent_;
}
uint64_t rate_sampler::seen() const {
  return seen_;
}
uint64_t rate_sampler::dropped() const {
  return dropped_;
}

} // namespace netlens
