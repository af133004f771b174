#include "flow/active_table.hpp"

#include <algorithm>

#include "flow/netns_handle.hpp"
#include "flow/socket_table.hpp"

namespace netlens {

void read_whole_table(const active_table& table, std::vector<nl_conn>& out, uint32_t max_page) {
  out.clear();
  uint32_t page = std::min<uint32_t>(256, max_page);
  active_cursor cursor;
  while (!cursor.done) {
    size_t had = out.size();
    table.read_active_page(cursor, out, page);
    if (out.size() - had >= page && page < max_page)
      page *= 2;
  }
}

kernel_live_sockets::kernel_live_sockets() : own_netns_(own_netns_inode()) {}

live_cookies kernel_live_sockets::tcp_cookies(uint32_t netns,
                                              const std::vector<const nl_conn*>& in_ns) {
  if (netns == own_netns_)
    return live_tcp_cookies();
  std::string why = "no process of its entries is in it any more";
  for (const nl_conn* c : in_ns) {
    if (c->pid == 0)
      continue;
    auto handle = netns_handle::open_for_pid(static_cast<pid_t>(c->pid), netns);
    if (auto* h = std::get_if<netns_handle>(&handle))
      return live_tcp_cookies_in(h->fd());
    why = std::get<netns_error>(handle).message;
  }
  return why;
}

} // namespace netlens
