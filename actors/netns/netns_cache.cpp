#include "actors/netns/netns_cache.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

namespace netlens {

namespace {

uint64_t steady_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

template <class T, class Pred> bool erase_first(std::vector<T>& v, Pred pred) {
  auto it = std::find_if(v.begin(), v.end(), pred);
  if (it == v.end())
    return false;
  v.erase(it);
  return true;
}

} // namespace

netns_cache::netns_cache(size_t max_namespaces, size_t max_queued_per_namespace, clock_fn clock)
    : max_namespaces_(std::max<size_t>(1, max_namespaces)), max_queued_(max_queued_per_namespace),
      clock_(clock ? std::move(clock) : steady_ns) {}

void netns_cache::touch(lru_list::iterator it) {
  it->last_seen_ns = clock_();
  lru_.splice(lru_.begin(), lru_, it);
}

netns_cache::lru_list::iterator netns_cache::touch_or_create(uint32_t inode,
                                                             std::vector<released_netns>& evicted) {
  if (auto found = entries_.find(inode); found != entries_.end()) {
    touch(found->second);
    return found->second;
  }
  if (entries_.size() >= max_namespaces_) {
    evicted.push_back(release(std::prev(lru_.end())));
    ++stats_.evicted;
  }
  lru_.emplace_front();
  lru_.front().inode = inode;
  lru_.front().last_seen_ns = clock_();
  entries_.emplace(inode, lru_.begin());
  return lru_.begin();
}

released_netns netns_cache::release(lru_list::iterator it) {
  released_netns r;
  r.inode = it->inode;
  r.had_handle = it->handle.valid();
  it->handle.reset();
  for (pid_t p : it->pids)
    pid_netns_.erase(p);
  r.pids = std::move(it->pids);
  r.devices = std::move(it->devices);
  r.queued = std::move(it->queued);
  entries_.erase(it->inode);
  lru_.erase(it);
  return r;
}

void netns_cache::move_pid(pid_t pid, lru_list::iterator to) {
  auto [where, inserted] = pid_netns_.try_emplace(pid, to->inode);
  if (!inserted) {
    if (where->second == to->inode)
      return;
    // The process changed namespace (setns, unshare): it no longer keeps the old one alive.
    if (auto old = entries_.find(where->second); old != entries_.end()) {
      erase_first(old->second->pids, [pid](pid_t p) { return p == pid; });
      touch(old->second);
      touch(to); // still the most recently seen
    }
    where->second = to->inode;
  }
  to->pids.push_back(pid);
}

netns_cache::save_result netns_cache::save_handle(netns_handle h, pid_t pid) {
  save_result r;
  if (!h.valid())
    return r;
  auto it = touch_or_create(h.inode(), r.evicted);
  if (it->handle.valid()) {
    ++stats_.handles_duplicate;
    h.reset();
  } else {
    it->handle = std::move(h);
    r.stored = true;
    ++stats_.handles_saved;
    stats_.devices_dequeued += it->queued.size();
    for (auto& d : it->queued)
      it->devices.push_back(d);
    r.dequeued = std::move(it->queued);
    it->queued.clear();
  }
  if (pid > 0)
    move_pid(pid, it);
  return r;
}

netns_cache::queue_result netns_cache::queue_device(uint32_t inode, netns_device dev) {
  queue_result r;
  auto it = touch_or_create(inode, r.evicted);
  const int32_t ifindex = dev.ifindex;
  auto same = [ifindex](const netns_device& d) { return d.ifindex == ifindex; };
  auto& list = it->handle.valid() ? it->devices : it->queued;
  if (auto known = std::find_if(list.begin(), list.end(), same); known != list.end()) {
    known->name = std::move(dev.name);
    r.renamed = true;
    r.queued = !it->handle.valid();
    return r;
  }
  if (it->handle.valid()) {
    it->devices.push_back(std::move(dev));
    r.ready = true;
    return r;
  }
  if (it->queued.size() >= max_queued_) {
    ++stats_.queue_overflows;
    return r;
  }
  it->queued.push_back(std::move(dev));
  r.queued = true;
  ++stats_.devices_queued;
  return r;
}

std::optional<netns_device> netns_cache::remove_device(uint32_t inode, int32_t ifindex) {
  auto found = entries_.find(inode);
  if (found == entries_.end())
    return std::nullopt;
  touch(found->second);
  auto& e = *found->second;
  auto same = [ifindex](const netns_device& d) { return d.ifindex == ifindex; };
  if (auto d = std::find_if(e.devices.begin(), e.devices.end(), same); d != e.devices.end()) {
    netns_device gone = std::move(*d);
    e.devices.erase(d);
    return gone;
  }
  erase_first(e.queued, same);
  return std::nullopt;
}

bool netns_cache::note_pid(uint32_t inode, pid_t pid) {
  auto found = entries_.find(inode);
  if (found == entries_.end())
    return false;
  touch(found->second);
  if (pid > 0)
    move_pid(pid, found->second);
  return true;
}

void netns_cache::forget_pid(pid_t pid) {
  auto where = pid_netns_.find(pid);
  if (where == pid_netns_.end())
    return;
  if (auto found = entries_.find(where->second); found != entries_.end()) {
    erase_first(found->second->pids, [pid](pid_t p) { return p == pid; });
    touch(found->second);
  }
  pid_netns_.erase(where);
}

std::optional<uint32_t> netns_cache::inode_of(pid_t pid) const {
  auto where = pid_netns_.find(pid);
  if (where == pid_netns_.end())
    return std::nullopt;
  return where->second;
}

int netns_cache::fd_of(uint32_t inode) const {
  auto found = entries_.find(inode);
  return found == entries_.end() ? -1 : found->second->handle.fd();
}

std::optional<netns_info> netns_cache::info(uint32_t inode) const {
  auto found = entries_.find(inode);
  if (found == entries_.end())
    return std::nullopt;
  const auto& e = *found->second;
  return netns_info{e.inode, e.handle.fd(), e.pids, e.devices, e.queued, e.last_seen_ns};
}

std::vector<uint32_t> netns_cache::inodes() const {
  std::vector<uint32_t> out;
  out.reserve(lru_.size());
  for (const auto& e : lru_)
    out.push_back(e.inode);
  return out;
}

size_t netns_cache::open_handles() const {
  return static_cast<size_t>(
      std::count_if(lru_.begin(), lru_.end(), [](const entry& e) { return e.handle.valid(); }));
}

std::vector<released_netns> netns_cache::flush_idle(uint64_t now_ns, uint64_t idle_for_ns) {
  std::vector<released_netns> out;
  for (auto it = lru_.begin(); it != lru_.end();) {
    auto next = std::next(it);
    const bool lonely = it->pids.empty() && it->devices.empty() && it->queued.empty();
    if (lonely && now_ns >= it->last_seen_ns && now_ns - it->last_seen_ns >= idle_for_ns) {
      out.push_back(release(it));
      ++stats_.flushed_idle;
    }
    it = next;
  }
  return out;
}

std::vector<released_netns> netns_cache::flush_without_processes(uint64_t now_ns,
                                                                 uint64_t idle_for_ns) {
  std::vector<released_netns> out;
  for (auto it = lru_.begin(); it != lru_.end();) {
    auto next = std::next(it);
    if (it->pids.empty() && now_ns >= it->last_seen_ns &&
        now_ns - it->last_seen_ns >= idle_for_ns) {
      out.push_back(release(it));
      ++stats_.flushed_idle;
    }
    it = next;
  }
  return out;
}

std::vector<released_netns> netns_cache::purge() {
  std::vector<released_netns> out;
  out.reserve(lru_.size());
  while (!lru_.empty())
    out.push_back(release(lru_.begin()));
  stats_.purged += out.size();
  pid_netns_.clear();
  return out;
}

} // namespace netlens
