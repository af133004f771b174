// netlens's TC classifiers (bpf/tc_attach) against real namespaces joined by veth pairs: exact
// packet and byte counts per flow, direction and device (as TCX links and as classic filters),
// forwarded flows at both devices of a router namespace, other tools' filters and programs left
// alone, TCX links first in the chain and gone with a killed process, no clsact qdisc created
// unless allowed, and a killed run's classic filters removed at the next start. Needs root. Tags:
// [kernel][tc]. Packets only travel between the test's own namespaces, on addresses it chose there.
//
// Bytes are IP-level: the IP header and what follows, no Ethernet header; a GSO packet counts
// as the wire segments it becomes, each with its own headers.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/tcp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "bpf/tc_attach.hpp"
#include "tests/support/open_fds.hpp"
#include "tests/support/orphan_netns.hpp"
#include "tests/support/test_namespaces.hpp"

using netlens::testing::open_fds;

using namespace netlens;
using namespace std::chrono_literals;

using netlens::testing::test_namespaces;

namespace {

const std::string k_prefix = "nltest-tc-";

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f = -1) : fd(f) {}
  ~fd_guard() {
    if (fd >= 0)
      close(fd);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
};

// TCX links, or (tcx false) classic filters with the clsact qdisc created where missing.
tc_load_options mode(bool tcx) {
  tc_load_options o;
  o.use_tcx = tcx;
  o.create_clsact = true;
  return o;
}

std::unique_ptr<tc_attach> load_tc(const tc_load_options& o = mode(false)) {
  auto loaded = tc_attach::load(o);
  if (auto* e = std::get_if<tc_error>(&loaded))
    FAIL("loading tc_flows: " << e->message);
  return std::move(std::get<std::unique_ptr<tc_attach>>(loaded));
}

void require_ok(const std::optional<tc_error>& e) {
  if (e)
    FAIL(e->message);
}

// A socket made inside a namespace (it stays there), bound to addr:port, with a receive timeout
// so that a lost packet fails the test instead of hanging it.
int socket_in(test_namespaces& ns, const std::string& tag, int family, int type,
              const std::string& addr, uint16_t port) {
  int fd = -1;
  testing::in_netns(ns.name(tag), [&] {
    fd = socket(family, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return;
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_port = htons(port);
      inet_pton(AF_INET, addr.c_str(), &a->sin_addr);
      len = sizeof(*a);
    } else {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(port);
      inet_pton(AF_INET6, addr.c_str(), &a->sin6_addr);
      len = sizeof(*a);
    }
    if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      close(fd);
      fd = -1;
    }
  });
  if (fd < 0)
    throw std::runtime_error("cannot make a socket on " + addr + " in " + ns.name(tag));
  return fd;
}

sockaddr_storage address(int family, const std::string& addr, uint16_t port, socklen_t* len) {
  sockaddr_storage ss{};
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, addr.c_str(), &a->sin_addr);
    *len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, addr.c_str(), &a->sin6_addr);
    *len = sizeof(*a);
  }
  return ss;
}

// Sends count datagrams of size bytes from one bound socket to another and receives them all.
void udp_exchange(int from, int to, int family, const std::string& to_addr, uint16_t to_port,
                  int count, size_t size) {
  socklen_t len = 0;
  sockaddr_storage dst = address(family, to_addr, to_port, &len);
  std::vector<char> buf(size, 'x');
  for (int i = 0; i < count; ++i) {
    REQUIRE(sendto(from, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&dst), len) ==
            static_cast<ssize_t>(size));
    std::vector<char> in(size + 16);
    REQUIRE(recv(to, in.data(), in.size(), 0) == static_cast<ssize_t>(size));
  }
}

std::array<uint8_t, 16> addr_bytes(int family, const std::string& addr) {
  std::array<uint8_t, 16> b{};
  inet_pton(family, addr.c_str(), b.data());
  return b;
}

struct flow_query {
  uint32_t netns;
  int ifindex;
  uint8_t direction;
  int family;
  uint8_t protocol;
  std::string saddr;
  uint16_t sport;
  std::string daddr;
  uint16_t dport;
};

// The counts of exactly one flow; a flow never seen reads as zero.
tc_flow find_flow(const std::vector<tc_flow>& flows, const flow_query& q) {
  const auto s = addr_bytes(q.family, q.saddr);
  const auto d = addr_bytes(q.family, q.daddr);
  tc_flow found{};
  int matches = 0;
  for (const auto& f : flows) {
    const auto& k = f.key;
    if (k.netns == q.netns && static_cast<int>(k.ifindex) == q.ifindex &&
        k.direction == q.direction && k.family == q.family && k.protocol == q.protocol &&
        k.sport == q.sport && k.dport == q.dport && std::memcmp(k.saddr, s.data(), 16) == 0 &&
        std::memcmp(k.daddr, d.data(), 16) == 0) {
      found = f;
      ++matches;
    }
  }
  REQUIRE(matches <= 1);
  return found;
}

// A trivial classifier standing for another tool: it returns TC_ACT_UNSPEC (-1).
// verdict -1: TC_ACT_UNSPEC / TCX_NEXT (the next program or filter runs); 0: TCX_PASS (the
// chain ends here).
int load_other_tool_program(int verdict = -1) {
  bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = verdict;
  insns[1].code = BPF_JMP | BPF_EXIT;
  return bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "other_tool", "GPL", insns, 2, nullptr);
}

int attach_other_tool(test_namespaces& ns, const std::string& tag, const std::string& dev,
                      bpf_tc_attach_point point, int prog_fd, uint32_t handle, uint32_t prio,
                      uint32_t flags = 0) {
  int err = 0;
  testing::in_netns(ns.name(tag), [&] {
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(if_nametoindex(dev.c_str())),
                .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
    bpf_tc_hook_create(&hook); // EEXIST is fine
    hook.attach_point = point;
    LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = flags, .handle = handle,
                .priority = prio);
    err = bpf_tc_attach(&hook, &opts);
  });
  return err;
}

std::string filters(test_namespaces& ns, const std::string& tag, const std::string& dev,
                    const char* hook) {
  return ns.output(tag, "tc filter show dev " + dev + " " + hook);
}

// The kernel's values (Linux 6.6), which Debian 12's headers predate.
constexpr int k_tcx_ingress = 46;
constexpr int k_tcx_egress = 47;

// The program ids on a device's TCX chain, in the order they run (BPF_PROG_QUERY).
std::vector<uint32_t> tcx_chain(test_namespaces& ns, const std::string& tag, const std::string& dev,
                                int attach_type) {
  std::vector<uint32_t> ids(16);
  testing::in_netns(ns.name(tag), [&] {
    uint32_t count = static_cast<uint32_t>(ids.size());
    uint32_t flags = 0;
    const int ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
    if (bpf_prog_query(ifindex, static_cast<bpf_attach_type>(attach_type), 0, &flags, ids.data(),
                       &count) != 0)
      count = 0;
    ids.resize(count);
  });
  return ids;
}

// Another tool's TCX link on a device (at the end of its chain); the link's fd.
int attach_other_tool_tcx(test_namespaces& ns, const std::string& tag, const std::string& dev,
                          int prog_fd, int attach_type) {
  int fd = -1;
  testing::in_netns(ns.name(tag), [&] {
    fd = bpf_link_create(prog_fd, static_cast<int>(if_nametoindex(dev.c_str())),
                         static_cast<bpf_attach_type>(attach_type), nullptr);
  });
  return fd;
}

} // namespace

TEST_CASE("tc kernel: exact counts per flow, direction and device across a veth pair",
          "[kernel][tc]") {
  test_namespaces ns(k_prefix, {"a", "b"}, true);
  ns.veth("a", "va", "b", "vb");
  ns.exec("a", "ip addr add 10.231.1.1/24 dev va");
  ns.exec("b", "ip addr add 10.231.1.2/24 dev vb");
  ns.exec("a", "ip -6 addr add fd00:231::1/64 dev va nodad");
  ns.exec("b", "ip -6 addr add fd00:231::2/64 dev vb nodad");
  const uint32_t a = ns.inode("a"), b = ns.inode("b");
  const int va = ns.ifindex("a", "va"), vb = ns.ifindex("b", "vb");
  REQUIRE((a != 0 && b != 0 && va > 0 && vb > 0));

  fd_guard fa(ns.fd("a")), fb(ns.fd("b"));
  const size_t fds_before = open_fds();
  const bool tcx = GENERATE(true, false);
  INFO((tcx ? "TCX links" : "classic filters"));
  auto tc = load_tc(mode(tcx));
  REQUIRE(tc->uses_tcx() == tcx); // this kernel (6.18) has TCX
  require_ok(tc->attach(va, fa.fd));
  require_ok(tc->attach(vb, fb.fd));
  CHECK(tc->attached_devices() == 2);
  if (tcx) {
    CHECK(tcx_chain(ns, "a", "va", k_tcx_ingress) ==
          std::vector<uint32_t>{tc->ingress_program_id()});
    CHECK(tcx_chain(ns, "b", "vb", k_tcx_egress) == std::vector<uint32_t>{tc->egress_program_id()});
    CHECK_FALSE(contains(ns.output("a", "tc qdisc show dev va"), "clsact"));
  } else {
    CHECK(contains(filters(ns, "a", "va", "ingress"), "nl_tc_ingress"));
    CHECK(contains(filters(ns, "b", "vb", "egress"), "nl_tc_egress"));
  }

  SECTION("UDP over IPv4 and IPv6: every datagram is one packet of 28 or 48 + payload bytes") {
    fd_guard ca(socket_in(ns, "a", AF_INET, SOCK_DGRAM, "10.231.1.1", 41001));
    fd_guard sb(socket_in(ns, "b", AF_INET, SOCK_DGRAM, "10.231.1.2", 41002));
    udp_exchange(ca.fd, sb.fd, AF_INET, "10.231.1.2", 41002, 5, 100);
    udp_exchange(sb.fd, ca.fd, AF_INET, "10.231.1.1", 41001, 3, 200);
    fd_guard ca6(socket_in(ns, "a", AF_INET6, SOCK_DGRAM, "fd00:231::1", 41003));
    fd_guard sb6(socket_in(ns, "b", AF_INET6, SOCK_DGRAM, "fd00:231::2", 41004));
    udp_exchange(ca6.fd, sb6.fd, AF_INET6, "fd00:231::2", 41004, 4, 500);

    const auto flows = tc->read_flows();
    const uint8_t udp = IPPROTO_UDP;
    struct expect {
      flow_query q;
      uint64_t packets, bytes;
    } expected[] = {
        {{a, va, NL_TC_EGRESS, AF_INET, udp, "10.231.1.1", 41001, "10.231.1.2", 41002}, 5, 640},
        {{b, vb, NL_TC_INGRESS, AF_INET, udp, "10.231.1.1", 41001, "10.231.1.2", 41002}, 5, 640},
        {{b, vb, NL_TC_EGRESS, AF_INET, udp, "10.231.1.2", 41002, "10.231.1.1", 41001}, 3, 684},
        {{a, va, NL_TC_INGRESS, AF_INET, udp, "10.231.1.2", 41002, "10.231.1.1", 41001}, 3, 684},
        {{a, va, NL_TC_EGRESS, AF_INET6, udp, "fd00:231::1", 41003, "fd00:231::2", 41004},
         4,
         4 * 548},
        {{b, vb, NL_TC_INGRESS, AF_INET6, udp, "fd00:231::1", 41003, "fd00:231::2", 41004},
         4,
         4 * 548},
        // Each flow is seen only where it passes: not on the opposite hook.
        {{a, va, NL_TC_INGRESS, AF_INET, udp, "10.231.1.1", 41001, "10.231.1.2", 41002}, 0, 0},
        {{b, vb, NL_TC_EGRESS, AF_INET6, udp, "fd00:231::1", 41003, "fd00:231::2", 41004}, 0, 0},
    };
    for (const auto& e : expected) {
      INFO("flow " << e.q.saddr << ":" << e.q.sport << " -> " << e.q.daddr << ":" << e.q.dport
                   << " ifindex " << e.q.ifindex << " direction " << int(e.q.direction));
      const tc_flow f = find_flow(flows, e.q);
      CHECK(f.packets == e.packets);
      CHECK(f.bytes == e.bytes);
    }
    CHECK(tc->read_counters().failed_inserts == 0);
  }

  // A TCP connection from a:cport to b:41080 that carries `rounds` exchanges of up bytes then
  // down bytes, closed in order from both ends: every segment has been sent and received when
  // the client reads end of stream. The counts must match the client socket's own counters.
  auto check_tcp = [&](uint16_t cport, size_t up, size_t down, int rounds) {
    fd_guard listener(socket_in(ns, "b", AF_INET, SOCK_STREAM, "10.231.1.2", 41080));
    REQUIRE(listen(listener.fd, 4) == 0);
    fd_guard client(socket_in(ns, "a", AF_INET, SOCK_STREAM, "10.231.1.1", cport));
    socklen_t len = 0;
    sockaddr_storage dst = address(AF_INET, "10.231.1.2", 41080, &len);
    REQUIRE(connect(client.fd, reinterpret_cast<sockaddr*>(&dst), len) == 0);
    fd_guard server(accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(server.fd >= 0);
    auto receive = [](int fd, size_t want) {
      std::vector<char> in(65536);
      size_t got = 0;
      while (got < want) {
        ssize_t n = recv(fd, in.data(), std::min(in.size(), want - got), 0);
        if (n <= 0)
          return false;
        got += static_cast<size_t>(n);
      }
      return true;
    };
    const std::vector<char> out(std::max(up, down), 'q');
    for (int i = 0; i < rounds; ++i) {
      // The server reads on its own thread: a large send blocks until the peer has read.
      bool server_ok = false;
      std::thread peer([&] {
        server_ok = receive(server.fd, up) &&
                    (down == 0 || send(server.fd, out.data(), down, 0) == ssize_t(down));
      });
      const bool sent = send(client.fd, out.data(), up, 0) == ssize_t(up);
      peer.join();
      REQUIRE(sent);
      REQUIRE(server_ok);
      REQUIRE(receive(client.fd, down));
    }
    char end;
    REQUIRE(shutdown(client.fd, SHUT_WR) == 0);
    REQUIRE(recv(server.fd, &end, 1, 0) == 0);
    REQUIRE(shutdown(server.fd, SHUT_WR) == 0);
    REQUIRE(recv(client.fd, &end, 1, 0) == 0);
    std::this_thread::sleep_for(100ms); // the client's last ACK reaches the server's device

    tcp_info ti{};
    socklen_t ti_len = sizeof ti;
    REQUIRE(getsockopt(client.fd, IPPROTO_TCP, TCP_INFO, &ti, &ti_len) == 0);
    REQUIRE(ti.tcpi_total_retrans == 0);
    const uint64_t sent_bytes = up * rounds, received_bytes = down * rounds;
    CHECK(ti.tcpi_bytes_sent == sent_bytes);
    CHECK(ti.tcpi_bytes_received == received_bytes + 1); // rcv_nxt moved over the FIN too
    // Header bytes per segment, with this kernel's defaults (timestamps, SACK, window scaling):
    // SYN and SYN-ACK carry 20 bytes of options (IP 20 + TCP 40 = 60), every other segment the
    // 12-byte timestamp option (IP 20 + TCP 32 = 52).
    const uint64_t out_bytes = sent_bytes + 60 + 52ull * (ti.tcpi_segs_out - 1);
    const uint64_t in_bytes = received_bytes + 60 + 52ull * (ti.tcpi_segs_in - 1);

    const auto flows = tc->read_flows();
    const uint8_t tcp = IPPROTO_TCP;
    const flow_query out_q[] = {
        {a, va, NL_TC_EGRESS, AF_INET, tcp, "10.231.1.1", cport, "10.231.1.2", 41080},
        {b, vb, NL_TC_INGRESS, AF_INET, tcp, "10.231.1.1", cport, "10.231.1.2", 41080}};
    const flow_query in_q[] = {
        {b, vb, NL_TC_EGRESS, AF_INET, tcp, "10.231.1.2", 41080, "10.231.1.1", cport},
        {a, va, NL_TC_INGRESS, AF_INET, tcp, "10.231.1.2", 41080, "10.231.1.1", cport}};
    for (const auto& q : out_q) {
      INFO("client to server at ifindex " << q.ifindex << " direction " << int(q.direction));
      const tc_flow f = find_flow(flows, q);
      CHECK(f.packets == ti.tcpi_segs_out);
      CHECK(f.bytes == out_bytes);
    }
    for (const auto& q : in_q) {
      INFO("server to client at ifindex " << q.ifindex << " direction " << int(q.direction));
      const tc_flow f = find_flow(flows, q);
      CHECK(f.packets == ti.tcpi_segs_in);
      CHECK(f.bytes == in_bytes);
    }
    return ti;
  };

  SECTION("TCP over IPv4, one segment at a time") {
    check_tcp(41081, 1000, 400, 3);
  }

  SECTION("TCP over IPv4, bulk: a GSO packet counts as its segments, each with its headers") {
    // veth does TSO: the 400 kB leave in a few dozen skbs of many segments each (a classifier
    // counting skbs saw 17 packets where the socket sent 282 segments).
    check_tcp(41082, 400000, 0, 1);
  }

  require_ok(tc->detach(va, fa.fd));
  require_ok(tc->detach(vb, fb.fd));
  CHECK(tc->attached_devices() == 0);
  for (const char* hook : {"ingress", "egress"}) {
    CHECK_FALSE(contains(filters(ns, "a", "va", hook), "nl_tc_"));
    CHECK_FALSE(contains(filters(ns, "b", "vb", hook), "nl_tc_"));
  }
  for (int type : {k_tcx_ingress, k_tcx_egress}) {
    CHECK(tcx_chain(ns, "a", "va", type).empty());
    CHECK(tcx_chain(ns, "b", "vb", type).empty());
  }
  // Detach closed the namespace fds it kept; the object's own fds go with it.
  tc.reset();
  CHECK(open_fds() == fds_before);
}

TEST_CASE("tc kernel: a router namespace counts a forwarded flow at both of its devices",
          "[kernel][tc]") {
  test_namespaces ns(k_prefix, {"a", "r", "c"}, true);
  ns.veth("a", "va", "r", "ra");
  ns.veth("r", "rc", "c", "vc");
  ns.exec("a", "ip addr add 10.232.1.1/24 dev va");
  ns.exec("r", "ip addr add 10.232.1.254/24 dev ra");
  ns.exec("r", "ip addr add 10.232.2.254/24 dev rc");
  ns.exec("c", "ip addr add 10.232.2.1/24 dev vc");
  ns.exec("a", "ip route add default via 10.232.1.254");
  ns.exec("c", "ip route add default via 10.232.2.254");
  ns.exec("r", "sysctl -qw net.ipv4.ip_forward=1");
  const uint32_t r = ns.inode("r");
  const int ra = ns.ifindex("r", "ra"), rc = ns.ifindex("r", "rc");

  const bool tcx = GENERATE(true, false);
  INFO((tcx ? "TCX links" : "classic filters"));
  auto tc = load_tc(mode(tcx));
  fd_guard fr(ns.fd("r"));
  require_ok(tc->attach(ra, fr.fd));
  require_ok(tc->attach(rc, fr.fd));

  fd_guard ca(socket_in(ns, "a", AF_INET, SOCK_DGRAM, "10.232.1.1", 42001));
  fd_guard sc(socket_in(ns, "c", AF_INET, SOCK_DGRAM, "10.232.2.1", 42002));
  udp_exchange(ca.fd, sc.fd, AF_INET, "10.232.2.1", 42002, 4, 300);
  udp_exchange(sc.fd, ca.fd, AF_INET, "10.232.1.1", 42001, 2, 50);

  const auto flows = tc->read_flows();
  const uint8_t udp = IPPROTO_UDP;
  const flow_query there = {r,     ra,           NL_TC_INGRESS, AF_INET, udp, "10.232.1.1",
                            42001, "10.232.2.1", 42002};
  flow_query q = there;
  CHECK(find_flow(flows, q).packets == 4);
  CHECK(find_flow(flows, q).bytes == 4 * 328);
  q.ifindex = rc;
  q.direction = NL_TC_EGRESS;
  CHECK(find_flow(flows, q).packets == 4);
  CHECK(find_flow(flows, q).bytes == 4 * 328);
  q.direction = NL_TC_INGRESS;
  CHECK(find_flow(flows, q).packets == 0);

  const flow_query back = {r,     rc,           NL_TC_INGRESS, AF_INET, udp, "10.232.2.1",
                           42002, "10.232.1.1", 42001};
  q = back;
  CHECK(find_flow(flows, q).packets == 2);
  CHECK(find_flow(flows, q).bytes == 2 * 78);
  q.ifindex = ra;
  q.direction = NL_TC_EGRESS;
  CHECK(find_flow(flows, q).packets == 2);
  CHECK(find_flow(flows, q).bytes == 2 * 78);
  // Nothing of these flows is counted outside the router: a and c carry no netlens filter.
  for (const auto& f : flows)
    CHECK(f.key.netns == r);
}

TEST_CASE("tc kernel: detach and remove_leftovers leave other tools' filters in place",
          "[kernel][tc]") {
  test_namespaces ns(k_prefix, {"a", "b"}, true);
  ns.veth("a", "va", "b", "vb");
  const int va = ns.ifindex("a", "va"), vb = ns.ifindex("b", "vb");
  fd_guard other(load_other_tool_program());
  REQUIRE(other.fd >= 0);

  auto tc = load_tc();
  fd_guard fa(ns.fd("a")), fb(ns.fd("b"));
  require_ok(tc->attach(va, fa.fd));
  // Other tools on the same device: a u32 filter on each hook (this kernel has no matchall)
  // and a bpf filter at another handle and priority.
  ns.exec("a", "tc filter add dev va ingress prio 100 u32 match u32 0 0");
  ns.exec("a", "tc filter add dev va egress prio 100 u32 match u32 0 0");
  REQUIRE(attach_other_tool(ns, "a", "va", BPF_TC_INGRESS, other.fd, 7, 5) == 0);

  // A foreign bpf program at netlens's very handle and priority on the other device: attach
  // refuses to take it over and remove_leftovers does not take it for a netlens leftover.
  REQUIRE(attach_other_tool(ns, "b", "vb", BPF_TC_INGRESS, other.fd, k_tc_handle, k_tc_priority) ==
          0);
  auto refused = tc->attach(vb, fb.fd);
  REQUIRE(refused);
  CHECK(contains(refused->message, "device " + std::to_string(vb)));
  CHECK(contains(refused->message, "netns " + std::to_string(ns.inode("b"))));
  CHECK(tc->attached_devices() == 1);
  CHECK_FALSE(contains(filters(ns, "b", "vb", "egress"), "nl_tc_"));

  for (const char* tag : {"a", "b"}) {
    fd_guard f(ns.fd(tag));
    auto removed = tc->remove_leftovers(f.fd);
    REQUIRE(std::holds_alternative<size_t>(removed));
    CHECK(std::get<size_t>(removed) == 0);
  }
  CHECK(contains(filters(ns, "b", "vb", "ingress"), "other_tool"));
  CHECK(contains(filters(ns, "a", "va", "ingress"), "nl_tc_ingress")); // this run's own stays

  // Another tool replaces netlens's egress filter at netlens's own handle: detach removes
  // netlens's ingress filter, refuses to remove the stranger and says so.
  REQUIRE(attach_other_tool(ns, "a", "va", BPF_TC_EGRESS, other.fd, k_tc_handle, k_tc_priority,
                            BPF_TC_F_REPLACE) == 0);
  auto kept = tc->detach(va, fa.fd);
  REQUIRE(kept);
  CHECK(contains(kept->message, "egress"));
  CHECK(contains(kept->message, "not netlens's"));
  CHECK(tc->attached_devices() == 0);
  const std::string in = filters(ns, "a", "va", "ingress");
  const std::string eg = filters(ns, "a", "va", "egress");
  CHECK_FALSE(contains(in, "nl_tc_"));
  CHECK_FALSE(contains(eg, "nl_tc_"));
  CHECK(contains(in, "u32"));
  CHECK(contains(in, "other_tool"));
  CHECK(contains(eg, "u32"));
  CHECK(contains(eg, "other_tool"));
  CHECK(contains(filters(ns, "b", "vb", "ingress"), "other_tool"));
  // Detaching where nothing of netlens is attached is an error, and removes nothing.
  CHECK(tc->detach(vb, fb.fd));
  CHECK(contains(filters(ns, "b", "vb", "ingress"), "other_tool"));
}

TEST_CASE("tc kernel: the filters of a killed run are removed at the next start, nothing else",
          "[kernel][tc]") {
  test_namespaces ns(k_prefix, {"a", "b"}, true);
  ns.veth("a", "va", "b", "vb");
  const int va = ns.ifindex("a", "va"), vb = ns.ifindex("b", "vb");
  fd_guard other(load_other_tool_program());
  REQUIRE(other.fd >= 0);

  // A run that attaches on both ends and is SIGKILLed: its filters outlive it in the kernel.
  // The namespaces are opened here: the child's pid is not the one in their names, and an fd
  // of -1 would mean the child's own namespace.
  fd_guard child_a(ns.fd("a")), child_b(ns.fd("b"));
  REQUIRE((child_a.fd >= 0 && child_b.fd >= 0));
  int ready[2];
  REQUIRE(pipe2(ready, O_CLOEXEC) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    auto loaded = tc_attach::load(mode(false));
    char ok = 'n';
    if (auto* t = std::get_if<std::unique_ptr<tc_attach>>(&loaded)) {
      if (!(*t)->attach(va, child_a.fd) && !(*t)->attach(vb, child_b.fd))
        ok = 'y';
    }
    (void)!write(ready[1], &ok, 1);
    for (;;)
      pause();
  }
  close(ready[1]);
  char ok = 0;
  const bool got = read(ready[0], &ok, 1) == 1;
  close(ready[0]);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  REQUIRE(got);
  REQUIRE(ok == 'y');
  for (const char* hook : {"ingress", "egress"}) {
    CHECK(contains(filters(ns, "a", "va", hook), "nl_tc_"));
    CHECK(contains(filters(ns, "b", "vb", hook), "nl_tc_"));
  }
  ns.exec("a", "tc filter add dev va ingress prio 100 u32 match u32 0 0");
  REQUIRE(attach_other_tool(ns, "a", "va", BPF_TC_EGRESS, other.fd, 7, 5) == 0);

  auto tc = load_tc();
  fd_guard fa(ns.fd("a")), fb(ns.fd("b"));
  // The leftover holds netlens's handle: until it is removed, this run cannot attach there.
  CHECK(tc->attach(vb, fb.fd));
  for (int* fd : {&fa.fd, &fb.fd}) {
    auto removed = tc->remove_leftovers(*fd);
    if (auto* e = std::get_if<tc_error>(&removed))
      FAIL(e->message);
    CHECK(std::get<size_t>(removed) == 2); // ingress and egress
  }
  for (const char* hook : {"ingress", "egress"}) {
    CHECK_FALSE(contains(filters(ns, "a", "va", hook), "nl_tc_"));
    CHECK_FALSE(contains(filters(ns, "b", "vb", hook), "nl_tc_"));
  }
  CHECK(contains(filters(ns, "a", "va", "ingress"), "u32"));
  CHECK(contains(filters(ns, "a", "va", "egress"), "other_tool"));

  // Now this run attaches, and a second sweep leaves its own filters alone.
  require_ok(tc->attach(vb, fb.fd));
  auto again = tc->remove_leftovers(fb.fd);
  REQUIRE(std::holds_alternative<size_t>(again));
  CHECK(std::get<size_t>(again) == 0);
  CHECK(contains(filters(ns, "b", "vb", "ingress"), "nl_tc_ingress"));
  tc.reset(); // the destructor detaches
  for (const char* hook : {"ingress", "egress"})
    CHECK_FALSE(contains(filters(ns, "b", "vb", hook), "nl_tc_"));
}

TEST_CASE("tc kernel: remove_idle deletes idle flows and leaves active ones as they were",
          "[kernel][tc]") {
  test_namespaces ns(k_prefix, {"a", "b"}, true);
  ns.veth("a", "va", "b", "vb");
  ns.exec("a", "ip addr add 10.233.1.1/24 dev va");
  ns.exec("b", "ip addr add 10.233.1.2/24 dev vb");
  const uint32_t a = ns.inode("a"), b = ns.inode("b");
  const int va = ns.ifindex("a", "va"), vb = ns.ifindex("b", "vb");
  auto tc = load_tc();
  fd_guard fa(ns.fd("a")), fb(ns.fd("b"));
  require_ok(tc->attach(va, fa.fd));
  require_ok(tc->attach(vb, fb.fd));

  const uint8_t udp = IPPROTO_UDP;
  const flow_query old_out = {a,     va,           NL_TC_EGRESS, AF_INET, udp, "10.233.1.1",
                              43001, "10.233.1.2", 43002};
  const flow_query old_in = {b,     vb,           NL_TC_INGRESS, AF_INET, udp, "10.233.1.1",
                             43001, "10.233.1.2", 43002};
  const flow_query new_out = {a,     va,           NL_TC_EGRESS, AF_INET, udp, "10.233.1.1",
                              43003, "10.233.1.2", 43004};
  const flow_query new_in = {b,     vb,           NL_TC_INGRESS, AF_INET, udp, "10.233.1.1",
                             43003, "10.233.1.2", 43004};

  fd_guard c1(socket_in(ns, "a", AF_INET, SOCK_DGRAM, "10.233.1.1", 43001));
  fd_guard s1(socket_in(ns, "b", AF_INET, SOCK_DGRAM, "10.233.1.2", 43002));
  fd_guard c2(socket_in(ns, "a", AF_INET, SOCK_DGRAM, "10.233.1.1", 43003));
  fd_guard s2(socket_in(ns, "b", AF_INET, SOCK_DGRAM, "10.233.1.2", 43004));
  auto now_ns = [] {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  };
  const uint64_t t0 = now_ns();
  udp_exchange(c1.fd, s1.fd, AF_INET, "10.233.1.2", 43002, 3, 100);
  const uint64_t t1 = now_ns();
  std::this_thread::sleep_for(400ms);
  const uint64_t t2 = now_ns();
  udp_exchange(c2.fd, s2.fd, AF_INET, "10.233.1.2", 43004, 2, 100);

  const auto before = tc->read_flows();
  const tc_flow old_flow = find_flow(before, old_out);
  REQUIRE(old_flow.packets == 3);
  // last_ns is the monotonic time of the flow's last packet.
  CHECK(old_flow.last_ns >= t0);
  CHECK(old_flow.last_ns <= t1);
  const tc_flow active_out = find_flow(before, new_out);
  const tc_flow active_in = find_flow(before, new_in);
  REQUIRE(active_out.packets == 2);
  REQUIRE(active_in.packets == 2);
  CHECK(active_out.last_ns >= t2);

  // Idle for 400 ms against a 200 ms threshold: both ends of the first flow go, nothing else
  // (the second flow's last packet is a few ms old).
  CHECK(tc->remove_idle(200'000'000ull) == 2);
  const auto after = tc->read_flows();
  CHECK(after.size() == before.size() - 2);
  CHECK(find_flow(after, old_out).packets == 0);
  CHECK(find_flow(after, old_in).packets == 0);
  const tc_flow kept_out = find_flow(after, new_out);
  const tc_flow kept_in = find_flow(after, new_in);
  CHECK(kept_out.packets == active_out.packets);
  CHECK(kept_out.bytes == active_out.bytes);
  CHECK(kept_out.last_ns == active_out.last_ns);
  CHECK(kept_in.packets == active_in.packets);
  CHECK(kept_in.bytes == active_in.bytes);
  CHECK(kept_in.last_ns == active_in.last_ns);
  // A threshold longer than anything's age removes nothing.
  CHECK(tc->remove_idle(3600'000'000'000ull) == 0);
  CHECK(tc->read_flows().size() == after.size());

  // A removed flow that sends again starts from zero.
  udp_exchange(c1.fd, s1.fd, AF_INET, "10.233.1.2", 43002, 1, 100);
  CHECK(find_flow(tc->read_flows(), old_out).packets == 1);
}

TEST_CASE("tc kernel: max_flows sizes the flow map, a flow beyond it is a failed insert",
          "[kernel][tc]") {
  test_namespaces ns(k_prefix, {"a", "b"}, true);
  ns.veth("a", "va", "b", "vb");
  ns.exec("a", "ip addr add 10.234.1.1/24 dev va");
  ns.exec("b", "ip addr add 10.234.1.2/24 dev vb");
  const int va = ns.ifindex("a", "va");
  tc_load_options opts = mode(true);
  opts.max_flows = 16;
  auto loaded = tc_attach::load(opts);
  if (auto* e = std::get_if<tc_error>(&loaded))
    FAIL("loading tc_flows: " << e->message);
  auto tc = std::move(std::get<std::unique_ptr<tc_attach>>(loaded));
  fd_guard fa(ns.fd("a"));
  require_ok(tc->attach(va, fa.fd)); // one device: each datagram is one egress flow

  fd_guard client(socket_in(ns, "a", AF_INET, SOCK_DGRAM, "10.234.1.1", 44000));
  fd_guard server(socket_in(ns, "b", AF_INET, SOCK_DGRAM, "10.234.1.2", 44001));
  // A first exchange resolves the neighbour: the rest leave at once, not from the ARP queue.
  udp_exchange(client.fd, server.fd, AF_INET, "10.234.1.2", 44001, 1, 32);
  // 23 more destination ports, 24 distinct flows in all, each sent twice.
  std::vector<char> buf(32, 'p');
  for (int round = 0; round < 2; ++round) {
    for (uint16_t port = 44002; port < 44025; ++port) {
      socklen_t len = 0;
      sockaddr_storage dst = address(AF_INET, "10.234.1.2", port, &len);
      REQUIRE(sendto(client.fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&dst),
                     len) == ssize_t(buf.size()));
    }
  }
  const auto flows = tc->read_flows();
  CHECK(flows.size() == 16);
  // 8 flows did not fit, twice each.
  CHECK(tc->read_counters().failed_inserts == 16);

  // Aging makes room again: with everything removed, new flows fit.
  CHECK(tc->remove_idle(0) == 16);
  CHECK(tc->read_flows().empty());
  udp_exchange(client.fd, server.fd, AF_INET, "10.234.1.2", 44001, 1, 32);
  CHECK(tc->read_flows().size() == 1);
  CHECK(tc->read_counters().failed_inserts == 16);
}

TEST_CASE("tc kernel: TCX links run first, leave other tools alone, create no qdisc and go with "
          "a killed process",
          "[kernel][tc][tcx]") {
  test_namespaces ns(k_prefix, {"a", "b"}, true);
  ns.veth("a", "va", "b", "vb");
  ns.exec("a", "ip addr add 10.235.1.1/24 dev va");
  ns.exec("b", "ip addr add 10.235.1.2/24 dev vb");
  const uint32_t a = ns.inode("a");
  const int va = ns.ifindex("a", "va"), vb = ns.ifindex("b", "vb");
  fd_guard fa(ns.fd("a")), fb(ns.fd("b"));

  // Another tool on va: a TCX program that ends the chain (TCX_PASS) on egress, and a clsact
  // qdisc with a u32 filter on ingress.
  fd_guard passing(load_other_tool_program(0));
  REQUIRE(passing.fd >= 0);
  fd_guard other_link(attach_other_tool_tcx(ns, "a", "va", passing.fd, k_tcx_egress));
  REQUIRE(other_link.fd >= 0);
  ns.exec("a", "tc qdisc add dev va clsact");
  ns.exec("a", "tc filter add dev va ingress prio 100 u32 match u32 0 0");

  auto tc = load_tc(mode(true));
  REQUIRE(tc->uses_tcx());
  require_ok(tc->attach(va, fa.fd));
  require_ok(tc->attach(vb, fb.fd));
  // First in the chain, ahead of the program that ends it: every packet is counted.
  const auto chain = tcx_chain(ns, "a", "va", k_tcx_egress);
  REQUIRE(chain.size() == 2);
  CHECK(chain[0] == tc->egress_program_id());
  fd_guard c(socket_in(ns, "a", AF_INET, SOCK_DGRAM, "10.235.1.1", 45001));
  fd_guard sv(socket_in(ns, "b", AF_INET, SOCK_DGRAM, "10.235.1.2", 45002));
  udp_exchange(c.fd, sv.fd, AF_INET, "10.235.1.2", 45002, 6, 100);
  const flow_query out = {a,     va,           NL_TC_EGRESS, AF_INET, IPPROTO_UDP, "10.235.1.1",
                          45001, "10.235.1.2", 45002};
  CHECK(find_flow(tc->read_flows(), out).packets == 6);
  CHECK(find_flow(tc->read_flows(), out).bytes == 6 * 128);
  // No qdisc on vb (none was there), and va's filter and qdisc are as the other tool left them.
  CHECK_FALSE(contains(ns.output("b", "tc qdisc show dev vb"), "clsact"));
  CHECK(contains(filters(ns, "a", "va", "ingress"), "u32"));
  CHECK_FALSE(contains(filters(ns, "a", "va", "ingress"), "nl_tc_"));

  // Detach closes netlens's links only.
  require_ok(tc->detach(va, fa.fd));
  CHECK(tcx_chain(ns, "a", "va", k_tcx_egress) == std::vector<uint32_t>{chain[1]});
  CHECK(tcx_chain(ns, "a", "va", k_tcx_ingress).empty());
  CHECK(contains(filters(ns, "a", "va", "ingress"), "u32"));
  tc.reset();
  CHECK(tcx_chain(ns, "b", "vb", k_tcx_ingress).empty());

  // A process that attached and is SIGKILLed leaves no link behind: the links are its fds.
  int ready[2];
  REQUIRE(pipe2(ready, O_CLOEXEC) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    auto loaded = tc_attach::load(mode(true));
    char ok = 'n';
    if (auto* t = std::get_if<std::unique_ptr<tc_attach>>(&loaded))
      if ((*t)->uses_tcx() && !(*t)->attach(vb, fb.fd))
        ok = 'y';
    (void)!write(ready[1], &ok, 1);
    for (;;)
      pause();
  }
  close(ready[1]);
  char ok = 0;
  const bool got = read(ready[0], &ok, 1) == 1;
  close(ready[0]);
  REQUIRE(got);
  REQUIRE(ok == 'y');
  CHECK(tcx_chain(ns, "b", "vb", k_tcx_ingress).size() == 1);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  CHECK(tcx_chain(ns, "b", "vb", k_tcx_ingress).empty());
  CHECK(tcx_chain(ns, "b", "vb", k_tcx_egress).empty());
}

TEST_CASE("tc kernel: classic TC creates no clsact qdisc unless allowed, and uses one that exists",
          "[kernel][tc]") {
  test_namespaces ns(k_prefix, {"a", "b"}, true);
  ns.veth("a", "va", "b", "vb");
  ns.exec("a", "ip addr add 10.236.1.1/24 dev va");
  ns.exec("b", "ip addr add 10.236.1.2/24 dev vb");
  const uint32_t a = ns.inode("a");
  const int va = ns.ifindex("a", "va"), vb = ns.ifindex("b", "vb");
  fd_guard fa(ns.fd("a")), fb(ns.fd("b"));
  ns.exec("a", "tc qdisc add dev va clsact"); // va has one (another tool's); vb has none

  tc_load_options o;
  o.use_tcx = false; // as on a kernel without TCX; create_clsact stays false, the default
  auto tc = load_tc(o);
  CHECK_FALSE(tc->uses_tcx());
  CHECK(contains(tc->classic_reason(), "configuration"));
  auto skipped = tc->attach(vb, fb.fd);
  REQUIRE(skipped);
  CHECK(skipped->code == tc_errc::no_clsact);
  CHECK(contains(skipped->message, "device " + std::to_string(vb)));
  CHECK_FALSE(contains(ns.output("b", "tc qdisc show dev vb"), "clsact"));
  require_ok(tc->attach(va, fa.fd));
  CHECK(tc->attached_devices() == 1);
  CHECK(contains(filters(ns, "a", "va", "egress"), "nl_tc_egress"));

  fd_guard c(socket_in(ns, "a", AF_INET, SOCK_DGRAM, "10.236.1.1", 46001));
  fd_guard sv(socket_in(ns, "b", AF_INET, SOCK_DGRAM, "10.236.1.2", 46002));
  udp_exchange(c.fd, sv.fd, AF_INET, "10.236.1.2", 46002, 3, 100);
  const flow_query out = {a,     va,           NL_TC_EGRESS, AF_INET, IPPROTO_UDP, "10.236.1.1",
                          46001, "10.236.1.2", 46002};
  CHECK(find_flow(tc->read_flows(), out).packets == 3);
  tc.reset();
  // The qdisc stays: it was there before netlens.
  CHECK(contains(ns.output("a", "tc qdisc show dev va"), "clsact"));
  CHECK_FALSE(contains(filters(ns, "a", "va", "egress"), "nl_tc_"));
}
