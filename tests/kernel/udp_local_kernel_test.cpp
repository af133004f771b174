// The sk_lookup program that records which local address the UDP datagrams to an unconnected
// socket reached (bpf/udp_local): per port while a port sees one address, per peer once it sees
// several; against the kernel's own answer, IP_PKTINFO / IPV6_PKTINFO on the receiving socket.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <variant>
#include <vector>

#include "bpf/udp_local.hpp"
#include "tests/support/test_namespaces.hpp"

using namespace netlens;
using netlens::testing::in_netns;
using netlens::testing::test_namespaces;

namespace {

struct received {
  uint8_t local[16] = {}; // what the kernel says the datagram reached
  uint8_t peer[16] = {};
  uint16_t peer_port = 0;
};

// (addr, port) of family as a socket address; returns its length.
socklen_t socket_address(int family, const char* addr, uint16_t port, sockaddr_storage& out) {
  out = {};
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&out);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    REQUIRE(inet_pton(AF_INET, addr, &a->sin_addr) == 1);
    return sizeof(sockaddr_in);
  }
  auto* a = reinterpret_cast<sockaddr_in6*>(&out);
  a->sin6_family = AF_INET6;
  a->sin6_port = htons(port);
  REQUIRE(inet_pton(AF_INET6, addr, &a->sin6_addr) == 1);
  return sizeof(sockaddr_in6);
}

// Sends one datagram from a socket bound to (from, any port) to (to, port), and reads it on
// server with the packet info the kernel gives.
received send_and_read(int family, int server, const char* from, const char* to, uint16_t port) {
  received r;
  const int c = socket(family, SOCK_DGRAM, 0);
  REQUIRE(c >= 0);
  sockaddr_storage src, dst;
  const socklen_t len = socket_address(family, from, 0, src);
  socket_address(family, to, port, dst);
  REQUIRE(bind(c, reinterpret_cast<sockaddr*>(&src), len) == 0);
  REQUIRE(sendto(c, "q", 1, 0, reinterpret_cast<sockaddr*>(&dst), len) == 1);
  close(c);

  char data[16];
  sockaddr_storage peer{};
  alignas(cmsghdr) char control[256];
  iovec iov{data, sizeof data};
  msghdr m{};
  m.msg_name = &peer;
  m.msg_namelen = sizeof peer;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  REQUIRE(recvmsg(server, &m, 0) == 1);
  for (cmsghdr* h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
    if (h->cmsg_level == IPPROTO_IP && h->cmsg_type == IP_PKTINFO) {
      in_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(h), sizeof pi);
      std::memcpy(r.local, &pi.ipi_addr, 4);
    } else if (h->cmsg_level == IPPROTO_IPV6 && h->cmsg_type == IPV6_PKTINFO) {
      in6_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(h), sizeof pi);
      std::memcpy(r.local, &pi.ipi6_addr, 16);
    }
  }
  if (family == AF_INET) {
    auto* p = reinterpret_cast<sockaddr_in*>(&peer);
    std::memcpy(r.peer, &p->sin_addr, 4);
    r.peer_port = ntohs(p->sin_port);
  } else {
    auto* p = reinterpret_cast<sockaddr_in6*>(&peer);
    std::memcpy(r.peer, &p->sin6_addr, 16);
    r.peer_port = ntohs(p->sin6_port);
  }
  return r;
}

// A UDP socket bound to the wildcard of family at port, asking for the packet info.
int wildcard_server(int family, uint16_t port) {
  const int s = socket(family, SOCK_DGRAM, 0);
  REQUIRE(s >= 0);
  int one = 1;
  if (family == AF_INET) {
    REQUIRE(setsockopt(s, IPPROTO_IP, IP_PKTINFO, &one, sizeof one) == 0);
  } else {
    REQUIRE(setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0);
    REQUIRE(setsockopt(s, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one) == 0);
  }
  sockaddr_storage a;
  const socklen_t len = socket_address(family, family == AF_INET ? "0.0.0.0" : "::", port, a);
  REQUIRE(bind(s, reinterpret_cast<sockaddr*>(&a), len) == 0);
  return s;
}

std::string text(int family, const uint8_t* a) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, a, buf, sizeof buf);
  return buf;
}

} // namespace

TEST_CASE("udp_local kernel: each datagram's local address, as the receiving socket is told it",
          "[kernel][udp_local]") {
  test_namespaces ns("nlul", {"a", "b"}, true);
  for (const char* tag : {"a", "b"}) {
    ns.ip(tag, "addr add 10.98.0.1/32 dev lo");
    ns.ip(tag, "addr add 10.98.0.2/32 dev lo");
    ns.ip(tag, "addr add fd00:98::1/128 dev lo nodad");
    ns.ip(tag, "addr add fd00:98::2/128 dev lo nodad");
  }
  auto opened = udp_local_book::open(1024);
  REQUIRE(std::holds_alternative<std::unique_ptr<udp_local_book>>(opened));
  auto& book = *std::get<std::unique_ptr<udp_local_book>>(opened);
  const int fd_a = ns.fd("a");
  REQUIRE(fd_a >= 0);
  const uint32_t ino_a = ns.inode("a"), ino_b = ns.inode("b");
  REQUIRE_FALSE(book.attach(ino_a, fd_a).has_value());
  REQUIRE_FALSE(book.attach(ino_a, fd_a).has_value()); // twice: a no-op
  CHECK(book.attached() == 1);
  close(fd_a);

  // Port `single` is reached at one address only: every peer's flow gets the port's address.
  // Port `several` is reached at two (and loopback): from the second address on, each peer's
  // own is kept; the first peer, which came before, may be unknown but is never wrong.
  const uint16_t single = 5399, several = 5398;
  struct asked {
    int family;
    uint16_t port;
    const char* from;
    const char* to;
    bool first_at_port; // came before the port saw a second address
  };
  const std::vector<asked> cases = {{AF_INET, single, "10.98.0.2", "10.98.0.1", false},
                                    {AF_INET, single, "127.0.0.1", "10.98.0.1", false},
                                    {AF_INET, several, "10.98.0.2", "10.98.0.1", true},
                                    {AF_INET, several, "10.98.0.1", "10.98.0.2", false},
                                    {AF_INET, several, "10.98.0.2", "10.98.0.1", false},
                                    {AF_INET, several, "127.0.0.1", "127.0.0.1", false},
                                    {AF_INET6, single, "fd00:98::2", "fd00:98::1", false},
                                    {AF_INET6, single, "::1", "fd00:98::1", false},
                                    {AF_INET6, several, "fd00:98::2", "fd00:98::1", true},
                                    {AF_INET6, several, "fd00:98::1", "fd00:98::2", false},
                                    {AF_INET6, several, "fd00:98::2", "fd00:98::1", false},
                                    {AF_INET6, several, "::1", "::1", false}};
  std::vector<received> got_a, got_b;
  for (const char* tag : {"a", "b"})
    in_netns(ns.name(tag), [&] {
      const int servers[2][2] = {
          {wildcard_server(AF_INET, single), wildcard_server(AF_INET6, single)},
          {wildcard_server(AF_INET, several), wildcard_server(AF_INET6, several)}};
      for (const auto& c : cases)
        (tag[0] == 'a' ? got_a : got_b)
            .push_back(send_and_read(c.family, servers[c.port == several][c.family == AF_INET6],
                                     c.from, c.to, c.port));
      for (const auto& row : servers)
        for (int fd : row)
          close(fd);
    });

  size_t first_known = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const received& r = got_a[i];
    CAPTURE(c.port, c.from, c.to, r.peer_port);
    uint8_t truth[16] = {};
    REQUIRE(inet_pton(c.family, c.to, truth) == 1);
    REQUIRE(std::memcmp(r.local, truth, 16) == 0); // the kernel's answer is the address asked
    uint8_t local[16] = {};
    const bool found = book.local_address(ino_a, static_cast<uint8_t>(c.family), c.port, r.peer,
                                          r.peer_port, local);
    if (c.first_at_port) {
      first_known += found;
      if (found)
        CHECK(text(c.family, local) == text(c.family, r.local));
    } else {
      REQUIRE(found);
      CHECK(text(c.family, local) == text(c.family, r.local));
    }
    // Namespace b has no instance: nothing of its datagrams is recorded.
    const received& rb = got_b[i];
    CHECK_FALSE(book.local_address(ino_b, static_cast<uint8_t>(c.family), c.port, rb.peer,
                                   rb.peer_port, local));
  }
  CHECK(first_known == 0); // by design: recorded for the port, superseded when it saw another

  // Detached: later datagrams are not recorded, and the link is gone with its descriptor.
  CHECK(book.detach(ino_a));
  CHECK_FALSE(book.detach(ino_a));
  CHECK(book.attached() == 0);
  received late;
  in_netns(ns.name("a"), [&] {
    const int s4 = wildcard_server(AF_INET, several);
    late = send_and_read(AF_INET, s4, "10.98.0.2", "10.98.0.1", several);
    close(s4);
  });
  uint8_t local[16] = {};
  CHECK_FALSE(book.local_address(ino_a, AF_INET, several, late.peer, late.peer_port, local));
}
