// One phase of the ordered shutdown: who was asked, who answered, who did not, how long it
// took. Turned into the log line operators read.
#pragma once

#include <chrono>
#include <set>
#include <string>
#include <vector>

namespace netlens {

class phase_tracker {
public:
  using clock = std::chrono::steady_clock;

  phase_tracker(std::string phase, std::vector<std::string> asked, clock::time_point start)
      : phase_(std::move(phase)), waiting_(asked.begin(), asked.end()), start_(start) {}

  // Returns true when this answer completes the phase.
  bool answered(const std::string& who) {
    waiting_.erase(who);
    return waiting_.empty();
  }
  bool failed(const std::string& who, const std::string& why) {
    failures_.push_back(who + " (" + why + ")");
    waiting_.erase(who);
    return waiting_.empty();
  }
  bool done() const { return waiting_.empty(); }

  std::string summary(clock::time_point now) const {
    auto ms = std::chrono::duration_cast<std::chrono::microseconds>(now - start_).count() / 1000.0;
    std::string line = "shutdown phase " + phase_ + ": done in " + format_ms(ms) + " ms";
    if (!failures_.empty()) {
      line += "; no answer from:";
      for (const auto& f : failures_)
        line += " " + f;
    }
    return line;
  }

  uint64_t elapsed_us(clock::time_point now) const {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - start_).count());
  }
  const std::vector<std::string>& failures() const { return failures_; }
  const std::string& phase() const { return phase_; }
  bool clean() const { return failures_.empty(); }

private:
  static std::string format_ms(double ms) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", ms);
    return buf;
  }

  std::string phase_;
  std::set<std::string> waiting_;
  std::vector<std::string> failures_;
  clock::time_point start_;
};

} // namespace netlens
