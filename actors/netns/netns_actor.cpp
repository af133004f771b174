#include "actors/netns/netns_actor.hpp"

#include "messages/registry.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/common/lifecycle.hpp"
#include "actors/netns/device_filter.hpp"
#include "actors/netns/flow_join.hpp"
#include "flow/clock.hpp"
#include "flow/socket_table.hpp"

namespace netlens {
namespace {

using self_ptr = counted_self<netns_self_actor, netns_state>;

// Housekeeping period: idle namespaces, idle TC flows, exited processes' containers.
constexpr auto k_tick = std::chrono::seconds(2);
// pid -> container entries kept at most; past it the host processes' (empty) ones go first.
constexpr size_t k_max_container_entries = 262144;
// A process found in no container is read again after this long: it may have been moved into
// one after its exec (a runtime that execs first, an operator's cgclassify).
constexpr uint64_t k_no_container_recheck_ns = 2'000'000'000ull;
// Exec/exit batches handed in and not yet handled; past this the event thread drops (counted)
// and the next tick rescans /proc instead.
constexpr int k_max_proc_batches_in_flight = 64;

constexpr uint64_t k_s = 1000000000ull;

void publish(self_ptr self) {
  publish_as(self, k_netns_registry_name);
}

void unpublish(caf::actor_system& sys, const caf::actor_addr& addr) {
  unpublish_if(sys, k_netns_registry_name, addr);
}

// A duplicate of the namespace's fd for another owner (conntrack); invalid if dup fails.
std::shared_ptr<const netns_handle> shared_handle(int fd, uint32_t inode) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0)
    return nullptr;
  return std::make_shared<const netns_handle>(netns_handle::adopt(copy, inode));
}

void attach_device(self_ptr self, uint32_t inode, const netns_device& d) {
  auto& st = self->state;
  if (!st.tc)
    return;
  int fd = st.cache->fd_of(inode);
  if (fd < 0)
    return;
  if (auto err = st.tc->attach(d.ifindex, fd)) {
    if (err->code == tc_errc::no_clsact) {
      // Classic TC without TCX, and the operator did not allow creating a qdisc.
      ++st.tc_skipped_no_clsact;
      spdlog::debug("netns: TC classifiers not attached to {}: {}", d.name, err->message);
    } else {
      ++st.tc_errors;
      spdlog::warn("netns: cannot attach the TC classifiers to {}: {}", d.name, err->message);
    }
    st.cache->remove_device(inode, d.ifindex);
    return;
  }
  ++st.tc_attached;
  spdlog::debug("netns: TC classifiers attached to {} (ifindex {}) in network namespace {}", d.name,
                d.ifindex, inode);
}

void detach_device(self_ptr self, uint32_t inode, const netns_device& d) {
  auto& st = self->state;
  if (!st.tc)
    return;
  if (auto err = st.tc->detach_inode(inode, d.ifindex)) {
    ++st.tc_errors;
    spdlog::warn("netns: detaching the TC classifiers from {}: {}", d.name, err->message);
    return;
  }
  ++st.tc_detached;
}

// What the cache let go of: its classifiers come off, its watcher and its conntrack consumer
// stop, its device names are forgotten.
void released(self_ptr self, std::vector<released_netns> gone) {
  auto& st = self->state;
  if (gone.empty())
    return;
  auto ct = find_conntrack(self->system());
  for (auto& r : gone) {
    if (st.links)
      st.links->remove(r.inode);
    for (const auto& d : r.devices)
      detach_device(self, r.inode, d);
    st.devices.forget(r.inode);
    if (ct)
      self->send(ct, netns_left{r.inode});
    ++st.namespaces_released;
    spdlog::debug("netns: let network namespace {} go ({} devices detached)", r.inode,
                  r.devices.size());
  }
}

// A namespace whose handle was just saved: clear what a killed earlier run left on its devices,
// follow its devices, attach those that waited, and have conntrack follow NAT in it.
void namespace_found(self_ptr self, uint32_t inode, std::vector<netns_device> dequeued) {
  auto& st = self->state;
  int fd = st.cache->fd_of(inode);
  ++st.namespaces_found;
  if (st.tc) {
    auto left = st.tc->remove_leftovers(fd);
    if (auto* n = std::get_if<size_t>(&left)) {
      st.tc_leftovers_removed += *n;
      if (*n)
        spdlog::info("netns: removed {} TC filters a killed earlier run left in network "
                     "namespace {}",
                     *n, inode);
    } else {
      ++st.tc_errors;
      spdlog::warn("netns: {}", std::get<tc_error>(left).message);
    }
  }
  if (st.links) {
    if (auto err = st.links->add(inode, fd)) {
      ++st.link_errors;
      spdlog::warn("netns: cannot follow the devices of network namespace {}: {}", inode, *err);
    }
  }
  for (const auto& d : dequeued)
    attach_device(self, inode, d);
  // The agent's own namespace too: conntrack follows it already, and learns from it that
  // namespaces are handed over, so a connection of one not handed over yet waits for it.
  if (auto ct = find_conntrack(self->system()))
    if (auto h = shared_handle(fd, inode))
      self->send(ct, netns_joined{inode, std::move(h)});
}

// The reference agent's SyncCache(pid): the namespace of pid, with a handle saved for it.
// inode: what a scan or an event already read (0: look it up). 0 when the process is gone or
// moved between the lookup and the open.
uint32_t sync_pid(self_ptr self, pid_t pid, uint32_t inode) {
  auto& st = self->state;
  if (pid <= 0)
    return 0;
  if (inode == 0)
    inode = netns_handle::inode_of_pid(pid);
  if (inode == 0)
    return 0;
  if (st.cache->note_pid(inode, pid) && st.cache->fd_of(inode) >= 0)
    return inode;
  auto opened = netns_handle::open_for_pid(pid, inode);
  if (auto* err = std::get_if<netns_error>(&opened)) {
    if (err->code == netns_errc::inode_changed)
      ++st.handles_rejected;
    else if (err->code != netns_errc::no_such_process) {
      ++st.handle_errors;
      spdlog::debug("netns: {}", err->message);
    }
    return 0;
  }
  auto saved = st.cache->save_handle(std::move(std::get<netns_handle>(opened)), pid);
  released(self, std::move(saved.evicted));
  if (saved.stored)
    namespace_found(self, inode, std::move(saved.dequeued));
  return inode;
}

void on_exec(self_ptr self, pid_t pid) {
  auto& st = self->state;
  ++st.exec_events;
  uint32_t inode = sync_pid(self, pid, 0);
  // exec keeps the cgroup, but the pid may be a reused one: read it again. A process outside
  // the agent's namespace is read now, so one that lives a few milliseconds is still
  // attributed when its connections are reported.
  st.containers->exec(pid, inode != 0 && inode != st.own_netns, monotonic_now_ns());
}

void on_exit(self_ptr self, pid_t pid, uint64_t now) {
  auto& st = self->state;
  ++st.exit_events;
  st.cache->forget_pid(pid);
  st.containers->exited(pid, now);
}

// The start-up scan, and the fallback when exec/exit events are not followed (or were lost):
// every process, its namespace noted (a new one gets its handle). With forget_missing, pids
// the cache knows that the scan did not list have exited.
void scan_proc(self_ptr self, bool forget_missing) {
  auto& st = self->state;
  uint64_t t0 = monotonic_now_ns();
  std::unordered_set<pid_t> seen;
  proc_scan_options opts;
  opts.comm = false;
  auto stats = st.scanner->scan(opts, [&](const proc_process& p) {
    sync_pid(self, p.pid, p.netns_inode);
    if (forget_missing)
      seen.insert(p.pid);
  });
  if (!stats.error.empty())
    spdlog::warn("netns: /proc scan stopped early: {}", stats.error);
  if (forget_missing) {
    for (uint32_t inode : st.cache->inodes())
      if (auto info = st.cache->info(inode))
        for (pid_t p : info->pids)
          if (!seen.count(p))
            st.cache->forget_pid(p);
  }
  st.scanned_processes = stats.processes;
  st.scan_us = (monotonic_now_ns() - t0) / 1000;
  st.last_rescan_ns = monotonic_now_ns();
}

void on_links(self_ptr self, const link_batch& b) {
  auto& st = self->state;
  if (!st.cache || st.cache->fd_of(b.netns) < 0)
    return; // let go meanwhile
  if (b.dump_begins)
    st.devices.dump_begins(b.netns);
  for (const auto& ev : b.events) {
    netns_device dev{ev.ifindex, ev.name};
    if (ev.removed) {
      st.devices.removed(b.netns, ev.ifindex);
      if (auto d = st.cache->remove_device(b.netns, ev.ifindex))
        detach_device(self, b.netns, *d);
      continue;
    }
    st.devices.seen(b.netns, ev.ifindex, ev.name);
    if (!st.tc || !device_selected(ev.name, st.cfg.tc_include, st.cfg.tc_exclude)) {
      // Not (or no longer, after a rename) one of ours.
      if (auto d = st.cache->remove_device(b.netns, ev.ifindex))
        detach_device(self, b.netns, *d);
      continue;
    }
    auto q = st.cache->queue_device(b.netns, dev);
    released(self, std::move(q.evicted));
    if (q.ready)
      attach_device(self, b.netns, dev);
  }
  if (!b.dump_ends)
    return;
  // A complete dump lists every device: those it did not are gone (events were lost).
  if (auto listed = st.devices.dump_ends(b.netns))
    if (auto info = st.cache->info(b.netns))
      for (const auto& d : info->devices)
        if (!listed->count(d.ifindex))
          if (auto gone = st.cache->remove_device(b.netns, d.ifindex))
            detach_device(self, b.netns, *gone);
}

void on_tick(self_ptr self) {
  auto& st = self->state;
  if (!st.cache || st.state == actor_state::stopped || st.state == actor_state::purged)
    return;
  uint64_t now = monotonic_now_ns();
  st.last_tick_ns = now;
  const uint64_t idle = uint64_t{st.cfg.idle_flush_s} * k_s;
  if (st.cfg.enabled) {
    bool lost = st.procs &&
                st.procs->stats().lost + st.proc_batches_dropped->load() != st.proc_losses_answered;
    if ((!st.procs || lost) && now - st.last_rescan_ns >= idle) {
      if (st.procs)
        st.proc_losses_answered = st.procs->stats().lost + st.proc_batches_dropped->load();
      scan_proc(self, true);
    }
    st.cache->note_pid(st.own_netns, getpid()); // the agent's own namespace never goes idle
    released(self, st.cache->flush_without_processes(now, idle));
  }
  if (st.tc)
    st.tc_flows_expired += st.tc->remove_idle(uint64_t{st.cfg.tc_flow_idle_s} * k_s);
  st.containers->expire(now, idle);
}

// The facts /stats shows beside the counters: how the classifiers attach.
std::vector<std::pair<std::string, std::string>> info_of(const netns_state& st) {
  if (st.tc_attach_mode.empty())
    return {};
  return {{"tc_attach_mode", st.tc_attach_mode}};
}

counter_list counters_of(const netns_state& st) {
  counter_list out;
  if (st.cache) {
    auto c = st.cache->stats();
    out.emplace_back("namespaces", st.cache->size());
    out.emplace_back("namespace_capacity", st.cache->capacity());
    out.emplace_back("open_handles", st.cache->open_handles());
    out.emplace_back("evicted", c.evicted);
    out.emplace_back("flushed_idle", c.flushed_idle);
    out.emplace_back("devices_queued", c.devices_queued);
    out.emplace_back("queue_overflows", c.queue_overflows);
  }
  out.emplace_back("namespaces_found", st.namespaces_found);
  out.emplace_back("namespaces_released", st.namespaces_released);
  out.emplace_back("handle_errors", st.handle_errors);
  out.emplace_back("handles_rejected", st.handles_rejected);
  out.emplace_back("scan_us", st.scan_us);
  out.emplace_back("scanned_processes", st.scanned_processes);
  out.emplace_back("exec_events", st.exec_events);
  out.emplace_back("exit_events", st.exit_events);
  out.emplace_back("sync_requests", st.sync_requests);
  out.emplace_back("resolves", st.resolves);
  out.emplace_back("containers_known", st.containers->size());
  out.emplace_back("devices_known", st.devices.size());
  out.emplace_back("proc_batches_dropped", st.proc_batches_dropped->load());
  if (st.procs) {
    auto p = st.procs->stats();
    out.emplace_back("proc_events_lost", p.lost);
  }
  if (st.links) {
    out.emplace_back("namespaces_watched", st.links->watched());
  }
  out.emplace_back("link_errors", st.link_errors);
  out.emplace_back("tc_attached_devices", st.tc ? st.tc->attached_devices() : 0);
  out.emplace_back("tc_attached", st.tc_attached);
  out.emplace_back("tc_detached", st.tc_detached);
  out.emplace_back("tc_errors", st.tc_errors);
  out.emplace_back("tc_leftovers_removed", st.tc_leftovers_removed);
  out.emplace_back("tc_skipped_no_clsact", st.tc_skipped_no_clsact);
  out.emplace_back("tc_flows_expired", st.tc_flows_expired);
  if (st.tc) {
    auto k = st.tc->read_counters();
    out.emplace_back("tc_failed_inserts", k.failed_inserts);
    out.emplace_back("tc_unparsed", k.unparsed);
  }
  return out;
}

void degrade(netns_state& st, const std::string& why) {
  spdlog::warn("netns: {}", why);
  if (!st.degraded_reason.empty())
    st.degraded_reason += "; ";
  st.degraded_reason += why;
}

// Brings up what the namespaces are followed with. A part that cannot start degrades the
// actor (said in the log and /stats); what the others do still works.
void start_followers(self_ptr self) {
  auto& st = self->state;
  if (st.cfg.tc_enabled) {
    tc_load_options o;
    o.max_flows = st.cfg.tc_max_flows;
    o.use_tcx = st.cfg.tc_tcx;
    o.create_clsact = st.cfg.tc_create_clsact;
    auto loaded = tc_attach::load(o);
    if (auto* err = std::get_if<tc_error>(&loaded)) {
      degrade(st, "TC classifiers unavailable, no per-device counts: " + err->message);
    } else {
      st.tc = std::move(std::get<0>(loaded));
      if (st.tc->uses_tcx()) {
        st.tc_attach_mode = "tcx";
        spdlog::debug("netns: TC classifiers attach as TCX links");
      } else if (st.cfg.tc_create_clsact) {
        st.tc_attach_mode = "clsact";
        spdlog::info("netns: TC classifiers attach as classic filters ({}); a clsact qdisc is "
                     "created where a device has none (netns.tc_create_clsact), which drops "
                     "that device's packets in flight",
                     st.tc->classic_reason());
      } else {
        st.tc_attach_mode = "clsact-existing";
        spdlog::info("netns: TC classifiers attach as classic filters ({}), only on devices "
                     "that already have a clsact qdisc: creating one would drop the packets "
                     "in flight (netns.tc_create_clsact = true allows it)",
                     st.tc->classic_reason());
      }
    }
  }
  caf::actor_addr me = self->address();
  auto links = link_watcher::start([me](link_batch&& b) {
    if (auto target = caf::actor_cast<caf::actor>(me))
      caf::anon_send(target, std::move(b));
  });
  if (auto* err = std::get_if<std::string>(&links))
    degrade(st, "devices are not followed: " + *err);
  else
    st.links = std::move(std::get<0>(links));
  if (st.cfg.follow_processes) {
    auto in_flight = st.proc_in_flight;
    auto dropped = st.proc_batches_dropped;
    proc_events_options o;
    auto procs = proc_events::start(o, [me, in_flight, dropped](std::vector<proc_event>&& evs) {
      if (in_flight->load(std::memory_order_relaxed) >= k_max_proc_batches_in_flight) {
        dropped->fetch_add(1, std::memory_order_relaxed);
        return;
      }
      auto target = caf::actor_cast<caf::actor>(me);
      if (!target)
        return;
      in_flight->fetch_add(1, std::memory_order_relaxed);
      caf::anon_send(target, proc_event_batch{std::move(evs)});
    });
    if (auto* err = std::get_if<std::string>(&procs))
      degrade(st, "new processes are found by a /proc rescan every netns.idle_flush_s, not at "
                  "once: " +
                      *err);
    else
      st.procs = std::move(std::get<0>(procs));
  }
}

// Paged answers a reader left unfinished are dropped past this many, oldest first, and after
// this long without a page.
constexpr size_t k_max_listings = 16;
constexpr uint64_t k_listing_idle_ns = 60ull * 1000000000ull;

// One page of a paged answer: the flows are read at its first page; each page takes the flows
// its connections own; the last page gets the ones no page took.
void joined_page(netns_state& st, const netns_resolve_request& req,
                 const std::function<std::string(uint32_t, uint32_t)>& name_of,
                 netns_resolve_reply& out) {
  uint64_t now = monotonic_now_ns();
  for (auto it = st.listings.begin(); it != st.listings.end();)
    it = now - it->second.touched_ns > k_listing_idle_ns ? st.listings.erase(it) : std::next(it);
  auto it = st.listings.find(req.listing);
  if (it == st.listings.end()) {
    while (st.listings.size() >= k_max_listings) {
      auto oldest = std::min_element(
          st.listings.begin(), st.listings.end(),
          [](const auto& a, const auto& b) { return a.second.touched_ns < b.second.touched_ns; });
      st.listings.erase(oldest);
    }
    it = st.listings
             .emplace(req.listing,
                      netns_state::joined_listing{
                          std::make_unique<flow_joiner>(st.tc->read_flows()), now})
             .first;
  }
  it->second.touched_ns = now;
  out.devices = it->second.joiner->join(req.tuples, req.translated);
  if (req.last) {
    out.device_only = it->second.joiner->unowned(name_of);
    st.listings.erase(it);
  }
}

} // namespace

netns_actor spawn_netns(caf::actor_system& sys, const netns_config& cfg) {
  return sys.spawn<caf::detached>(netns_fn, cfg);
}

netns_self_actor::behavior_type netns_fn(self_ptr self, netns_config cfg) {
  self->state.cfg = std::move(cfg);
  netns_state* owner = &self->state;
  self->state.containers = std::make_unique<container_table>(
      [owner](pid_t pid) -> std::optional<std::string> {
        if (!owner->scanner)
          return std::nullopt;
        return owner->scanner->container_id(pid);
      },
      k_max_container_entries, k_no_container_recheck_ns);
  caf::actor_system* sys = &self->system();
  caf::actor_addr me = self->address();
  self->attach_functor([sys, me](const caf::error&) { unpublish(*sys, me); });
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.cache)
          return caf::ok_atom::value;
        st.own_netns = own_netns_inode();
        st.cache = std::make_unique<netns_cache>(st.cfg.max_namespaces, st.cfg.max_queued_devices,
                                                 [] { return monotonic_now_ns(); });
        auto scanner = proc_scanner::open("/proc");
        if (auto* err = std::get_if<std::string>(&scanner))
          return caf::make_error(caf::sec::runtime_error, "netns: " + *err);
        st.scanner = std::make_unique<proc_scanner>(std::move(std::get<proc_scanner>(scanner)));
        if (!st.cfg.enabled) {
          st.state = actor_state::disabled;
          publish(self);
          spdlog::info("netns: only the agent's own network namespace is served "
                       "(netns.enabled = false)");
          return caf::ok_atom::value;
        }
        // The followers first: a process started during the scan is in one or the other.
        start_followers(self);
        sync_pid(self, getpid(), st.own_netns);
        scan_proc(self, false);
        publish(self);
        st.state = st.degraded_reason.empty() ? actor_state::running : actor_state::degraded;
        self->delayed_send(self, k_tick, tick_atom::value);
        spdlog::info("netns: {} processes in {} network namespaces scanned in {} ms; {} devices "
                     "with TC classifiers",
                     st.scanned_processes, st.cache->size(), st.scan_us / 1000,
                     st.tc ? st.tc->attached_devices() : 0);
        return caf::ok_atom::value;
      },
      [=](sync_cache_atom, int32_t pid) -> uint32_t {
        auto& st = self->state;
        ++st.sync_requests;
        if (!st.cache || !st.cfg.enabled || st.state == actor_state::stopped ||
            st.state == actor_state::purged)
          return 0;
        return sync_pid(self, pid, 0);
      },
      [=](resolve_atom, const netns_resolve_request& req) -> netns_resolve_reply {
        auto& st = self->state;
        ++st.resolves;
        netns_resolve_reply out;
        const bool serving =
            st.cache && st.state != actor_state::stopped && st.state != actor_state::purged;
        // A namespace not met before is looked up once per request, through the first of its
        // connections whose process still lives there.
        std::unordered_set<uint32_t> tried;
        for (size_t i = 0; i < req.pids.size(); ++i) {
          pid_t pid = static_cast<pid_t>(req.pids[i]);
          const uint32_t netns = i < req.tuples.size() ? req.tuples[i].netns : 0;
          if (serving && st.cfg.enabled && netns != 0 && st.cache->fd_of(netns) < 0 &&
              !tried.count(netns) && netns_handle::inode_of_pid(pid) == netns &&
              sync_pid(self, pid, netns) == 0)
            tried.insert(netns);
          const std::string& id = st.containers->of(pid, monotonic_now_ns());
          if (!id.empty())
            out.container_ids.emplace_back(static_cast<uint32_t>(i), id);
        }
        auto name_of = [&](uint32_t netns, uint32_t ifindex) {
          return st.devices.name_of(netns, ifindex);
        };
        if (serving && st.tc && req.listing == 0) {
          auto joined = join_flows(req.tuples, st.tc->read_flows(), name_of, req.translated);
          out.devices = std::move(joined.devices);
          out.device_only = std::move(joined.device_only);
        } else if (serving && st.tc) {
          joined_page(st, req, name_of, out);
        }
        return out;
      },
      [=](netns_list_atom) {
        auto& st = self->state;
        std::vector<netns_joined> out;
        if (!st.cache || st.state == actor_state::purged)
          return out;
        for (uint32_t inode : st.cache->inodes()) {
          int fd = st.cache->fd_of(inode);
          if (fd < 0) // the agent's own is listed too: see namespace_found
            continue;
          if (auto h = shared_handle(fd, inode))
            out.push_back({inode, std::move(h)});
        }
        return out;
      },
      [=](link_batch& b) { on_links(self, b); },
      [=](proc_event_batch& b) {
        auto& st = self->state;
        st.proc_in_flight->fetch_sub(1, std::memory_order_relaxed);
        if (!st.cache || st.state == actor_state::stopped || st.state == actor_state::purged)
          return;
        uint64_t now = monotonic_now_ns();
        for (const auto& ev : b.events) {
          if (ev.kind == proc_event::exec)
            on_exec(self, ev.pid);
          else
            on_exit(self, ev.pid, now);
        }
      },
      [=](tick_atom) {
        on_tick(self);
        auto& st = self->state;
        if (st.state != actor_state::stopped && st.state != actor_state::purged)
          self->delayed_send(self, k_tick, tick_atom::value);
      },
      [=](stop_atom) {
        auto& st = self->state;
        // Joins the threads; what they read is already in the mailbox.
        if (st.procs)
          st.procs->stop();
        if (st.links)
          st.links->stop();
        if (st.state != actor_state::disabled)
          st.state = actor_state::stopped;
        return caf::ok_atom::value;
      },
      fault_handler(self),
      [=](purge_atom) {
        auto& st = self->state;
        size_t classifiers = st.tc ? st.tc->attached_devices() : 0;
        size_t namespaces = st.cache ? st.cache->size() : 0;
        if (st.tc) {
          if (auto err = st.tc->detach_all())
            spdlog::warn("netns: detaching the TC classifiers: {}", err->message);
          st.tc.reset();
        }
        st.procs.reset();
        st.links.reset();
        st.listings.clear();
        if (st.cache)
          st.cache->purge(); // closes every handle; conntrack purges its own consumers
        st.containers->clear();
        st.devices.clear();
        unpublish(*sys, me);
        if (st.state != actor_state::disabled)
          st.state = actor_state::purged;
        spdlog::info("netns: TC classifiers detached from {} devices, {} network namespaces "
                     "purged, handles closed",
                     classifiers, namespaces);
        return caf::ok_atom::value;
      },
      degradable_stats_handler(self, "netns", counters_of, info_of),
  };
}

} // namespace netlens
