// Reads closed-connection records from the tracer's ring buffer or perf buffer on a thread of
// its own, decodes them and hands them out in batches. No CAF: the actor gives it a sink.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "actors/perf_consumer/batch_tracker.hpp"
#include "messages/types.hpp"

struct ring_buffer;
struct perf_buffer;

namespace netlens {

struct closed_reader_stats {
  uint64_t records = 0;   // decoded and handed out
  uint64_t lost = 0;      // reported lost by the perf buffer
  uint64_t malformed = 0; // rejected by the decoder
  uint64_t batches = 0;
  uint64_t wakeups = 0;            // the poll thread woke with records to read (not by its timer)
  uint64_t drains = 0;             // reads made because a connections request asked
  uint64_t pending_taken = 0;      // perf: records taken from batches still filling
  uint64_t duplicates_skipped = 0; // perf: records of arrived batches taken before
};

class closed_reader {
public:
  using sink = std::function<void(std::vector<nl_conn>&&)>;

  static std::variant<std::unique_ptr<closed_reader>, std::string>
  open(const closed_buffer_info& info, sink out);
  ~closed_reader();
  closed_reader(const closed_reader&) = delete;
  closed_reader& operator=(const closed_reader&) = delete;

  void start();
  // Stops the poll thread, joins it, then drains what is left and hands it out. Idempotent.
  void stop();
  // Reads what is available now, on the caller's thread (only while the thread is stopped).
  void drain();
  // Has the running poll thread read everything in the buffer now and hand it out, and waits
  // until it has (or timeout passed: false). What was closed before this call is handed out
  // before it returns true.
  bool drain_now(std::chrono::milliseconds timeout);

  closed_reader_stats stats() const;

  // Entry points for the libbpf callbacks.
  void on_record(const void* data, size_t size);
  void on_lost(uint64_t count);

private:
  closed_reader() = default;
  void poll_loop();
  void hand_out();
  void on_batch(const void* data, size_t size);
  // Perf mode: takes what the per-CPU batches still filling hold and this reader has not
  // taken yet. Only on the poll thread (or while it is stopped).
  void read_pending();

  sink sink_;
  int fd_ = -1;      // our duplicate of the map fd
  int wake_fd_ = -1; // eventfd that tells the poll thread to stop
  int flush_interval_ms_ = 100;
  ring_buffer* ring_ = nullptr;
  perf_buffer* perf_ = nullptr;
  std::vector<nl_conn> batch_;
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> records_{0}, lost_{0}, malformed_{0}, batches_{0};
  std::atomic<uint64_t> wakeups_{0}, drains_{0};
  std::atomic<uint64_t> pending_taken_{0}, duplicates_skipped_{0};
  int batches_fd_ = -1; // perf mode: our duplicate of the per-CPU batch map fd
  int ncpus_ = 0;
  size_t batch_value_size_ = 0; // one CPU's value in a lookup, rounded up to 8 bytes
  std::vector<uint8_t> pending_a_, pending_b_;
  batch_tracker tracker_;
  uint64_t last_pending_ns_ = 0;
  // drain_now requests, and how many the poll thread has served.
  std::mutex drain_mutex_;
  std::condition_variable drained_cv_;
  uint64_t drains_asked_ = 0;
  uint64_t drains_done_ = 0;
};

} // namespace netlens
