// How the offset guesser retries: a try that finds every offset ends the guess; one that does
// not is followed by another, each with fresh sockets, up to max_tries (clamped to [1, 5]);
// when every try failed, the error says how many there were and why the last one failed.
// No kernel, no CAF: a test hands it tries that fail on purpose.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "actors/offset_guesser/scanner.hpp"

namespace netlens {

// What the tries came to: the offsets of the one that found them all, or the error.
struct retry_outcome {
  bool ok = false;
  nl_offsets offsets{}; // when ok
  uint32_t tries = 0;   // tries made, the good one included
  std::string error;    // when not ok
};

class retry_policy {
public:
  static constexpr uint32_t k_min_tries = 1;
  static constexpr uint32_t k_max_tries = 5;

  explicit retry_policy(uint32_t max_tries);

  uint32_t max_tries() const { return max_tries_; }

  // Whether another try follows `failed` tries that all failed.
  bool try_again(uint32_t failed) const { return failed < max_tries_; }

  // The error of a guess that gave up after `tries` tries; last: why the last one failed.
  static std::string give_up_text(uint32_t tries, const std::string& last);

  // Runs try_once until a try finds every offset or the tries are spent.
  retry_outcome run(const std::function<scan_outcome()>& try_once) const;

private:
  uint32_t max_tries_;
};

} // namespace netlens
