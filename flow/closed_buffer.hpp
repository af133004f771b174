// What the closed reader reads: the tracer's closed-connection buffer and how to read it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <variant>

#include "bpf/netlens_records.h"
#include "flow/unique_fd.hpp"

namespace netlens {

// The tracer's maps, as its loaded object names them (the fds stay the object's), and how they
// are read.
struct closed_buffer_info {
  int map_fd = -1;
  int batches_fd = -1; // perf mode: the per-CPU batches still filling (struct nl_closed_batch)
  bool perf = false;
  uint32_t perf_pages = 64;
  uint32_t closed_batch_size = NL_BATCH_DEFAULT; // records per batch: per wakeup (ring), per
                                                 // record (perf)
  uint32_t flush_interval_ms = 100;              // the reader reads at least this often regardless
};

// The reading side of the closed-connection buffer: descriptors of its own for the maps (made
// once, when the tracer loads its object) and how to read them. The tracer makes it; the perf
// consumer is handed it when it is spawned and is then the only one that reads. Held by
// shared_ptr so the maps stay readable until the reader is gone, however the tracer ends.
class closed_buffer {
public:
  // Duplicates info's descriptors; an error names the one that failed.
  static std::variant<std::shared_ptr<const closed_buffer>, std::string>
  share(const closed_buffer_info& info);

  int map_fd() const { return map_.get(); }
  int batches_fd() const { return batches_.get(); } // -1 without the perf batch map
  const closed_buffer_info& settings() const { return settings_; }

private:
  closed_buffer() = default;
  unique_fd map_;
  unique_fd batches_;
  closed_buffer_info settings_; // its fds are the tracer's: use map_fd() and batches_fd()
};

// Where the tracer leaves the buffer of the object it loaded, for the perf consumer's spawn:
// one per agent. The tracer puts its buffer once loaded and clears it when its object goes.
class closed_buffer_slot {
public:
  void put(std::shared_ptr<const closed_buffer> b) {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = std::move(b);
  }
  // Clears the slot if it still holds b (a restarted tracer may have put its own already).
  void clear_if(const closed_buffer* b) {
    std::lock_guard<std::mutex> lock(mu_);
    if (current_.get() == b)
      current_.reset();
  }
  std::shared_ptr<const closed_buffer> get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return current_;
  }

private:
  mutable std::mutex mu_;
  std::shared_ptr<const closed_buffer> current_;
};

} // namespace netlens
