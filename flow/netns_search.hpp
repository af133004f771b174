// Finding a network namespace by its inode when no process the caller knows of is in it any
// more: a connection's process exited, but its socket (closing, or handed to another process)
// still holds the namespace. No CAF.
#pragma once

#include <cstdint>
#include <string>
#include <variant>

#include "flow/netns_handle.hpp"

namespace netlens {

// Where to look, in order. Other roots serve tests that lay out a tree of their own.
struct netns_search_roots {
  std::string run_netns = "/run/netns"; // names made by `ip netns add` (bind mounts)
  std::string proc = "/proc";           // the caller's own fds, every process's ns/net
};

// Opens namespace inode through the first of: a descriptor the caller itself holds on it (the
// agent's netns actor holds every namespace it serves), a name under run_netns, a process in
// it (a pass over all of proc). The handle's inode is checked. The error says where it looked.
std::variant<netns_handle, netns_error> find_netns(uint32_t inode,
                                                   const netns_search_roots& roots = {});

} // namespace netlens
