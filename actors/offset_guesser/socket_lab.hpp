// The offset guesser's loopback socket lab: for one try, sockets and connections on 127.0.0.x
// whose kernel structs hold known values that differ in every field the scanner looks for
// (addresses, ports, states, shutdowns, sk_flags bits, retransmissions, sequence numbers, the
// time of the last packet), and a copy of each struct beside what user space knows of it. It
// reaches the guessing BPF object only through lab_kernel. No CAF.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "actors/offset_guesser/scanner.hpp"

namespace netlens {

// A failure inside a try: what went wrong, returned up as a value.
struct try_failure {
  std::string what;
};

// Data segments of one IPv4 loopback connection for the drop program to eat (addresses and
// ports in network order, as the program compares them).
struct drop_rule {
  uint32_t saddr = 0;
  uint32_t daddr = 0;
  uint16_t sport = 0;
  uint16_t dport = 0;
  int skip = 0;   // segments let through first
  int budget = 0; // segments dropped after those
};

// What the lab needs of the guessing BPF object (the guess session gives it).
class lab_kernel {
public:
  virtual ~lab_kernel() = default;
  // Up to NL_GUESS_MAX_DROPS (offset_guess.bpf.c) rules at once, by slot.
  virtual void arm_drop(int slot, const drop_rule& rule) = 0;
  virtual void clear_drops() = 0;
  // The bytes from the start of the struct sock behind fd, as far as they could be read.
  virtual std::variant<std::vector<uint8_t>, try_failure> copy_sock(int fd) = 0;
};

// One socket of the lab and what was done to it (socket_lab.cpp).
struct known_socket;

// One try's sockets. Every socket is closed when the lab goes, TCP ones reset (SO_LINGER 0):
// the guesser leaves no TIME_WAIT or orphan behind, whatever state a try stopped in.
class socket_lab {
public:
  // The try's clock starts here: run() fails with what it waited for once timeout is past.
  socket_lab(lab_kernel& kernel, std::chrono::milliseconds timeout);
  ~socket_lab();
  socket_lab(const socket_lab&) = delete;
  socket_lab& operator=(const socket_lab&) = delete;

  // Makes the sockets, puts them through the phases (connections, retransmissions,
  // shutdowns, last packets) and copies each one's struct: one sample per socket.
  std::variant<std::vector<scan_sample>, try_failure> run();

  // A socket of the lab whose recv() fires the copy program, for copies of other memory.
  int trigger_fd() const;

private:
  bool expired() const { return std::chrono::steady_clock::now() > deadline_; }
  try_failure timed_out(const std::string& waiting_for) const;

  std::optional<try_failure> make_sockets();
  std::optional<try_failure> make_retransmissions();
  std::optional<try_failure> shut_down_some();
  std::optional<try_failure> final_exchanges();
  std::optional<try_failure> wait_quiet(const std::string& what);
  std::variant<scan_sample, try_failure> sample_of(known_socket& s);

  known_socket& add(std::string name, int fd, int family, uint16_t protocol);
  std::variant<known_socket*, try_failure> listen_on(const std::string& name, int family,
                                                     uint8_t last);
  std::optional<try_failure> connect_pair(const std::string& name, known_socket& listener,
                                          uint8_t client_last, known_socket*& client,
                                          known_socket*& server, int mss = 0);
  std::variant<known_socket*, try_failure> udp_socket(const std::string& name, int family,
                                                      uint8_t last);
  std::optional<try_failure> send_bytes(known_socket& s, size_t n, int flags = 0);
  void drain(known_socket& s);
  void arm_drop(int slot, known_socket& client, known_socket& server, int skip, int budget);

  lab_kernel& kernel_;
  std::chrono::steady_clock::time_point deadline_;
  std::chrono::milliseconds timeout_;
  std::vector<std::unique_ptr<known_socket>> sockets_;
  // The connections, client and server, in the order made.
  known_socket *c1_ = nullptr, *s1_ = nullptr, *c2_ = nullptr, *s2_ = nullptr, *c3_ = nullptr,
               *s3_ = nullptr, *c4_ = nullptr, *s4_ = nullptr;
  known_socket *l4_ = nullptr, *l6_ = nullptr;
  known_socket *u1_ = nullptr, *u2_ = nullptr, *u3_ = nullptr, *u4_ = nullptr;
  uint8_t base_ = 2;
};

} // namespace netlens
