// UDP per peer, the part user space does. The kernel counts each peer of an unconnected UDP
// socket in a flow of its own, under the socket's own entry (NL_FLAG_UDP_PEERS), which keeps
// only datagrams whose peer it was not told. Two things the kernel cannot do are done here:
// - an empty socket entry is no flow: it is not shown, and its close is not reported;
// - the socket's close ends its peers' flows. They are keyed by socket and peer, so the close
//   cannot find them in the kernel; its record names the socket, and the next read of the
//   active map ends every flow of that socket that started before the close.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "bpf/netlens_records.h"

namespace netlens {

// A UDP socket's own entry that counted nothing itself: every datagram went to a peer's flow.
bool is_empty_socket_entry(const nl_conn& c);

// Removes the empty socket entries from a read of the active map.
void drop_empty_socket_entries(std::vector<nl_conn>& conns);

class udp_socket_closes {
public:
  // A closed record. False when it is an empty socket entry, which is not reported. A socket
  // entry's close is remembered until the next sweep.
  bool closed(const nl_conn& c);
  // Closes not swept yet.
  size_t pending() const { return closed_at_.size(); }
  // An active entry that is a peer's flow of a socket closed since it started.
  bool ends(const nl_conn& active) const;
  // The whole map was read and every flow ends() named was ended.
  void swept() { closed_at_.clear(); }

private:
  // sock_id of the socket's entry -> when it closed (its record's last_ns). A raw_tp build's
  // sock_id is the socket's address: a later socket there starts its flows after this.
  std::unordered_map<uint64_t, uint64_t> closed_at_;
};

} // namespace netlens
