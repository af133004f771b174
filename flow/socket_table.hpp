// The kernel's own table of TCP sockets (sock_diag), as a check on the tracer's map: an entry
// whose socket no longer exists missed its close and must not stay forever.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <variant>
#include <vector>

#include "bpf/netlens_records.h"

namespace netlens {

// Cookies of every TCP socket (v4 and v6, every state) in the caller's network namespace.
std::variant<std::unordered_set<uint64_t>, std::string> live_tcp_cookies();

// The same in the network namespace netns_fd names (an open /proc/<pid>/ns/net). The socket
// is made by a thread of its own that enters the namespace and ends: a netlink socket stays in
// the namespace it was made in, and no other thread of the caller moves.
std::variant<std::unordered_set<uint64_t>, std::string> live_tcp_cookies_in(int netns_fd);

// TCP entries in a closing state (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK) idle for at least
// min_idle_ns, in any namespace: the ones worth checking against the kernel.
std::vector<const nl_conn*> closing_entries_to_verify(const std::vector<nl_conn>& active,
                                                      uint64_t now_ns, uint64_t min_idle_ns);

// Inode of the caller's network namespace.
uint32_t own_netns_inode();

} // namespace netlens
