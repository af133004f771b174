// The rtnetlink link decoder on messages built here byte by byte, laid out as the kernel sends
// them, and on every broken form a socket could hand it. No sockets, no root.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <vector>

#include "actors/netns/rtnl_decoder.hpp"

using namespace netlens;

namespace {

using bytes = std::vector<uint8_t>;

void put(bytes& b, const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
}
void pad4(bytes& b) {
  while (b.size() % 4)
    b.push_back(0);
}

// An attribute of type `type` whose payload is `payload` (nla_len = header + payload, padded).
void attr(bytes& b, uint16_t type, const void* payload, size_t n) {
  nlattr a{static_cast<uint16_t>(NLA_HDRLEN + n), type};
  put(b, &a, sizeof a);
  put(b, payload, n);
  pad4(b);
}

// A whole message: header, body; nlmsg_len set to what was built unless forced.
bytes message(uint16_t type, const bytes& body, uint32_t seq = 0, uint32_t pid = 0,
              uint16_t flags = 0) {
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(NLMSG_HDRLEN + body.size());
  h.nlmsg_type = type;
  h.nlmsg_flags = flags;
  h.nlmsg_seq = seq;
  h.nlmsg_pid = pid;
  bytes b;
  put(b, &h, sizeof h);
  put(b, body.data(), body.size());
  pad4(b);
  return b;
}

struct link_spec {
  int index = 7;
  const char* name = "veth0";
  unsigned flags = IFF_UP;
  uint8_t family = AF_UNSPEC;
  bool with_name = true;
  bool extra_attrs = true; // IFLA_MTU before and a nested IFLA_LINKINFO after the name
};

bytes link_body(const link_spec& s) {
  bytes b;
  ifinfomsg ifi{};
  ifi.ifi_family = s.family;
  ifi.ifi_index = s.index;
  ifi.ifi_flags = s.flags;
  put(b, &ifi, sizeof ifi);
  if (s.extra_attrs) {
    uint32_t mtu = 1500;
    attr(b, IFLA_MTU, &mtu, sizeof mtu);
  }
  if (s.with_name)
    attr(b, IFLA_IFNAME, s.name, std::strlen(s.name) + 1);
  if (s.extra_attrs) {
    bytes kind;
    attr(kind, IFLA_INFO_KIND, "veth", 5);
    attr(b, IFLA_LINKINFO | NLA_F_NESTED, kind.data(), kind.size());
  }
  return b;
}

bytes link_msg(uint16_t type, const link_spec& s, uint32_t seq = 0, uint32_t pid = 0,
               uint16_t flags = 0) {
  return message(type, link_body(s), seq, pid, flags);
}

bytes cat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts)
    out.insert(out.end(), p.begin(), p.end());
  return out;
}

bytes int_body(int v) {
  bytes b;
  put(b, &v, sizeof v);
  return b;
}

struct decoded {
  rtnl_decoder d;
  std::vector<rtnl_message> out;
  explicit decoded(const bytes& b) { d.decode(b.data(), b.size(), out); }
  const rtnl_decode_stats& stats() const { return d.stats(); }
};

// A link message whose IFLA_IFNAME payload is exactly `raw` (no terminator added).
bytes link_with_raw_name(const bytes& raw) {
  bytes b;
  ifinfomsg ifi{};
  ifi.ifi_index = 3;
  put(b, &ifi, sizeof ifi);
  attr(b, IFLA_IFNAME, raw.data(), raw.size());
  return message(RTM_NEWLINK, b);
}

} // namespace

TEST_CASE("rtnl: a new link gives its index, name and flags", "[rtnl]") {
  link_spec s;
  s.index = 42;
  s.name = "eth-test";
  s.flags = IFF_UP | IFF_LOOPBACK;
  decoded r(link_msg(RTM_NEWLINK, s, 9, 1234, NLM_F_MULTI));
  REQUIRE(r.out.size() == 1);
  const auto& m = r.out[0];
  CHECK(m.kind == rtnl_kind::new_link);
  CHECK(m.ifindex == 42);
  CHECK(m.name == "eth-test");
  CHECK(m.up);
  CHECK(m.loopback);
  CHECK(m.seq == 9);
  CHECK(m.port_id == 1234);
  CHECK(m.flags == NLM_F_MULTI);
  CHECK(r.stats().messages == 1);
  CHECK(r.stats().decoded == 1);
  CHECK(r.stats().malformed == 0);
}

TEST_CASE("rtnl: a deleted link, down, is del_link", "[rtnl]") {
  link_spec s;
  s.flags = 0;
  decoded r(link_msg(RTM_DELLINK, s));
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0].kind == rtnl_kind::del_link);
  CHECK(r.out[0].ifindex == 7);
  CHECK(r.out[0].name == "veth0");
  CHECK_FALSE(r.out[0].up);
  CHECK_FALSE(r.out[0].loopback);
}

TEST_CASE("rtnl: a name of IFNAMSIZ-1 characters is kept whole", "[rtnl]") {
  link_spec s;
  s.name = "abcdefghijklmno"; // 15
  decoded r(link_msg(RTM_NEWLINK, s));
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0].name == "abcdefghijklmno");
}

TEST_CASE("rtnl: a name attribute padded with NULs past the name is accepted", "[rtnl]") {
  bytes raw = {'l', 'o', 0, 0, 0, 0, 0, 0};
  decoded r(link_with_raw_name(raw));
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0].name == "lo");
}

TEST_CASE("rtnl: a dump: parts, then DONE, several messages in one buffer", "[rtnl]") {
  link_spec lo;
  lo.index = 1;
  lo.name = "lo";
  lo.flags = IFF_UP | IFF_LOOPBACK;
  link_spec v;
  v.index = 2;
  v.name = "veth1";
  bytes buf = cat({link_msg(RTM_NEWLINK, lo, 5, 77, NLM_F_MULTI),
                   link_msg(RTM_NEWLINK, v, 5, 77, NLM_F_MULTI | NLM_F_DUMP_INTR),
                   message(NLMSG_DONE, int_body(0), 5, 77, NLM_F_MULTI)});
  decoded r(buf);
  REQUIRE(r.out.size() == 3);
  CHECK(r.out[0].name == "lo");
  CHECK(r.out[0].loopback);
  CHECK(r.out[1].name == "veth1");
  CHECK((r.out[1].flags & NLM_F_DUMP_INTR) != 0);
  CHECK(r.out[2].kind == rtnl_kind::done);
  CHECK(r.out[2].error == 0);
  CHECK(r.out[2].seq == 5);
  CHECK(r.stats().errors == 0);
}

TEST_CASE("rtnl: DONE without a status (old kernels) is still the end", "[rtnl]") {
  decoded r(message(NLMSG_DONE, {}));
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0].kind == rtnl_kind::done);
  CHECK(r.out[0].error == 0);
}

TEST_CASE("rtnl: DONE carrying an error counts it", "[rtnl]") {
  decoded r(message(NLMSG_DONE, int_body(-EINTR)));
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0].error == -EINTR);
  CHECK(r.stats().errors == 1);
  CHECK(r.stats().last_error == -EINTR);
}

TEST_CASE("rtnl: NLMSG_ERROR gives the errno, an ack is error 0", "[rtnl]") {
  nlmsgerr e{};
  e.error = -EBUSY;
  e.msg.nlmsg_type = RTM_GETLINK;
  bytes body;
  put(body, &e, sizeof e);
  nlmsgerr ack{};
  bytes ack_body;
  put(ack_body, &ack, sizeof ack);
  decoded r(cat({message(NLMSG_ERROR, body, 3, 10), message(NLMSG_ERROR, ack_body, 4, 10)}));
  REQUIRE(r.out.size() == 2);
  CHECK(r.out[0].kind == rtnl_kind::error);
  CHECK(r.out[0].error == -EBUSY);
  CHECK(r.out[0].seq == 3);
  CHECK(r.out[1].error == 0);
  CHECK(r.stats().errors == 1);
  CHECK(r.stats().last_error == -EBUSY);
}

TEST_CASE("rtnl: an NLMSG_ERROR too short for its error is malformed", "[rtnl]") {
  decoded r(message(NLMSG_ERROR, {1, 2}));
  CHECK(r.out.empty());
  CHECK(r.stats().malformed == 1);
}

TEST_CASE("rtnl: other types and AF_BRIDGE link messages are unknown, not events", "[rtnl]") {
  link_spec bridge_port;
  bridge_port.family = AF_BRIDGE; // a port left a bridge: the device is still there
  bytes buf = cat({message(NLMSG_NOOP, {}), message(RTM_NEWADDR, bytes(24, 0)),
                   link_msg(RTM_DELLINK, bridge_port), link_msg(RTM_NEWLINK, link_spec{})});
  decoded r(buf);
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0].name == "veth0");
  CHECK(r.stats().unknown == 3);
  CHECK(r.stats().messages == 4);
  CHECK(r.stats().malformed == 0);
}

TEST_CASE("rtnl: a truncated header is malformed and ends the buffer", "[rtnl]") {
  bytes good = link_msg(RTM_NEWLINK, link_spec{});
  for (size_t cut = 1; cut < sizeof(nlmsghdr); ++cut) {
    bytes buf = good;
    buf.insert(buf.end(), good.begin(), good.begin() + static_cast<long>(cut));
    decoded r(buf);
    CHECK(r.out.size() == 1);
    CHECK(r.stats().malformed == 1);
  }
}

TEST_CASE("rtnl: nlmsg_len past the buffer or below a header is malformed", "[rtnl]") {
  bytes good = link_msg(RTM_NEWLINK, link_spec{});
  for (uint32_t bad : {uint32_t(2 * good.size() + 1), uint32_t(0xffffffff), uint32_t(0),
                       uint32_t(sizeof(nlmsghdr) - 1)}) {
    bytes buf = good;
    std::memcpy(buf.data(), &bad, sizeof bad);
    buf.insert(buf.end(), good.begin(), good.end()); // never reached: the length is the way
    decoded r(buf);
    CHECK(r.out.empty());
    CHECK(r.stats().malformed == 1);
    CHECK(r.stats().messages == 1);
  }
}

TEST_CASE("rtnl: a link message cut inside its ifinfomsg is malformed", "[rtnl]") {
  bytes body(sizeof(ifinfomsg) - 1, 0);
  decoded r(message(RTM_NEWLINK, body));
  CHECK(r.out.empty());
  CHECK(r.stats().malformed == 1);
}

TEST_CASE("rtnl: an attribute longer than the message, or shorter than its header", "[rtnl]") {
  for (uint16_t bad : {uint16_t(2), uint16_t(3), uint16_t(200), uint16_t(0xffff)}) {
    bytes body = link_body(link_spec{});
    // The first attribute (IFLA_MTU) sits right after the ifinfomsg.
    std::memcpy(body.data() + sizeof(ifinfomsg), &bad, sizeof bad);
    decoded r(message(RTM_NEWLINK, body));
    CHECK(r.out.empty());
    CHECK(r.stats().malformed == 1);
  }
}

TEST_CASE("rtnl: a name attribute claiming more than is there is malformed", "[rtnl]") {
  link_spec s;
  s.extra_attrs = false;
  bytes body = link_body(s);
  // The message ends inside the name: cut the buffer but keep the attribute's length.
  body.resize(body.size() - 4);
  decoded r(message(RTM_NEWLINK, body));
  CHECK(r.out.empty());
  CHECK(r.stats().malformed == 1);
}

TEST_CASE("rtnl: a link without IFLA_IFNAME is malformed", "[rtnl]") {
  link_spec s;
  s.with_name = false;
  decoded r(link_msg(RTM_NEWLINK, s));
  CHECK(r.out.empty());
  CHECK(r.stats().malformed == 1);
}

TEST_CASE("rtnl: a name without NUL, empty, or IFNAMSIZ long is malformed", "[rtnl]") {
  SECTION("not terminated") { // also checks nothing is read past the attribute
    decoded r(link_with_raw_name({'e', 't', 'h', '0'}));
    CHECK(r.out.empty());
    CHECK(r.stats().malformed == 1);
  }
  SECTION("IFNAMSIZ characters, then NUL") {
    bytes raw(IFNAMSIZ, 'x');
    raw.push_back(0);
    decoded r(link_with_raw_name(raw));
    CHECK(r.out.empty());
    CHECK(r.stats().malformed == 1);
  }
  SECTION("IFNAMSIZ - 1 characters, then NUL is the longest kept") {
    bytes raw(IFNAMSIZ - 1, 'x');
    raw.push_back(0);
    decoded r(link_with_raw_name(raw));
    REQUIRE(r.out.size() == 1);
    CHECK(r.out[0].name.size() == IFNAMSIZ - 1);
  }
  SECTION("empty") {
    decoded r(link_with_raw_name({0}));
    CHECK(r.out.empty());
    CHECK(r.stats().malformed == 1);
  }
  SECTION("zero-length attribute") {
    decoded r(link_with_raw_name({}));
    CHECK(r.out.empty());
    CHECK(r.stats().malformed == 1);
  }
}

TEST_CASE("rtnl: an ifindex of 0 or below is malformed", "[rtnl]") {
  for (int idx : {0, -1}) {
    link_spec s;
    s.index = idx;
    decoded r(link_msg(RTM_NEWLINK, s));
    CHECK(r.out.empty());
    CHECK(r.stats().malformed == 1);
  }
}

TEST_CASE("rtnl: a malformed message in the middle does not hide the next one", "[rtnl]") {
  link_spec nameless;
  nameless.with_name = false;
  link_spec second;
  second.index = 8;
  second.name = "veth1";
  decoded r(cat({link_msg(RTM_NEWLINK, nameless), link_msg(RTM_NEWLINK, second)}));
  REQUIRE(r.out.size() == 1);
  CHECK(r.out[0].ifindex == 8);
  CHECK(r.stats().malformed == 1);
  CHECK(r.stats().decoded == 1);
}

TEST_CASE("rtnl: trailing bytes shorter than an attribute header are ignored", "[rtnl]") {
  bytes body = link_body(link_spec{});
  body.push_back(0xaa); // 1..3 stray bytes: the message length says they belong to it
  body.push_back(0xbb);
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(NLMSG_HDRLEN + body.size());
  h.nlmsg_type = RTM_NEWLINK;
  bytes buf;
  put(buf, &h, sizeof h);
  put(buf, body.data(), body.size()); // unpadded last message
  decoded r(buf);
  REQUIRE(r.out.size() == 1);
  CHECK(r.stats().malformed == 0);
}

TEST_CASE("rtnl: an empty buffer decodes to nothing", "[rtnl]") {
  decoded r(bytes{});
  CHECK(r.out.empty());
  CHECK(r.stats().messages == 0);
}
