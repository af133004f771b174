#include "bpf/tracer_object.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tracer.skel.h"

namespace netlens {
namespace {

std::string errno_text(int err) {
  return std::strerror(err < 0 ? -err : err);
}

load_error describe_load_failure(int err, const std::string& stage) {
  int e = err < 0 ? -err : err;
  if (e == EPERM || e == EACCES)
    return {stage + ": permission denied (" + errno_text(e) +
            "): run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"};
  if (e == ENOSYS)
    return {stage + ": the kernel has no bpf() system call (CONFIG_BPF_SYSCALL)"};
  return {stage + ": " + errno_text(e)};
}

} // namespace

std::string find_cgroup2_mount() {
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string source, target, type;
    fields >> source >> target >> type;
    if (type == "cgroup2")
      return target;
  }
  return "";
}

std::variant<std::unique_ptr<tracer_object>, load_error>
tracer_object::load(const tracer_load_options& opts) {
  struct stat st {};
  if (stat("/sys/kernel/btf/vmlinux", &st) != 0)
    return load_error{"kernel BTF is missing (/sys/kernel/btf/vmlinux): the CO-RE tracer needs "
                      "a kernel built with CONFIG_DEBUG_INFO_BTF"};

  std::unique_ptr<tracer_object> self(new tracer_object());
  self->use_perf_ = opts.use_perf;
  self->max_entries_ = opts.max_tracked_connections;
  self->ncpus_ = libbpf_num_possible_cpus();
  if (self->ncpus_ <= 0)
    return load_error{"cannot count possible CPUs: " + errno_text(self->ncpus_)};

  self->skel_ = nl_tracer__open();
  if (!self->skel_)
    return describe_load_failure(errno, "opening the tracer BPF object");
  auto* skel = self->skel_;
  skel->rodata->use_perf = opts.use_perf;
  // One ring buffer record is 8 bytes of header plus the record, rounded up to 8.
  uint64_t ring_record = (sizeof(nl_closed_record) + 8 + 7) & ~uint64_t{7};
  uint32_t batch = std::min<uint32_t>(std::max<uint32_t>(1, opts.closed_batch_size), NL_BATCH_MAX);
  skel->rodata->wakeup_bytes = ring_record * batch;
  skel->rodata->batch_size = batch;
  bpf_map__set_max_entries(skel->maps.nl_active, opts.max_tracked_connections);
  // The transport not in use still exists in the object; keep it as small as the kernel allows.
  long page = sysconf(_SC_PAGESIZE);
  bpf_map__set_max_entries(skel->maps.nl_closed_ring,
                           opts.use_perf ? static_cast<uint32_t>(page) : opts.ring_buffer_bytes);
  if (int err = nl_tracer__load(skel); err != 0)
    return describe_load_failure(err, "loading the tracer BPF programs");

  struct {
    bpf_program* prog;
    const char* what;
  } tracepoints[] = {
      {skel->progs.nl_tcp_state, "tp_btf/inet_sock_set_state"},
      {skel->progs.nl_tcp_state_nested, "tp_btf/inet_sock_set_state (nested)"},
      {skel->progs.nl_sock_send, "tp_btf/sock_send_length"},
      {skel->progs.nl_sock_recv, "tp_btf/sock_recv_length"},
      {skel->progs.nl_tcp_retransmit, "tp_btf/tcp_retransmit_skb"},
  };
  for (auto& tp : tracepoints) {
    bpf_link* link = bpf_program__attach(tp.prog);
    if (!link)
      return describe_load_failure(errno, std::string("attaching ") + tp.what);
    self->links_.push_back(link);
  }

  std::string cgroup = find_cgroup2_mount();
  if (!cgroup.empty()) {
    int fd = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      return describe_load_failure(errno, "opening cgroup v2 root " + cgroup);
    self->cgroup_fd_ = fd;
    bpf_link* link = bpf_program__attach_cgroup(skel->progs.nl_udp_release, fd);
    if (!link)
      return describe_load_failure(errno, "attaching cgroup/sock_release to " + cgroup);
    self->links_.push_back(link);
  }
  return self;
}

tracer_object::~tracer_object() {
  for (auto it = links_.rbegin(); it != links_.rend(); ++it)
    bpf_link__destroy(*it);
  links_.clear();
  if (skel_)
    nl_tracer__destroy(skel_);
  if (cgroup_fd_ >= 0)
    close(cgroup_fd_);
}

int tracer_object::closed_ring_fd() const {
  return bpf_map__fd(skel_->maps.nl_closed_ring);
}
int tracer_object::closed_perf_fd() const {
  return bpf_map__fd(skel_->maps.nl_closed_perf);
}
int tracer_object::closed_batches_fd() const {
  return bpf_map__fd(skel_->maps.nl_closed_batches);
}

nl_tracer_counters tracer_object::read_counters() const {
  std::vector<nl_tracer_counters> per_cpu(static_cast<size_t>(ncpus_));
  uint32_t zero = 0;
  nl_tracer_counters sum{};
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.nl_counters), &zero, per_cpu.data()) != 0)
    return sum;
  for (const auto& c : per_cpu) {
    sum.failed_inserts += c.failed_inserts;
    sum.closed_lost += c.closed_lost;
    sum.closed_emitted += c.closed_emitted;
    sum.events += c.events;
    sum.wakeups += c.wakeups;
  }
  return sum;
}

void tracer_object::read_active(std::vector<nl_conn>& out, uint32_t batch_size) const {
  out.clear();
  int fd = bpf_map__fd(skel_->maps.nl_active);
  std::vector<uint64_t> keys(batch_size);
  std::vector<nl_conn> values(batch_size);
  uint64_t token = 0;
  bool first = true;
  for (;;) {
    uint32_t count = batch_size;
    int err = bpf_map_lookup_batch(fd, first ? nullptr : &token, &token, keys.data(), values.data(),
                                   &count, nullptr);
    first = false;
    out.insert(out.end(), values.begin(), values.begin() + count);
    if (err == 0)
      continue;
    if (errno == ENOENT)
      return; // end of map
    if (errno == ENOSPC) {
      // One hash bucket holds more than a batch: retry this bucket with room for it.
      batch_size *= 2;
      keys.resize(batch_size);
      values.resize(batch_size);
      continue;
    }
    return;
  }
}

bool tracer_object::remove_active(uint64_t cookie) {
  return bpf_map_delete_elem(bpf_map__fd(skel_->maps.nl_active), &cookie) == 0;
}

uint64_t tracer_object::recursion_misses() const {
  uint64_t misses = 0;
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel_->obj) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0)
      misses += info.recursion_misses;
  }
  return misses;
}

std::vector<uint32_t> tracer_object::program_ids() const {
  std::vector<uint32_t> ids;
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel_->obj) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0)
      ids.push_back(info.id);
  }
  return ids;
}

} // namespace netlens
