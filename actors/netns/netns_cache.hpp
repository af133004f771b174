// The network namespaces the netns actor knows, keyed by nsfs inode: each one's open handle,
// the pids seen in it, its devices, and when it was last seen; plus, per namespace, the devices
// that appeared before its handle was saved and wait for it (the reference agent's
// SaveNetworkNamespaceHandle / QueueNetworkDevice). Bounded: the least recently seen namespace
// is evicted, its handle closed, and what it held is handed back so the actor can detach the
// classifiers it attached there. No CAF, no kernel beyond closing fds; time comes from the
// injected clock. Not thread-safe: the netns actor is its one owner.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "flow/netns_handle.hpp"

namespace netlens {

struct netns_device {
  int32_t ifindex = 0; // unique within its namespace only
  std::string name;
  bool operator==(const netns_device& o) const { return ifindex == o.ifindex && name == o.name; }
};

// What the cache let go of: the handle is already closed.
struct released_netns {
  uint32_t inode = 0;
  bool had_handle = false;
  std::vector<pid_t> pids;
  std::vector<netns_device> devices; // attached: the actor detaches their classifiers
  std::vector<netns_device> queued;  // still waiting for a handle: never attached
};

struct netns_info {
  uint32_t inode = 0;
  int fd = -1; // -1 while no handle is saved; owned by the cache
  std::vector<pid_t> pids;
  std::vector<netns_device> devices;
  std::vector<netns_device> queued;
  uint64_t last_seen_ns = 0;
};

struct netns_cache_stats {
  uint64_t handles_saved = 0;
  uint64_t handles_duplicate = 0; // save_handle for a namespace whose handle was held already
  uint64_t devices_queued = 0;
  uint64_t devices_dequeued = 0;
  uint64_t queue_overflows = 0; // devices refused because their namespace's queue was full
  uint64_t evicted = 0;
  uint64_t flushed_idle = 0;
  uint64_t purged = 0;
};

class netns_cache {
public:
  using clock_fn = std::function<uint64_t()>; // nanoseconds, monotonic

  struct save_result {
    bool stored = false;                // false: a handle was held already and h was closed
    std::vector<netns_device> dequeued; // waited for this handle: attach them now
    std::vector<released_netns> evicted;
  };
  struct queue_result {
    bool ready = false;   // the handle is held: the device joined the namespace, attach it now
    bool renamed = false; // that ifindex was there already: only its name changed, and an
                          // attached device stays attached (ready stays false)
    bool queued = false;
    std::vector<released_netns> evicted;
  };

  // max_namespaces >= 1; max_queued_per_namespace bounds the devices waiting for one handle.
  netns_cache(size_t max_namespaces, size_t max_queued_per_namespace, clock_fn clock);

  // Keeps h for its namespace (the first handle wins; a second for the same inode is closed)
  // and records pid as living there. The devices queued for that namespace move to its devices
  // and come back in dequeued.
  save_result save_handle(netns_handle h, pid_t pid);

  // A device appeared in namespace inode. With the handle held it joins the namespace's devices
  // at once; otherwise it waits until save_handle (an entry without handle is created for it).
  // The same ifindex again is a rename: the name is updated in place.
  queue_result queue_device(uint32_t inode, netns_device dev);

  // A device went away: out of the devices or the queue. The device when it was attached (the
  // actor detaches it), nullopt when it was only queued or unknown.
  std::optional<netns_device> remove_device(uint32_t inode, int32_t ifindex);

  // pid was seen in namespace inode (scan, exec event): refreshes it. False when the namespace
  // has no entry (the caller then opens a handle and calls save_handle).
  bool note_pid(uint32_t inode, pid_t pid);

  // pid exited: it leaves its namespace, whose idle time starts now if it was the last one.
  // Everything that changes a namespace counts as seeing it, so the eviction order and the idle
  // time agree.
  void forget_pid(pid_t pid);

  std::optional<uint32_t> inode_of(pid_t pid) const;
  int fd_of(uint32_t inode) const; // -1 when unknown or no handle yet
  std::optional<netns_info> info(uint32_t inode) const;
  // Inodes, most recently seen first.
  std::vector<uint32_t> inodes() const;

  // Drops the namespaces with no pid and no device (attached or queued) not seen since
  // now - idle_for_ns.
  std::vector<released_netns> flush_idle(uint64_t now_ns, uint64_t idle_for_ns);

  // Drops the namespaces no process has been seen in since now - idle_for_ns, whatever devices
  // they have: the agent's handle is what keeps such a namespace (and so its devices) alive,
  // so waiting for its devices to go would keep it forever. The actor detaches what they
  // held.
  std::vector<released_netns> flush_without_processes(uint64_t now_ns, uint64_t idle_for_ns);

  // Closes every handle and empties the cache (the purge phase of shutdown). Counters stay.
  std::vector<released_netns> purge();

  size_t size() const { return entries_.size(); }
  size_t capacity() const { return max_namespaces_; }
  size_t open_handles() const;
  netns_cache_stats stats() const { return stats_; }

private:
  struct entry {
    uint32_t inode = 0;
    netns_handle handle;
    std::vector<pid_t> pids;
    std::vector<netns_device> devices;
    std::vector<netns_device> queued;
    uint64_t last_seen_ns = 0;
  };
  using lru_list = std::list<entry>; // front: most recently seen

  // The entry for inode, moved to the front and touched; created (evicting at capacity) when
  // absent.
  lru_list::iterator touch_or_create(uint32_t inode, std::vector<released_netns>& evicted);
  void touch(lru_list::iterator it);
  released_netns release(lru_list::iterator it);
  void move_pid(pid_t pid, lru_list::iterator to);

  size_t max_namespaces_;
  size_t max_queued_;
  clock_fn clock_;
  lru_list lru_;
  std::unordered_map<uint32_t, lru_list::iterator> entries_;
  std::unordered_map<pid_t, uint32_t> pid_netns_;
  netns_cache_stats stats_;
};

} // namespace netlens
