// Fuzzes the perf reader's partial-batch bookkeeping against a model of what the kernel does.
// The input is a script: the per-CPU programs add closed connections to their batch, send it as
// a perf record and reset the slot; the reader reads the slots (read_pending), reads or loses
// perf records (on_batch) and time passes. What the tracker lets the reader hand out is checked
// at every step: a record index never beyond what the batch holds, never the same (cpu, id,
// index) twice, and at the end every record of every batch that arrived handed out exactly once.
//
// The one thing the script cannot do is what the reader's 60 s age limit assumes never happens:
// a perf record still unread a full age limit after it was sent.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <utility>
#include <vector>

#include "bpf/netlens_records.h"
#include "flow/batch_tracker.hpp"

namespace {

constexpr uint32_t k_cpus = 3;
constexpr uint64_t k_second = 1000000000ull;
constexpr uint64_t k_max_age_ns = 60 * k_second; // what read_pending passes
static_assert(NL_BATCH_MAX <= 64, "a batch's records are tracked as the bits of a uint64_t");

[[noreturn]] void fail(const char* what, uint32_t cpu, uint64_t id, size_t index) {
  std::fprintf(stderr, "batch_tracker_fuzz: %s (cpu %u, batch %llu, record %zu)\n", what, cpu,
               static_cast<unsigned long long>(id), index);
  std::abort();
}

// The bytes of the input, one at a time; zeros once they run out.
class script {
public:
  script(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  uint8_t next() { return at_ < size_ ? data_[at_++] : 0; }

private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

struct sent_batch {
  uint64_t id = 0;
  size_t count = 0;
  uint64_t sent_ns = 0;
};

// One CPU's slot of the batch map, and its perf records not read yet (a CPU's come in order).
struct cpu_model {
  uint64_t id = 0;
  size_t count = 0;
  bool sent = false; // sent as a perf record, the slot not reset yet
  std::deque<sent_batch> in_flight;
};

class world {
public:
  void run(script& s) {
    while (!s.done()) {
      const uint8_t op = s.next();
      const uint32_t cpu = s.next() % k_cpus;
      switch (op % 8) {
      case 0:
        close_connections(cpu, 1 + s.next() % 4);
        break;
      case 1:
        send(cpu);
        break;
      case 2:
        reset(cpu);
        break;
      case 3:
        read_pending();
        break;
      case 4:
        // A read whose two lookups saw different ids: only the age rule runs for that CPU.
        tracker_.forget_stale(cpu, cpus_[cpu].id, now_, k_max_age_ns);
        break;
      case 5:
        deliver(cpu);
        break;
      case 6:
        lose(cpu);
        break;
      case 7:
        advance(s.next() * k_second / 2);
        break;
      }
    }
    for (uint32_t cpu = 0; cpu < k_cpus; ++cpu)
      while (!cpus_[cpu].in_flight.empty())
        deliver(cpu);
    check_complete();
  }

private:
  void close_connections(uint32_t cpu, size_t n) {
    cpu_model& c = cpus_[cpu];
    if (c.sent)
      return; // the sending program resets the slot before another one fills it
    c.count = c.count + n > NL_BATCH_MAX ? NL_BATCH_MAX : c.count + n;
  }

  void send(uint32_t cpu) {
    cpu_model& c = cpus_[cpu];
    if (c.sent || c.count == 0)
      return;
    c.in_flight.push_back({c.id, c.count, now_});
    c.sent = true;
  }

  void reset(uint32_t cpu) {
    cpu_model& c = cpus_[cpu];
    if (!c.sent)
      return;
    ++c.id;
    c.count = 0;
    c.sent = false;
  }

  void read_pending() {
    for (uint32_t cpu = 0; cpu < k_cpus; ++cpu) {
      const cpu_model& c = cpus_[cpu];
      tracker_.forget_stale(cpu, c.id, now_, k_max_age_ns);
      if (c.count == 0)
        continue;
      const size_t first = tracker_.take_partial(cpu, c.id, c.count);
      hand_out(cpu, c.id, first, c.count);
    }
  }

  void deliver(uint32_t cpu) {
    cpu_model& c = cpus_[cpu];
    if (c.in_flight.empty())
      return;
    const sent_batch b = c.in_flight.front();
    c.in_flight.pop_front();
    const size_t skip = tracker_.arrived(cpu, b.id);
    hand_out(cpu, b.id, skip, b.count);
    arrived_.push_back({cpu, b});
  }

  void lose(uint32_t cpu) {
    cpu_model& c = cpus_[cpu];
    if (!c.in_flight.empty())
      c.in_flight.pop_front();
  }

  // Time goes on; a perf record does not wait in the buffer past the age limit, so the ones
  // that would are read first.
  void advance(uint64_t ns) {
    for (uint32_t cpu = 0; cpu < k_cpus; ++cpu)
      while (!cpus_[cpu].in_flight.empty() &&
             cpus_[cpu].in_flight.front().sent_ns + k_max_age_ns < now_ + ns)
        deliver(cpu);
    now_ += ns;
  }

  // The reader hands out records [first, count) of batch (cpu, id), which holds count now.
  void hand_out(uint32_t cpu, uint64_t id, size_t first, size_t count) {
    if (first > count)
      fail("told to skip more records than the batch holds", cpu, id, first);
    uint64_t& taken = handed_[{cpu, id}];
    for (size_t i = first; i < count; ++i) {
      const uint64_t bit = uint64_t{1} << i;
      if (taken & bit)
        fail("record handed out twice", cpu, id, i);
      taken |= bit;
    }
  }

  void check_complete() const {
    for (const auto& [cpu, b] : arrived_) {
      const auto it = handed_.find({cpu, b.id});
      const uint64_t all = b.count == 64 ? ~uint64_t{0} : (uint64_t{1} << b.count) - 1;
      if (it == handed_.end() || it->second != all)
        fail("a batch that arrived was not handed out in full", cpu, b.id, b.count);
    }
  }

  netlens::batch_tracker tracker_;
  cpu_model cpus_[k_cpus];
  uint64_t now_ = 0;
  std::map<std::pair<uint32_t, uint64_t>, uint64_t> handed_; // bit i: record i handed out
  std::vector<std::pair<uint32_t, sent_batch>> arrived_;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  script s(data, size);
  world w;
  w.run(s);
  return 0;
}
