// The conntrack actor: owns the NAT translation cache and the netlink consumer of each
// network namespace it serves (this issue: the one the agent runs in). The consumers' threads
// only send batches in; the cache is touched by this actor alone.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "actors/common/bounded_handoff.hpp"
#include "actors/common/self_interface.hpp"
#include "actors/conntrack/claim_waitlist.hpp"
#include "actors/conntrack/conntrack_cache.hpp"
#include "actors/conntrack/conntrack_consumer.hpp"
#include "config/config.hpp"
#include "messages/interfaces.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(netlens::ct_event_batch)

namespace netlens {

// The actor's own interface: its public one plus the batches its consumer threads send in and
// the tick that ends claims' waits.
using conntrack_self_actor =
    self_interface<conntrack_actor, caf::reacts_to<ct_event_batch>, caf::reacts_to<tick_atom>>;

// Batches handed to the actor and not yet applied; past this many, a consumer drops what it
// read (counted) instead of growing the mailbox without bound.
constexpr int k_max_batches_in_flight = 256;

// Longest a closed connection's claim waits for the first dump of a namespace whose consumer
// is not ready, or for a consumer's sync when the cache does not hold a tuple (claim_waitlist).
// Below the tracer's 2 s for an answer's lookups, so that one asked meanwhile still gets these
// records.
constexpr auto k_first_dump_wait = std::chrono::milliseconds(1000);
// Claims waiting at once at most; past it a claim is answered with what the cache holds.
constexpr size_t k_max_waiting_claims = 4096;

struct conntrack_state {
  static inline const char* name = "conntrack";
  conntrack_config cfg;
  std::unique_ptr<conntrack_cache> cache;
  std::unique_ptr<claim_waitlist> waits; // with the cache
  std::unordered_map<uint64_t, caf::typed_response_promise<nat_lookup_reply>> waiting;
  bool wait_tick_armed = false;
  std::unordered_map<uint32_t, std::unique_ptr<conntrack_consumer>> consumers; // by netns inode
  // The consumer threads' batches, bounded (k_max_batches_in_flight), drops counted.
  std::shared_ptr<bounded_handoff> handoff;
  actor_state state =
      actor_state::starting; // running | degraded | disabled | stopped | purged | failed
  std::string degraded_reason;
  uint64_t handled = 0;
  uint64_t batches = 0;
  uint64_t events_applied = 0;
  uint64_t resync_swept = 0;
  uint64_t periodic_resyncs = 0;
  uint64_t drops_answered = 0; // dropped batches already answered with a resync
  uint64_t last_resync_ns = 0;
  uint32_t own_netns = 0;
  uint64_t namespaces_joined = 0; // consumers started in the netns actor's namespaces
  uint64_t namespaces_left = 0;
  uint64_t namespace_errors = 0; // a namespace whose consumer could not start
};

conntrack_self_actor::behavior_type
conntrack_fn(counted_self<conntrack_self_actor, conntrack_state> self, conntrack_config cfg);

} // namespace netlens
