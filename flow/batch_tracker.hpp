// Perf mode's partial batches: which records of a CPU's batch the reader already took while
// the batch was still filling (read from the map before a connections answer), so that when
// the full batch arrives as a perf record those are skipped, not handed out twice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>

namespace netlens {

struct batch_tracker_stats {
  uint64_t pending_taken = 0;      // records taken from batches still filling
  uint64_t duplicates_skipped = 0; // records of arrived batches already taken
  uint64_t forgotten = 0;          // states dropped: their batch never arrived (lost)
  uint64_t tracked = 0;            // batches with records taken, not yet arrived
};

class batch_tracker {
public:
  // A batch still filling, with count records in it now: take [first, count), where first is
  // the returned index (what earlier reads of this batch took).
  size_t take_partial(uint32_t cpu, uint64_t id, size_t count);

  // The full batch (cpu, id) arrived: returns how many of its first records were taken before.
  // A read of the map made after this that still shows (cpu, id) takes nothing from it.
  size_t arrived(uint32_t cpu, uint64_t id);

  // Drops what was taken from batches that have moved on (the CPU fills a later id now) and
  // were first seen moved on longer than max_age_ns ago: their record was lost, it will not
  // come. The age is not counted from the first take: a batch can fill for minutes on a quiet
  // CPU, and its record may still be on its way when a read first sees the next id.
  void forget_stale(uint32_t cpu, uint64_t current_id, uint64_t now_ns, uint64_t max_age_ns);

  batch_tracker_stats stats() const;

private:
  struct taken {
    size_t count = 0;
    bool moved_on = false;    // a read saw the CPU fill a later batch: this one was sent
    uint64_t moved_on_ns = 0; // when a read first saw that
    bool arrived = false;     // its perf record was read; kept until the map shows a later id
  };
  std::map<std::pair<uint32_t, uint64_t>, taken> taken_; // (cpu, batch id)
  batch_tracker_stats stats_;
};

} // namespace netlens
