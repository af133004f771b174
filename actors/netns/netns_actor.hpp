// The netns actor: one owner for every network namespace the agent serves. It keeps a handle on
// each (netns_cache), finds them by a /proc scan at start, then by sched exec/exit events
// (proc_events) and by the connections the tracer asks it to attribute (sync_cache); it follows
// each namespace's devices over rtnetlink (link_watcher) and attaches netlens's TC classifiers
// to the selected ones (tc_attach); it hands each namespace to conntrack (netns_joined) so NAT
// inside containers is resolved; and it attributes connections to their container. Those rules
// are served_namespaces (no CAF); this actor is their shell: its messages, its timer, and the
// watcher and event threads, which only send batches in.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/common/bounded_handoff.hpp"
#include "actors/common/self_interface.hpp"
#include "actors/netns/link_watcher.hpp"
#include "actors/netns/served_namespaces.hpp"
#include "bpf/proc_events.hpp"
#include "config/config.hpp"
#include "messages/interfaces.hpp"

namespace netlens {

// Exec and exit events as the event thread hands them in.
struct proc_event_batch {
  std::vector<proc_event> events;
};

} // namespace netlens

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::link_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::proc_event_batch)

namespace netlens {

// Its public interface plus what its own threads and timer send it.
using netns_self_actor =
    self_interface<netns_actor, caf::reacts_to<link_batch>, caf::reacts_to<proc_event_batch>,
                   caf::reacts_to<tick_atom>>;

struct netns_state {
  static inline const char* name = "netns";

  netns_config cfg;
  // The rules: namespaces, their handles, devices, classifiers and containers (from init on).
  std::unique_ptr<served_namespaces> namespaces;
  std::unique_ptr<proc_events> procs;
  actor_state state = actor_state::starting; // running | degraded | disabled | stopped | purged
  std::string degraded_reason;
  uint64_t handled = 0;
  uint64_t sync_requests = 0;
  // The exec/exit thread's batches, bounded (a drop is answered by a rescan at the tick).
  std::shared_ptr<bounded_handoff> proc_handoff;
};

netns_self_actor::behavior_type netns_fn(counted_self<netns_self_actor, netns_state> self,
                                         netns_config cfg);

// Spawned detached: the start-up scan and the TC netlink calls block.
netns_actor spawn_netns(caf::actor_system& sys, const netns_config& cfg);

} // namespace netlens
