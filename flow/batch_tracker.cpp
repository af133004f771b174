#include "flow/batch_tracker.hpp"

#include <algorithm>

namespace netlens {

size_t batch_tracker::take_partial(uint32_t cpu, uint64_t id, size_t count) {
  auto it = taken_.try_emplace({cpu, id}).first;
  if (it->second.arrived)
    return count; // the map still shows a batch whose record was already read: nothing new
  size_t first = std::min(it->second.count, count);
  if (count > it->second.count) {
    stats_.pending_taken += count - it->second.count;
    it->second.count = count;
  }
  return first;
}

size_t batch_tracker::arrived(uint32_t cpu, uint64_t id) {
  // A CPU's records arrive in order: whatever is left of its earlier batches was lost.
  for (auto it = taken_.lower_bound({cpu, 0});
       it != taken_.end() && it->first.first == cpu && it->first.second < id;) {
    if (!it->second.arrived)
      ++stats_.forgotten;
    it = taken_.erase(it);
  }
  // Kept as arrived until the CPU's batch moves on: the program that sent it resets the batch
  // just after sending, and a read in between still shows it full.
  taken& t = taken_[{cpu, id}];
  size_t n = t.arrived ? 0 : t.count;
  t.arrived = true;
  stats_.duplicates_skipped += n;
  return n;
}

void batch_tracker::forget_stale(uint32_t cpu, uint64_t current_id, uint64_t now_ns,
                                 uint64_t max_age_ns) {
  for (auto it = taken_.lower_bound({cpu, 0});
       it != taken_.end() && it->first.first == cpu && it->first.second < current_id;) {
    if (it->second.arrived) {
      it = taken_.erase(it); // the batch moved on: the map cannot show it again
    } else if (!it->second.moved_on) {
      it->second.moved_on = true; // sent just now, or long ago: the age limit starts here
      it->second.moved_on_ns = now_ns;
      ++it;
    } else if (now_ns - it->second.moved_on_ns > max_age_ns) {
      it = taken_.erase(it); // taken from, never arrived: its record was lost
      ++stats_.forgotten;
    } else {
      ++it;
    }
  }
}

batch_tracker_stats batch_tracker::stats() const {
  batch_tracker_stats s = stats_;
  s.tracked = taken_.size();
  return s;
}

} // namespace netlens
