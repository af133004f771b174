#include "actors/conntrack/netlink_decoder.hpp"

#include <arpa/inet.h>
#include <cstring>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>

#include "flow/netlink_walk.hpp"

namespace netlens {
namespace {

// The attributes of one direction's tuple that an entry is made of.
struct tuple_attrs {
  attr_view src4, dst4, src6, dst6, proto, sport, dport;
};

bool parse_tuple(attr_view tuple, tuple_attrs& t) {
  bool ok = true;
  bool walked = walk_attributes(tuple.data, tuple.len, [&](uint16_t type, attr_view v) {
    if (type == CTA_TUPLE_IP) {
      ok = ok && walk_attributes(v.data, v.len, [&](uint16_t ip_type, attr_view a) {
             switch (ip_type) {
             case CTA_IP_V4_SRC:
               t.src4 = a;
               break;
             case CTA_IP_V4_DST:
               t.dst4 = a;
               break;
             case CTA_IP_V6_SRC:
               t.src6 = a;
               break;
             case CTA_IP_V6_DST:
               t.dst6 = a;
               break;
             default:
               break;
             }
           });
    } else if (type == CTA_TUPLE_PROTO) {
      ok = ok && walk_attributes(v.data, v.len, [&](uint16_t proto_type, attr_view a) {
             switch (proto_type) {
             case CTA_PROTO_NUM:
               t.proto = a;
               break;
             case CTA_PROTO_SRC_PORT:
               t.sport = a;
               break;
             case CTA_PROTO_DST_PORT:
               t.dport = a;
               break;
             default:
               break;
             }
           });
    }
  });
  return walked && ok;
}

// Copies an address attribute of exactly `size` bytes (network byte order, as sent).
bool read_address(attr_view a, size_t size, uint8_t* out) {
  if (!a || a.len != size)
    return false;
  std::memcpy(out, a.data, size);
  return true;
}

bool read_port(attr_view a, uint16_t& out) {
  if (!a || a.len != sizeof(uint16_t))
    return false;
  uint16_t be;
  std::memcpy(&be, a.data, sizeof be);
  out = ntohs(be);
  return true;
}

bool read_endpoints(const tuple_attrs& t, uint8_t family, ct_endpoints& e) {
  const bool v4 = family == AF_INET;
  const size_t size = v4 ? 4 : 16;
  return read_address(v4 ? t.src4 : t.src6, size, e.saddr) &&
         read_address(v4 ? t.dst4 : t.dst6, size, e.daddr) && read_port(t.sport, e.sport) &&
         read_port(t.dport, e.dport);
}

} // namespace

void netlink_decoder::decode(const uint8_t* buf, size_t len, uint32_t netns, bool from_dump,
                             std::vector<ct_event>& out) {
  bool whole =
      walk_messages(buf, len, stats_.messages, [&](const nlmsghdr& hdr, const uint8_t* msg) {
        decode_message(msg, hdr.nlmsg_len, hdr.nlmsg_type, netns, from_dump, out);
      });
  if (!whole)
    ++stats_.malformed;
}

void netlink_decoder::decode_message(const uint8_t* msg, uint32_t msg_len, uint16_t msg_type,
                                     uint32_t netns, bool from_dump, std::vector<ct_event>& out) {
  const size_t payload_len = msg_len - NLMSG_HDRLEN;
  const uint8_t* payload = msg + NLMSG_HDRLEN;

  if (msg_type == NLMSG_ERROR || msg_type == NLMSG_DONE) {
    // NLMSG_ERROR carries a struct nlmsgerr; a dump's NLMSG_DONE carries its status. Both start
    // with the int error, 0 meaning success.
    int error = 0;
    if (payload_len < sizeof error) {
      if (msg_type == NLMSG_DONE)
        stats_.done = true; // a bare DONE, as older kernels sent it
      else
        ++stats_.malformed;
      return;
    }
    std::memcpy(&error, payload, sizeof error);
    if (error != 0) {
      ++stats_.errors;
      stats_.last_error = error;
    }
    if (msg_type == NLMSG_DONE)
      stats_.done = true;
    return;
  }

  const unsigned subsystem = msg_type >> 8;
  const unsigned type = msg_type & 0xff;
  if (subsystem != NFNL_SUBSYS_CTNETLINK ||
      (type != IPCTNL_MSG_CT_NEW && type != IPCTNL_MSG_CT_DELETE) ||
      (from_dump && type != IPCTNL_MSG_CT_NEW)) {
    ++stats_.unknown;
    return;
  }
  if (payload_len < NLMSG_ALIGN(sizeof(nfgenmsg))) {
    ++stats_.malformed;
    return;
  }
  nfgenmsg gen;
  std::memcpy(&gen, payload, sizeof gen);
  if (gen.nfgen_family != AF_INET && gen.nfgen_family != AF_INET6) {
    ++stats_.unknown;
    return;
  }

  ct_event ev;
  switch (parse_entry(payload + NLMSG_ALIGN(sizeof(nfgenmsg)),
                      payload_len - NLMSG_ALIGN(sizeof(nfgenmsg)), gen.nfgen_family, ev.entry)) {
  case verdict::malformed:
    ++stats_.malformed;
    return;
  case verdict::unknown:
    ++stats_.unknown;
    return;
  case verdict::decoded:
    break;
  }
  ev.entry.netns = netns;
  ev.kind = from_dump                   ? ct_event_kind::dumped
            : type == IPCTNL_MSG_CT_NEW ? ct_event_kind::created
                                        : ct_event_kind::destroyed;
  out.push_back(ev);
  ++stats_.decoded;
}

netlink_decoder::verdict netlink_decoder::parse_entry(const uint8_t* attrs, size_t len,
                                                      uint8_t family, ct_entry& e) {
  attr_view orig, reply;
  // Every other attribute (status, timeout, counters, helper, labels...) is skipped unread;
  // only its length has to fit.
  bool walked = walk_attributes(attrs, len, [&](uint16_t type, attr_view v) {
    if (type == CTA_TUPLE_ORIG)
      orig = v;
    else if (type == CTA_TUPLE_REPLY)
      reply = v;
  });
  if (!walked || !orig || !reply)
    return verdict::malformed;
  tuple_attrs o, r;
  if (!parse_tuple(orig, o) || !parse_tuple(reply, r))
    return verdict::malformed;
  if (!o.proto || o.proto.len != 1 || !r.proto || r.proto.len != 1)
    return verdict::malformed;
  const uint8_t proto = o.proto.data[0];
  if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
    return verdict::unknown; // ICMP, SCTP, GRE...: nothing a traced socket would look up
  if (r.proto.data[0] != proto)
    return verdict::malformed;
  if (!read_endpoints(o, family, e.orig) || !read_endpoints(r, family, e.reply))
    return verdict::malformed;
  e.family = family;
  e.protocol = proto;
  return verdict::decoded;
}

} // namespace netlens
