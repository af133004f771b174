// How many times a child may be restarted: at most `budget` restarts within a sliding window,
// each after a backoff that doubles with every restart still inside the window.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>

namespace netlens {

class restart_budget {
public:
  using clock = std::chrono::steady_clock;

  restart_budget(uint32_t budget, std::chrono::milliseconds window,
                 std::chrono::milliseconds first_backoff)
      : budget_(budget), window_(window), first_backoff_(first_backoff) {}

  // Records a crash at `now`; true if a restart is allowed.
  bool allow(clock::time_point now) {
    while (!recent_.empty() && now - recent_.front() > window_)
      recent_.pop_front();
    if (recent_.size() >= budget_)
      return false;
    recent_.push_back(now);
    return true;
  }

  // The delay before the restart just allowed: first_backoff * 2^(restarts in window - 1).
  std::chrono::milliseconds backoff() const {
    if (recent_.empty())
      return first_backoff_;
    size_t shift = recent_.size() - 1;
    if (shift > 16)
      shift = 16;
    return first_backoff_ * (int64_t{1} << shift);
  }

  uint32_t total() const { return total_; }
  void count_restart() { ++total_; }

private:
  uint32_t budget_;
  std::chrono::milliseconds window_;
  std::chrono::milliseconds first_backoff_;
  std::deque<clock::time_point> recent_;
  uint32_t total_ = 0;
};

} // namespace netlens
