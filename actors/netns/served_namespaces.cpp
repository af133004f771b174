#include "actors/netns/served_namespaces.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "actors/netns/container_id.hpp"
#include "actors/netns/device_filter.hpp"

namespace netlens {
namespace {

// pid -> container entries kept at most; past it the host processes' (empty) ones go first.
constexpr size_t k_max_container_entries = 262144;
// A process found in no container is read again after this long: it may have been moved into
// one after its exec (a runtime that execs first, an operator's cgclassify).
constexpr uint64_t k_no_container_recheck_ns = 2'000'000'000ull;
// Paged answers a reader left unfinished are dropped past this many, oldest first, and after
// this long without a page.
constexpr size_t k_max_listings = 16;
constexpr uint64_t k_listing_idle_ns = 60ull * 1000000000ull;
constexpr uint64_t k_s = 1000000000ull;

// A duplicate of the namespace's fd for another owner (conntrack); null if dup fails.
std::shared_ptr<const netns_handle> shared_handle(int fd, uint32_t inode) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0)
    return nullptr;
  return std::make_shared<const netns_handle>(netns_handle::adopt(copy, inode));
}

} // namespace

served_namespaces::served_namespaces(netns_config cfg, uint32_t own_netns, proc_scanner scanner,
                                     namespace_feed feed, clock_fn clock)
    : cfg_(std::move(cfg)), own_netns_(own_netns), feed_(std::move(feed)), clock_(std::move(clock)),
      cache_(cfg_.max_namespaces, cfg_.max_queued_devices, clock_), scanner_(std::move(scanner)),
      containers_([this](pid_t pid) { return container_id_of(scanner_, pid); },
                  k_max_container_entries, k_no_container_recheck_ns) {}

served_namespaces::~served_namespaces() = default;

void served_namespaces::use_tc(std::unique_ptr<tc_attach> tc, std::string mode) {
  tc_ = std::move(tc);
  tc_mode_ = tc_ ? std::move(mode) : std::string();
}

void served_namespaces::use_links(std::unique_ptr<link_watcher> links) {
  links_ = std::move(links);
}

void served_namespaces::use_udp_local(std::unique_ptr<udp_local_book> book) {
  udp_local_ = std::move(book);
  for (uint32_t inode : cache_.inodes())
    attach_udp_local(inode);
}

void served_namespaces::attach_udp_local(uint32_t inode) {
  const int fd = cache_.fd_of(inode);
  if (!udp_local_ || fd < 0)
    return;
  if (auto err = udp_local_->attach(inode, fd)) {
    ++udp_local_errors_;
    spdlog::warn("netns: the local address of UDP datagrams to unconnected sockets is not "
                 "followed: {}",
                 *err);
  }
}

size_t served_namespaces::tc_devices() const {
  return tc_ ? tc_->attached_devices() : 0;
}

void served_namespaces::attach(uint32_t inode, const netns_device& d) {
  if (!tc_)
    return;
  int fd = cache_.fd_of(inode);
  if (fd < 0)
    return;
  if (auto err = tc_->attach(d.ifindex, fd)) {
    if (err->code == tc_errc::no_clsact) {
      // Classic TC without TCX, and the operator did not allow creating a qdisc.
      ++tc_skipped_no_clsact_;
      spdlog::debug("netns: TC classifiers not attached to {}: {}", d.name, err->message);
    } else {
      ++tc_errors_;
      spdlog::warn("netns: cannot attach the TC classifiers to {}: {}", d.name, err->message);
    }
    cache_.remove_device(inode, d.ifindex);
    return;
  }
  ++tc_attached_;
  spdlog::debug("netns: TC classifiers attached to {} (ifindex {}) in network namespace {}", d.name,
                d.ifindex, inode);
}

void served_namespaces::detach(uint32_t inode, const netns_device& d) {
  if (!tc_)
    return;
  if (auto err = tc_->detach_inode(inode, d.ifindex)) {
    ++tc_errors_;
    spdlog::warn("netns: detaching the TC classifiers from {}: {}", d.name, err->message);
    return;
  }
  ++tc_detached_;
}

// What the cache let go of: its classifiers come off, its watcher and its conntrack consumer
// stop, its device names are forgotten.
void served_namespaces::released(std::vector<released_netns> gone) {
  for (auto& r : gone) {
    if (links_)
      links_->remove(r.inode);
    for (const auto& d : r.devices)
      detach(r.inode, d);
    if (udp_local_)
      udp_local_->detach(r.inode);
    devices_.forget(r.inode);
    if (feed_.left)
      feed_.left(r.inode);
    ++namespaces_released_;
    spdlog::debug("netns: let network namespace {} go ({} devices detached)", r.inode,
                  r.devices.size());
  }
}

// A namespace whose handle was just saved: clear what a killed earlier run left on its devices,
// follow its devices, attach those that waited, and have conntrack follow NAT in it.
void served_namespaces::found(uint32_t inode, std::vector<netns_device> dequeued) {
  int fd = cache_.fd_of(inode);
  ++namespaces_found_;
  if (tc_) {
    auto left = tc_->remove_leftovers(fd);
    if (auto* n = std::get_if<size_t>(&left)) {
      tc_leftovers_removed_ += *n;
      if (*n)
        spdlog::info("netns: removed {} TC filters a killed earlier run left in network "
                     "namespace {}",
                     *n, inode);
    } else {
      ++tc_errors_;
      spdlog::warn("netns: {}", std::get<tc_error>(left).message);
    }
  }
  if (links_) {
    if (auto err = links_->add(inode, fd)) {
      ++link_errors_;
      spdlog::warn("netns: cannot follow the devices of network namespace {}: {}", inode, *err);
    }
  }
  for (const auto& d : dequeued)
    attach(inode, d);
  attach_udp_local(inode);
  // The agent's own namespace too: conntrack follows it already, and learns from it that
  // namespaces are handed over, so a connection of one not handed over yet waits for it.
  if (feed_.joined)
    if (auto h = shared_handle(fd, inode))
      feed_.joined(netns_joined{inode, std::move(h)});
}

uint32_t served_namespaces::sync_pid(pid_t pid, uint32_t inode) {
  if (pid <= 0)
    return 0;
  if (inode == 0)
    inode = netns_handle::inode_of_pid(pid);
  if (inode == 0)
    return 0;
  if (cache_.note_pid(inode, pid) && cache_.fd_of(inode) >= 0)
    return inode;
  auto opened = netns_handle::open_for_pid(pid, inode);
  if (auto* err = std::get_if<netns_error>(&opened)) {
    if (err->code == netns_errc::inode_changed)
      ++handles_rejected_;
    else if (err->code != netns_errc::no_such_process) {
      ++handle_errors_;
      spdlog::debug("netns: {}", err->message);
    }
    return 0;
  }
  auto saved = cache_.save_handle(std::move(std::get<netns_handle>(opened)), pid);
  released(std::move(saved.evicted));
  if (saved.stored)
    found(inode, std::move(saved.dequeued));
  return inode;
}

void served_namespaces::exec(pid_t pid) {
  ++exec_events_;
  uint32_t inode = sync_pid(pid, 0);
  // exec keeps the cgroup, but the pid may be a reused one: read it again. A process outside
  // the agent's namespace is read now, so one that lives a few milliseconds is still
  // attributed when its connections are reported.
  containers_.exec(pid, inode != 0 && inode != own_netns_, clock_());
}

void served_namespaces::exited(pid_t pid) {
  ++exit_events_;
  cache_.forget_pid(pid);
  containers_.exited(pid, clock_());
}

void served_namespaces::scan(bool forget_missing) {
  uint64_t t0 = clock_();
  std::unordered_set<pid_t> seen;
  proc_scan_options opts;
  opts.comm = false;
  auto stats = scanner_.scan(opts, [&](const proc_process& p) {
    sync_pid(p.pid, p.netns_inode);
    if (forget_missing)
      seen.insert(p.pid);
  });
  if (!stats.error.empty())
    spdlog::warn("netns: /proc scan stopped early: {}", stats.error);
  if (forget_missing) {
    for (uint32_t inode : cache_.inodes())
      if (auto info = cache_.info(inode))
        for (pid_t p : info->pids)
          if (!seen.count(p))
            cache_.forget_pid(p);
  }
  scanned_processes_ = stats.processes;
  scan_us_ = (clock_() - t0) / 1000;
  last_rescan_ns_ = clock_();
}

void served_namespaces::links(const link_batch& b) {
  if (cache_.fd_of(b.netns) < 0)
    return; // let go meanwhile
  if (b.dump_begins)
    devices_.dump_begins(b.netns);
  for (const auto& ev : b.events) {
    netns_device dev{ev.ifindex, ev.name};
    if (ev.removed) {
      devices_.removed(b.netns, ev.ifindex);
      if (auto d = cache_.remove_device(b.netns, ev.ifindex))
        detach(b.netns, *d);
      continue;
    }
    devices_.seen(b.netns, ev.ifindex, ev.name);
    if (!tc_ || !device_selected(ev.name, cfg_.tc_include, cfg_.tc_exclude)) {
      // Not (or no longer, after a rename) one of ours.
      if (auto d = cache_.remove_device(b.netns, ev.ifindex))
        detach(b.netns, *d);
      continue;
    }
    auto q = cache_.queue_device(b.netns, dev);
    released(std::move(q.evicted));
    if (q.ready)
      attach(b.netns, dev);
  }
  if (!b.dump_ends)
    return;
  // A complete dump lists every device: those it did not are gone (events were lost).
  if (auto listed = devices_.dump_ends(b.netns))
    if (auto info = cache_.info(b.netns))
      for (const auto& d : info->devices)
        if (!listed->count(d.ifindex))
          if (auto gone = cache_.remove_device(b.netns, d.ifindex))
            detach(b.netns, *gone);
}

void served_namespaces::tick(std::optional<uint64_t> events_lost) {
  uint64_t now = clock_();
  const uint64_t idle = uint64_t{cfg_.idle_flush_s} * k_s;
  if (cfg_.enabled) {
    bool lost = events_lost && *events_lost != losses_answered_;
    if ((!events_lost || lost) && now - last_rescan_ns_ >= idle) {
      if (events_lost)
        losses_answered_ = *events_lost;
      scan(true);
    }
    cache_.note_pid(own_netns_, getpid()); // the agent's own namespace never goes idle
    released(cache_.flush_without_processes(now, idle));
  }
  if (tc_)
    tc_flows_expired_ += tc_->remove_idle(uint64_t{cfg_.tc_flow_idle_s} * k_s);
  containers_.expire(now, idle);
}

// One page of a paged answer: the flows are read at its first page; each page takes the flows
// its connections own; the last page gets the ones no page took.
void served_namespaces::joined_page(const netns_resolve_request& req,
                                    const std::function<std::string(uint32_t, uint32_t)>& name_of,
                                    netns_resolve_reply& out) {
  uint64_t now = clock_();
  for (auto it = listings_.begin(); it != listings_.end();)
    it = now - it->second.touched_ns > k_listing_idle_ns ? listings_.erase(it) : std::next(it);
  auto it = listings_.find(req.listing);
  if (it == listings_.end()) {
    while (listings_.size() >= k_max_listings) {
      auto oldest =
          std::min_element(listings_.begin(), listings_.end(), [](const auto& a, const auto& b) {
            return a.second.touched_ns < b.second.touched_ns;
          });
      listings_.erase(oldest);
    }
    it = listings_
             .emplace(req.listing,
                      joined_listing{std::make_unique<flow_joiner>(tc_->read_flows()), now})
             .first;
  }
  it->second.touched_ns = now;
  out.devices = it->second.joiner->join(req.tuples, req.translated);
  if (req.last) {
    out.device_only = it->second.joiner->unowned(name_of);
    listings_.erase(it);
  }
}

// The per-peer flows of UDP sockets bound to the wildcard: the local address their peer's
// datagrams reached, where the sk_lookup program saw one.
void served_namespaces::fill_local_addresses(const netns_resolve_request& req,
                                             netns_resolve_reply& out) {
  for (size_t i = 0; i < req.tuples.size(); ++i) {
    const ct_tuple& t = req.tuples[i];
    if (t.protocol != IPPROTO_UDP || t.ends.dport == 0 || !is_unspecified(t.ends.saddr))
      continue;
    std::array<uint8_t, 16> local{};
    if (!udp_local_->local_address(t.netns, t.family, t.ends.sport, t.ends.daddr, t.ends.dport,
                                   local.data())) {
      ++udp_local_unknown_;
      continue;
    }
    out.local_addresses.emplace_back(static_cast<uint32_t>(i), local);
    ++udp_local_found_;
  }
}

netns_resolve_reply served_namespaces::resolve(const netns_resolve_request& req, bool serving) {
  ++resolves_;
  netns_resolve_reply out;
  std::unordered_set<uint32_t> tried;
  for (size_t i = 0; i < req.pids.size(); ++i) {
    pid_t pid = static_cast<pid_t>(req.pids[i]);
    const uint32_t netns = i < req.tuples.size() ? req.tuples[i].netns : 0;
    // Looked up through the first of its connections whose process still lives there.
    if (serving && cfg_.enabled && netns != 0 && cache_.fd_of(netns) < 0 && !tried.count(netns) &&
        netns_handle::inode_of_pid(pid) == netns && sync_pid(pid, netns) == 0)
      tried.insert(netns);
    const std::string& id = containers_.of(pid, clock_());
    if (!id.empty())
      out.container_ids.emplace_back(static_cast<uint32_t>(i), id);
  }
  auto name_of = [this](uint32_t netns, uint32_t ifindex) {
    return devices_.name_of(netns, ifindex);
  };
  if (serving && udp_local_)
    fill_local_addresses(req, out);
  if (serving && tc_ && req.listing == 0) {
    auto joined = join_flows(req.tuples, tc_->read_flows(), name_of, req.translated);
    out.devices = std::move(joined.devices);
    out.device_only = std::move(joined.device_only);
  } else if (serving && tc_) {
    joined_page(req, name_of, out);
  }
  return out;
}

std::vector<netns_joined> served_namespaces::handles() const {
  std::vector<netns_joined> out;
  for (uint32_t inode : cache_.inodes()) {
    int fd = cache_.fd_of(inode);
    if (fd < 0) // the agent's own is listed too: see found
      continue;
    if (auto h = shared_handle(fd, inode))
      out.push_back({inode, std::move(h)});
  }
  return out;
}

void served_namespaces::stop_following() {
  if (links_)
    links_->stop();
}

std::pair<size_t, size_t> served_namespaces::purge() {
  std::pair<size_t, size_t> held{tc_devices(), cache_.size()};
  if (tc_) {
    if (auto err = tc_->detach_all())
      spdlog::warn("netns: detaching the TC classifiers: {}", err->message);
    tc_.reset();
  }
  links_.reset();
  udp_local_.reset(); // every link closed
  listings_.clear();
  cache_.purge(); // closes every handle; conntrack purges its own consumers
  containers_.clear();
  devices_.clear();
  return held;
}

counter_list served_namespaces::counters() const {
  counter_list out;
  auto c = cache_.stats();
  out.emplace_back("namespaces", cache_.size());
  out.emplace_back("namespace_capacity", cache_.capacity());
  out.emplace_back("open_handles", cache_.open_handles());
  out.emplace_back("evicted", c.evicted);
  out.emplace_back("flushed_idle", c.flushed_idle);
  out.emplace_back("devices_queued", c.devices_queued);
  out.emplace_back("queue_overflows", c.queue_overflows);
  out.emplace_back("namespaces_found", namespaces_found_);
  out.emplace_back("namespaces_released", namespaces_released_);
  out.emplace_back("handle_errors", handle_errors_);
  out.emplace_back("handles_rejected", handles_rejected_);
  out.emplace_back("scan_us", scan_us_);
  out.emplace_back("scanned_processes", scanned_processes_);
  out.emplace_back("exec_events", exec_events_);
  out.emplace_back("exit_events", exit_events_);
  out.emplace_back("resolves", resolves_);
  out.emplace_back("containers_known", containers_.size());
  out.emplace_back("devices_known", devices_.size());
  if (links_)
    out.emplace_back("namespaces_watched", links_->watched());
  out.emplace_back("link_errors", link_errors_);
  out.emplace_back("tc_attached_devices", tc_devices());
  out.emplace_back("tc_attached", tc_attached_);
  out.emplace_back("tc_detached", tc_detached_);
  out.emplace_back("tc_errors", tc_errors_);
  out.emplace_back("tc_leftovers_removed", tc_leftovers_removed_);
  out.emplace_back("tc_skipped_no_clsact", tc_skipped_no_clsact_);
  out.emplace_back("tc_flows_expired", tc_flows_expired_);
  out.emplace_back("udp_local_namespaces", udp_local_ ? udp_local_->attached() : 0);
  out.emplace_back("udp_local_errors", udp_local_errors_);
  out.emplace_back("udp_local_found", udp_local_found_);
  out.emplace_back("udp_local_unknown", udp_local_unknown_);
  if (tc_) {
    auto k = tc_->read_counters();
    out.emplace_back("tc_failed_inserts", k.failed_inserts);
    out.emplace_back("tc_unparsed", k.unparsed);
  }
  return out;
}

} // namespace netlens
