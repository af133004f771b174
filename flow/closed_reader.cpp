#include "flow/closed_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <linux/perf_event.h>
#include <poll.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include <bpf/bpf.h>

#include "flow/clock.hpp"
#include "flow/errno_text.hpp"
#include "flow/record_decoder.hpp"

namespace netlens {
namespace {

// Longest quiet spell after a wakeup: caps the reader at ~200 wakeups a second under churn.
constexpr int k_quiet_ms = 5;
// Records a batch has room for before it grows (160 KiB).
constexpr size_t k_batch_reserve = 1024;

int ring_sample(void* ctx, void* data, size_t size) {
  static_cast<closed_reader*>(ctx)->on_record(data, size);
  return 0;
}

// Raw perf events, so the buffer can wake us once per batch instead of once per record.
enum bpf_perf_event_ret perf_event(void* ctx, int /*cpu*/, struct perf_event_header* event) {
  auto* self = static_cast<closed_reader*>(ctx);
  if (event->type == PERF_RECORD_SAMPLE) {
    struct sample {
      perf_event_header header;
      uint32_t size;
      char data[];
    };
    auto* s = reinterpret_cast<sample*>(event);
    self->on_record(s->data, s->size); // size includes alignment padding: the decoder allows it
  } else if (event->type == PERF_RECORD_LOST) {
    struct lost {
      perf_event_header header;
      uint64_t id;
      uint64_t lost;
    };
    self->on_lost(reinterpret_cast<lost*>(event)->lost);
  }
  return LIBBPF_PERF_EVENT_CONT;
}

} // namespace

std::variant<std::unique_ptr<closed_reader>, std::string>
closed_reader::open(std::shared_ptr<const closed_buffer> buffer, sink out) {
  if (!buffer)
    return std::string("no closed buffer to read");
  std::unique_ptr<closed_reader> self(new closed_reader());
  self->sink_ = std::move(out);
  self->buffer_ = std::move(buffer);
  const closed_buffer_info& info = self->buffer_->settings();
  const int map_fd = self->buffer_->map_fd();
  if (info.perf) {
    perf_event_attr attr{};
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_BPF_OUTPUT;
    attr.sample_type = PERF_SAMPLE_RAW;
    attr.sample_period = 1;
    // A batch is one record: wake per record. Without the batch map (no batching), wake once
    // per closed_batch_size records instead.
    attr.wakeup_events =
        self->buffer_->batches_fd() >= 0 ? 1 : std::max<uint32_t>(1, info.closed_batch_size);
    self->perf_ =
        perf_buffer__new_raw(map_fd, info.perf_pages, &attr, perf_event, self.get(), nullptr);
    if (!self->perf_)
      return std::string("opening the perf buffer: ") + errno_text();
  } else {
    self->ring_ = ring_buffer__new(map_fd, ring_sample, self.get(), nullptr);
    if (!self->ring_)
      return std::string("opening the ring buffer: ") + errno_text();
  }
  if (info.perf && self->buffer_->batches_fd() >= 0) {
    self->batches_fd_ = self->buffer_->batches_fd();
    self->ncpus_ = libbpf_num_possible_cpus();
    if (self->ncpus_ <= 0)
      return std::string("counting possible CPUs: ") + errno_text(-self->ncpus_);
    self->batch_value_size_ = (sizeof(nl_closed_batch) + 7) & ~size_t{7};
    self->pending_a_.resize(self->batch_value_size_ * static_cast<size_t>(self->ncpus_));
    self->pending_b_.resize(self->pending_a_.size());
  }
  auto wake = wake_signal::open();
  if (auto* err = std::get_if<std::string>(&wake))
    return *err;
  self->wake_ = std::move(std::get<wake_signal>(wake));
  self->flush_interval_ms_ = static_cast<int>(std::max<uint32_t>(1, info.flush_interval_ms));
  self->batch_.reserve(k_batch_reserve);
  return self;
}

closed_reader::~closed_reader() {
  stop();
  if (ring_)
    ring_buffer__free(ring_);
  if (perf_)
    perf_buffer__free(perf_);
}

void closed_reader::start() {
  if (running_.exchange(true))
    return;
  thread_ = std::thread([this] { poll_loop(); });
}

void closed_reader::stop() {
  if (running_.exchange(false))
    wake_.notify(); // the poll thread wakes now, not at its timeout
  if (thread_.joinable())
    thread_.join();
  drain();
}

void closed_reader::drain() {
  uint64_t flushed = drain_to_complete();
  if (ring_)
    ring_buffer__consume(ring_);
  if (perf_)
    perf_buffer__consume(perf_);
  read_pending();
  hand_out(flushed);
}

uint64_t closed_reader::drain_to_complete() {
  uint64_t asked = drain_asked_.load();
  if (asked <= drain_done_)
    return 0;
  drain_done_ = asked;
  return asked;
}

void closed_reader::read_pending() {
  if (batches_fd_ < 0)
    return;
  // Two reads: a CPU whose batch id is the same in both did not send that batch in between,
  // so the records the first read counted are intact in the second (a batch's records are
  // written before its count, and rewritten only after its id moves on).
  uint32_t zero = 0;
  if (bpf_map_lookup_elem(batches_fd_, &zero, pending_a_.data()) != 0 ||
      bpf_map_lookup_elem(batches_fd_, &zero, pending_b_.data()) != 0)
    return;
  uint64_t now = monotonic_now_ns();
  for (int cpu = 0; cpu < ncpus_; ++cpu) {
    const uint8_t* a = pending_a_.data() + static_cast<size_t>(cpu) * batch_value_size_;
    const uint8_t* b = pending_b_.data() + static_cast<size_t>(cpu) * batch_value_size_;
    nl_closed_batch ha, hb;
    std::memcpy(&ha, a, offsetof(nl_closed_batch, conns));
    std::memcpy(&hb, b, offsetof(nl_closed_batch, conns));
    tracker_.forget_stale(static_cast<uint32_t>(cpu), hb.id, now, 60ull * 1000000000ull);
    if (ha.count == 0 || ha.count > NL_BATCH_MAX || ha.id != hb.id)
      continue; // empty, or it left meanwhile: it arrives as a perf record
    size_t first = tracker_.take_partial(static_cast<uint32_t>(cpu), ha.id, ha.count);
    for (size_t i = first; i < ha.count; ++i) {
      nl_conn c;
      if (decode_conn(b + offsetof(nl_closed_batch, conns) + i * sizeof(nl_conn), c) !=
          decode_status::ok) {
        malformed_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      records_.fetch_add(1, std::memory_order_relaxed);
      batch_.push_back(c);
    }
  }
  auto s = tracker_.stats();
  pending_taken_.store(s.pending_taken, std::memory_order_relaxed);
  duplicates_skipped_.store(s.duplicates_skipped, std::memory_order_relaxed);
}

void closed_reader::on_batch(const void* data, size_t size) {
  closed_batch_header h;
  if (decode_batch_header(data, size, h) != decode_status::ok) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  size_t skip = tracker_.arrived(h.cpu, h.id);
  for (size_t i = skip; i < h.count; ++i) {
    nl_conn c;
    if (decode_conn(h.conns + i * sizeof(nl_conn), c) != decode_status::ok) {
      malformed_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    records_.fetch_add(1, std::memory_order_relaxed);
    batch_.push_back(c);
  }
  duplicates_skipped_.store(tracker_.stats().duplicates_skipped, std::memory_order_relaxed);
}

void closed_reader::ask_drain(uint64_t ticket) {
  uint64_t had = drain_asked_.load();
  while (had < ticket && !drain_asked_.compare_exchange_weak(had, ticket)) {
  }
  // Stored before the wake-up: the poll thread clears the signal, then reads the ticket.
  wake_.notify();
}

void closed_reader::poll_loop() {
  // Wait on the buffer's own epoll fd and on our wake-up eventfd together.
  pollfd fds[2] = {{ring_ ? ring_buffer__epoll_fd(ring_) : perf_buffer__epoll_fd(perf_), POLLIN, 0},
                   {wake_.fd(), POLLIN, 0}};
  while (running_.load(std::memory_order_relaxed)) {
    // Woken when a batch is complete, by a drain request, or by the timer for what is left
    // below a batch.
    int n = poll(fds, 2, flush_interval_ms_);
    if (n < 0 && errno != EINTR)
      break;
    uint64_t asked = 0;
    if (fds[1].revents) {
      if (!running_.load())
        break; // stop: it drains on its own thread after the join
      wake_.clear();
      // Every ticket asked before that wake-up is complete once this read is handed out.
      asked = drain_to_complete();
    }
    if (fds[0].revents)
      wakeups_.fetch_add(1, std::memory_order_relaxed);
    int got = ring_ ? ring_buffer__consume(ring_) : perf_buffer__consume(perf_);
    if (got < 0 && got != -EINTR)
      break;
    // Batches still filling: on a drain request, and once per flush interval even under
    // load, so a closed connection reaches the tracer within that time on a quiet CPU too.
    uint64_t now = monotonic_now_ns();
    if (asked || now - last_pending_ns_ >= uint64_t(flush_interval_ms_) * 1000000ull) {
      read_pending();
      last_pending_ns_ = now;
    }
    hand_out(asked); // the records and the ticket they complete, in one batch
    if (asked) {
      drains_.fetch_add(1, std::memory_order_relaxed);
    } else if (fds[0].revents) {
      // After a read the kernel woke us for, a short quiet spell: the batches completing in
      // it wait in the buffer instead of waking this thread (and the actors) each time. A
      // drain request or stop still ends it at once.
      pollfd quiet{wake_.fd(), POLLIN, 0};
      (void)poll(&quiet, 1, std::min(flush_interval_ms_, k_quiet_ms));
    }
  }
  // Tickets asked from here on are completed by the stop path's drain.
}

void closed_reader::hand_out(uint64_t flushed) {
  if (batch_.empty() && flushed == 0)
    return;
  if (!batch_.empty())
    ++batches_;
  std::vector<nl_conn> out;
  out.swap(batch_);
  // The next batch starts at the usual size, not at this one's: after a mass close each
  // message queued for the tracer would otherwise hold the largest batch's capacity.
  batch_.reserve(k_batch_reserve);
  sink_(std::move(out), flushed);
}

void closed_reader::on_record(const void* data, size_t size) {
  uint32_t magic = 0;
  if (size >= sizeof(magic))
    std::memcpy(&magic, data, sizeof(magic));
  if (magic == NL_BATCH_MAGIC) {
    on_batch(data, size);
    return;
  }
  nl_conn c;
  if (decode_closed_record(data, size, c) != decode_status::ok) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  records_.fetch_add(1, std::memory_order_relaxed);
  batch_.push_back(c);
}

void closed_reader::on_lost(uint64_t count) {
  lost_.fetch_add(count, std::memory_order_relaxed);
}

closed_reader_stats closed_reader::stats() const {
  closed_reader_stats s;
  s.records = records_.load();
  s.lost = lost_.load();
  s.malformed = malformed_.load();
  s.batches = batches_.load();
  s.wakeups = wakeups_.load();
  s.drains = drains_.load();
  s.pending_taken = pending_taken_.load();
  s.duplicates_skipped = duplicates_skipped_.load();
  return s;
}

} // namespace netlens
