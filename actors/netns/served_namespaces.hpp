// The rules of the netns actor, without CAF: which network namespaces the agent serves and what
// it holds in each. A namespace is found through a pid (a /proc scan, an exec event, a
// connection to attribute); its handle is saved once; what waited for it (devices) is attached;
// its devices are followed and the selected ones carry the TC classifiers; it is let go when it
// has had no process for netns.idle_flush_s or the cache is full, and everything attached there
// comes off. Other actors hear of each namespace found and let go through the feed (conntrack
// runs a consumer in each). The TC classifiers and the link watcher are handed in once started
// (either may be missing: the rules run without them, as a unit test does).
//
// Not thread-safe: the netns actor is its one owner; its threads only send batches in.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "actors/netns/container_table.hpp"
#include "actors/netns/device_book.hpp"
#include "actors/netns/flow_join.hpp"
#include "actors/netns/link_watcher.hpp"
#include "actors/netns/netns_cache.hpp"
#include "bpf/tc_attach.hpp"
#include "bpf/udp_local.hpp"
#include "config/config.hpp"
#include "flow/connection.hpp"
#include "flow/proc_scan.hpp"
#include "messages/types.hpp"

namespace netlens {

// What other actors learn of the namespaces: joined with a duplicate handle of each one found
// (the agent's own included), left when one is let go.
struct namespace_feed {
  std::function<void(netns_joined)> joined;
  std::function<void(uint32_t inode)> left;
};

class served_namespaces {
public:
  using clock_fn = std::function<uint64_t()>; // nanoseconds, monotonic

  // own_netns: the agent's own namespace, never let go for want of processes.
  served_namespaces(netns_config cfg, uint32_t own_netns, proc_scanner scanner, namespace_feed feed,
                    clock_fn clock);
  ~served_namespaces();
  served_namespaces(const served_namespaces&) = delete;
  served_namespaces& operator=(const served_namespaces&) = delete;

  // The classifiers (mode as /stats shows it: "tcx", "clsact", "clsact-existing") and the
  // device watcher, once started.
  void use_tc(std::unique_ptr<tc_attach> tc, std::string mode);
  void use_links(std::unique_ptr<link_watcher> links);
  // The sk_lookup programs that say which local address a datagram to an unconnected UDP
  // socket reached: attached in every namespace found from then on (and in those held now).
  void use_udp_local(std::unique_ptr<udp_local_book> book);

  // The reference agent's SyncCache(pid): the namespace of pid, its handle saved. inode: what a
  // scan or an event already read (0: look it up). 0 when the process is gone or moved between
  // the lookup and the open.
  uint32_t sync_pid(pid_t pid, uint32_t inode);
  void exec(pid_t pid);
  void exited(pid_t pid);
  // Every process's namespace noted. With forget_missing, the pids known that the scan did not
  // list have exited.
  void scan(bool forget_missing);
  // A batch of the device watcher: devices attached, renamed, detached, forgotten.
  void links(const link_batch& b);
  // Housekeeping. events_lost: the exec/exit events lost so far (nullopt: they are not
  // followed); a rescan of /proc makes up for them, at most once per idle_flush_s.
  void tick(std::optional<uint64_t> events_lost);
  // Containers and devices of the connections asked about (see netns_resolve_request). A
  // namespace not met before is looked up once per request. serving: false once stopped (only
  // what is known is answered).
  netns_resolve_reply resolve(const netns_resolve_request& req, bool serving);
  // A duplicate handle of every namespace held (a restarted conntrack asks).
  std::vector<netns_joined> handles() const;
  // Joins the device watcher's thread (what it read is already sent).
  void stop_following();
  // Everything comes off: classifiers detached, handles closed. Returns the devices that had
  // classifiers and the namespaces held.
  std::pair<size_t, size_t> purge();

  counter_list counters() const;
  const std::string& tc_attach_mode() const { return tc_mode_; }
  bool has_tc() const { return tc_ != nullptr; }
  size_t namespaces() const { return cache_.size(); }
  size_t tc_devices() const;
  uint64_t scanned_processes() const { return scanned_processes_; }
  uint64_t scan_us() const { return scan_us_; }

private:
  struct joined_listing {
    std::unique_ptr<flow_joiner> joiner;
    uint64_t touched_ns = 0;
  };

  void attach(uint32_t inode, const netns_device& d);
  void attach_udp_local(uint32_t inode);
  void detach(uint32_t inode, const netns_device& d);
  void released(std::vector<released_netns> gone);
  void found(uint32_t inode, std::vector<netns_device> dequeued);
  void fill_local_addresses(const netns_resolve_request& req, netns_resolve_reply& out);
  void joined_page(const netns_resolve_request& req,
                   const std::function<std::string(uint32_t, uint32_t)>& name_of,
                   netns_resolve_reply& out);

  netns_config cfg_;
  uint32_t own_netns_;
  namespace_feed feed_;
  clock_fn clock_;
  netns_cache cache_;
  proc_scanner scanner_;
  // The container of each pid looked at; kept a while after the process exits so its closed
  // connections are still attributed.
  container_table containers_;
  // Every device the watcher reported, attached or not: names for the device-only flows, and
  // what a complete link dump says is gone.
  device_book devices_;
  std::unique_ptr<tc_attach> tc_;
  std::string tc_mode_;
  std::unique_ptr<link_watcher> links_;
  std::unique_ptr<udp_local_book> udp_local_;
  // Paged answers being attributed, by listing: the flows read at the first page and which of
  // them a page took. Bounded; the oldest goes first (a reader that went away).
  std::unordered_map<uint64_t, joined_listing> listings_;

  uint64_t scan_us_ = 0;
  uint64_t scanned_processes_ = 0;
  uint64_t last_rescan_ns_ = 0;
  uint64_t losses_answered_ = 0; // lost events a rescan made good
  uint64_t namespaces_found_ = 0;
  uint64_t namespaces_released_ = 0;
  uint64_t handle_errors_ = 0;    // a namespace whose handle could not be opened
  uint64_t handles_rejected_ = 0; // the process moved or died between lookup and open
  uint64_t tc_attached_ = 0;
  uint64_t tc_detached_ = 0;
  uint64_t tc_errors_ = 0;
  uint64_t tc_skipped_no_clsact_ = 0; // devices left alone: no clsact, none to be created
  uint64_t tc_leftovers_removed_ = 0;
  uint64_t tc_flows_expired_ = 0;
  uint64_t udp_local_errors_ = 0;  // namespaces the sk_lookup program could not attach in
  uint64_t udp_local_found_ = 0;   // wildcard UDP flows given their local address
  uint64_t udp_local_unknown_ = 0; // such flows whose peer the map does not hold
  uint64_t link_errors_ = 0;
  uint64_t exec_events_ = 0;
  uint64_t exit_events_ = 0;
  uint64_t resolves_ = 0;
};

} // namespace netlens
