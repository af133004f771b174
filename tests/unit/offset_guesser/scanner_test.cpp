// The offset scanner on synthetic kernel structs: a made-up layout (not this kernel's), random
// bytes around the fields, and decoys where a real kernel has look-alike fields.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <cstring>
#include <random>

#include "actors/offset_guesser/scanner.hpp"

using namespace netlens;

namespace {

// Where the fake kernel keeps each field; deliberately unlike any real layout.
struct fake_layout {
  size_t daddr = 8, rcv_saddr = 12, dport = 20, num = 22, family = 26, state = 29, flags = 32,
         net = 40, v6_daddr = 52, v6_rcv_saddr = 68, protocol = 302, shutdown = 311,
         bytes_acked = 1000, bytes_received = 1008, segs_out = 1016, segs_in = 1020, srtt = 1024,
         mdev = 1028, total_retrans = 1032, snd_una = 1036, write_seq = 1040, mstamp = 1048,
         cookie = 88;
  size_t size = 1300;
  size_t net_inum = 176;
};

constexpr uint64_t k_net_pointer = 0xffff888012345000ull;
constexpr uint64_t k_other_pointer = 0xffffffff82a01c40ull; // same in every socket, not a net
constexpr uint32_t k_inode = 4026531993u;

template <class T> void put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}

uint32_t v4(uint8_t last) {
  return htonl(0x7f000000u | last);
}

in6_bytes mapped(uint8_t last) {
  in6_bytes a{};
  a[10] = a[11] = 0xff;
  uint32_t x = v4(last);
  std::memcpy(&a[12], &x, 4);
  return a;
}

// A sample whose bytes hold what its expectations say, at the fake layout's offsets, over
// random bytes; what an expectation leaves empty is left random too (UDP has no tcp_sock).
scan_sample image(const fake_layout& l, scan_sample s, uint32_t seed) {
  std::mt19937 rng(seed);
  s.sock.resize(l.size);
  for (auto& b : s.sock)
    b = static_cast<uint8_t>(rng());
  auto& b = s.sock;
  if (s.v4_daddr)
    put(b, l.daddr, *s.v4_daddr);
  if (s.v4_saddr)
    put(b, l.rcv_saddr, *s.v4_saddr);
  put(b, l.dport, htons(s.dport));
  put(b, l.num, s.sport);
  put(b, l.family, s.family);
  put(b, l.state, s.state);
  if (s.flags)
    put(b, l.flags, (uint64_t{0xabc00} & ~s.flags->mask) | s.flags->value);
  put(b, l.net, k_net_pointer);
  put(b, 120, k_other_pointer);
  if (s.v6_daddr)
    std::memcpy(b.data() + l.v6_daddr, s.v6_daddr->data(), 16);
  if (s.v6_saddr)
    std::memcpy(b.data() + l.v6_rcv_saddr, s.v6_saddr->data(), 16);
  if (s.cookie)
    put(b, l.cookie, *s.cookie);
  put(b, l.protocol, s.protocol);
  if (s.shutdown)
    put(b, l.shutdown, *s.shutdown);
  if (s.tcp) {
    put(b, l.bytes_acked, s.tcp->bytes_acked);
    put(b, l.bytes_received, s.tcp->bytes_received);
    put(b, l.segs_out, s.tcp->segs_out);
    put(b, l.segs_in, s.tcp->segs_in);
    // The bits TCP_INFO shifts away are not zero in a real socket.
    put(b, l.srtt, (s.tcp->rtt_us << 3) | 5u);
    put(b, l.mdev, (s.tcp->rttvar_us << 2) | 3u);
    put(b, l.total_retrans, s.tcp->total_retrans);
  }
  if (s.seq) {
    put(b, l.snd_una, s.seq->snd_una);
    put(b, l.write_seq, s.seq->write_seq);
  }
  if (s.mstamp_range)
    put(b, l.mstamp, (s.mstamp_range->first + s.mstamp_range->second) / 2);
  return s;
}

scan_sample tcp(const char* name, int family, uint8_t me, uint8_t peer, uint16_t sport,
                uint16_t dport, uint32_t k) {
  scan_sample s;
  s.name = name;
  s.family = static_cast<uint16_t>(family);
  s.protocol = 6;
  s.state = 1;
  s.sport = sport;
  s.dport = dport;
  if (family == AF_INET6) {
    s.v6_saddr = mapped(me);
    s.v6_daddr = mapped(peer);
  }
  s.v4_saddr = v4(me);
  s.v4_daddr = v4(peer);
  s.cookie = 0x4000 + k;
  s.shutdown = static_cast<uint8_t>(k % 4);
  s.flags = flag_bits{0x5f, (k & 1) ? 0x8u : 0x2u};
  s.tcp = tcp_info_values{1000 + k * 17, 2000 + k * 31, 10 + k, 20 + 2 * k, 30 + k, 15 + 2 * k, k};
  s.seq = tcp_seq_values{0x10000000u * k + 5000, 0x10000000u * k + 4000 - k};
  s.mstamp_range = std::make_pair(uint64_t{5000000} + k * 1000, uint64_t{5000000} + k * 1000 + 40);
  return s;
}

scan_sample udp(const char* name, uint8_t me, uint8_t peer, uint16_t sport, uint16_t dport) {
  scan_sample s;
  s.name = name;
  s.family = AF_INET;
  s.protocol = 17;
  s.state = peer ? 1 : 7;
  s.sport = sport;
  s.dport = dport;
  s.v4_saddr = v4(me);
  s.v4_daddr = peer ? v4(peer) : 0;
  s.shutdown = 3;
  s.cookie = 0x5000 + sport;
  s.flags = flag_bits{0x5f, 0x40};
  return s;
}

std::vector<scan_sample> known_sockets(const fake_layout& l) {
  std::vector<scan_sample> v;
  v.push_back(image(l, tcp("tcp4 client", AF_INET, 10, 11, 40001, 5001, 1), 1));
  v.push_back(image(l, tcp("tcp4 server", AF_INET, 11, 10, 5001, 40001, 2), 2));
  v.push_back(image(l, tcp("tcp6 client", AF_INET6, 12, 13, 40002, 5002, 3), 3));
  v.push_back(image(l, tcp("tcp6 server", AF_INET6, 13, 12, 5002, 40002, 4), 4));
  v.push_back(image(l, udp("udp4 a", 14, 15, 6001, 6002), 5));
  v.push_back(image(l, udp("udp4 unconnected", 16, 0, 6003, 0), 6));
  return v;
}

std::vector<net_window> nets_for(const std::vector<scan_sample>& samples, const fake_layout& l) {
  std::vector<net_window> nets;
  for (const auto& c : net_pointer_candidates(samples)) {
    net_window w{c.offset, std::vector<uint8_t>(1024, 0x11)};
    if (c.pointer == k_net_pointer)
      put(w.bytes, l.net_inum, k_inode);
    nets.push_back(std::move(w));
  }
  return nets;
}

const field_candidates& field(const scan_outcome& o, const std::string& name) {
  for (const auto& f : o.fields)
    if (f.field == name)
      return f;
  FAIL("no field " << name);
  return o.fields.front();
}

} // namespace

TEST_CASE("scanner finds every field of a synthetic layout", "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  auto cands = net_pointer_candidates(samples);
  REQUIRE(cands.size() == 2); // the net pointer and the decoy, both the same in every socket
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  INFO(out.error_text());
  REQUIRE(out.ok);
  CHECK(out.fields.size() == 24);
  const auto& o = out.offsets;
  CHECK(o.skc_daddr == l.daddr);
  CHECK(o.skc_rcv_saddr == l.rcv_saddr);
  CHECK(o.skc_dport == l.dport);
  CHECK(o.skc_num == l.num);
  CHECK(o.skc_family == l.family);
  CHECK(o.skc_state == l.state);
  CHECK(o.skc_flags == l.flags);
  CHECK(o.skc_net == l.net);
  CHECK(o.net_ns_inum == l.net_inum);
  CHECK(o.skc_v6_daddr == l.v6_daddr);
  CHECK(o.skc_v6_rcv_saddr == l.v6_rcv_saddr);
  CHECK(o.skc_cookie == l.cookie);
  CHECK(o.sk_protocol == l.protocol);
  CHECK(o.sk_shutdown == l.shutdown);
  CHECK(o.tcp_bytes_acked == l.bytes_acked);
  CHECK(o.tcp_bytes_received == l.bytes_received);
  CHECK(o.tcp_segs_out == l.segs_out);
  CHECK(o.tcp_segs_in == l.segs_in);
  CHECK(o.tcp_srtt_us == l.srtt);
  CHECK(o.tcp_mdev_us == l.mdev);
  CHECK(o.tcp_total_retrans == l.total_retrans);
  CHECK(o.tcp_snd_una == l.snd_una);
  CHECK(o.tcp_write_seq == l.write_seq);
  CHECK(o.tcp_mstamp == l.mstamp);
}

TEST_CASE("scanner finds the same fields at another layout", "[offset_guesser]") {
  fake_layout l;
  l.daddr = 100;
  l.total_retrans = 1200;
  l.mstamp = 888;
  l.net_inum = 40;
  auto samples = known_sockets(l);
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  INFO(out.error_text());
  REQUIRE(out.ok);
  CHECK(out.offsets.skc_daddr == 100);
  CHECK(out.offsets.tcp_total_retrans == 1200);
  CHECK(out.offsets.tcp_mstamp == 888);
  CHECK(out.offsets.net_ns_inum == 40);
}

TEST_CASE("a look-alike that follows the field in every socket is ambiguous, by name",
          "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  // A counter that happens to equal total_retrans wherever it is known (tcp_sock.lost does
  // when every lost segment was retransmitted once), plus one more that does too.
  for (auto& s : samples)
    if (s.tcp) {
      put(s.sock, 1120, s.tcp->total_retrans);
      put(s.sock, 1200, s.tcp->total_retrans);
    }
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  CHECK_FALSE(out.ok);
  REQUIRE(out.errors.size() == 1);
  CHECK(out.errors[0] == "tcp_total_retrans: 3 candidate offsets (1032, 1120, 1200)");
  CHECK(field(out, "tcp_total_retrans").offsets.size() == 3);
  // The other fields are still found.
  CHECK(out.offsets.tcp_segs_out == l.segs_out);

  // One socket where the look-alikes differ settles it.
  put(samples[0].sock, 1120, samples[0].tcp->total_retrans + 1);
  put(samples[2].sock, 1200, samples[2].tcp->total_retrans + 7);
  auto settled = scan_offsets(samples, nets_for(samples, l), k_inode);
  INFO(settled.error_text());
  CHECK(settled.ok);
  CHECK(settled.offsets.tcp_total_retrans == l.total_retrans);
}

TEST_CASE("a field whose value is nowhere is reported not found", "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  samples[1].tcp->segs_out += 1; // the kernel moved on after user space looked
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  CHECK_FALSE(out.ok);
  REQUIRE(out.errors.size() == 1);
  CHECK(out.errors[0] == "tcp_segs_out: not found");
  CHECK(out.error_text() == "tcp_segs_out: not found");
}

TEST_CASE("srtt and mdev match on what TCP_INFO keeps of them", "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  // rtt 30 us is srtt_us 240..247: any of them is the field; 248 is not.
  put(samples[0].sock, l.srtt, uint32_t{247});
  samples[0].tcp->rtt_us = 30;
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  CHECK(out.offsets.tcp_srtt_us == l.srtt);
  put(samples[0].sock, l.srtt, uint32_t{248});
  out = scan_offsets(samples, nets_for(samples, l), k_inode);
  CHECK_FALSE(out.ok);
  CHECK(out.error_text() == "tcp_srtt_us: not found");
}

TEST_CASE("tcp_mstamp must fall inside each socket's clock bracket", "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  // An older timestamp (first_tx_mstamp, say) inside the bracket of one socket only.
  put(samples[0].sock, 1064, samples[0].mstamp_range->first + 1);
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  INFO(out.error_text());
  CHECK(out.ok);
  // Inside every bracket: ambiguous.
  for (auto& s : samples)
    if (s.mstamp_range)
      put(s.sock, 1064, s.mstamp_range->second);
  out = scan_offsets(samples, nets_for(samples, l), k_inode);
  CHECK(out.error_text() == "tcp_mstamp: 2 candidate offsets (1048, 1064)");
}

TEST_CASE("v4-mapped v6 sockets constrain the v4 fields too", "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  // inet_saddr and cork.fl.daddr: copies of the v4 addresses that only v4 sockets fill in
  // here (the v6 sockets hold something else there).
  for (auto& s : samples) {
    put(s.sock, 600, s.family == AF_INET ? *s.v4_saddr : uint32_t{0});
    put(s.sock, 604, s.family == AF_INET ? *s.v4_daddr : uint32_t{0});
  }
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  INFO(out.error_text());
  CHECK(out.ok); // the mapped sockets' v4 addresses rule the copies out
  CHECK(out.offsets.skc_rcv_saddr == l.rcv_saddr);
  CHECK(out.offsets.skc_daddr == l.daddr);
  CHECK(out.offsets.skc_v6_rcv_saddr == l.v6_rcv_saddr);
  CHECK(out.offsets.skc_v6_daddr == l.v6_daddr);

  // Without them (a guesser that treated v6 sockets as v6 only) the copies stay candidates.
  for (auto& s : samples)
    if (s.family == AF_INET6) {
      s.v4_saddr.reset();
      s.v4_daddr.reset();
    }
  out = scan_offsets(samples, nets_for(samples, l), k_inode);
  CHECK_FALSE(out.ok);
  CHECK(out.error_text() == "skc_daddr: 2 candidate offsets (8, 604); "
                            "skc_rcv_saddr: 2 candidate offsets (12, 600)");
}

TEST_CASE("skc_net is the pointer whose target holds the netns inode", "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  auto cands = net_pointer_candidates(samples);
  REQUIRE(cands.size() == 2);
  CHECK(cands[0].offset == l.net);
  CHECK(cands[0].pointer == k_net_pointer);
  CHECK(cands[1].offset == 120);

  SECTION("no window holds the inode") {
    auto out = scan_offsets(samples, nets_for(samples, l), k_inode + 1);
    CHECK(out.error_text() == "skc_net: not found; net_ns_inum: not found");
  }
  SECTION("both windows hold it") {
    auto nets = nets_for(samples, l);
    put(nets[1].bytes, 176, k_inode);
    auto out = scan_offsets(samples, nets, k_inode);
    CHECK(out.error_text() == "skc_net: 2 candidate offsets (40, 120)");
  }
  SECTION("the inode twice in the net window") {
    auto nets = nets_for(samples, l);
    put(nets[0].bytes, 500, k_inode);
    auto out = scan_offsets(samples, nets, k_inode);
    CHECK(out.offsets.skc_net == l.net);
    CHECK(out.error_text() == "net_ns_inum: 2 candidate offsets (176, 500)");
  }
  SECTION("a socket with another pointer there is no candidate") {
    put(samples[3].sock, l.net, k_net_pointer + 0x1000);
    auto again = net_pointer_candidates(samples);
    REQUIRE(again.size() == 1);
    CHECK(again[0].offset == 120);
  }
}

TEST_CASE("a short window limits the search to what every sample has", "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  // The copy of one TCP socket stopped before tcp_sock's fields (a chunk faulted).
  samples[0].sock.resize(900);
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  CHECK(out.offsets.skc_num == l.num);
  CHECK_FALSE(out.ok);
  CHECK(field(out, "tcp_write_seq").offsets.empty());
}

TEST_CASE("no sample that knows a field is an error, not a guess", "[offset_guesser]") {
  fake_layout l;
  auto samples = known_sockets(l);
  for (auto& s : samples)
    s.seq.reset();
  auto out = scan_offsets(samples, nets_for(samples, l), k_inode);
  CHECK(out.error_text() == "tcp_snd_una: not found; tcp_write_seq: not found");
}
