#include "actors/conntrack/conntrack_actor.hpp"

#include "messages/registry.hpp"

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/common/lifecycle.hpp"
#include "flow/clock.hpp"
#include "flow/socket_table.hpp"

namespace netlens {
namespace {

using self_ptr = counted_self<conntrack_self_actor, conntrack_state>;

conntrack_consumer_options consumer_options(const conntrack_state& st) {
  conntrack_consumer_options o;
  o.netns_fd = -1;
  o.netns_inode = st.own_netns;
  o.receive_buffer_bytes = st.cfg.receive_buffer_bytes;
  o.rate_limit = st.cfg.rate_limit;
  o.dump_timeout_ms = st.cfg.dump_timeout_ms;
  return o;
}

// Runs on a consumer thread: it only sends. A batch that would push the backlog past the
// bound is dropped and counted, except the ones that open or close a dump: losing those would
// leave a resync's sweep undone.
conntrack_consumer::sink_fn make_sink(self_ptr self) {
  auto handoff = self->state.handoff;
  return [handoff](ct_event_batch&& b) {
    bool marker = b.dump_begins || b.dump_ends || b.sync != 0; // claims may wait on a sync
    handoff->send(std::move(b), marker);
  };
}

// Claims and markers whose wait is over get their answers.
void answer(self_ptr self, std::vector<claim_answer> answers) {
  auto& st = self->state;
  for (auto& a : answers) {
    auto it = st.waiting.find(a.ticket);
    if (it == st.waiting.end())
      continue;
    it->second.deliver(nat_lookup_reply{std::move(a.hits)});
    st.waiting.erase(it);
  }
}

// One tick at the earliest deadline of a waiting claim, while any waits.
void arm_wait_tick(self_ptr self) {
  auto& st = self->state;
  if (st.wait_tick_armed || !st.waits)
    return;
  auto next = st.waits->next_deadline_ns();
  if (!next)
    return;
  uint64_t now = monotonic_now_ns();
  auto in = std::chrono::nanoseconds(*next > now ? *next - now : 0) + std::chrono::milliseconds(1);
  st.wait_tick_armed = true;
  self->delayed_send(self, std::chrono::duration_cast<std::chrono::milliseconds>(in),
                     tick_atom::value);
}

// Why conntrack cannot serve; an error when it is required, the degraded state otherwise.
caf::result<caf::ok_atom> cannot_serve(self_ptr self, const std::string& why) {
  auto& st = self->state;
  if (st.cfg.required) {
    st.state = actor_state::failed;
    return caf::make_error(caf::sec::runtime_error,
                           "conntrack is required (conntrack.required = true) but " + why);
  }
  st.state = actor_state::degraded;
  st.degraded_reason = why;
  spdlog::warn("conntrack: degraded, connections carry no NAT translation: {}", why);
  return caf::ok_atom::value;
}

// Opens the consumer of the agent's own namespace. Empty string when it started.
std::string open_own_namespace(self_ptr self) {
  auto& st = self->state;
  auto started = conntrack_consumer::start(consumer_options(st), make_sink(self));
  if (auto* err = std::get_if<std::string>(&started))
    return *err;
  st.consumers[st.own_netns] = std::move(std::get<0>(started));
  return {};
}

// Runs a consumer inside a namespace the netns actor holds a handle for, so NAT done in a
// container's namespace is resolved too. The consumer's thread enters the namespace as it
// starts and stays there: the handle is needed only until start() returns.
void join_namespace(self_ptr self, const netns_joined& j) {
  auto& st = self->state;
  // The netns actor hands its namespaces over (its own first): from now on a claim for one
  // not met yet waits for it.
  if (j.inode == st.own_netns && st.waits)
    st.waits->follow_namespaces();
  if (!st.cfg.enabled || !st.cache || !j.handle || !j.handle->valid() || j.inode == st.own_netns ||
      st.consumers.count(j.inode) || st.state == actor_state::stopped ||
      st.state == actor_state::purged || st.state == actor_state::failed)
    return;
  auto o = consumer_options(st);
  o.netns_fd = j.handle->fd();
  o.netns_inode = j.inode;
  auto started = conntrack_consumer::start(o, make_sink(self));
  if (auto* err = std::get_if<std::string>(&started)) {
    ++st.namespace_errors;
    spdlog::warn("conntrack: cannot follow NAT in network namespace {}: {}", j.inode, *err);
    if (st.waits)
      answer(self, st.waits->abandoned(*st.cache, j.inode, false));
    return;
  }
  if (st.waits)
    st.waits->joined(j.inode);
  st.consumers[j.inode] = std::move(std::get<0>(started));
  ++st.namespaces_joined;
  spdlog::debug("conntrack: following NAT in network namespace {}", j.inode);
}

// The namespace is gone from the netns actor: its consumer closes and its entries leave.
void leave_namespace(self_ptr self, uint32_t inode) {
  auto& st = self->state;
  if (inode == st.own_netns)
    return;
  auto it = st.consumers.find(inode);
  if (it == st.consumers.end())
    return;
  it->second->close();
  st.consumers.erase(it);
  if (st.cache) {
    // An empty mark and sweep: every entry of that namespace goes.
    st.cache->begin_resync(inode);
    st.resync_swept += st.cache->end_resync(inode);
    if (st.waits)
      answer(self, st.waits->abandoned(*st.cache, inode, true));
  }
  ++st.namespaces_left;
}

// A (re)started conntrack asks the netns actor for the namespaces it holds now; the ones it
// finds later arrive as netns_joined.
void ask_for_namespaces(self_ptr self) {
  auto ns = find_netns(self->system());
  if (!ns)
    return;
  self->request(ns, std::chrono::seconds(5), netns_list_atom::value)
      .then(
          [=](const std::vector<netns_joined>& all) {
            for (const auto& j : all)
              join_namespace(self, j);
          },
          [=](const caf::error&) {});
}

std::string dump_outcome(initial_dump_result r, uint32_t timeout_ms) {
  switch (r) {
  case initial_dump_result::done:
    return {};
  case initial_dump_result::timed_out:
    return "the initial conntrack dump did not finish within dump_timeout_ms (" +
           std::to_string(timeout_ms) + " ms)";
  case initial_dump_result::failed:
    break;
  }
  return "the initial conntrack dump failed";
}

void apply(conntrack_cache& cache, const ct_event_batch& b, conntrack_state& st) {
  if (b.dump_begins)
    cache.begin_resync(b.netns);
  for (const ct_event& ev : b.events) {
    switch (ev.kind) {
    case ct_event_kind::dumped:
      cache.insert(ev.entry, false);
      break;
    case ct_event_kind::created:
      cache.insert(ev.entry, true);
      break;
    case ct_event_kind::destroyed:
      // The side that closed first has released its key already: try the other one too.
      if (!cache.remove(tuple_of(ev.entry, ev.entry.orig)))
        cache.remove(tuple_of(ev.entry, ev.entry.reply));
      break;
    }
  }
  st.events_applied += b.events.size();
  if (b.dump_ends)
    st.resync_swept += cache.end_resync(b.netns);
}

nat_lookup_reply look_up(conntrack_cache* cache, const nat_lookup_request& req, bool claim) {
  nat_lookup_reply reply;
  if (!cache)
    return reply;
  for (size_t i = 0; i < req.tuples.size(); ++i) {
    auto hit = cache->lookup(req.tuples[i]);
    if (!hit)
      continue;
    reply.hits.emplace_back(static_cast<uint32_t>(i), *hit);
    if (claim)
      cache->release(req.tuples[i]);
  }
  return reply;
}

// A claim (release: the keys leave the cache) or a lookup of active connections: answered now,
// or, when a tuple's namespace is not dumped yet or a tuple misses, once it has waited for that
// (claim_waitlist).
caf::result<nat_lookup_reply> claim_or_wait(self_ptr self, const nat_lookup_request& req,
                                            bool release) {
  auto& st = self->state;
  if (!st.cache || !st.waits)
    return look_up(st.cache.get(), req, release);
  auto found = st.waits->claim(*st.cache, req.tuples, monotonic_now_ns(), release);
  if (!found.ticket)
    return nat_lookup_reply{std::move(found.hits)};
  auto rp = self->make_response_promise<nat_lookup_reply>();
  st.waiting.emplace(*found.ticket, rp);
  arm_wait_tick(self);
  return rp;
}

counter_list counters_of(const conntrack_state& st) {
  counter_list out;
  if (st.cache) {
    auto c = st.cache->stats();
    out.emplace_back("entries", c.entries);
    out.emplace_back("orphans", c.orphans);
    out.emplace_back("capacity", st.cache->capacity());
    out.emplace_back("memory_bytes", st.cache->memory_bytes());
    out.emplace_back("evictions", c.evictions);
    out.emplace_back("orphans_expired", c.orphans_expired);
    out.emplace_back("lookups_hit", c.lookups_hit);
    out.emplace_back("lookups_miss", c.lookups_miss);
    out.emplace_back("lookups_wildcard", c.lookups_wildcard);
    out.emplace_back("lookups_ambiguous", c.lookups_ambiguous);
    out.emplace_back("non_nat_skipped", c.non_nat_skipped);
    out.emplace_back("removed", c.removed);
    out.emplace_back("released", c.released);
    out.emplace_back("resync_swept", c.swept);
    out.emplace_back("dump_only_entries", st.cache->dump_only_entries());
  }
  if (st.waits) {
    auto w = st.waits->stats();
    out.emplace_back("claims_waited", w.waited);
    out.emplace_back("claims_synced", w.synced);
    out.emplace_back("claims_wait_timeouts", w.timed_out);
    out.emplace_back("claims_pending", w.pending);
  }
  uint64_t events = 0, kept = 0, sampled_out = 0, enobufs = 0, resyncs = 0, malformed = 0,
           unknown = 0, dumps_failed = 0, rate = 0, limit = 0;
  double percent = 100;
  for (const auto& [netns, consumer] : st.consumers) {
    auto s = consumer->stats();
    events += s.events;
    kept += s.events_kept;
    sampled_out += s.sampled_out;
    enobufs += s.enobufs;
    resyncs += s.resyncs;
    malformed += s.malformed;
    unknown += s.unknown;
    dumps_failed += s.dumps_failed;
    rate += static_cast<uint64_t>(s.events_per_s + 0.5);
    percent = std::min(percent, s.sampling_percent);
    // What the consumer threads apply (after a reload, once each has taken it); 0: no limit.
    if (s.rate_limit > 0)
      limit = std::max(limit, static_cast<uint64_t>(s.rate_limit));
  }
  out.emplace_back("namespaces", st.consumers.size());
  out.emplace_back("namespaces_joined", st.namespaces_joined);
  out.emplace_back("namespaces_left", st.namespaces_left);
  out.emplace_back("namespace_errors", st.namespace_errors);
  out.emplace_back("events", events);
  out.emplace_back("events_kept", kept);
  out.emplace_back("events_per_s", rate);
  out.emplace_back("sampled_out", sampled_out);
  out.emplace_back("sampling_percent", static_cast<uint64_t>(percent + 0.5));
  out.emplace_back("rate_limit_per_s", limit);
  out.emplace_back("enobufs", enobufs);
  out.emplace_back("resyncs", resyncs);
  out.emplace_back("dumps_failed", dumps_failed);
  out.emplace_back("malformed", malformed);
  out.emplace_back("unknown", unknown);
  out.emplace_back("periodic_resyncs", st.periodic_resyncs);
  out.emplace_back("batches_applied", st.batches);
  out.emplace_back("batches_dropped", st.handoff->dropped());
  out.emplace_back("degraded", st.state == actor_state::degraded ? 1 : 0);
  return out;
}

void publish(self_ptr self) {
  publish_as(self, k_conntrack_registry_name);
}

void unpublish(caf::actor_system& sys, const caf::actor_addr& addr) {
  unpublish_if(sys, k_conntrack_registry_name, addr);
}

} // namespace

conntrack_self_actor::behavior_type conntrack_fn(self_ptr self, conntrack_config cfg) {
  self->state.cfg = cfg;
  self->state.handoff = std::make_shared<bounded_handoff>(self->address(), k_max_batches_in_flight);
  self->state.own_netns = own_netns_inode();
  caf::actor_system* sys = &self->system();
  caf::actor_addr me = self->address();
  self->attach_functor([sys, me](const caf::error&) { unpublish(*sys, me); });
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (!st.cfg.enabled) {
          st.state = actor_state::disabled;
          spdlog::info("conntrack: disabled by configuration (conntrack.enabled = false)");
          return caf::ok_atom::value;
        }
        if (!st.cache) {
          st.cache = std::make_unique<conntrack_cache>(
              st.cfg.max_entries, uint64_t{st.cfg.orphan_ttl_s} * 1000000000ull,
              [] { return monotonic_now_ns(); });
          // A claim that misses asks the namespace's consumer for a sync (claim_waitlist).
          auto* consumers = &st.consumers;
          st.waits = std::make_unique<claim_waitlist>(
              st.own_netns,
              std::chrono::duration_cast<std::chrono::nanoseconds>(k_first_dump_wait).count(),
              k_max_waiting_claims, [consumers](uint32_t netns) -> uint64_t {
                auto it = consumers->find(netns);
                return it == consumers->end() ? 0 : it->second->request_sync();
              });
        }
        if (!st.consumers.count(st.own_netns)) {
          if (auto err = open_own_namespace(self); !err.empty()) {
            publish(self);
            ask_for_namespaces(self);
            return cannot_serve(self, err);
          }
        }
        auto outcome = st.consumers.at(st.own_netns)
                           ->wait_initial_dump(std::chrono::milliseconds(st.cfg.dump_timeout_ms));
        publish(self);
        ask_for_namespaces(self);
        if (auto why = dump_outcome(outcome, st.cfg.dump_timeout_ms); !why.empty())
          return cannot_serve(self, why + "; it is retried in the background");
        st.state = actor_state::running;
        st.last_resync_ns = monotonic_now_ns();
        spdlog::info("conntrack: following NAT in network namespace {} ({} translated entries "
                     "from the initial dump)",
                     st.own_netns, st.cache->stats().entries);
        return caf::ok_atom::value;
      },
      [=](ct_event_batch& batch) {
        auto& st = self->state;
        st.handoff->handled();
        if (!st.cache)
          return;
        ++st.batches;
        apply(*st.cache, batch, st);
        // A namespace's dump is in: claims that waited for it get their translations.
        if (batch.dump_ends && st.waits) {
          answer(self, st.waits->dumped(*st.cache, batch.netns));
          arm_wait_tick(self);
        }
        // Everything this consumer read before the sync was asked for is applied: claims that
        // missed a tuple of its namespace look again.
        if (batch.sync && st.waits)
          answer(self, st.waits->synced(*st.cache, batch.netns, batch.sync));
        // Batches the sink had to drop (backlog) lost events: a new dump puts that right,
        // as after ENOBUFS.
        uint64_t dropped = st.handoff->dropped();
        if (dropped != st.drops_answered) {
          st.drops_answered = dropped;
          spdlog::warn("conntrack: {} event batches dropped under backlog; resyncing", dropped);
          for (auto& [netns, consumer] : st.consumers)
            consumer->request_resync();
        }
        // A degraded start whose dump has since completed is healthy again.
        if (batch.dump_ends && batch.netns == st.own_netns && st.state == actor_state::degraded) {
          st.state = actor_state::running;
          st.degraded_reason.clear();
          spdlog::info("conntrack: conntrack dump completed; no longer degraded");
        }
      },
      [=](lookup_atom, const nat_lookup_request& req) -> caf::result<nat_lookup_reply> {
        auto& st = self->state;
        // An empty lookup is the tracer's marker: claims sent before it are answered by the
        // time it is, waiting ones included.
        if (req.tuples.empty() && st.waits)
          if (auto ticket = st.waits->marker()) {
            auto rp = self->make_response_promise<nat_lookup_reply>();
            st.waiting.emplace(*ticket, rp);
            return rp;
          }
        // Active connections: one made a moment ago may have its NEW event unread still, so a
        // miss waits for a sync as a claim's does; nothing is taken from the cache.
        return claim_or_wait(self, req, false);
      },
      [=](claim_atom, const nat_lookup_request& req) -> caf::result<nat_lookup_reply> {
        return claim_or_wait(self, req, true);
      },
      [=](tick_atom) {
        auto& st = self->state;
        st.wait_tick_armed = false;
        if (!st.waits || !st.cache)
          return;
        answer(self, st.waits->expire(*st.cache, monotonic_now_ns()));
        arm_wait_tick(self);
      },
      [=](compact_atom) {
        auto& st = self->state;
        if (!st.cache)
          return;
        size_t dropped = st.cache->compact();
        if (dropped)
          spdlog::debug("conntrack: {} orphan entries expired", dropped);
        // Entries known only from a dump may never get a DESTROY event (see
        // docs/kernel-notes.md): while any is left, a new dump now and then sweeps the gone.
        uint64_t now = monotonic_now_ns();
        if (st.cache->dump_only_entries() > 0 &&
            now - st.last_resync_ns >= uint64_t{st.cfg.resync_interval_s} * 1000000000ull) {
          st.last_resync_ns = now;
          ++st.periodic_resyncs;
          for (auto& [netns, consumer] : st.consumers)
            consumer->request_resync();
        }
        // A start without conntrack (module not loaded yet, say) is retried here.
        if (st.state == actor_state::degraded && !st.consumers.count(st.own_netns)) {
          if (auto err = open_own_namespace(self); err.empty()) {
            st.state = actor_state::running;
            st.degraded_reason.clear();
            spdlog::info("conntrack: netlink consumer started; no longer degraded");
          }
        }
      },
      [=](stop_atom) {
        auto& st = self->state;
        for (auto& [netns, consumer] : st.consumers)
          consumer->stop(); // joins the thread; what it read is already in the mailbox
        // Nothing more will be dumped: claims still waiting get what the cache holds, and
        // none waits from now on.
        if (st.waits)
          answer(self, st.waits->close(st.cache.get()));
        if (st.state != actor_state::disabled)
          st.state = actor_state::stopped;
        return caf::ok_atom::value;
      },
      fault_handler(self),
      [=](reload_atom, int64_t rate_limit) {
        auto& st = self->state;
        // Consumers started from now on (a new namespace) read it from the configuration.
        st.cfg.rate_limit = rate_limit;
        for (auto& [netns, consumer] : st.consumers)
          consumer->set_rate_limit(rate_limit);
      },
      [=](purge_atom) {
        auto& st = self->state;
        for (auto& [netns, consumer] : st.consumers)
          consumer->close();
        if (st.waits)
          answer(self, st.waits->close(st.cache.get()));
        if (st.cache)
          st.cache->purge();
        unpublish(*sys, me);
        if (st.state != actor_state::disabled)
          st.state = actor_state::purged;
        spdlog::info("conntrack: cache purged, orphan list re-initialised, netlink sockets "
                     "closed");
        return caf::ok_atom::value;
      },
      [=](const netns_joined& j) { join_namespace(self, j); },
      [=](const netns_left& l) { leave_namespace(self, l.inode); },
      [=](cache_atom, uint32_t n) {
        auto& st = self->state;
        conntrack_listing out;
        if (st.cache) {
          out.total = st.cache->size();
          out.rows = st.cache->most_recent(n);
        }
        return out;
      },
      degradable_stats_handler(self, "conntrack", counters_of),
  };
}

} // namespace netlens
