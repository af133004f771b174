// Turns the bytes of netlink messages from a conntrack socket (events or a dump) into
// ct_events. Malformed and unknown messages are counted and skipped, never trusted. No CAF, no
// socket, no allocation per message: fuzzable as is.
//
// The attributes are walked here, not by libnetfilter_conntrack's nfct_nlmsg_parse: that one
// calls exit() on an attribute of the wrong size ("ctnetlink kernel ABI is broken"), so one bad
// message would end the agent. Only its header is used, for the attribute numbers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "flow/flow_key.hpp"

namespace netlens {

struct netlink_decode_stats {
  uint64_t messages = 0;  // netlink messages seen
  uint64_t decoded = 0;   // turned into an event
  uint64_t malformed = 0; // truncated, bad length, attributes missing or of the wrong size
  uint64_t unknown = 0; // not a conntrack NEW/DESTROY/dump entry (other types, families, protocols)
  uint64_t errors = 0;  // NLMSG_ERROR carrying an error code (or NLMSG_DONE carrying one)
  int last_error = 0;   // that code, a negative errno as the kernel sends it
  bool done = false;    // NLMSG_DONE seen (end of a dump)
};

class netlink_decoder {
public:
  netlink_decoder() = default;
  netlink_decoder(const netlink_decoder&) = delete;
  netlink_decoder& operator=(const netlink_decoder&) = delete;

  // Decodes every message in buf[0, len). Entries are tagged with netns. from_dump: messages
  // are a dump's answer (IPCTNL_MSG_CT_NEW without the event flags) and become
  // ct_event_kind::dumped. Only TCP and UDP over IPv4/IPv6 are kept. Appends to out.
  void decode(const uint8_t* buf, size_t len, uint32_t netns, bool from_dump,
              std::vector<ct_event>& out);

  const netlink_decode_stats& stats() const { return stats_; }
  void clear_done() { stats_.done = false; }

private:
  enum class verdict { decoded, malformed, unknown };
  void decode_message(const uint8_t* msg, uint32_t msg_len, uint16_t msg_type, uint32_t netns,
                      bool from_dump, std::vector<ct_event>& out);
  static verdict parse_entry(const uint8_t* attrs, size_t len, uint8_t family, ct_entry& e);

  netlink_decode_stats stats_;
};

} // namespace netlens
