// Closed connections' claims, answered only once the cache can hold their translations:
// - A namespace whose conntrack consumer is not ready: its first dump, the only source of the
//   entries made before the consumer subscribed (no event announces those), has not reached
//   the cache. Such a claim waits, bounded, for that dump instead of being answered "no
//   translation".
// - A tuple the cache does not hold: its NEW event was queued on the consumer's socket before
//   the connection closed, but it may still be unread, or read and on its way in a batch. The
//   claim asks that consumer for a sync (read the socket dry, then say so in a batch) and waits,
//   bounded, for it. A namespace's dump is followed by a sync too: an entry made after the dump
//   passed it is only in the events.
// The tuples found are claimed at once and each tuple is claimed exactly once, so nothing is
// handed out twice. No CAF: the actor keeps each waiting request's promise under the ticket
// given here, and sync_fn asks the consumer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "actors/conntrack/conntrack_cache.hpp"
#include "flow/flow_key.hpp"

namespace netlens {

struct claim_waitlist_stats {
  uint64_t waited = 0;    // claims that waited for a namespace's first dump
  uint64_t synced = 0;    // claims that waited for a consumer's sync (a tuple not in the cache)
  uint64_t timed_out = 0; // of those that waited, answered at the bound without their dump/sync
  uint64_t pending = 0;   // claims (and markers) waiting now
};

// A waiting request, answered now.
struct claim_answer {
  uint64_t ticket = 0;
  nat_hits hits;
};

class claim_waitlist {
public:
  // Asks the consumer of a namespace to read its event socket dry and then hand over a batch
  // marked with the number returned; 0 when it has no consumer that can (a miss is final).
  using sync_fn = std::function<uint64_t(uint32_t netns)>;

  // own_netns is ready from the start (conntrack's init waits for its dump). A claim waits at
  // most max_wait_ns; past max_waiting waiting at once, a claim is answered at once. Without a
  // sync_fn a tuple the cache does not hold is a final miss.
  claim_waitlist(uint32_t own_netns, uint64_t max_wait_ns, size_t max_waiting = 4096,
                 sync_fn sync = {});

  // Namespaces are handed over (by the netns actor): a claim for one not met yet waits for it
  // to be joined and dumped. Until then such a claim is answered at once.
  void follow_namespaces();
  // A consumer started in netns; its first dump is on the way.
  void joined(uint32_t netns);
  // A dump of netns (its end) is in the cache: claims waiting for it only are answered, or,
  // when a tuple of theirs is not in the cache, wait for a sync of it.
  std::vector<claim_answer> dumped(conntrack_cache& cache, uint32_t netns);
  // The consumer of netns handed over everything it read before sync number seq was asked for.
  std::vector<claim_answer> synced(conntrack_cache& cache, uint32_t netns, uint64_t seq);
  // netns will not be dumped: its consumer could not start (claims for it stop waiting), or
  // gone: it left (its inode may name a new namespace later, which starts unknown).
  std::vector<claim_answer> abandoned(conntrack_cache& cache, uint32_t netns, bool gone);

  // A closed connections' claim: the translations of the tuples whose namespace is ready are
  // claimed now. Without a ticket the answer is complete; with one, the hits are kept and the
  // rest is claimed when the ticket is answered.
  // release false: a lookup of active connections, which waits the same way but takes no key
  // from the cache (their closes claim later).
  struct claim_result {
    std::optional<uint64_t> ticket;
    nat_hits hits;
  };
  claim_result claim(conntrack_cache& cache, const std::vector<ct_tuple>& tuples, uint64_t now_ns,
                     bool release = true);

  // A marker (an empty lookup: "what I claimed before is answered"): a ticket, answered once
  // every claim that waited before it is, or nothing to wait for.
  std::optional<uint64_t> marker();

  // Claims past their bound, answered with what the cache holds (counted); markers freed.
  std::vector<claim_answer> expire(conntrack_cache& cache, uint64_t now_ns);
  // Stop and purge: everything waiting is answered now (with what cache holds; it may be
  // null), and no claim waits from then on: no dump is coming any more.
  std::vector<claim_answer> close(conntrack_cache* cache);

  // When expire() has work next; nothing when no claim waits.
  std::optional<uint64_t> next_deadline_ns() const;
  claim_waitlist_stats stats() const;

private:
  enum class ns_state { starting, ready, late }; // late: no dump in time; claims do not wait
  // What a waiting claim waits for in one namespace: its first dump (seq 0), or sync seq.
  struct ns_wait {
    uint32_t netns = 0;
    uint64_t seq = 0;
  };
  struct waiting {
    bool marker = false;
    bool release = true;
    uint64_t deadline_ns = 0;
    std::vector<ns_wait> namespaces; // not dumped or synced yet
    std::vector<ct_tuple> tuples;    // still to claim ...
    std::vector<uint32_t> indexes;   // ... and their index in the request
    nat_hits hits;
  };

  bool must_wait(uint32_t netns) const;
  // Whether a tuple of w in netns is still missing from the cache.
  static bool misses_in(const conntrack_cache& cache, const waiting& w, uint32_t netns);
  void claim_into(conntrack_cache* cache, waiting& w);
  // Answers what no longer waits: claims without namespaces left, and the markers no earlier
  // claim holds back.
  void settle(conntrack_cache* cache, std::vector<claim_answer>& out);
  void forget_late_if_full();

  const uint32_t own_netns_;
  const uint64_t max_wait_ns_;
  const size_t max_waiting_;
  const sync_fn sync_;
  bool following_ = false;
  bool closed_ = false;
  std::unordered_map<uint32_t, ns_state> namespaces_;
  std::map<uint64_t, waiting> waiting_; // by ticket: in arrival order
  uint64_t next_ticket_ = 1;
  claim_waitlist_stats stats_;
};

} // namespace netlens
