#include "flow/udp_peer_flows.hpp"

#include <algorithm>

namespace netlens {

bool is_empty_socket_entry(const nl_conn& c) {
  return (c.flags & NL_FLAG_UDP_PEERS) && c.bytes_sent == 0 && c.bytes_recv == 0 &&
         c.packets_sent == 0 && c.packets_recv == 0;
}

void drop_empty_socket_entries(std::vector<nl_conn>& conns) {
  conns.erase(std::remove_if(conns.begin(), conns.end(), is_empty_socket_entry), conns.end());
}

bool udp_socket_closes::closed(const nl_conn& c) {
  if (c.flags & NL_FLAG_UDP_PEERS) {
    uint64_t& at = closed_at_[c.sock_id];
    at = std::max<uint64_t>(at, c.last_ns);
  }
  return !is_empty_socket_entry(c);
}

bool udp_socket_closes::ends(const nl_conn& active) const {
  if (active.parent_sock_id == 0)
    return false;
  auto it = closed_at_.find(active.parent_sock_id);
  return it != closed_at_.end() && active.start_ns <= it->second;
}

} // namespace netlens
