// Follows the network devices of many network namespaces: one NETLINK_ROUTE socket per
// namespace, subscribed to link events and opened inside it, and one poll thread that reads them
// all and hands what it read to a sink, namespace by namespace. The netns actor owns it and turns
// the batches into its device table (to attach TC classifiers). No CAF.
//
// Dumps and events share one socket, on purpose. The kernel queues a notification when the
// change happens and writes a dump's next part when the reader has drained the previous one, so
// on one socket everything is read in an order the device table can follow from start to end
// (a part lists the state as of when it was written; later changes follow it as events). With a
// separate dump socket the two orders are unrelated: a dump part written before a device was
// deleted could be read after its RTM_DELLINK and bring the device back for good.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace netlens {

struct link_event {
  uint32_t netns = 0;   // namespace inode
  int32_t ifindex = 0;  // unique within the namespace
  std::string name;     // the current name (a rename is an event with the same ifindex)
  bool removed = false; // deleted, or moved to another namespace
  bool up = false;      // IFF_UP
  bool loopback = false;
  bool dumped = false; // from a dump's answer rather than a notification
};

// What the watcher hands over: the events read from one namespace's socket, in the kernel's
// order. A dump (on add, and again after ENOBUFS or an interrupted dump) spans the batches from
// one with dump_begins, whose first event is the dump's first, to one with dump_ends, whose last
// event is the dump's last (possibly the same batch). Notifications the kernel queued while it
// wrote the dump's parts sit in between, in order. The device table is then exactly: at
// dump_begins mark every device unseen; every event that is not `removed` marks its device seen
// (dumped or not: a device created during the dump may be announced instead of listed); at
// dump_ends drop what is still unseen. Notifications read before dump_begins predate the dump
// and must not mark (after ENOBUFS the socket still holds old ones when the new dump is asked
// for). A dump that fails never sends dump_ends; the next dump_begins starts the mark again.
struct link_batch {
  uint32_t netns = 0;
  std::vector<link_event> events;
  bool dump_begins = false;
  bool dump_ends = false;
};

struct netns_link_stats {
  uint32_t netns = 0;
  uint64_t events = 0;
  uint64_t dumps_requested = 0;
  uint64_t dumps_completed = 0;
  uint64_t enobufs = 0;   // the kernel dropped notifications: each asks for a new dump
  uint64_t malformed = 0; // from the decoder
  uint64_t errors = 0;    // socket errors and netlink errors answering our requests
  bool failed = false;    // the socket broke for good and left the poll set
  std::string last_error; // names the namespace and the step
};

struct link_watcher_stats {
  size_t watched = 0;
  uint64_t batches = 0;
  uint64_t events = 0;
  uint64_t dumps_requested = 0;
  uint64_t dumps_completed = 0;
  uint64_t dumps_interrupted = 0; // NLM_F_DUMP_INTR seen: dumped again
  uint64_t enobufs = 0;
  uint64_t malformed = 0;
  uint64_t unknown = 0;
  uint64_t errors = 0;
  uint64_t wakeups = 0; // epoll_wait returns of the poll thread: a spin shows here
  std::vector<netns_link_stats> per_netns; // of the namespaces watched now, by inode
};

class link_watcher {
public:
  // Called on the poll thread, one batch at a time, never under a lock of the watcher; it must
  // only hand the batch over. A batch read just before remove(inode) may still be delivered
  // after remove returns (always before anything of a later add of the same inode).
  using sink_fn = std::function<void(link_batch&&)>;

  // Default receive buffer of each socket (SO_RCVBUFFORCE, else SO_RCVBUF): a veth pair created
  // or a namespace's devices moved at once make bursts of ~1.5 KB notifications.
  static constexpr int k_default_receive_buffer = 1 << 20;

  static std::variant<std::unique_ptr<link_watcher>, std::string>
  start(sink_fn sink, int receive_buffer_bytes = k_default_receive_buffer);

  ~link_watcher();
  link_watcher(const link_watcher&) = delete;
  link_watcher& operator=(const link_watcher&) = delete;

  // Opens the namespace's socket inside it (netns_fd is not owned and may be closed after; -1:
  // the caller's own namespace), subscribes to link events and asks for a dump. Adding an inode
  // already watched is a no-op. The socket keeps the namespace alive until remove(inode): the
  // namespace is not destroyed while watched, even after every process and mount left it. The
  // error text names the inode and the step; nothing is left open on error.
  std::optional<std::string> add(uint32_t inode, int netns_fd);
  void remove(uint32_t inode); // closes that namespace's socket; unknown inode: no-op
  void stop(); // joins the thread, closes every socket; idempotent; not from the sink
  size_t watched() const;
  link_watcher_stats stats() const;

private:
  struct impl;
  explicit link_watcher(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace netlens
