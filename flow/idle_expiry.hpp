// Which UDP flows count as ended: UDP has no close on the wire, a socket that has been quiet
// for the idle timeout is reported closed (and counted afresh if it speaks again).
#pragma once

#include <cstdint>
#include <vector>

#include "bpf/netlens_records.h"

namespace netlens {

inline std::vector<const nl_conn*> idle_udp_flows(const std::vector<nl_conn>& active,
                                                  uint64_t now_ns, uint64_t idle_ns) {
  std::vector<const nl_conn*> idle;
  for (const nl_conn& c : active)
    if (c.protocol == 17 /* IPPROTO_UDP */ && now_ns > c.last_ns && now_ns - c.last_ns >= idle_ns)
      idle.push_back(&c);
  return idle;
}

} // namespace netlens
