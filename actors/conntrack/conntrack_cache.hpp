// The NAT translation cache: a bounded LRU of conntrack entries that netfilter translated,
// each reachable by its original and by its reply tuple, plus the orphan list: entries that
// came from the event stream expire after orphan_ttl unless a lookup claimed them first.
// No CAF, no kernel; time comes from the injected clock (steady_clock if none is given).
// Not thread-safe: the conntrack actor is its one owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "flow/flow_key.hpp"

namespace netlens {

struct conntrack_cache_stats {
  uint64_t entries = 0;         // NAT'd conntrack entries held (each under two keys)
  uint64_t orphans = 0;         // of those, not yet claimed by a lookup
  uint64_t inserted = 0;        // new entries stored
  uint64_t updated = 0;         // an insert that found the entry already there
  uint64_t non_nat_skipped = 0; // inserts refused because the entry is not translated
  uint64_t evictions = 0;       // least recently used entries pushed out at capacity
  uint64_t orphans_expired = 0; // dropped by compact
  uint64_t lookups_hit = 0;
  uint64_t lookups_miss = 0;
  uint64_t lookups_wildcard = 0;  // hits of a wildcard-bound UDP socket's per-peer flow
  uint64_t lookups_ambiguous = 0; // such flows that match entries of several local addresses
  uint64_t removed = 0;           // by remove() or a destroy event
  uint64_t swept = 0;             // dropped by a resync because the new dump no longer had them
  uint64_t displaced = 0;         // dropped because a newer entry took one of its tuples
  uint64_t released = 0;          // keys given up by closed connections (release)
};

class conntrack_cache {
public:
  using clock_fn = std::function<uint64_t()>; // nanoseconds, monotonic

  conntrack_cache(size_t max_entries, uint64_t orphan_ttl_ns, clock_fn clock);

  // Stores a NAT'd entry under both its tuples (non-NAT entries are counted and refused).
  // from_events: it came from the event stream, so it is an orphan until a lookup claims it;
  // an entry from a dump is not. Re-inserting an existing entry refreshes it (and a dumped
  // one stops being an orphan). At capacity the least recently used entry is evicted.
  void insert(const ct_entry& e, bool from_events);

  // The translation for a traced connection: for its original tuple the reply direction, for
  // its reply tuple the original direction. A hit claims an orphan and refreshes the LRU.
  // A UDP tuple whose source address is zero is a per-peer flow of a socket bound to the
  // wildcard: when no key is exactly that, it matches the one UDP key that differs only in its
  // source address, and the hit says that address. Keys of several source addresses that
  // match are a miss (counted): which one the flow is cannot be told.
  std::optional<ct_hit> lookup(const ct_tuple& t);
  // Whether t has an entry (the wildcard as lookup has it); claims, counts and refreshes
  // nothing.
  bool holds(const ct_tuple& t) const;

  // Removes the entry one of whose tuples is t (both keys go). False when absent.
  bool remove(const ct_tuple& t);

  // A traced connection closed: the key it was found by (the wildcard as lookup has it) goes,
  // and the entry with it once its other key has gone too (both ends of a NAT'd connection may
  // live on this host). False when absent.
  bool release(const ct_tuple& t);

  // Drops expired orphans; returns how many.
  size_t compact();

  // Empties the cache and re-initialises the orphan list. Counters stay.
  void purge();

  // Resync of one namespace after lost events: begin_resync, then insert every dumped entry,
  // then end_resync drops that namespace's entries the new dump did not refresh (nor an
  // event since begin). Returns how many were dropped.
  void begin_resync(uint32_t netns);
  size_t end_resync(uint32_t netns);

  conntrack_cache_stats stats() const;
  size_t size() const;
  // The first n entries, most recently used first (the console's listing); no LRU move.
  std::vector<ct_cache_row> most_recent(size_t n) const;
  // Entries only dumps have listed, never an event: their conntrack entries predate the event
  // listener and will not announce their end (docs/kernel-notes.md), only a new dump shows it.
  size_t dump_only_entries() const;
  size_t capacity() const;
  // Bytes the cache holds (its arrays), for the memory benchmark and /stats.
  size_t memory_bytes() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;

public:
  ~conntrack_cache();
  conntrack_cache(conntrack_cache&&) noexcept;
  conntrack_cache& operator=(conntrack_cache&&) noexcept;
};

} // namespace netlens
