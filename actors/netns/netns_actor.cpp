#include "actors/netns/netns_actor.hpp"

#include "messages/registry.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/common/lifecycle.hpp"
#include "flow/clock.hpp"
#include "flow/socket_table.hpp"

namespace netlens {
namespace {

using self_ptr = counted_self<netns_self_actor, netns_state>;

// Housekeeping period: idle namespaces, idle TC flows, exited processes' containers.
constexpr auto k_tick = std::chrono::seconds(2);
// Exec/exit batches handed in and not yet handled; past this the event thread drops (counted)
// and the next tick rescans /proc instead.
constexpr int k_max_proc_batches_in_flight = 64;
// Ports (and peers, at ports reached at several addresses) whose local address the sk_lookup
// programs keep: two LRU maps shared by all namespaces, preallocated by the kernel (about 100
// bytes an entry with its overhead: 3 MB). A flow whose entry was pushed out before it was
// asked about keeps the wildcard (udp_local_unknown).
constexpr uint32_t k_udp_local_peers = 16384;

void publish(self_ptr self) {
  publish_as(self, k_netns_registry_name);
}

void unpublish(caf::actor_system& sys, const caf::actor_addr& addr) {
  unpublish_if(sys, k_netns_registry_name, addr);
}

bool serving(const netns_state& st) {
  return st.namespaces && st.state != actor_state::stopped && st.state != actor_state::purged;
}

// The facts /stats shows beside the counters: how the classifiers attach.
std::vector<std::pair<std::string, std::string>> info_of(const netns_state& st) {
  if (!st.namespaces || st.namespaces->tc_attach_mode().empty())
    return {};
  return {{"tc_attach_mode", st.namespaces->tc_attach_mode()}};
}

counter_list counters_of(const netns_state& st) {
  counter_list out;
  if (st.namespaces)
    out = st.namespaces->counters();
  out.emplace_back("sync_requests", st.sync_requests);
  out.emplace_back("proc_batches_dropped", st.proc_handoff ? st.proc_handoff->dropped() : 0);
  if (st.procs)
    out.emplace_back("proc_events_lost", st.procs->stats().lost);
  return out;
}

void degrade(netns_state& st, const std::string& why) {
  spdlog::warn("netns: {}", why);
  if (!st.degraded_reason.empty())
    st.degraded_reason += "; ";
  st.degraded_reason += why;
}

// What conntrack learns of the namespaces: it runs a consumer in each one found.
namespace_feed conntrack_feed(caf::actor_system* sys) {
  namespace_feed feed;
  feed.joined = [sys](netns_joined j) {
    if (auto ct = find_conntrack(*sys))
      caf::anon_send(ct, std::move(j));
  };
  feed.left = [sys](uint32_t inode) {
    if (auto ct = find_conntrack(*sys))
      caf::anon_send(ct, netns_left{inode});
  };
  return feed;
}

// Loads the TC classifiers, or says why there are none.
void start_tc(netns_state& st) {
  tc_load_options o;
  o.max_flows = st.cfg.tc_max_flows;
  o.use_tcx = st.cfg.tc_tcx;
  o.create_clsact = st.cfg.tc_create_clsact;
  auto loaded = tc_attach::load(o);
  if (auto* err = std::get_if<tc_error>(&loaded)) {
    degrade(st, "TC classifiers unavailable, no per-device counts: " + err->message);
    return;
  }
  auto tc = std::move(std::get<0>(loaded));
  std::string mode;
  if (tc->uses_tcx()) {
    mode = "tcx";
    spdlog::debug("netns: TC classifiers attach as TCX links");
  } else if (st.cfg.tc_create_clsact) {
    mode = "clsact";
    spdlog::info("netns: TC classifiers attach as classic filters ({}); a clsact qdisc is "
                 "created where a device has none (netns.tc_create_clsact), which drops "
                 "that device's packets in flight",
                 tc->classic_reason());
  } else {
    mode = "clsact-existing";
    spdlog::info("netns: TC classifiers attach as classic filters ({}), only on devices "
                 "that already have a clsact qdisc: creating one would drop the packets "
                 "in flight (netns.tc_create_clsact = true allows it)",
                 tc->classic_reason());
  }
  st.namespaces->use_tc(std::move(tc), std::move(mode));
}

// Brings up what the namespaces are followed with. A part that cannot start degrades the
// actor (said in the log and /stats); what the others do still works.
void start_followers(self_ptr self) {
  auto& st = self->state;
  if (st.cfg.tc_enabled)
    start_tc(st);
  auto book = udp_local_book::open(k_udp_local_peers);
  if (auto* err = std::get_if<std::string>(&book))
    degrade(st, "per-peer flows of UDP sockets bound to the wildcard keep local address 0.0.0.0 "
                "or ::: " +
                    *err);
  else
    st.namespaces->use_udp_local(std::move(std::get<0>(book)));
  caf::actor_addr me = self->address();
  auto links = link_watcher::start([me](link_batch&& b) {
    if (auto target = caf::actor_cast<caf::actor>(me))
      caf::anon_send(target, std::move(b));
  });
  if (auto* err = std::get_if<std::string>(&links))
    degrade(st, "devices are not followed: " + *err);
  else
    st.namespaces->use_links(std::move(std::get<0>(links)));
  if (st.cfg.follow_processes) {
    proc_events_options o;
    auto handoff = st.proc_handoff;
    auto procs = proc_events::start(o, [handoff](std::vector<proc_event>&& evs) {
      handoff->send(proc_event_batch{std::move(evs)});
    });
    if (auto* err = std::get_if<std::string>(&procs))
      degrade(st, "new processes are found by a /proc rescan every netns.idle_flush_s, not at "
                  "once: " +
                      *err);
    else
      st.procs = std::move(std::get<0>(procs));
  }
}

} // namespace

netns_actor spawn_netns(caf::actor_system& sys, const netns_config& cfg) {
  return sys.spawn<caf::detached>(netns_fn, cfg);
}

netns_self_actor::behavior_type netns_fn(self_ptr self, netns_config cfg) {
  self->state.cfg = std::move(cfg);
  self->state.proc_handoff =
      std::make_shared<bounded_handoff>(self->address(), k_max_proc_batches_in_flight);
  caf::actor_system* sys = &self->system();
  caf::actor_addr me = self->address();
  self->attach_functor([sys, me](const caf::error&) { unpublish(*sys, me); });
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.namespaces)
          return caf::ok_atom::value;
        auto scanner = proc_scanner::open("/proc");
        if (auto* err = std::get_if<std::string>(&scanner))
          return caf::make_error(caf::sec::runtime_error, "netns: " + *err);
        const uint32_t own = own_netns_inode();
        st.namespaces = std::make_unique<served_namespaces>(
            st.cfg, own, std::move(std::get<proc_scanner>(scanner)), conntrack_feed(sys),
            [] { return monotonic_now_ns(); });
        if (!st.cfg.enabled) {
          st.state = actor_state::disabled;
          publish(self);
          spdlog::info("netns: only the agent's own network namespace is served "
                       "(netns.enabled = false)");
          return caf::ok_atom::value;
        }
        // The followers first: a process started during the scan is in one or the other.
        start_followers(self);
        st.namespaces->sync_pid(getpid(), own);
        st.namespaces->scan(false);
        publish(self);
        st.state = st.degraded_reason.empty() ? actor_state::running : actor_state::degraded;
        self->delayed_send(self, k_tick, tick_atom::value);
        spdlog::info("netns: {} processes in {} network namespaces scanned in {} ms; {} devices "
                     "with TC classifiers",
                     st.namespaces->scanned_processes(), st.namespaces->namespaces(),
                     st.namespaces->scan_us() / 1000, st.namespaces->tc_devices());
        return caf::ok_atom::value;
      },
      [=](sync_cache_atom, int32_t pid) -> uint32_t {
        auto& st = self->state;
        ++st.sync_requests;
        if (!serving(st) || !st.cfg.enabled)
          return 0;
        return st.namespaces->sync_pid(pid, 0);
      },
      [=](resolve_atom, const netns_resolve_request& req) -> netns_resolve_reply {
        auto& st = self->state;
        if (!st.namespaces)
          return {};
        return st.namespaces->resolve(req, serving(st));
      },
      [=](netns_list_atom) {
        auto& st = self->state;
        if (!st.namespaces || st.state == actor_state::purged)
          return std::vector<netns_joined>{};
        return st.namespaces->handles();
      },
      [=](link_batch& b) {
        if (self->state.namespaces)
          self->state.namespaces->links(b);
      },
      [=](proc_event_batch& b) {
        auto& st = self->state;
        st.proc_handoff->handled();
        if (!serving(st))
          return;
        for (const auto& ev : b.events) {
          if (ev.kind == proc_event::exec)
            st.namespaces->exec(ev.pid);
          else
            st.namespaces->exited(ev.pid);
        }
      },
      [=](tick_atom) {
        auto& st = self->state;
        if (!serving(st))
          return;
        std::optional<uint64_t> lost;
        if (st.procs)
          lost = st.procs->stats().lost + st.proc_handoff->dropped();
        st.namespaces->tick(lost);
        self->delayed_send(self, k_tick, tick_atom::value);
      },
      [=](stop_atom) {
        auto& st = self->state;
        // Joins the threads; what they read is already in the mailbox.
        if (st.procs)
          st.procs->stop();
        if (st.namespaces)
          st.namespaces->stop_following();
        if (st.state != actor_state::disabled)
          st.state = actor_state::stopped;
        return caf::ok_atom::value;
      },
      fault_handler(self),
      [=](purge_atom) {
        auto& st = self->state;
        std::pair<size_t, size_t> held{0, 0};
        if (st.namespaces)
          held = st.namespaces->purge();
        st.procs.reset();
        unpublish(*sys, me);
        if (st.state != actor_state::disabled)
          st.state = actor_state::purged;
        spdlog::info("netns: TC classifiers detached from {} devices, {} network namespaces "
                     "purged, handles closed",
                     held.first, held.second);
        return caf::ok_atom::value;
      },
      degradable_stats_handler(self, "netns", counters_of, info_of),
  };
}

} // namespace netlens
