#include "bpf/proc_events.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/netlens_proc.h"
#include "flow/errno_text.hpp"
#include "proc_events.skel.h"

namespace netlens {
namespace {

uint32_t round_ring_size(uint32_t bytes) {
  const long page = sysconf(_SC_PAGESIZE);
  uint32_t size = page > 0 ? static_cast<uint32_t>(page) : 4096u;
  while (size < bytes && size < (1u << 30))
    size <<= 1;
  return size;
}

uint32_t object_id(int fd) {
  // bpf_prog_info and bpf_map_info both start with type then id.
  struct {
    uint32_t type;
    uint32_t id;
  } info{};
  uint32_t len = sizeof(info);
  return fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

} // namespace

std::variant<std::unique_ptr<proc_events>, std::string>
proc_events::start(const proc_events_options& opts, sink_fn sink) {
  std::unique_ptr<proc_events> self(new proc_events());
  self->sink_ = std::move(sink);
  self->max_batch_ = opts.max_batch == 0 ? 1 : opts.max_batch;
  self->ncpus_ = libbpf_num_possible_cpus();
  if (self->ncpus_ <= 0)
    return "cannot count possible CPUs: " + errno_text(self->ncpus_);

  self->skel_ = nl_proc_events__open();
  if (!self->skel_)
    return "opening the proc_events BPF object: " + errno_text(errno);
  if (int err = bpf_map__set_max_entries(self->skel_->maps.nl_proc_ring,
                                         round_ring_size(opts.ring_bytes));
      err != 0)
    return "sizing the proc_events ring buffer: " + errno_text(err);
  // The ring buffer wakes the poll thread once a batch waits; the thread reads whatever is
  // there every read_interval_ms too (and at once when stop() signals the eventfd).
  const uint64_t record_bytes = (sizeof(nl_proc_record) + 8 + 7) & ~uint64_t{7};
  const uint64_t ring = round_ring_size(opts.ring_bytes);
  self->skel_->rodata->wakeup_bytes =
      std::min<uint64_t>(uint64_t{opts.wakeup_events == 0 ? 1 : opts.wakeup_events} * record_bytes,
                         ring / 2 / record_bytes * record_bytes);
  self->read_interval_ms_ =
      opts.read_interval_ms == 0 ? 1 : static_cast<int>(opts.read_interval_ms);
  if (int err = nl_proc_events__load(self->skel_); err != 0) {
    const int e = err < 0 ? -err : err;
    const std::string hint =
        (e == EPERM || e == EACCES) ? " (run as root or grant CAP_BPF and CAP_PERFMON)" : "";
    return "loading the proc_events BPF programs: " + errno_text(e) + hint;
  }
  // Attached one by one so the error names the tracepoint; the skeleton owns the links.
  struct {
    bpf_program* prog;
    bpf_link** link;
    const char* tracepoint;
  } tps[] = {{self->skel_->progs.nl_proc_exec, &self->skel_->links.nl_proc_exec,
              "sched_process_exec (raw)"},
             {self->skel_->progs.nl_proc_exit, &self->skel_->links.nl_proc_exit,
              "sched_process_exit (raw)"}};
  for (auto& tp : tps) {
    bpf_link* link = bpf_program__attach(tp.prog);
    if (!link)
      return std::string("attaching to tracepoint ") + tp.tracepoint + ": " + errno_text(errno);
    *tp.link = link;
  }
  self->ring_ =
      ring_buffer__new(bpf_map__fd(self->skel_->maps.nl_proc_ring), on_sample, self.get(), nullptr);
  if (!self->ring_)
    return "opening the proc_events ring buffer: " + errno_text(errno);
  auto wake = wake_signal::open();
  if (auto* err = std::get_if<std::string>(&wake))
    return "creating the proc_events wake-up: " + *err;
  self->wake_ = std::move(std::get<wake_signal>(wake));
  self->batch_.reserve(self->max_batch_);
  self->running_ = true;
  self->poller_ = std::thread([p = self.get()] { p->poll_loop(); });
  return self;
}

proc_events::~proc_events() {
  stop();
  if (ring_)
    ring_buffer__free(ring_);
  nl_proc_events__destroy(skel_); // detaches the links, unloads programs, closes maps
}

void proc_events::stop() {
  if (!poller_.joinable())
    return;
  running_ = false;
  wake_.notify();
  poller_.join();
}

int proc_events::on_sample(void* ctx, void* data, size_t size) {
  auto* self = static_cast<proc_events*>(ctx);
  if (size < sizeof(nl_proc_record))
    return 0; // not ours: the object only writes whole records
  nl_proc_record r;
  std::memcpy(&r, data, sizeof(r));
  if (r.kind != NL_PROC_EXEC && r.kind != NL_PROC_EXIT)
    return 0;
  self->batch_.push_back(proc_event{static_cast<proc_event::kind_t>(r.kind),
                                    static_cast<int32_t>(r.tgid), r.ktime_ns});
  if (self->batch_.size() >= self->max_batch_)
    self->hand_out();
  return 0;
}

void proc_events::hand_out() {
  if (batch_.empty())
    return;
  std::vector<proc_event> out;
  out.swap(batch_);
  batch_.reserve(max_batch_);
  events_.fetch_add(out.size(), std::memory_order_relaxed);
  batches_.fetch_add(1, std::memory_order_relaxed);
  if (sink_)
    sink_(std::move(out));
}

void proc_events::poll_loop() {
  // The ring's own epoll fd and the stop signal, waited on together.
  pollfd fds[2] = {{ring_buffer__epoll_fd(ring_), POLLIN, 0}, {wake_.fd(), POLLIN, 0}};
  while (running_.load(std::memory_order_relaxed)) {
    const int n = poll(fds, 2, read_interval_ms_);
    if (n < 0 && errno != EINTR)
      break;
    const int got = ring_buffer__consume(ring_);
    if (got < 0 && got != -EINTR)
      break;
    hand_out();
  }
  // What the kernel wrote before stop is delivered, still on this thread.
  (void)ring_buffer__consume(ring_);
  hand_out();
}

proc_events_stats proc_events::stats() const {
  proc_events_stats s;
  s.events = events_.load(std::memory_order_relaxed);
  s.batches = batches_.load(std::memory_order_relaxed);
  std::vector<nl_proc_counters> per_cpu(static_cast<size_t>(ncpus_));
  const uint32_t zero = 0;
  if (skel_ &&
      bpf_map_lookup_elem(bpf_map__fd(skel_->maps.nl_proc_counters), &zero, per_cpu.data()) == 0) {
    for (const auto& c : per_cpu)
      s.lost += c.lost;
  }
  return s;
}

std::vector<uint32_t> proc_events::program_ids() const {
  return {object_id(bpf_program__fd(skel_->progs.nl_proc_exec)),
          object_id(bpf_program__fd(skel_->progs.nl_proc_exit))};
}

std::vector<uint32_t> proc_events::map_ids() const {
  return {object_id(bpf_map__fd(skel_->maps.nl_proc_ring)),
          object_id(bpf_map__fd(skel_->maps.nl_proc_counters))};
}

} // namespace netlens
