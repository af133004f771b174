// Messages per second of one actor, from successive readings of its handled-message counter.
// Readings closer together than min_interval keep the previous rate: two readers (the console's
// `top` and a /metrics scrape) asking a few ms apart would otherwise see rates made of noise.
#pragma once

#include <chrono>
#include <cstdint>

namespace netlens {

class message_rate {
public:
  using clock = std::chrono::steady_clock;

  explicit message_rate(clock::duration min_interval = std::chrono::milliseconds(500))
      : min_interval_(min_interval) {}

  // The rate over the last interval at least min_interval long; 0 until there is one. A
  // counter that went backwards (a restarted actor counts from zero) starts over.
  double update(uint64_t count, clock::time_point now) {
    if (!have_reading_ || count < count_) {
      have_reading_ = true;
      count_ = count;
      at_ = now;
      rate_ = 0;
      return rate_;
    }
    auto elapsed = now - at_;
    if (elapsed < min_interval_)
      return rate_;
    rate_ = static_cast<double>(count - count_) / std::chrono::duration<double>(elapsed).count();
    count_ = count;
    at_ = now;
    return rate_;
  }

  void reset() { have_reading_ = false; }

private:
  clock::duration min_interval_;
  bool have_reading_ = false;
  uint64_t count_ = 0;
  clock::time_point at_{};
  double rate_ = 0;
};

} // namespace netlens
