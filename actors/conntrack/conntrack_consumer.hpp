// The netlink consumer of one network namespace: its sockets (events subscribed to NEW and
// DESTROY, and one for dumps), and the thread that dumps the table, then follows the events,
// samples above the rate limit, and answers ENOBUFS with a resync. The thread never touches
// the actor's state: it hands batches to a sink (the actor turns that into a message).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "flow/flow_key.hpp"

namespace netlens {

// What the consumer hands over. A dump (initial or resync) arrives as batches whose first
// has dump_begins and whose last has dump_ends; the cache drops, at dump_ends, what the dump
// did not list (see conntrack_cache::begin_resync). An empty table still gives one (empty)
// batch with both flags. A dump that fails (timed out, refused) never sends dump_ends: nothing
// may be swept then, and the next dump's dump_begins starts the mark again. A batch holds
// either dumped entries or events, in the order they were read, never both. A batch with sync
// set holds no events: everything read from the event socket before request_sync() returned
// that number (or a lower one) is in an earlier batch.
struct ct_event_batch {
  uint32_t netns = 0;
  std::vector<ct_event> events;
  bool dump_begins = false;
  bool dump_ends = false;
  uint64_t sync = 0;
};

struct conntrack_consumer_options {
  int netns_fd = -1;                        // -1: the agent's own namespace; else not owned
  uint32_t netns_inode = 0;                 // tags every entry
  uint32_t receive_buffer_bytes = 8u << 20; // of the event socket (SO_RCVBUFFORCE)
  int64_t rate_limit = -1;          // new-entry events kept per second, -1: none (see rate_sampler)
  uint32_t dump_timeout_ms = 10000; // longest the dump may go without finishing
  uint32_t batch_max_events = 1024; // a batch is sent when this full or the socket is empty
  uint32_t dump_retry_ms = 10000;   // after a failed dump, try again this much later
};

enum class consumer_state { starting, dumping, following, degraded, stopped, closed };
const char* to_string(consumer_state s);

struct conntrack_consumer_stats {
  consumer_state state = consumer_state::starting;
  std::string degraded_reason;   // why, when state is degraded
  uint64_t events = 0;           // events (NEW, DESTROY) read from the event socket
  uint64_t events_kept = 0;      // of those, handed to the sink (events - sampled_out)
  uint64_t sampled_out = 0;      // new-entry events dropped by sampling
  double events_per_s = 0;       // EWMA
  double sampling_percent = 100; // share kept over the last window
  int64_t rate_limit = -1;       // the limit the thread samples to now, -1: none
  uint64_t enobufs = 0;          // each one renews the event socket and asks for a resync
  uint64_t resyncs = 0;          // dumps after the initial one
  uint64_t dumps_completed = 0;
  uint64_t dumps_failed = 0; // timed out or errored
  uint64_t dumped_entries = 0;
  uint64_t malformed = 0; // from the decoder
  uint64_t unknown = 0;
  uint64_t batches = 0;
  uint64_t syncs = 0; // sync batches handed over (each answers one or more request_sync)
  uint32_t receive_buffer_bytes = 0; // of the event socket, as the kernel granted it
};

enum class initial_dump_result { done, timed_out, failed };

class conntrack_consumer {
public:
  using sink_fn = std::function<void(ct_event_batch&&)>;

  // Opens the sockets inside the namespace and starts the thread, which dumps first. An
  // error (no conntrack netlink, no CAP_NET_ADMIN, no such namespace) comes back as text that
  // names the cause; nothing is left open then.
  static std::variant<std::unique_ptr<conntrack_consumer>, std::string>
  start(const conntrack_consumer_options& opts, sink_fn sink);

  // Waits until the initial dump has been handed to the sink (done), failed (refused by the
  // kernel, or the thread ended first), or timed out (dump_timeout_ms, or timeout, passed).
  initial_dump_result wait_initial_dump(std::chrono::milliseconds timeout);

  // Asks the thread for a new dump (mark and sweep), as after ENOBUFS. Returns at once; a
  // dump already running is followed by another.
  void request_resync();
  // Asks the thread to read the event socket dry and then hand over a batch whose sync is the
  // number returned (or a higher one): an event queued before this call is in the cache once
  // that batch is applied. 0 when the thread has ended or is stopping (no batch will come).
  uint64_t request_sync();
  // A new rate limit (configuration reload): the thread takes it at its next wakeup.
  void set_rate_limit(int64_t limit_per_s);

  // Stops reading and joins the thread; batches already read are handed over first.
  // Idempotent. The sockets stay open until close().
  void stop();
  // Closes the netlink sockets (stops first if needed). Idempotent; the destructor does it.
  void close();

  conntrack_consumer_stats stats() const;

  // The consumer thread's kernel thread id (for CPU accounting in /proc/self/task/<tid>), 0
  // once it has ended.
  int thread_id() const;

  ~conntrack_consumer();
  conntrack_consumer(const conntrack_consumer&) = delete;
  conntrack_consumer& operator=(const conntrack_consumer&) = delete;

private:
  conntrack_consumer() = default;
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace netlens
