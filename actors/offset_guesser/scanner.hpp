// The offset guesser's core: given raw byte copies of kernel structs taken from sockets whose
// every relevant value user space knows exactly, finds where each field of nl_offsets sits.
// Pure: no kernel, no CAF; the unit tests drive it with synthetic byte images.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bpf/netlens_offsets.h"

namespace netlens {

// What user space knows of a TCP socket from TCP_INFO (linux/tcp.h names).
struct tcp_info_values {
  uint64_t bytes_acked = 0;
  uint64_t bytes_received = 0;
  uint32_t segs_out = 0;
  uint32_t segs_in = 0;
  uint32_t rtt_us = 0;    // tcpi_rtt: srtt_us >> 3
  uint32_t rttvar_us = 0; // tcpi_rttvar: mdev_us >> 2
  uint32_t total_retrans = 0;
};

// Sequence numbers from TCP_REPAIR's TCP_QUEUE_SEQ (write_seq) and SIOCOUTQ (write_seq-snd_una).
struct tcp_seq_values {
  uint32_t write_seq = 0;
  uint32_t snd_una = 0;
};

// Bits of sk_flags whose value is known: (flags & mask) == value.
struct flag_bits {
  uint64_t mask = 0;
  uint64_t value = 0;
};

using in6_bytes = std::array<uint8_t, 16>;

// One known socket: the raw bytes from the start of its struct sock (for TCP the whole
// tcp_sock follows in the same object) and what user space knows of it. A value left empty
// says nothing about that field (a v4 socket has no v6 address, UDP has no TCP_INFO).
struct scan_sample {
  std::string name; // names the socket in diagnostics, e.g. "tcp4 client"
  std::vector<uint8_t> sock;
  uint16_t family = 0;              // AF_INET or AF_INET6, as sk_family holds it
  uint16_t protocol = 0;            // IPPROTO_TCP or IPPROTO_UDP
  uint8_t state = 0;                // TCP_ESTABLISHED, TCP_LISTEN, ... (UDP: 1 connected, 7 not)
  uint16_t sport = 0;               // host order (skc_num)
  uint16_t dport = 0;               // host order; skc_dport holds it in network order
  std::optional<uint32_t> v4_saddr; // network order, as the socket holds it
  std::optional<uint32_t> v4_daddr;
  std::optional<in6_bytes> v6_saddr;
  std::optional<in6_bytes> v6_daddr;
  std::optional<uint64_t> cookie;  // SO_COOKIE (asking assigns it)
  std::optional<uint8_t> shutdown; // RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2
  std::optional<flag_bits> flags;
  std::optional<tcp_info_values> tcp;
  std::optional<tcp_seq_values> seq;
  // tcp_clock_us() of the socket's last packet lies in [first, second] (CLOCK_MONOTONIC us).
  std::optional<std::pair<uint64_t, uint64_t>> mstamp_range;
};

// Offsets where every sample holds one and the same kernel pointer: where skc_net may be.
struct net_pointer_candidate {
  uint16_t offset = 0;
  uint64_t pointer = 0;
};

// A raw copy of what one candidate pointer points at (a struct net, if the candidate is right).
struct net_window {
  uint16_t pointer_offset = 0;
  std::vector<uint8_t> bytes;
};

// Where one field may be: exactly one candidate is an answer, anything else an error.
struct field_candidates {
  std::string field; // the nl_offsets member name
  std::vector<uint32_t> offsets;
};

struct scan_outcome {
  bool ok = false;
  nl_offsets offsets{};
  std::vector<field_candidates> fields; // every field, in nl_offsets order
  std::vector<std::string> errors;      // one per field without exactly one candidate
  std::string error_text() const;       // the errors joined with "; "
};

// Step 1: where skc_net may be. Every sample is in one network namespace, so the field holds
// the same pointer in all of them; a kernel pointer has its top 16 bits set.
std::vector<net_pointer_candidate> net_pointer_candidates(const std::vector<scan_sample>& samples);

// Step 2: every field. nets holds one window per candidate from step 1; the one in which the
// netns inode appears (exactly once) names both skc_net and net_ns_inum.
scan_outcome scan_offsets(const std::vector<scan_sample>& samples,
                          const std::vector<net_window>& nets, uint32_t netns_inode);

} // namespace netlens
