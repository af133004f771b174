#include "actors/conntrack/claim_waitlist.hpp"

#include <algorithm>

namespace netlens {

namespace {

// Namespaces remembered as late (no dump in time) at most; past it they are forgotten, and a
// claim for one waits once more.
constexpr size_t k_max_namespaces = 65536;

bool waits_for(const std::vector<uint32_t>& v, uint32_t netns) {
  return std::find(v.begin(), v.end(), netns) != v.end();
}

} // namespace

claim_waitlist::claim_waitlist(uint32_t own_netns, uint64_t max_wait_ns, size_t max_waiting,
                               sync_fn sync)
    : own_netns_(own_netns), max_wait_ns_(max_wait_ns), max_waiting_(max_waiting),
      sync_(std::move(sync)) {}

void claim_waitlist::follow_namespaces() {
  following_ = true;
}

void claim_waitlist::joined(uint32_t netns) {
  if (netns == own_netns_)
    return;
  auto it = namespaces_.find(netns);
  // A namespace already dumped (a restart of its consumer) stays ready.
  if (it == namespaces_.end() || it->second != ns_state::ready) {
    forget_late_if_full();
    namespaces_[netns] = ns_state::starting;
  }
}

std::vector<claim_answer> claim_waitlist::dumped(conntrack_cache& cache, uint32_t netns) {
  std::vector<claim_answer> out;
  if (netns != own_netns_) {
    forget_late_if_full();
    namespaces_[netns] = ns_state::ready;
  }
  // An entry made after the dump passed it is only in the events, which may be unread still:
  // claims missing a tuple of netns wait for one sync, asked for after the dump is in.
  uint64_t seq = 0;
  bool asked = false;
  for (auto& [ticket, w] : waiting_) {
    for (auto it = w.namespaces.begin(); it != w.namespaces.end();) {
      if (it->netns != netns || it->seq != 0) {
        ++it;
        continue;
      }
      if (misses_in(cache, w, netns)) {
        if (!asked) {
          asked = true;
          seq = sync_ ? sync_(netns) : 0;
        }
        if (seq != 0) {
          it->seq = seq;
          ++stats_.synced;
          ++it;
          continue;
        }
      }
      it = w.namespaces.erase(it);
    }
  }
  settle(&cache, out);
  return out;
}

std::vector<claim_answer> claim_waitlist::synced(conntrack_cache& cache, uint32_t netns,
                                                 uint64_t seq) {
  std::vector<claim_answer> out;
  for (auto& [ticket, w] : waiting_)
    w.namespaces.erase(std::remove_if(w.namespaces.begin(), w.namespaces.end(),
                                      [&](const ns_wait& n) {
                                        return n.netns == netns && n.seq != 0 && n.seq <= seq;
                                      }),
                       w.namespaces.end());
  settle(&cache, out);
  return out;
}

bool claim_waitlist::misses_in(const conntrack_cache& cache, const waiting& w, uint32_t netns) {
  for (const ct_tuple& t : w.tuples)
    if (t.netns == netns && !cache.holds(t))
      return true;
  return false;
}

std::vector<claim_answer> claim_waitlist::abandoned(conntrack_cache& cache, uint32_t netns,
                                                    bool gone) {
  std::vector<claim_answer> out;
  if (gone) {
    // Its inode may name a new namespace later: that one starts unknown.
    namespaces_.erase(netns);
  } else if (netns != own_netns_) {
    forget_late_if_full();
    namespaces_[netns] = ns_state::late;
  }
  for (auto& [ticket, w] : waiting_)
    w.namespaces.erase(std::remove_if(w.namespaces.begin(), w.namespaces.end(),
                                      [&](const ns_wait& n) { return n.netns == netns; }),
                       w.namespaces.end());
  settle(&cache, out);
  return out;
}

bool claim_waitlist::must_wait(uint32_t netns) const {
  if (netns == own_netns_ || closed_)
    return false;
  auto it = namespaces_.find(netns);
  if (it == namespaces_.end())
    return following_; // not handed over yet: it is on its way
  return it->second == ns_state::starting;
}

void claim_waitlist::claim_into(conntrack_cache* cache, waiting& w) {
  if (cache) {
    for (size_t i = 0; i < w.tuples.size(); ++i) {
      auto hit = cache->lookup(w.tuples[i]);
      if (!hit)
        continue;
      w.hits.emplace_back(w.indexes[i], *hit);
      if (w.release)
        cache->release(w.tuples[i]);
    }
  }
  w.tuples.clear();
  w.indexes.clear();
}

claim_waitlist::claim_result claim_waitlist::claim(conntrack_cache& cache,
                                                   const std::vector<ct_tuple>& tuples,
                                                   uint64_t now_ns, bool release) {
  waiting w;
  w.release = release;
  std::vector<uint32_t> dumps;  // namespaces not dumped yet
  std::vector<uint32_t> misses; // ready namespaces with a tuple the cache does not hold
  for (size_t i = 0; i < tuples.size(); ++i) {
    const ct_tuple& t = tuples[i];
    if (must_wait(t.netns)) {
      w.tuples.push_back(t);
      w.indexes.push_back(static_cast<uint32_t>(i));
      if (!waits_for(dumps, t.netns))
        dumps.push_back(t.netns);
      continue;
    }
    // Claimed now: a destroy event meanwhile must not take a ready namespace's entry from it.
    if (auto hit = cache.lookup(t)) {
      w.hits.emplace_back(static_cast<uint32_t>(i), *hit);
      if (release)
        cache.release(t);
      continue;
    }
    if (closed_ || !sync_)
      continue;
    // Its NEW event may not have reached the cache yet: looked up again after a sync.
    w.tuples.push_back(t);
    w.indexes.push_back(static_cast<uint32_t>(i));
    if (!waits_for(misses, t.netns))
      misses.push_back(t.netns);
  }
  claim_result out;
  if (w.tuples.empty() || waiting_.size() >= max_waiting_) {
    claim_into(&cache, w);
    out.hits = std::move(w.hits);
    return out;
  }
  for (uint32_t netns : dumps)
    w.namespaces.push_back({netns, 0});
  bool synced = false;
  for (uint32_t netns : misses)
    if (uint64_t seq = sync_(netns)) {
      w.namespaces.push_back({netns, seq});
      synced = true;
    }
  if (w.namespaces.empty()) { // no consumer to sync with: the misses are final
    claim_into(&cache, w);
    out.hits = std::move(w.hits);
    return out;
  }
  w.deadline_ns = now_ns + max_wait_ns_;
  if (!dumps.empty())
    ++stats_.waited;
  if (synced)
    ++stats_.synced;
  out.ticket = next_ticket_++;
  waiting_.emplace(*out.ticket, std::move(w));
  return out;
}

std::optional<uint64_t> claim_waitlist::marker() {
  if (waiting_.empty())
    return std::nullopt;
  waiting w;
  w.marker = true;
  uint64_t ticket = next_ticket_++;
  waiting_.emplace(ticket, std::move(w));
  return ticket;
}

std::vector<claim_answer> claim_waitlist::expire(conntrack_cache& cache, uint64_t now_ns) {
  std::vector<claim_answer> out;
  for (auto& [ticket, w] : waiting_) {
    if (w.marker || w.namespaces.empty() || w.deadline_ns > now_ns)
      continue;
    // Their dump did not come in time: claims for them stop waiting until it does. A sync
    // that did not come says nothing about the namespace.
    for (const ns_wait& n : w.namespaces) {
      if (n.seq != 0)
        continue;
      forget_late_if_full();
      namespaces_[n.netns] = ns_state::late;
    }
    w.namespaces.clear();
    ++stats_.timed_out;
  }
  settle(&cache, out);
  return out;
}

std::vector<claim_answer> claim_waitlist::close(conntrack_cache* cache) {
  closed_ = true;
  std::vector<claim_answer> out;
  for (auto& [ticket, w] : waiting_) {
    claim_into(cache, w);
    out.push_back({ticket, std::move(w.hits)});
  }
  waiting_.clear();
  return out;
}

void claim_waitlist::settle(conntrack_cache* cache, std::vector<claim_answer>& out) {
  bool claim_before = false; // a claim still waits ahead of what follows
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    waiting& w = it->second;
    if (w.marker ? claim_before : !w.namespaces.empty()) {
      claim_before = claim_before || !w.marker;
      ++it;
      continue;
    }
    claim_into(cache, w);
    out.push_back({it->first, std::move(w.hits)});
    it = waiting_.erase(it);
  }
}

void claim_waitlist::forget_late_if_full() {
  if (namespaces_.size() < k_max_namespaces)
    return;
  for (auto it = namespaces_.begin(); it != namespaces_.end();)
    it = it->second == ns_state::late ? namespaces_.erase(it) : std::next(it);
}

std::optional<uint64_t> claim_waitlist::next_deadline_ns() const {
  std::optional<uint64_t> next;
  for (const auto& [ticket, w] : waiting_)
    if (!w.marker && !w.namespaces.empty() && (!next || w.deadline_ns < *next))
      next = w.deadline_ns;
  return next;
}

claim_waitlist_stats claim_waitlist::stats() const {
  claim_waitlist_stats s = stats_;
  s.pending = waiting_.size();
  return s;
}

} // namespace netlens
