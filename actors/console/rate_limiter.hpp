// A token bucket: at most `per_second` commands each second on average, with bursts of up to
// `per_second` at once. Time is passed in, so a test drives it without sleeping.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace netlens {

class rate_limiter {
public:
  using clock = std::chrono::steady_clock;

  rate_limiter(uint32_t per_second, clock::time_point now)
      : per_second_(std::max<uint32_t>(per_second, 1)), tokens_(per_second_), last_(now) {}

  // Takes one token when there is one.
  bool allow(clock::time_point now) {
    if (now > last_) {
      double earned = std::chrono::duration<double>(now - last_).count() * per_second_;
      tokens_ = std::min<double>(per_second_, tokens_ + earned);
      last_ = now;
    }
    if (tokens_ < 1.0)
      return false;
    tokens_ -= 1.0;
    return true;
  }

  uint32_t per_second() const { return per_second_; }

private:
  uint32_t per_second_;
  double tokens_;
  clock::time_point last_;
};

} // namespace netlens
