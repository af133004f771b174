#include "flow/active_table.hpp"

#include <algorithm>
#include <iterator>

#include "flow/netns_handle.hpp"
#include "flow/netns_search.hpp"
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

kernel_live_sockets::kernel_live_sockets(std::chrono::steady_clock::duration research_after)
    : own_netns_(own_netns_inode()), research_after_(research_after) {}

live_cookies kernel_live_sockets::tcp_cookies(uint32_t netns,
                                              const std::vector<const nl_conn*>& in_ns) {
  if (netns == own_netns_)
    return live_tcp_cookies();
  for (const nl_conn* c : in_ns) {
    if (c->pid == 0)
      continue;
    auto handle = netns_handle::open_for_pid(static_cast<pid_t>(c->pid), netns);
    if (auto* h = std::get_if<netns_handle>(&handle)) {
      unreachable_.erase(netns);
      return live_tcp_cookies_in(h->fd());
    }
  }
  // None of its entries' processes is in it (they exited, or the entries name none): a
  // container's last connections often outlive the process that made them.
  const auto now = std::chrono::steady_clock::now();
  if (auto it = unreachable_.find(netns); it != unreachable_.end() && now < it->second.first)
    return it->second.second;
  auto found = find_netns(netns);
  if (auto* h = std::get_if<netns_handle>(&found)) {
    unreachable_.erase(netns);
    return live_tcp_cookies_in(h->fd());
  }
  std::string why = std::get<netns_error>(found).message;
  // Namespaces not asked about again since their wait ended (gone, or their entries were)
  // are forgotten, so the map holds only those still being asked about.
  for (auto it = unreachable_.begin(); it != unreachable_.end();)
    it = now >= it->second.first + research_after_ ? unreachable_.erase(it) : std::next(it);
  unreachable_[netns] = {now + research_after_, why};
  return why;
}

} // namespace netlens
