// Cuts a session's byte stream into lines with a bound: a line longer than max_line_bytes is
// dropped as it arrives (never buffered whole) and reported once its newline comes, so the
// session can answer with an error and go on with the next line.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

namespace netlens {

struct line_event {
  bool too_long = false;
  std::string line;  // without the newline (and a trailing \r); empty when too_long
  size_t length = 0; // bytes the line had, newline excluded
};

class line_reader {
public:
  explicit line_reader(size_t max_line_bytes) : max_(max_line_bytes) {}

  void feed(std::string_view bytes) {
    for (char c : bytes) {
      if (c == '\n') {
        line_event ev;
        ev.length = length_;
        ev.too_long = discarding_;
        if (!discarding_) {
          if (!partial_.empty() && partial_.back() == '\r')
            partial_.pop_back();
          ev.line = std::move(partial_);
        }
        ready_.push_back(std::move(ev));
        partial_.clear();
        length_ = 0;
        discarding_ = false;
        continue;
      }
      ++length_;
      if (discarding_)
        continue;
      if (partial_.size() == max_) {
        discarding_ = true;
        partial_.clear();
        partial_.shrink_to_fit();
        continue;
      }
      partial_.push_back(c);
    }
  }

  // Input a command that waits for a key (top) must see: bytes already read from the socket
  // with its command line. Drops the first line waiting, or the partial one; false if none.
  bool take_pending() {
    if (!ready_.empty()) {
      ready_.pop_front();
      return true;
    }
    if (length_ == 0)
      return false;
    partial_.clear();
    length_ = 0;
    discarding_ = false;
    return true;
  }

  std::optional<line_event> next() {
    if (ready_.empty())
      return std::nullopt;
    line_event ev = std::move(ready_.front());
    ready_.pop_front();
    return ev;
  }

  size_t max_line_bytes() const { return max_; }

private:
  size_t max_;
  std::string partial_;
  size_t length_ = 0;
  bool discarding_ = false;
  std::deque<line_event> ready_;
};

} // namespace netlens
