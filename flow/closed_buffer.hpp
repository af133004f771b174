// What the closed reader reads: the tracer's closed-connection buffer and how to read it.
#pragma once

#include <cstdint>

#include "bpf/netlens_records.h"

namespace netlens {

// Where the closed-connection records come from, tracer -> perf_consumer. The fd is the
// tracer's; the consumer duplicates it so the buffer outlives nothing it does not own.
struct closed_buffer_info {
  int map_fd = -1;
  int batches_fd = -1; // perf mode: the per-CPU batches still filling (struct nl_closed_batch)
  bool perf = false;
  uint32_t perf_pages = 64;
  uint32_t closed_batch_size = NL_BATCH_DEFAULT; // records per batch: per wakeup (ring), per
                                                 // record (perf)
  uint32_t flush_interval_ms = 100;              // the reader reads at least this often regardless
};

} // namespace netlens
