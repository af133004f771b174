// The offset guesser's kernel side: loads the guessing BPF object, makes known loopback
// connections, copies their kernel structs and hands them to the scanner; caches the answer
// by kernel release. No CAF: the actor calls guess_offsets() and turns the report into a reply.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "actors/offset_guesser/offset_cache.hpp"
#include "actors/offset_guesser/scanner.hpp"
#include "bpf/netlens_offsets.h"

struct nl_offset_guess;
struct bpf_link;

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

// The loaded guessing object: the copying program on raw_tp/sock_recv_length and the drop
// program on this process's cgroup v2 ingress. Released with the session, on every path.
class guess_session {
public:
  static std::variant<std::unique_ptr<guess_session>, std::string> open();
  ~guess_session();
  guess_session(const guess_session&) = delete;
  guess_session& operator=(const guess_session&) = delete;

  // One try: fresh loopback sockets, their structs copied, every field scanned. The sockets
  // are closed (reset) before it returns. Fails with what timed out if it runs past timeout.
  scan_outcome guess_once(std::chrono::milliseconds timeout);

  // Test hook: the program ids, so a test can check nothing is left after destruction.
  std::vector<uint32_t> program_ids() const;

private:
  guess_session() = default;
  nl_offset_guess* skel_ = nullptr;
  bpf_link* copy_link_ = nullptr;
  bpf_link* drop_link_ = nullptr;
  int cgroup_fd_ = -1;
};

// The cache answer if there is a sound one, else up to max_tries guesses (a new session).
guess_report guess_offsets(const guess_settings& settings);

} // namespace netlens
