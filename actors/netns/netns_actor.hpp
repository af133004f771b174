// The netns actor: one owner for every network namespace the agent serves. It keeps a handle on
// each (netns_cache), finds them by a /proc scan at start, then by sched exec/exit events
// (proc_events) and by the connections the tracer asks it to attribute (sync_cache); it follows
// each namespace's devices over rtnetlink (link_watcher) and attaches netlens's TC classifiers
// to the selected ones (tc_attach); it hands each namespace to conntrack (netns_joined) so NAT
// inside containers is resolved; and it attributes connections to their container. The
// watcher and event threads only send batches in; everything else happens on this actor.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "actors/common/self_interface.hpp"
#include "actors/netns/container_table.hpp"
#include "actors/netns/device_book.hpp"
#include "actors/netns/flow_join.hpp"
#include "actors/netns/link_watcher.hpp"
#include "actors/netns/netns_cache.hpp"
#include "actors/netns/proc_scan.hpp"
#include "bpf/proc_events.hpp"
#include "bpf/tc_attach.hpp"
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
  std::unique_ptr<netns_cache> cache;
  std::unique_ptr<proc_scanner> scanner;
  std::unique_ptr<tc_attach> tc;
  std::unique_ptr<link_watcher> links;
  std::unique_ptr<proc_events> procs;
  // The container of each pid looked at; kept a while after the process exits so its closed
  // connections are still attributed.
  std::unique_ptr<container_table> containers;
  // Every device the watcher reported, attached or not: names for the device-only flows, and
  // what a complete link dump says is gone.
  device_book devices;
  // Paged answers being attributed, by listing: the flows read at the first page and which of
  // them a page took. At most k_max_listings; the oldest goes first (a reader that went away).
  struct joined_listing {
    std::unique_ptr<flow_joiner> joiner;
    uint64_t touched_ns = 0;
  };
  std::unordered_map<uint64_t, joined_listing> listings;
  actor_state state = actor_state::starting; // running | degraded | disabled | stopped | purged
  std::string degraded_reason;
  uint32_t own_netns = 0;
  uint64_t handled = 0;
  uint64_t scan_us = 0;
  uint64_t scanned_processes = 0;
  uint64_t namespaces_found = 0;
  uint64_t namespaces_released = 0;
  uint64_t handle_errors = 0;    // a namespace whose handle could not be opened
  uint64_t handles_rejected = 0; // the process moved or died between lookup and open
  uint64_t tc_attached = 0;
  uint64_t tc_detached = 0;
  uint64_t tc_errors = 0;
  uint64_t tc_skipped_no_clsact = 0; // devices left alone: no clsact, none to be created
  // "tcx", "clsact" (qdiscs created where missing) or "clsact-existing"; empty: no classifiers.
  std::string tc_attach_mode;
  uint64_t tc_leftovers_removed = 0;
  uint64_t tc_flows_expired = 0;
  uint64_t link_errors = 0;
  uint64_t exec_events = 0;
  uint64_t exit_events = 0;
  uint64_t sync_requests = 0;
  uint64_t resolves = 0;
  uint64_t last_tick_ns = 0;
  uint64_t last_rescan_ns = 0;
  // Exec/exit batches sent by the event thread and not handled yet, and those it dropped.
  std::shared_ptr<std::atomic<int>> proc_in_flight = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<uint64_t>> proc_batches_dropped =
      std::make_shared<std::atomic<uint64_t>>(0);
  uint64_t proc_losses_answered = 0; // lost events and dropped batches a rescan made good
};

netns_self_actor::behavior_type netns_fn(counted_self<netns_self_actor, netns_state> self,
                                         netns_config cfg);

// Spawned detached: the start-up scan and the TC netlink calls block.
netns_actor spawn_netns(caf::actor_system& sys, const netns_config& cfg);

} // namespace netlens
