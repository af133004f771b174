// The offset guesser's BPF session: the loaded guessing object (offset_guess.bpf.c), its
// copying and dropping programs attached, and one try at a time run through it: the socket
// lab makes the known sockets, the session copies their structs out of the kernel and hands
// everything to the scanner. No CAF.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "actors/offset_guesser/scanner.hpp"
#include "flow/unique_fd.hpp"

struct nl_offset_guess;
struct bpf_link;

namespace netlens {

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
  unique_fd cgroup_fd_; // closed after the links and the object are gone
};

} // namespace netlens
