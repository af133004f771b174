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

// TCP entries in a closing state (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK) idle for at least
// min_idle_ns in namespace netns: the ones worth checking against the kernel.
std::vector<const nl_conn*> closing_entries_to_verify(const std::vector<nl_conn>& active,
                                                      uint64_t now_ns, uint64_t min_idle_ns,
                                                      uint32_t netns);

// Inode of the caller's network namespace.
uint32_t own_netns_inode();

} // namespace netlens
