// Process exec and exit events from the kernel (proc_events.bpf.c): the loaded object, its two
// tracepoint links, its ring buffer and the thread that polls it. Hands batches of events to a
// sink so the netns actor can find a new process and its network namespace promptly.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "flow/wake_signal.hpp"

struct nl_proc_events;
struct ring_buffer;

namespace netlens {

struct proc_event {
  enum kind_t : uint8_t { exec = 1, exit = 2 } kind;
  int32_t pid;       // the process (thread-group) id
  uint64_t ktime_ns; // CLOCK_MONOTONIC when the kernel saw it
};

struct proc_events_options {
  // Rounded up to a power of two of at least one page (what the kernel accepts for a ring).
  uint32_t ring_bytes = 256 * 1024;
  uint32_t max_batch = 256; // events handed over at most at once
  // The kernel wakes the reader only when wakeup_events records wait (a wakeup is a self-IPI
  // on every exec and exit otherwise); fewer are read every read_interval_ms.
  uint32_t wakeup_events = 64;
  uint32_t read_interval_ms = 50;
};

struct proc_events_stats {
  uint64_t events = 0;  // handed to the sink
  uint64_t lost = 0;    // dropped in the kernel: the ring buffer was full
  uint64_t batches = 0; // calls of the sink
};

class proc_events {
public:
  // Called on the poll thread; it should only hand the events over (to a mailbox, a queue).
  using sink_fn = std::function<void(std::vector<proc_event>&&)>;

  // Loads the programs, attaches both tracepoints and starts polling. The error names the step.
  static std::variant<std::unique_ptr<proc_events>, std::string>
  start(const proc_events_options& opts, sink_fn sink);
  // Stops, detaches the tracepoints and frees every BPF object. Takes ~0.1 s: the kernel waits
  // for an RCU grace period when a tracepoint loses its probe, once per tracepoint.
  ~proc_events();
  proc_events(const proc_events&) = delete;
  proc_events& operator=(const proc_events&) = delete;

  // Stops polling, delivers what is in the ring buffer, joins the thread. Idempotent. The
  // tracepoints stay attached until destruction (events then are counted nowhere).
  void stop();
  proc_events_stats stats() const;

  // The kernel's ids of the programs and maps: how a test sees that nothing stays behind.
  std::vector<uint32_t> program_ids() const;
  std::vector<uint32_t> map_ids() const;

private:
  proc_events() = default;
  static int on_sample(void* ctx, void* data, size_t size);
  void poll_loop();
  void hand_out();

  nl_proc_events* skel_ = nullptr;
  ring_buffer* ring_ = nullptr;
  wake_signal wake_; // stop
  int ncpus_ = 1;
  size_t max_batch_ = 256;
  int read_interval_ms_ = 50;
  sink_fn sink_;
  std::vector<proc_event> batch_; // poll thread only
  std::thread poller_;
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> events_{0};
  std::atomic<uint64_t> batches_{0};
};

} // namespace netlens
