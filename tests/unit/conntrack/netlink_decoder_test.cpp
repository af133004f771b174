// The conntrack netlink decoder on messages built here the way the kernel lays them out (with
// libnetfilter_conntrack's own builder, or by hand for the broken ones). No sockets, no root.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <linux/netlink.h>
#include <random>

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>

#include "actors/conntrack/netlink_decoder.hpp"

using namespace netlens;

namespace {

constexpr uint32_t k_netns = 4026531992u;

struct flow {
  int family = AF_INET;
  uint8_t protocol = IPPROTO_TCP;
  const char* orig_src = "10.0.0.1";
  const char* orig_dst = "10.0.0.2";
  uint16_t orig_sport = 40000, orig_dport = 80;
  const char* reply_src = "10.0.0.2";
  const char* reply_dst = "10.0.0.1";
  uint16_t reply_sport = 80, reply_dport = 40000;
  bool with_reply = true;
};

flow natted_v4() {
  flow f;
  f.reply_src = "192.168.1.7"; // DNAT 10.0.0.2:80 -> 192.168.1.7:8080
  f.reply_sport = 8080;
  return f;
}

// One conntrack object as the kernel would describe the flow.
struct ct_object {
  nf_conntrack* ct = nfct_new();
  explicit ct_object(const flow& f) {
    REQUIRE(ct);
    nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, static_cast<uint8_t>(f.family));
    nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, f.protocol);
    set_addr(f.family, ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC, f.orig_src);
    set_addr(f.family, ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST, f.orig_dst);
    if (f.protocol == IPPROTO_ICMP) {
      nfct_set_attr_u8(ct, ATTR_ICMP_TYPE, 8);
      nfct_set_attr_u8(ct, ATTR_ICMP_CODE, 0);
      nfct_set_attr_u16(ct, ATTR_ICMP_ID, htons(77));
    } else {
      nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, htons(f.orig_sport));
      nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, htons(f.orig_dport));
    }
    if (f.with_reply) {
      nfct_set_attr_u8(ct, ATTR_REPL_L3PROTO, static_cast<uint8_t>(f.family));
      nfct_set_attr_u8(ct, ATTR_REPL_L4PROTO, f.protocol);
      set_addr(f.family, ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC, f.reply_src);
      set_addr(f.family, ATTR_REPL_IPV4_DST, ATTR_REPL_IPV6_DST, f.reply_dst);
      if (f.protocol != IPPROTO_ICMP) {
        nfct_set_attr_u16(ct, ATTR_REPL_PORT_SRC, htons(f.reply_sport));
        nfct_set_attr_u16(ct, ATTR_REPL_PORT_DST, htons(f.reply_dport));
      }
    }
    nfct_set_attr_u32(ct, ATTR_TIMEOUT, 120);
    nfct_set_attr_u32(ct, ATTR_STATUS, IPS_CONFIRMED);
    if (f.protocol == IPPROTO_TCP)
      nfct_set_attr_u8(ct, ATTR_TCP_STATE, 3); // ESTABLISHED in the kernel's tcp_conntrack
  }
  ~ct_object() { nfct_destroy(ct); }
  void set_addr(int family, nf_conntrack_attr v4, nf_conntrack_attr v6, const char* text) {
    if (family == AF_INET) {
      in_addr a{};
      REQUIRE(inet_pton(AF_INET, text, &a) == 1);
      nfct_set_attr_u32(ct, v4, a.s_addr);
    } else {
      in6_addr a{};
      REQUIRE(inet_pton(AF_INET6, text, &a) == 1);
      nfct_set_attr(ct, v6, &a);
    }
  }
};

using bytes = std::vector<uint8_t>;

// A conntrack netlink message: header, nfgenmsg, then libnetfilter_conntrack's attributes.
bytes build(const flow& f, uint8_t msg_type, uint16_t flags = 0) {
  std::vector<uint32_t> storage(1024); // 4-byte aligned, as the builder writes through pointers
  auto* nlh = reinterpret_cast<nlmsghdr*>(storage.data());
  nlh->nlmsg_len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  nlh->nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | msg_type);
  nlh->nlmsg_flags = flags;
  auto* gen = reinterpret_cast<nfgenmsg*>(reinterpret_cast<uint8_t*>(nlh) + NLMSG_HDRLEN);
  gen->nfgen_family = static_cast<uint8_t>(f.family);
  gen->version = NFNETLINK_V0;
  ct_object obj(f);
  REQUIRE(nfct_nlmsg_build(nlh, obj.ct) == 0);
  auto* p = reinterpret_cast<const uint8_t*>(nlh);
  return bytes(p, p + nlh->nlmsg_len);
}

bytes control(uint16_t type, int error, bool with_error = true) {
  bytes b(NLMSG_HDRLEN + (with_error ? sizeof(nlmsgerr) : 0), 0);
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(b.size());
  h.nlmsg_type = type;
  std::memcpy(b.data(), &h, sizeof h);
  if (with_error)
    std::memcpy(b.data() + NLMSG_HDRLEN, &error, sizeof error);
  return b;
}

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
    out.resize(NLMSG_ALIGN(out.size()), 0);
  }
  return out;
}

void set_len(bytes& b, uint32_t len) {
  std::memcpy(b.data(), &len, sizeof len);
}

// An attribute appended by hand (the builder would never write a broken one).
void append_attr(bytes& msg, uint16_t type, const bytes& payload) {
  nlattr a{};
  a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + payload.size());
  a.nla_type = type;
  size_t at = msg.size();
  msg.resize(at + NLA_ALIGN(a.nla_len), 0);
  std::memcpy(msg.data() + at, &a, sizeof a);
  std::memcpy(msg.data() + at + NLA_HDRLEN, payload.data(), payload.size());
  set_len(msg, static_cast<uint32_t>(msg.size()));
}

std::vector<ct_event> decode(netlink_decoder& d, const bytes& b, bool from_dump = false) {
  std::vector<ct_event> out;
  d.decode(b.data(), b.size(), k_netns, from_dump, out);
  return out;
}

ct_endpoints ends(int family, const char* s, uint16_t sp, const char* dst, uint16_t dp) {
  ct_endpoints e;
  REQUIRE(inet_pton(family, s, e.saddr) == 1);
  REQUIRE(inet_pton(family, dst, e.daddr) == 1);
  e.sport = sp;
  e.dport = dp;
  return e;
}

} // namespace

TEST_CASE("a NAT'd TCP NEW event becomes a created entry", "[netlink_decoder]") {
  netlink_decoder d;
  auto f = natted_v4();
  auto out = decode(d, build(f, IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL));
  REQUIRE(out.size() == 1);
  const ct_event& ev = out[0];
  CHECK(ev.kind == ct_event_kind::created);
  CHECK(ev.entry.netns == k_netns);
  CHECK(ev.entry.family == AF_INET);
  CHECK(ev.entry.protocol == IPPROTO_TCP);
  CHECK(ev.entry.orig == ends(AF_INET, "10.0.0.1", 40000, "10.0.0.2", 80));
  CHECK(ev.entry.reply == ends(AF_INET, "192.168.1.7", 8080, "10.0.0.1", 40000));
  // v4 sits in the first 4 bytes, the rest stays zero (the cache hashes the bytes)
  for (int i = 4; i < 16; ++i)
    CHECK(ev.entry.orig.saddr[i] == 0);
  CHECK(has_nat(ev.entry));
  CHECK(d.stats().messages == 1);
  CHECK(d.stats().decoded == 1);
  CHECK(d.stats().malformed == 0);
  CHECK(d.stats().unknown == 0);
}

TEST_CASE("a UDP DESTROY event without NAT becomes a destroyed entry", "[netlink_decoder]") {
  netlink_decoder d;
  flow f;
  f.protocol = IPPROTO_UDP;
  f.orig_dport = f.reply_sport = 53;
  auto out = decode(d, build(f, IPCTNL_MSG_CT_DELETE));
  REQUIRE(out.size() == 1);
  CHECK(out[0].kind == ct_event_kind::destroyed);
  CHECK(out[0].entry.protocol == IPPROTO_UDP);
  CHECK(out[0].entry.orig == ends(AF_INET, "10.0.0.1", 40000, "10.0.0.2", 53));
  CHECK_FALSE(has_nat(out[0].entry));
}

TEST_CASE("a dump's entries become dumped, a DELETE in a dump is not an entry",
          "[netlink_decoder]") {
  netlink_decoder d;
  auto buf = concat({build(natted_v4(), IPCTNL_MSG_CT_NEW, NLM_F_MULTI),
                     build(flow{}, IPCTNL_MSG_CT_DELETE, NLM_F_MULTI)});
  auto out = decode(d, buf, true);
  REQUIRE(out.size() == 1);
  CHECK(out[0].kind == ct_event_kind::dumped);
  CHECK(d.stats().unknown == 1);
  CHECK_FALSE(d.stats().done);
}

TEST_CASE("IPv6 entries keep all 16 address bytes", "[netlink_decoder]") {
  netlink_decoder d;
  flow f;
  f.family = AF_INET6;
  f.orig_src = "fd00::1";
  f.orig_dst = "fd00::2";
  f.reply_src = "fd00:1::99"; // DNAT'd
  f.reply_dst = "fd00::1";
  f.reply_sport = 8443;
  f.orig_dport = 443;
  auto out = decode(d, build(f, IPCTNL_MSG_CT_NEW));
  REQUIRE(out.size() == 1);
  CHECK(out[0].entry.family == AF_INET6);
  CHECK(out[0].entry.orig == ends(AF_INET6, "fd00::1", 40000, "fd00::2", 443));
  CHECK(out[0].entry.reply == ends(AF_INET6, "fd00:1::99", 8443, "fd00::1", 40000));
  CHECK(has_nat(out[0].entry));

  f.protocol = IPPROTO_UDP;
  out = decode(d, build(f, IPCTNL_MSG_CT_DELETE));
  REQUIRE(out.size() == 1);
  CHECK(out[0].kind == ct_event_kind::destroyed);
  CHECK(out[0].entry.protocol == IPPROTO_UDP);
}

TEST_CASE("ICMP and other protocols are skipped and counted as unknown", "[netlink_decoder]") {
  netlink_decoder d;
  flow f;
  f.protocol = IPPROTO_ICMP;
  auto out = decode(d, build(f, IPCTNL_MSG_CT_NEW));
  CHECK(out.empty());
  CHECK(d.stats().unknown == 1);
  CHECK(d.stats().malformed == 0);

  f.protocol = IPPROTO_SCTP;
  out = decode(d, build(f, IPCTNL_MSG_CT_DELETE));
  CHECK(out.empty());
  CHECK(d.stats().unknown == 2);
}

TEST_CASE("other families, subsystems and message types are unknown", "[netlink_decoder]") {
  netlink_decoder d;
  auto other_family = build(flow{}, IPCTNL_MSG_CT_NEW);
  other_family[NLMSG_HDRLEN] = AF_BRIDGE;
  auto expectation = build(flow{}, IPCTNL_MSG_CT_NEW);
  uint16_t exp_type = (NFNL_SUBSYS_CTNETLINK_EXP << 8) | 0;
  std::memcpy(expectation.data() + 4, &exp_type, sizeof exp_type);
  auto get = build(flow{}, IPCTNL_MSG_CT_GET);
  auto noop = control(NLMSG_NOOP, 0, false);
  auto out = decode(d, concat({other_family, expectation, get, noop}));
  CHECK(out.empty());
  CHECK(d.stats().messages == 4);
  CHECK(d.stats().unknown == 4);
  CHECK(d.stats().malformed == 0);
}

TEST_CASE("NLMSG_DONE ends a dump, NLMSG_ERROR is counted with its code", "[netlink_decoder]") {
  netlink_decoder d;
  decode(d, control(NLMSG_ERROR, 0)); // an acknowledgement, not an error
  CHECK(d.stats().errors == 0);
  decode(d, control(NLMSG_ERROR, -EPERM));
  CHECK(d.stats().errors == 1);
  CHECK(d.stats().last_error == -EPERM);
  CHECK_FALSE(d.stats().done);

  auto out = decode(
      d, concat({build(flow{}, IPCTNL_MSG_CT_NEW, NLM_F_MULTI), control(NLMSG_DONE, 0)}), true);
  CHECK(out.size() == 1);
  CHECK(d.stats().done);
  CHECK(d.stats().errors == 1);
  d.clear_done();
  CHECK_FALSE(d.stats().done);

  decode(d, control(NLMSG_DONE, -EINTR), true); // a dump the kernel could not finish
  CHECK(d.stats().done);
  CHECK(d.stats().errors == 2);
  CHECK(d.stats().last_error == -EINTR);

  auto short_error = control(NLMSG_ERROR, 0, false); // no room for the code
  decode(d, short_error);
  CHECK(d.stats().malformed == 1);
}

TEST_CASE("several messages in one buffer are all decoded in order", "[netlink_decoder]") {
  netlink_decoder d;
  flow icmp;
  icmp.protocol = IPPROTO_ICMP;
  flow udp;
  udp.protocol = IPPROTO_UDP;
  auto out = decode(
      d, concat({build(natted_v4(), IPCTNL_MSG_CT_NEW), build(icmp, IPCTNL_MSG_CT_NEW),
                 build(udp, IPCTNL_MSG_CT_DELETE), build(natted_v4(), IPCTNL_MSG_CT_DELETE)}));
  REQUIRE(out.size() == 3);
  CHECK(out[0].kind == ct_event_kind::created);
  CHECK(out[1].kind == ct_event_kind::destroyed);
  CHECK(out[1].entry.protocol == IPPROTO_UDP);
  CHECK(out[2].kind == ct_event_kind::destroyed);
  CHECK(has_nat(out[2].entry));
  CHECK(d.stats().messages == 4);
  CHECK(d.stats().unknown == 1);
}

TEST_CASE("truncated messages and bad lengths are malformed, never read past",
          "[netlink_decoder]") {
  netlink_decoder d;
  auto good = build(natted_v4(), IPCTNL_MSG_CT_NEW);

  SECTION("the buffer ends inside the message") {
    bytes cut(good.begin(), good.begin() + static_cast<long>(good.size() / 2));
    CHECK(decode(d, cut).empty());
    CHECK(d.stats().malformed == 1);
  }
  SECTION("shorter than a header") {
    bytes cut(good.begin(), good.begin() + 10);
    CHECK(decode(d, cut).empty());
    CHECK(d.stats().malformed == 1);
  }
  SECTION("nlmsg_len below the header size stops the walk") {
    auto buf = concat({good, good});
    set_len(buf, 8);
    CHECK(decode(d, buf).empty());
    CHECK(d.stats().malformed == 1);
    CHECK(d.stats().messages == 1);
  }
  SECTION("nlmsg_len larger than the buffer") {
    set_len(good, static_cast<uint32_t>(good.size() + 64));
    CHECK(decode(d, good).empty());
    CHECK(d.stats().malformed == 1);
  }
  SECTION("no room for the nfgenmsg") {
    bytes b(good.begin(), good.begin() + NLMSG_HDRLEN + 2);
    set_len(b, static_cast<uint32_t>(b.size()));
    CHECK(decode(d, b).empty());
    CHECK(d.stats().malformed == 1);
  }
  SECTION("the message length cuts the attributes short") {
    // The kernel's length says less than the attributes need: the reply tuple is cut off.
    bytes b(good.begin(), good.end() - 40);
    set_len(b, static_cast<uint32_t>(b.size()));
    CHECK(decode(d, b).empty());
    CHECK(d.stats().malformed == 1);
  }
  SECTION("a good message after a malformed one in the same buffer still counts") {
    flow no_reply = natted_v4();
    no_reply.with_reply = false;
    auto out = decode(d, concat({build(no_reply, IPCTNL_MSG_CT_NEW), good}));
    CHECK(out.size() == 1);
    CHECK(d.stats().malformed == 1);
  }
}

TEST_CASE("a message lacking a tuple does not inherit the previous message's",
          "[netlink_decoder]") {
  netlink_decoder d;
  flow no_reply = natted_v4();
  no_reply.with_reply = false;
  auto out = decode(d, build(natted_v4(), IPCTNL_MSG_CT_NEW)); // a complete one first
  REQUIRE(out.size() == 1);
  out = decode(d, build(no_reply, IPCTNL_MSG_CT_NEW));
  CHECK(out.empty());
  CHECK(d.stats().malformed == 1);
  // v6 after v4: the v4 addresses of the last message must not stand in for missing v6 ones
  bytes v6_without_addresses = build(natted_v4(), IPCTNL_MSG_CT_NEW);
  v6_without_addresses[NLMSG_HDRLEN] = AF_INET6;
  out = decode(d, v6_without_addresses);
  CHECK(out.empty());
  CHECK(d.stats().malformed == 2);
}

TEST_CASE("an unaligned buffer decodes like an aligned one", "[netlink_decoder]") {
  netlink_decoder d;
  auto good = build(natted_v4(), IPCTNL_MSG_CT_NEW);
  bytes shifted(good.size() + 1);
  std::memcpy(shifted.data() + 1, good.data(), good.size());
  std::vector<ct_event> out;
  d.decode(shifted.data() + 1, good.size(), k_netns, false, out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].entry.reply == ends(AF_INET, "192.168.1.7", 8080, "10.0.0.1", 40000));
}

TEST_CASE("attributes of the wrong size", "[netlink_decoder]") {
  netlink_decoder d;
  auto msg = build(natted_v4(), IPCTNL_MSG_CT_NEW);

  SECTION("in an attribute the decoder does not need: skipped, the entry kept") {
    // libnetfilter_conntrack's parser would exit() the process here ("ABI is broken").
    append_attr(msg, CTA_STATUS, {1, 2});
    append_attr(msg, CTA_HELP | NLA_F_NESTED, {'f', 't', 'p', 'x'}); // no NUL, not nested
    CHECK(decode(d, msg).size() == 1);
    CHECK(d.stats().malformed == 0);
  }
  SECTION("in a tuple: malformed") {
    // A second, short CTA_TUPLE_REPLY: the last one of a type counts, as in libmnl.
    bytes ip_attr(NLA_HDRLEN + 2);
    nlattr a{};
    a.nla_len = static_cast<uint16_t>(ip_attr.size());
    a.nla_type = CTA_IP_V4_SRC;
    std::memcpy(ip_attr.data(), &a, sizeof a);
    bytes tuple_ip(NLA_ALIGN(ip_attr.size()) + NLA_HDRLEN);
    a.nla_len = static_cast<uint16_t>(tuple_ip.size());
    a.nla_type = CTA_TUPLE_IP | NLA_F_NESTED;
    std::memcpy(tuple_ip.data(), &a, sizeof a);
    std::memcpy(tuple_ip.data() + NLA_HDRLEN, ip_attr.data(), ip_attr.size());
    append_attr(msg, CTA_TUPLE_REPLY | NLA_F_NESTED, tuple_ip);
    CHECK(decode(d, msg).empty());
    CHECK(d.stats().malformed == 1);
  }
  SECTION("a nested length past its parent: malformed") {
    bytes inner(8, 0);
    nlattr a{};
    a.nla_len = 200; // claims more than the 8 bytes there are
    a.nla_type = CTA_TUPLE_IP | NLA_F_NESTED;
    std::memcpy(inner.data(), &a, sizeof a);
    append_attr(msg, CTA_TUPLE_ORIG | NLA_F_NESTED, inner);
    CHECK(decode(d, msg).empty());
    CHECK(d.stats().malformed == 1);
  }
}

TEST_CASE("garbage and mutated messages never crash and are counted", "[netlink_decoder]") {
  netlink_decoder d;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> byte(0, 255);
  auto base = concat({build(natted_v4(), IPCTNL_MSG_CT_NEW), build(flow{}, IPCTNL_MSG_CT_DELETE)});
  uint64_t produced = 0;
  for (int round = 0; round < 20000; ++round) {
    bytes b;
    if (round % 2 == 0) {
      b.resize(static_cast<size_t>(rng() % 300));
      for (auto& x : b)
        x = static_cast<uint8_t>(byte(rng));
    } else {
      b = base;
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < flips; ++i)
        b[rng() % b.size()] = static_cast<uint8_t>(byte(rng));
      if (rng() % 4 == 0)
        b.resize(rng() % b.size());
    }
    std::vector<ct_event> out;
    d.decode(b.data(), b.size(), k_netns, round % 3 == 0, out);
    produced += out.size();
    for (const auto& ev : out) {
      CHECK((ev.entry.protocol == IPPROTO_TCP || ev.entry.protocol == IPPROTO_UDP));
      CHECK((ev.entry.family == AF_INET || ev.entry.family == AF_INET6));
    }
  }
  const auto& s = d.stats();
  CHECK(s.decoded == produced);
  CHECK(s.messages >= s.decoded + s.malformed + s.unknown);
  CHECK(s.malformed > 0);
}
