// The offset guesser's answer: the cache file's offsets if it holds sound ones for this
// kernel, else a guess session's tries under the retry policy, the result written back to the
// cache. No CAF: the actor calls guess_offsets() and turns the report into a reply.
#pragma once

#include <cstdint>
#include <string>

#include "bpf/netlens_offsets.h"

namespace netlens {

struct guess_settings {
  uint32_t max_tries = 5;         // clamped to [1, 5]
  uint32_t try_timeout_ms = 1000; // one try, sockets made to offsets scanned
  std::string cache_dir;          // "": no cache (neither read nor written)
};

// What guess_offsets found, or why not (error names each field that failed).
struct guess_report {
  bool ok = false;
  nl_offsets offsets{};
  std::string error;
  uint32_t tries = 0;
  uint64_t duration_us = 0;
  bool from_cache = false;
  std::string cache_note; // why the cache was not used (corrupt, unwritable), "" when it was fine
};

// The cache answer if there is a sound one, else up to max_tries guesses (a new session).
guess_report guess_offsets(const guess_settings& settings);

} // namespace netlens
