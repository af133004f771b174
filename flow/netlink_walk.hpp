// Walking what a netlink socket reads: the messages of one read, the attributes of one message.
// Plain C++ over bytes, for the decoders of conntrack's and rtnetlink's messages; both follow
// libmnl's rules (a length that does not fit stops the walk, trailing bytes shorter than a
// header are ignored).
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace netlens {

// One attribute's payload.
struct attr_view {
  const uint8_t* data = nullptr;
  size_t len = 0;
  explicit operator bool() const { return data != nullptr; }
};

// Calls f(type, payload) for every attribute in [p, p + len), type without its flag bits.
// False when an attribute's length does not fit what holds it: the kernel never builds such a
// message. Fewer bytes left than an attribute header are ignored, as libmnl does.
template <typename F> bool walk_attributes(const uint8_t* p, size_t len, F&& f) {
  size_t off = 0;
  while (off + sizeof(nlattr) <= len) {
    nlattr a;
    std::memcpy(&a, p + off, sizeof a);
    if (a.nla_len < sizeof(nlattr) || a.nla_len > len - off)
      return false;
    f(static_cast<uint16_t>(a.nla_type & NLA_TYPE_MASK),
      attr_view{p + off + NLA_HDRLEN, static_cast<size_t>(a.nla_len - NLA_HDRLEN)});
    off += NLA_ALIGN(a.nla_len);
  }
  return true;
}

// Calls f(header, message) for every whole message in [buf, buf + len), message pointing at
// its header (nlmsg_len bytes). messages counts each message met, the broken one included.
// False at trailing bytes too short for a header, or a length that does not fit: the length is
// the only way to the next message, so the walk stops there.
template <typename F>
bool walk_messages(const uint8_t* buf, size_t len, uint64_t& messages, F&& f) {
  size_t off = 0;
  while (off < len) {
    ++messages;
    nlmsghdr hdr;
    if (len - off < sizeof hdr)
      return false;
    std::memcpy(&hdr, buf + off, sizeof hdr);
    if (hdr.nlmsg_len < sizeof hdr || hdr.nlmsg_len > len - off)
      return false;
    f(hdr, buf + off);
    off += NLMSG_ALIGN(hdr.nlmsg_len); // past len when the last message is unpadded: loop ends
  }
  return true;
}

} // namespace netlens
