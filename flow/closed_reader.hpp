// Reads closed-connection records from the tracer's ring buffer or perf buffer on a thread of
// its own, decodes them and hands them out in batches. No CAF: the actor gives it a sink.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "bpf/netlens_records.h"
#include "flow/batch_tracker.hpp"
#include "flow/closed_buffer.hpp"
#include "flow/wake_signal.hpp"

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
  // Takes each batch of decoded records on the poll thread (or on the caller's, in stop and
  // drain). flushed: 0, or the highest drain ticket this batch completes (see ask_drain); a
  // batch that completes one may be empty.
  using sink = std::function<void(std::vector<nl_conn>&& records, uint64_t flushed)>;

  // Reads buffer (kept until the reader is gone); an error names what could not be opened.
  static std::variant<std::unique_ptr<closed_reader>, std::string>
  open(std::shared_ptr<const closed_buffer> buffer, sink out);
  ~closed_reader();
  closed_reader(const closed_reader&) = delete;
  closed_reader& operator=(const closed_reader&) = delete;

  void start();
  // Stops the poll thread, joins it, then drains what is left and hands it out. Idempotent.
  void stop();
  // Reads what is available now, on the caller's thread (only while the thread is stopped), and
  // completes the drain tickets asked so far.
  void drain();
  // Asks for everything in the buffer now, without waiting: the poll thread reads it and hands
  // it out with flushed = ticket (an empty batch when nothing was there), so every record
  // closed before this call is in that batch or an earlier one. Tickets only grow; a batch
  // completes every ticket up to its own. Asked while the thread is not running, the next
  // stop() or drain() completes it.
  void ask_drain(uint64_t ticket);

  closed_reader_stats stats() const;

  // Entry points for the libbpf callbacks.
  void on_record(const void* data, size_t size);
  void on_lost(uint64_t count);

private:
  closed_reader() = default;
  void poll_loop();
  void hand_out(uint64_t flushed = 0);
  // The ticket a read that starts now completes (0: none asked since the last one).
  uint64_t drain_to_complete();
  void on_batch(const void* data, size_t size);
  // Perf mode: takes what the per-CPU batches still filling hold and this reader has not
  // taken yet. Only on the poll thread (or while it is stopped).
  void read_pending();

  sink sink_;
  std::shared_ptr<const closed_buffer> buffer_; // outlives ring_ and perf_ (freed in ~)
  wake_signal wake_;                            // stop, or a drain asked
  int flush_interval_ms_ = 100;
  ring_buffer* ring_ = nullptr;
  perf_buffer* perf_ = nullptr;
  std::vector<nl_conn> batch_;
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> records_{0}, lost_{0}, malformed_{0}, batches_{0};
  std::atomic<uint64_t> wakeups_{0}, drains_{0};
  std::atomic<uint64_t> pending_taken_{0}, duplicates_skipped_{0};
  int batches_fd_ = -1; // perf mode: buffer_'s per-CPU batch map, -1 without it
  int ncpus_ = 0;
  size_t batch_value_size_ = 0; // one CPU's value in a lookup, rounded up to 8 bytes
  std::vector<uint8_t> pending_a_, pending_b_;
  batch_tracker tracker_;
  uint64_t last_pending_ns_ = 0;
  // The highest drain ticket asked, and the highest completed (by whoever reads: the poll
  // thread, or the caller of stop and drain while it is not running).
  std::atomic<uint64_t> drain_asked_{0};
  uint64_t drain_done_ = 0;
};

} // namespace netlens
