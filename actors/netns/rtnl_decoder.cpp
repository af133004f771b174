#include "actors/netns/rtnl_decoder.hpp"

#include <cstring>
#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include "flow/netlink_walk.hpp"

namespace netlens {

const char* to_string(rtnl_kind k) {
  switch (k) {
  case rtnl_kind::new_link:
    return "new_link";
  case rtnl_kind::del_link:
    return "del_link";
  case rtnl_kind::done:
    return "done";
  case rtnl_kind::error:
    return "error";
  }
  return "?";
}

void rtnl_decoder::decode(const uint8_t* buf, size_t len, std::vector<rtnl_message>& out) {
  bool whole =
      walk_messages(buf, len, stats_.messages, [&](const nlmsghdr& hdr, const uint8_t* msg) {
        const uint8_t* payload = msg + NLMSG_HDRLEN;
        const size_t payload_len = hdr.nlmsg_len - NLMSG_HDRLEN;

        rtnl_message m;
        m.seq = hdr.nlmsg_seq;
        m.port_id = hdr.nlmsg_pid;
        m.flags = hdr.nlmsg_flags;
        switch (hdr.nlmsg_type) {
        case NLMSG_DONE:
        case NLMSG_ERROR:
          // DONE carries the dump's status (nothing at all from very old kernels); ERROR a struct
          // nlmsgerr. Both begin with the int error.
          m.kind = hdr.nlmsg_type == NLMSG_DONE ? rtnl_kind::done : rtnl_kind::error;
          if (payload_len >= sizeof m.error) {
            std::memcpy(&m.error, payload, sizeof m.error);
          } else if (m.kind == rtnl_kind::error) {
            ++stats_.malformed;
            return;
          }
          if (m.error != 0) {
            ++stats_.errors;
            stats_.last_error = m.error;
          }
          break;
        case RTM_NEWLINK:
        case RTM_DELLINK: {
          m.kind = hdr.nlmsg_type == RTM_NEWLINK ? rtnl_kind::new_link : rtnl_kind::del_link;
          const verdict v = decode_link(payload, payload_len, m);
          if (v == verdict::malformed) {
            ++stats_.malformed;
            return;
          }
          if (v == verdict::unknown) {
            ++stats_.unknown;
            return;
          }
          break;
        }
        default:
          ++stats_.unknown; // NLMSG_NOOP, NLMSG_OVERRUN, other rtnetlink families
          return;
        }
        ++stats_.decoded;
        out.push_back(std::move(m));
      });
  if (!whole)
    ++stats_.malformed;
}

rtnl_decoder::verdict rtnl_decoder::decode_link(const uint8_t* payload, size_t len,
                                                rtnl_message& m) {
  if (len < sizeof(ifinfomsg))
    return verdict::malformed;
  ifinfomsg ifi;
  std::memcpy(&ifi, payload, sizeof ifi);
  if (ifi.ifi_family != AF_UNSPEC)
    return verdict::unknown; // AF_BRIDGE: a port joined or left a bridge, the device stays
  if (ifi.ifi_index <= 0)
    return verdict::malformed;
  m.ifindex = ifi.ifi_index;
  m.up = (ifi.ifi_flags & IFF_UP) != 0;
  m.loopback = (ifi.ifi_flags & IFF_LOOPBACK) != 0;

  const size_t attrs_at = NLMSG_ALIGN(sizeof(ifinfomsg));
  if (len < attrs_at)
    return verdict::malformed; // cannot happen while sizeof(ifinfomsg) is aligned; kept honest
  const uint8_t* p = payload + attrs_at;
  const size_t attrs_len = len - attrs_at;
  const uint8_t* name = nullptr;
  size_t name_len = 0;
  bool whole = walk_attributes(p, attrs_len, [&](uint16_t type, attr_view v) {
    if (type == IFLA_IFNAME) {
      name = v.data;
      name_len = v.len;
    }
  });
  if (!whole || !name)
    return verdict::malformed;
  const void* nul = std::memchr(name, '\0', name_len < IFNAMSIZ ? name_len : IFNAMSIZ);
  if (!nul)
    return verdict::malformed; // not terminated within the attribute, or IFNAMSIZ or longer
  const size_t n = static_cast<size_t>(static_cast<const uint8_t*>(nul) - name);
  if (n == 0)
    return verdict::malformed;
  m.name.assign(reinterpret_cast<const char*>(name), n);
  return verdict::decoded;
}

} // namespace netlens
