#include "actors/offset_guesser/socket_lab.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h> // tcp_info with segs_in/bytes_acked, TCP_REPAIR (glibc's is older)
#include <netinet/in.h>
#include <random>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <thread>
#include <tuple>
#include <unistd.h>

#include "flow/errno_text.hpp"
#include "flow/unique_fd.hpp"

namespace netlens {
namespace {

// sk_flags bits (enum sock_flags): stable since 2.6 for the ones used here.
constexpr uint64_t k_sock_dead = 1u << 0;
constexpr uint64_t k_sock_done = 1u << 1;
constexpr uint64_t k_sock_urginline = 1u << 2;
constexpr uint64_t k_sock_keepopen = 1u << 3;
constexpr uint64_t k_sock_linger = 1u << 4;
constexpr uint64_t k_sock_broadcast = 1u << 6;
constexpr uint64_t k_known_flags = k_sock_dead | k_sock_done | k_sock_urginline | k_sock_keepopen |
                                   k_sock_linger | k_sock_broadcast;

// TCP states (include/net/tcp_states.h; linux/tcp.h has no names for them).
constexpr uint8_t k_tcp_established = 1;
constexpr uint8_t k_tcp_fin_wait2 = 5;
constexpr uint8_t k_tcp_close = 7;
constexpr uint8_t k_tcp_close_wait = 8;

constexpr uint8_t k_rcv_shutdown = 1;
constexpr uint8_t k_send_shutdown = 2;

uint64_t monotonic_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000u + uint64_t(ts.tv_nsec) / 1000u;
}

// The addresses a try uses: 127.0.0.x for v4, ::ffff:127.0.0.x for v6, so every socket's
// source and destination differ (::1 would make them equal).
sockaddr_storage loopback(int family, uint8_t last, uint16_t port) {
  sockaddr_storage ss{};
  uint32_t v4 = htonl(0x7f000000u | last);
  if (family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = v4;
    sin->sin_port = htons(port);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_addr.s6_addr[10] = 0xff;
    sin6->sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&sin6->sin6_addr.s6_addr[12], &v4, 4);
    sin6->sin6_port = htons(port);
  }
  return ss;
}

socklen_t addr_len(int family) {
  return family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

uint16_t port_of(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
}

in6_bytes in6_of(const sockaddr_storage& ss) {
  in6_bytes b{};
  std::memcpy(b.data(), &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, 16);
  return b;
}

std::optional<uint32_t> v4_of(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr;
  const auto* a = &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr;
  if (IN6_IS_ADDR_V4MAPPED(a)) {
    uint32_t v;
    std::memcpy(&v, &a->s6_addr[12], 4);
    return v;
  }
  return std::nullopt;
}

int set_int(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof(value));
}

std::optional<tcp_info> tcp_info_of(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof(ti);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
    return std::nullopt;
  return ti;
}

void short_pause() {
  std::this_thread::sleep_for(std::chrono::microseconds(100));
}

} // namespace

// The socket of one end of a known connection (or a listener, or a UDP socket) and what the
// guesser did to it that shows in the kernel struct.
struct known_socket {
  std::string name;
  unique_fd fd;
  int family = 0;
  uint16_t protocol = 0;
  bool listener = false;
  bool connected = false;    // UDP: connect() was called
  uint8_t shutdown_how = 0;  // k_rcv_shutdown | k_send_shutdown it called itself
  bool fin_received = false; // the peer sent FIN (sets RCV_SHUTDOWN and SOCK_DONE)
  uint64_t flags = 0;        // SOCK_* bits it set
  std::optional<std::pair<uint64_t, uint64_t>> mstamp_range;

  known_socket() = default;
  known_socket(const known_socket&) = delete;
  known_socket& operator=(const known_socket&) = delete;
  // A TCP socket is reset, not closed: no TIME_WAIT, no orphan.
  ~known_socket() {
    if (fd && protocol == IPPROTO_TCP) {
      linger l{1, 0};
      setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
  }
};

socket_lab::socket_lab(lab_kernel& kernel, std::chrono::milliseconds timeout)
    : kernel_(kernel), deadline_(std::chrono::steady_clock::now() + timeout), timeout_(timeout) {}

socket_lab::~socket_lab() {
  kernel_.clear_drops();
}

int socket_lab::trigger_fd() const {
  return l4_ ? l4_->fd.get() : -1;
}

try_failure socket_lab::timed_out(const std::string& waiting_for) const {
  return {"timed out after " + std::to_string(timeout_.count()) + " ms (offset_guesser." +
          "try_timeout_ms) waiting for " + waiting_for};
}

known_socket& socket_lab::add(std::string name, int fd, int family, uint16_t protocol) {
  sockets_.push_back(std::make_unique<known_socket>());
  auto& s = *sockets_.back();
  s.name = std::move(name);
  s.fd.reset(fd);
  s.family = family;
  s.protocol = protocol;
  return s;
}

std::variant<known_socket*, try_failure> socket_lab::listen_on(const std::string& name, int family,
                                                               uint8_t last) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return try_failure{"socket(" + name + "): " + errno_text(errno)};
  auto& s = add(name, fd, family, IPPROTO_TCP);
  s.listener = true;
  if (family == AF_INET6)
    set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
  sockaddr_storage a = loopback(family, last, 0);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), addr_len(family)) != 0 || listen(fd, 8) != 0)
    return try_failure{"listening on loopback (" + name + "): " + errno_text(errno)};
  return &s;
}

std::optional<try_failure> socket_lab::connect_pair(const std::string& name, known_socket& listener,
                                                    uint8_t client_last, known_socket*& client,
                                                    known_socket*& server, int mss) {
  sockaddr_storage where{};
  socklen_t len = sizeof(where);
  getsockname(listener.fd.get(), reinterpret_cast<sockaddr*>(&where), &len);
  int fd = socket(listener.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return try_failure{"socket(" + name + "): " + errno_text(errno)};
  client = &add(name + " client", fd, listener.family, IPPROTO_TCP);
  if (mss)
    set_int(fd, IPPROTO_TCP, TCP_MAXSEG, mss);
  sockaddr_storage me = loopback(listener.family, client_last, 0);
  if (bind(fd, reinterpret_cast<sockaddr*>(&me), addr_len(listener.family)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&where), addr_len(listener.family)) != 0)
    return try_failure{"connecting " + name + " on loopback: " + errno_text(errno)};
  int sfd = accept4(listener.fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (sfd < 0)
    return try_failure{"accepting " + name + ": " + errno_text(errno)};
  server = &add(name + " server", sfd, listener.family, IPPROTO_TCP);
  for (auto* s : {client, server}) {
    set_int(s->fd.get(), IPPROTO_TCP, TCP_NODELAY, 1);
    fcntl(s->fd.get(), F_SETFL, fcntl(s->fd.get(), F_GETFL) | O_NONBLOCK);
  }
  return std::nullopt;
}

std::variant<known_socket*, try_failure> socket_lab::udp_socket(const std::string& name, int family,
                                                                uint8_t last) {
  int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return try_failure{"socket(" + name + "): " + errno_text(errno)};
  auto& s = add(name, fd, family, IPPROTO_UDP);
  if (family == AF_INET6)
    set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
  sockaddr_storage a = loopback(family, last, 0);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), addr_len(family)) != 0)
    return try_failure{"binding " + name + ": " + errno_text(errno)};
  return &s;
}

// Sockets with different values in every field: distinct addresses and ports, both families,
// both protocols, a listener, and socket options that set known sk_flags bits.
std::optional<try_failure> socket_lab::make_sockets() {
  // A fresh block of addresses per try: a try that failed leaves nothing a new one trips on.
  std::random_device rd;
  base_ = static_cast<uint8_t>(2 + rd() % 200);
  auto l4 = listen_on("tcp4 listener", AF_INET, base_);
  if (auto* f = std::get_if<try_failure>(&l4))
    return *f;
  l4_ = std::get<known_socket*>(l4);
  auto l6 = listen_on("tcp6 listener", AF_INET6, base_ + 1);
  if (auto* f = std::get_if<try_failure>(&l6))
    return *f;
  l6_ = std::get<known_socket*>(l6);
  if (auto f = connect_pair("tcp4 #1", *l4_, base_ + 2, c1_, s1_))
    return f;
  // c2's segments are small so that one send() makes two of them (see final_exchanges).
  if (auto f = connect_pair("tcp4 #2", *l4_, base_ + 3, c2_, s2_, 1000))
    return f;
  if (auto f = connect_pair("tcp6 #3", *l6_, base_ + 4, c3_, s3_))
    return f;
  // Left idle: a server that never sent has rack.end_seq 0 while snd_una is its ISN + 1.
  if (auto f = connect_pair("tcp6 #4", *l6_, base_ + 11, c4_, s4_))
    return f;

  known_socket** udp[] = {&u1_, &u2_, &u3_, &u4_};
  const char* udp_names[] = {"udp4 a", "udp4 b", "udp6 a", "udp6 b"};
  for (int i = 0; i < 4; ++i) {
    auto u = udp_socket(udp_names[i], i < 2 ? AF_INET : AF_INET6, base_ + 5 + i);
    if (auto* f = std::get_if<try_failure>(&u))
      return *f;
    *udp[i] = std::get<known_socket*>(u);
  }
  // udp4 a and b connected to each other; udp6 a connected to b, b left unconnected.
  auto connect_to = [](known_socket& from, known_socket& to) -> std::optional<try_failure> {
    sockaddr_storage a{};
    socklen_t len = sizeof(a);
    getsockname(to.fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    if (connect(from.fd.get(), reinterpret_cast<sockaddr*>(&a), len) != 0)
      return try_failure{"connecting " + from.name + ": " + errno_text(errno)};
    from.connected = true;
    return std::nullopt;
  };
  for (auto [from, to] : {std::pair{u1_, u2_}, {u2_, u1_}, {u3_, u4_}})
    if (auto f = connect_to(*from, *to))
      return f;
  // Connected, then disconnected: skc_daddr and skc_dport are 0 again, but inet_sock's
  // cork.fl keeps the old peer, which tells them apart.
  auto u5 = udp_socket("udp4 disconnected", AF_INET, base_ + 9);
  if (auto* f = std::get_if<try_failure>(&u5))
    return *f;
  if (auto f = connect_to(*std::get<known_socket*>(u5), *u2_))
    return f;
  sockaddr unspec{};
  unspec.sa_family = AF_UNSPEC;
  if (connect(std::get<known_socket*>(u5)->fd.get(), &unspec, sizeof(unspec)) != 0)
    return try_failure{"disconnecting udp4 disconnected: " + errno_text(errno)};
  std::get<known_socket*>(u5)->connected = false;
  // Bound to a multicast address: skc_rcv_saddr holds it, inet_saddr (the source address of
  // what the socket sends) stays 0. Nothing is sent.
  int mfd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (mfd < 0)
    return try_failure{"socket(udp4 multicast): " + errno_text(errno)};
  auto& mc = add("udp4 multicast", mfd, AF_INET, IPPROTO_UDP);
  sockaddr_storage group{};
  auto* gsin = reinterpret_cast<sockaddr_in*>(&group);
  gsin->sin_family = AF_INET;
  gsin->sin_addr.s_addr = htonl(0xefff0000u | base_); // 239.255.0.x, administratively scoped
  if (bind(mc.fd.get(), reinterpret_cast<sockaddr*>(&group), sizeof(sockaddr_in)) != 0)
    return try_failure{"binding udp4 multicast: " + errno_text(errno)};

  // Known sk_flags bits, a different set on each socket. Options go on accepted sockets
  // after accept: an accepted socket inherits its listener's flags.
  auto set_flag = [](known_socket& s, int level, int name, uint64_t bit) {
    if (name == SO_LINGER) {
      linger l{1, 5};
      setsockopt(s.fd.get(), level, name, &l, sizeof(l));
    } else {
      set_int(s.fd.get(), level, name, 1);
    }
    s.flags |= bit;
  };
  set_flag(*c1_, SOL_SOCKET, SO_KEEPALIVE, k_sock_keepopen);
  set_flag(*s2_, SOL_SOCKET, SO_OOBINLINE, k_sock_urginline);
  set_flag(*c3_, SOL_SOCKET, SO_KEEPALIVE, k_sock_keepopen);
  set_flag(*c3_, SOL_SOCKET, SO_OOBINLINE, k_sock_urginline);
  set_flag(*s3_, SOL_SOCKET, SO_LINGER, k_sock_linger);
  set_flag(*u1_, SOL_SOCKET, SO_BROADCAST, k_sock_broadcast);
  set_flag(*u3_, SOL_SOCKET, SO_LINGER, k_sock_linger);
  return std::nullopt;
}

std::optional<try_failure> socket_lab::send_bytes(known_socket& s, size_t n, int flags) {
  std::vector<char> buf(n, 'g');
  ssize_t sent = send(s.fd.get(), buf.data(), n, MSG_NOSIGNAL | MSG_DONTWAIT | flags);
  if (sent != static_cast<ssize_t>(n))
    return try_failure{"sending " + std::to_string(n) + " bytes on " + s.name + ": " +
                       (sent < 0 ? errno_text(errno) : "short send")};
  return std::nullopt;
}

// Reads whatever is queued, the end of stream included.
void socket_lab::drain(known_socket& s) {
  char buf[4096];
  while (recv(s.fd.get(), buf, sizeof(buf), MSG_DONTWAIT) > 0) {
  }
}

// Drops `budget` data segments from client to server after letting `skip` pass.
void socket_lab::arm_drop(int slot, known_socket& client, known_socket& server, int skip,
                          int budget) {
  sockaddr_storage c{}, s{};
  socklen_t len = sizeof(c);
  getsockname(client.fd.get(), reinterpret_cast<sockaddr*>(&c), &len);
  len = sizeof(s);
  getsockname(server.fd.get(), reinterpret_cast<sockaddr*>(&s), &len);
  drop_rule rule;
  rule.saddr = v4_of(c).value_or(0);
  rule.daddr = v4_of(s).value_or(0);
  rule.sport = htons(port_of(c));
  rule.dport = htons(port_of(s));
  rule.skip = skip;
  rule.budget = budget;
  kernel_.arm_drop(slot, rule);
}

// Until nothing sent is unacknowledged on any connection: ACKs on loopback come within
// microseconds unless delayed, and TCP_QUICKACK asks for them at once.
std::optional<try_failure> socket_lab::wait_quiet(const std::string& what) {
  for (;;) {
    bool quiet = true;
    for (auto& s : sockets_) {
      if (s->protocol != IPPROTO_TCP || s->listener)
        continue;
      auto ti = tcp_info_of(s->fd.get());
      if (ti && ti->tcpi_unacked != 0) {
        quiet = false;
        break;
      }
    }
    if (quiet)
      return std::nullopt;
    if (expired())
      return timed_out(what);
    for (auto& s : sockets_)
      if (s->protocol == IPPROTO_TCP && !s->listener)
        set_int(s->fd.get(), IPPROTO_TCP, TCP_QUICKACK, 1);
    short_pause();
  }
}

// tcp_total_retrans must differ between connections and from every other counter: in each
// round the drop program eats data segments at the receiver, the sender sees a later one
// SACKed and retransmits the lost ones (RACK) within a few milliseconds. Connection n takes
// part in n rounds. Small lost segments retransmitted together are collapsed into one and
// count once: c3's first round loses two, so its lost-segment count (tcp_sock.lost) differs
// from total_retrans.
std::optional<try_failure> socket_lab::make_retransmissions() {
  struct plan {
    known_socket* client;
    known_socket* server;
    uint32_t rounds;
  } plans[] = {{c1_, s1_, 1}, {c2_, s2_, 2}, {c3_, s3_, 3}};
  for (uint32_t round = 0; round < 3; ++round) {
    int slot = 0;
    for (auto& p : plans) {
      if (round >= p.rounds)
        continue;
      int lose = p.client == c3_ && round == 0 ? 2 : 1;
      arm_drop(slot++, *p.client, *p.server, 0, lose);
      // Sizes differ by round so no byte counter (bytes_retrans) follows the segment count.
      for (int i = 0; i < lose; ++i)
        if (auto f = send_bytes(*p.client, 100 + 10 * round + 5 * i))
          return f;
      if (auto f = send_bytes(*p.client, 50))
        return f;
    }
    for (;;) {
      bool done = true;
      for (auto& p : plans) {
        drain(*p.server);
        auto ti = tcp_info_of(p.client->fd.get());
        if (!ti || ti->tcpi_total_retrans < std::min(round + 1, p.rounds) || ti->tcpi_unacked)
          done = false;
      }
      if (done)
        break;
      if (expired())
        return timed_out("the retransmissions of dropped segments");
      short_pause();
    }
    kernel_.clear_drops();
  }
  return std::nullopt;
}

std::optional<try_failure> socket_lab::shut_down_some() {
  // Data both ways first, so no two connections carry the same byte and segment counts.
  if (auto f = send_bytes(*s1_, 700))
    return f;
  if (auto f = send_bytes(*s2_, 1300))
    return f;
  if (auto f = send_bytes(*u1_, 60))
    return f;
  if (auto f = send_bytes(*u3_, 80))
    return f;
  drain(*c1_);
  drain(*c2_);
  if (auto f = wait_quiet("the ACKs of the data sent"))
    return f;
  // c1 closes its sending side: FIN_WAIT2 with SEND_SHUTDOWN; s1 gets the FIN: CLOSE_WAIT,
  // RCV_SHUTDOWN and SOCK_DONE. s3 shuts its receiving side only: RCV_SHUTDOWN without FIN.
  // UDP sockets take shutdown() as flags only.
  struct {
    known_socket* s;
    int how;
    uint8_t bits;
  } shuts[] = {{c1_, SHUT_WR, k_send_shutdown},
               {s3_, SHUT_RD, k_rcv_shutdown},
               {u1_, SHUT_RDWR, k_rcv_shutdown | k_send_shutdown},
               {u3_, SHUT_WR, k_send_shutdown}};
  for (auto& sh : shuts) {
    if (::shutdown(sh.s->fd.get(), sh.how) != 0)
      return try_failure{"shutdown(" + sh.s->name + "): " + errno_text(errno)};
    sh.s->shutdown_how |= sh.bits;
  }
  for (;;) {
    auto a = tcp_info_of(c1_->fd.get());
    auto b = tcp_info_of(s1_->fd.get());
    if (a && b && a->tcpi_state == k_tcp_fin_wait2 && b->tcpi_state == k_tcp_close_wait)
      break;
    if (expired())
      return timed_out("the FIN of " + c1_->name);
    // A FIN puts its receiver in pingpong mode: the ACK would wait for the delayed-ACK timer
    // (40 ms), hoping to ride on the receiver's own FIN. TCP_QUICKACK sends it now, but only
    // once the receive queue is empty: reading the end of stream takes the FIN's skb out.
    drain(*s1_);
    set_int(s1_->fd.get(), IPPROTO_TCP, TCP_QUICKACK, 1);
    short_pause();
  }
  s1_->fin_received = true;
  return std::nullopt;
}

// The last packet of each connection, bracketed by clock readings: tcp_mstamp is the only
// microsecond clock of the socket that lands in the bracket [before the packet, after the
// copy] both for the receiver of data (whose own sends are older) and for its sender. Then
// the sequence numbers are pulled apart: c3 holds unsent bytes, c2 a segment in flight.
std::optional<try_failure> socket_lab::final_exchanges() {
  auto bracket = [&](known_socket& from, known_socket& to) -> std::optional<try_failure> {
    uint64_t t0 = monotonic_us();
    set_int(to.fd.get(), IPPROTO_TCP, TCP_QUICKACK, 1);
    if (auto f = send_bytes(from, 1))
      return f;
    for (;;) {
      auto ti = tcp_info_of(from.fd.get());
      if (ti && ti->tcpi_unacked == 0)
        break;
      if (expired())
        return timed_out("the ACK of the last byte of " + from.name);
      set_int(to.fd.get(), IPPROTO_TCP, TCP_QUICKACK, 1);
    }
    from.mstamp_range = std::make_pair(t0, uint64_t{0});
    to.mstamp_range = std::make_pair(t0, uint64_t{0});
    return std::nullopt;
  };
  if (auto f = bracket(*s1_, *c1_))
    return f;
  if (auto f = bracket(*s3_, *c3_))
    return f;

  // c3 queues 100 bytes with MSG_MORE and no urgent data: they wait unsent (until an ACK
  // comes in, and none will), so write_seq is ahead of snd_nxt, snd_una, snd_up, rtt_seq and
  // pushed_seq, which all sit at the end of what was sent.
  if (auto f = send_bytes(*c3_, 100, MSG_MORE))
    return f;
  // c2: one send() of 1500 bytes with MSS 1000: two segments leave before the socket
  // processes any ACK (the sender holds its lock). The first arrives, the second is dropped;
  // the first's ACK moves snd_una and sets rtt_seq to snd_nxt; MSG_OOB moves snd_up to
  // write_seq: snd_una < snd_nxt = snd_up = rtt_seq = write_seq. (Urgent mode would push
  // MSG_MORE bytes at once, so c2 queues none.)
  arm_drop(0, *c2_, *s2_, 1, 1);
  set_int(s2_->fd.get(), IPPROTO_TCP, TCP_QUICKACK, 1);
  uint64_t t0 = monotonic_us();
  if (auto f = send_bytes(*c2_, 1500, MSG_OOB))
    return f;
  for (;;) {
    // The first segment carries MSS bytes less TCP options: wait for it to be acknowledged.
    int outq = -1;
    ioctl(c2_->fd.get(), SIOCOUTQ, &outq);
    if (outq > 0 && outq < 1500)
      break;
    if (expired())
      return timed_out("the ACK of the first segment of " + c2_->name);
    set_int(s2_->fd.get(), IPPROTO_TCP, TCP_QUICKACK, 1);
  }
  c2_->mstamp_range = std::make_pair(t0, uint64_t{0});
  return std::nullopt;
}

namespace {

// What the socket says of itself, read twice around the copy: a value that moved in between
// (a late ACK) makes the copy useless, and the copy is taken again.
struct known_values {
  std::optional<tcp_info_values> tcp;
  std::optional<tcp_seq_values> seq;
  uint8_t state = 0;
  bool operator==(const known_values& o) const {
    auto tie_tcp = [](const tcp_info_values& t) {
      return std::tie(t.bytes_acked, t.bytes_received, t.segs_out, t.segs_in, t.rtt_us, t.rttvar_us,
                      t.total_retrans);
    };
    auto tie_seq = [](const tcp_seq_values& q) { return std::tie(q.write_seq, q.snd_una); };
    bool same_tcp =
        tcp.has_value() == o.tcp.has_value() && (!tcp || tie_tcp(*tcp) == tie_tcp(*o.tcp));
    bool same_seq =
        seq.has_value() == o.seq.has_value() && (!seq || tie_seq(*seq) == tie_seq(*o.seq));
    return state == o.state && same_tcp && same_seq;
  }
};

std::variant<known_values, try_failure> read_known(const known_socket& s) {
  known_values v;
  int fd = s.fd.get();
  if (s.protocol != IPPROTO_TCP) {
    v.state = s.connected ? k_tcp_established : k_tcp_close;
    return v;
  }
  auto ti = tcp_info_of(fd);
  if (!ti)
    return try_failure{"TCP_INFO of " + s.name + ": " + errno_text(errno)};
  v.state = ti->tcpi_state;
  if (s.listener)
    return v;
  tcp_info_values t;
  t.bytes_acked = ti->tcpi_bytes_acked;
  t.bytes_received = ti->tcpi_bytes_received;
  t.segs_out = ti->tcpi_segs_out;
  t.segs_in = ti->tcpi_segs_in;
  t.rtt_us = ti->tcpi_rtt;
  t.rttvar_us = ti->tcpi_rttvar;
  t.total_retrans = ti->tcpi_total_retrans;
  v.tcp = t;
  // write_seq only shows in repair mode; SIOCOUTQ is write_seq - snd_una. Repair is left
  // without a window probe, so the connection sends nothing because it was looked at.
  if (set_int(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON) != 0)
    return try_failure{"TCP_REPAIR on " + s.name + " (needs CAP_NET_ADMIN): " + errno_text(errno)};
  int queue = TCP_SEND_QUEUE;
  uint32_t write_seq = 0;
  socklen_t len = sizeof(write_seq);
  bool ok = set_int(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue) == 0 &&
            getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &write_seq, &len) == 0;
  int err = errno;
  set_int(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
  set_int(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
  if (!ok)
    return try_failure{"TCP_QUEUE_SEQ of " + s.name + ": " + errno_text(err)};
  int outq = 0;
  if (ioctl(fd, SIOCOUTQ, &outq) != 0)
    return try_failure{"SIOCOUTQ of " + s.name + ": " + errno_text(errno)};
  v.seq = tcp_seq_values{write_seq, write_seq - static_cast<uint32_t>(outq)};
  return v;
}

} // namespace

std::variant<scan_sample, try_failure> socket_lab::sample_of(known_socket& s) {
  scan_sample out;
  out.name = s.name;
  out.family = static_cast<uint16_t>(s.family);
  out.protocol = s.protocol;
  int fd = s.fd.get();
  sockaddr_storage me{}, peer{};
  socklen_t len = sizeof(me);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len) != 0)
    return try_failure{"getsockname(" + s.name + "): " + errno_text(errno)};
  out.sport = port_of(me);
  len = sizeof(peer);
  bool has_peer = getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0;
  out.dport = has_peer ? port_of(peer) : 0;
  if (s.family == AF_INET) {
    out.v4_saddr = v4_of(me);
    out.v4_daddr = has_peer ? v4_of(peer) : std::optional<uint32_t>(0);
  } else {
    out.v6_saddr = in6_of(me);
    out.v6_daddr = has_peer ? in6_of(peer) : in6_bytes{};
    // A v4-mapped v6 socket keeps the v4 addresses in skc_rcv_saddr / skc_daddr too.
    out.v4_saddr = v4_of(me);
    if (has_peer)
      out.v4_daddr = v4_of(peer);
  }
  uint64_t cookie = 0;
  len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0)
    return try_failure{"SO_COOKIE of " + s.name + ": " + errno_text(errno)};
  out.cookie = cookie;
  out.shutdown = static_cast<uint8_t>(s.shutdown_how | (s.fin_received ? k_rcv_shutdown : 0));
  out.flags = flag_bits{k_known_flags, s.flags | (s.fin_received ? k_sock_done : 0)};

  for (int attempt = 0; attempt < 4; ++attempt) {
    auto before = read_known(s);
    if (auto* f = std::get_if<try_failure>(&before))
      return *f;
    auto bytes = kernel_.copy_sock(fd);
    if (auto* f = std::get_if<try_failure>(&bytes))
      return *f;
    uint64_t after_us = monotonic_us();
    auto after = read_known(s);
    if (auto* f = std::get_if<try_failure>(&after))
      return *f;
    if (!(std::get<known_values>(before) == std::get<known_values>(after))) {
      if (expired())
        return timed_out("the values of " + s.name + " to hold still");
      continue;
    }
    const auto& kv = std::get<known_values>(after);
    out.sock = std::move(std::get<std::vector<uint8_t>>(bytes));
    out.state = kv.state;
    out.tcp = kv.tcp;
    out.seq = kv.seq;
    if (s.mstamp_range)
      out.mstamp_range = std::make_pair(s.mstamp_range->first, after_us);
    return out;
  }
  return try_failure{"the values of " + s.name + " kept changing while it was copied"};
}

std::variant<std::vector<scan_sample>, try_failure> socket_lab::run() {
  // Each phase also checks the clock when it is done: a try past its time is abandoned even
  // when nothing it waited for was late.
  struct phase {
    std::optional<try_failure> (socket_lab::*run)();
    const char* what;
  } phases[] = {{&socket_lab::make_sockets, "the loopback connections"},
                {&socket_lab::make_retransmissions, "the retransmissions"},
                {&socket_lab::shut_down_some, "the shutdowns"},
                {&socket_lab::final_exchanges, "the last packets"}};
  for (const auto& p : phases) {
    if (auto f = (this->*p.run)())
      return *f;
    if (expired())
      return timed_out(p.what);
  }
  // c2 first: its segment in flight is retransmitted (TLP) no sooner than 200 ms from now.
  std::vector<known_socket*> order{c2_};
  for (auto& s : sockets_)
    if (s.get() != c2_)
      order.push_back(s.get());
  std::vector<scan_sample> samples;
  for (auto* s : order) {
    auto sample = sample_of(*s);
    if (auto* f = std::get_if<try_failure>(&sample))
      return *f;
    samples.push_back(std::move(std::get<scan_sample>(sample)));
  }
  return samples;
}

} // namespace netlens
