#include "actors/perf_consumer/closed_reader.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "actors/tracer/record_decoder.hpp"

namespace netlens {
namespace {

constexpr int k_poll_timeout_ms = 100;

int ring_sample(void* ctx, void* data, size_t size) {
  static_cast<closed_reader*>(ctx)->on_record(data, size);
  return 0;
}

void perf_sample(void* ctx, int /*cpu*/, void* data, __u32 size) {
  static_cast<closed_reader*>(ctx)->on_record(data, size);
}

void perf_lost(void* ctx, int /*cpu*/, __u64 count) {
  static_cast<closed_reader*>(ctx)->on_lost(count);
}

} // namespace

std::variant<std::unique_ptr<closed_reader>, std::string>
closed_reader::open(const closed_buffer_info& info, sink out) {
  std::unique_ptr<closed_reader> self(new closed_reader());
  self->sink_ = std::move(out);
  self->fd_ = fcntl(info.map_fd, F_DUPFD_CLOEXEC, 0);
  if (self->fd_ < 0)
    return std::string("duplicating the closed-buffer map fd: ") + std::strerror(errno);
  if (info.perf) {
    self->perf_ = perf_buffer__new(self->fd_, info.perf_pages, perf_sample, perf_lost,
                                   self.get(), nullptr);
    if (!self->perf_)
      return std::string("opening the perf buffer: ") + std::strerror(errno);
  } else {
    self->ring_ = ring_buffer__new(self->fd_, ring_sample, self.get(), nullptr);
    if (!self->ring_)
      return std::string("opening the ring buffer: ") + std::strerror(errno);
  }
  self->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (self->wake_fd_ < 0)
    return std::string("eventfd(): ") + std::strerror(errno);
  self->batch_.reserve(1024);
  return self;
}

closed_reader::~closed_reader() {
  stop();
  if (ring_)
    ring_buffer__free(ring_);
  if (perf_)
    perf_buffer__free(perf_);
  if (fd_ >= 0)
    close(fd_);
  if (wake_fd_ >= 0)
    close(wake_fd_);
}

void closed_reader::start() {
  if (running_.exchange(true))
    return;
  thread_ = std::thread([this] { poll_loop(); });
}

void closed_reader::stop() {
  if (running_.exchange(false)) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one)); // the poll thread wakes now, not at its timeout
  }
  if (thread_.joinable())
    thread_.join();
  drain();
}

void closed_reader::drain() {
  if (ring_)
    ring_buffer__consume(ring_);
  if (perf_)
    perf_buffer__consume(perf_);
  hand_out();
}

void closed_reader::poll_loop() {
  // Wait on the buffer's own epoll fd and on our wake-up eventfd together.
  pollfd fds[2] = {{ring_ ? ring_buffer__epoll_fd(ring_) : perf_buffer__epoll_fd(perf_), POLLIN, 0},
                   {wake_fd_, POLLIN, 0}};
  while (running_.load(std::memory_order_relaxed)) {
    int n = poll(fds, 2, k_poll_timeout_ms);
    if (n < 0 && errno != EINTR)
      break;
    if (fds[1].revents)
      break;
    int got = ring_ ? ring_buffer__consume(ring_) : perf_buffer__consume(perf_);
    if (got < 0 && got != -EINTR)
      break;
    hand_out();
  }
}

void closed_reader::hand_out() {
  if (batch_.empty())
    return;
  ++batches_;
  std::vector<nl_conn> out;
  out.swap(batch_);
  batch_.reserve(out.capacity());
  sink_(std::move(out));
}

void closed_reader::on_record(const void* data, size_t size) {
  nl_conn c;
  if (decode_closed_record(data, size, c) != decode_status::ok) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  records_.fetch_add(1, std::memory_order_relaxed);
  batch_.push_back(c);
}

void closed_reader::on_lost(uint64_t count) { lost_.fetch_add(count, std::memory_order_relaxed); }

closed_reader_stats closed_reader::stats() const {
  return {records_.load(), lost_.load(), malformed_.load(), batches_.load()};
}

} // namespace netlens
