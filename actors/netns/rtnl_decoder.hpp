// Turns the bytes read from a NETLINK_ROUTE socket into link messages: RTM_NEWLINK and
// RTM_DELLINK (events or a dump's entries), NLMSG_DONE and NLMSG_ERROR. Malformed and unknown
// messages are counted and skipped, never trusted, never read past. No CAF, no socket:
// fuzzable as is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace netlens {

enum class rtnl_kind {
  new_link, // RTM_NEWLINK: a device appeared, changed (renamed, flags) or a dump lists it
  del_link, // RTM_DELLINK: a device is gone from this namespace (deleted or moved out)
  done,     // NLMSG_DONE: the end of a dump; error is its status
  error,    // NLMSG_ERROR: error is 0 for an ack, else a negative errno
};
const char* to_string(rtnl_kind k);

// One decoded message. seq and port_id are the header's: a dump's parts carry the requester's
// sequence number and port id, plain events 0 (or those of whoever asked for the change).
struct rtnl_message {
  rtnl_kind kind = rtnl_kind::new_link;
  uint32_t seq = 0;
  uint32_t port_id = 0;
  uint16_t flags = 0;    // nlmsg_flags: NLM_F_MULTI on dump parts, NLM_F_DUMP_INTR when the
                         // device list changed during the dump
  int32_t ifindex = 0;   // links only; always > 0
  std::string name;      // links only; 1..IFNAMSIZ-1 characters
  bool up = false;       // IFF_UP
  bool loopback = false; // IFF_LOOPBACK
  int error = 0;         // done and error only, as the kernel sends it (negative errno)
};

struct rtnl_decode_stats {
  uint64_t messages = 0;  // netlink messages seen (including malformed ones)
  uint64_t decoded = 0;   // handed out
  uint64_t malformed = 0; // truncated, lengths past their container, no or bad IFLA_IFNAME...
  uint64_t unknown = 0;   // other types, and link messages of another family (AF_BRIDGE port
                          // events share the link group but describe a bridge membership)
  uint64_t errors = 0;    // NLMSG_ERROR or NLMSG_DONE carrying a nonzero error
  int last_error = 0;     // that error, negative errno
};

class rtnl_decoder {
public:
  rtnl_decoder() = default;
  rtnl_decoder(const rtnl_decoder&) = delete;
  rtnl_decoder& operator=(const rtnl_decoder&) = delete;

  // Decodes every message in buf[0, len) and appends what it keeps to out. A message whose
  // length cannot be trusted ends the buffer: the length is the only way to the next one.
  void decode(const uint8_t* buf, size_t len, std::vector<rtnl_message>& out);

  const rtnl_decode_stats& stats() const { return stats_; }

private:
  enum class verdict { decoded, malformed, unknown };
  verdict decode_link(const uint8_t* payload, size_t len, rtnl_message& m);

  rtnl_decode_stats stats_;
};

} // namespace netlens
