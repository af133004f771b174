#include "bpf/tracer_object.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/random.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "flow/cgroup2_mount.hpp"
#include "flow/errno_text.hpp"
#include "tracer.skel.h"
#include "tracer_prebuilt.skel.h"

namespace netlens {
namespace {

load_error describe_load_failure(int err, const std::string& stage) {
  int e = err < 0 ? -err : err;
  if (e == EPERM || e == EACCES)
    return {stage + ": permission denied (" + errno_text(e) +
            "): run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"};
  if (e == ENOSYS)
    return {stage + ": the kernel has no bpf() system call (CONFIG_BPF_SYSCALL)"};
  return {stage + ": " + errno_text(e)};
}

// Writes one variable of the object's read-only data (before load), found by name in the
// object's BTF: the three builds need not lay .rodata out alike.
std::string set_rodata(bpf_object* obj, const char* name, const void* value, size_t size) {
  bpf_map* rodata = nullptr;
  bpf_map* m;
  bpf_object__for_each_map(m, obj) {
    const char* n = bpf_map__name(m);
    size_t len = std::strlen(n);
    if (bpf_map__is_internal(m) && len >= 7 && std::strcmp(n + len - 7, ".rodata") == 0)
      rodata = m;
  }
  const btf* b = bpf_object__btf(obj);
  if (!rodata || !b)
    return "the tracer object has no read-only data";
  size_t data_size = 0;
  const void* data = bpf_map__initial_value(rodata, &data_size);
  int32_t sec_id = btf__find_by_name_kind(b, ".rodata", BTF_KIND_DATASEC);
  if (!data || sec_id < 0)
    return "the tracer object's read-only data has no BTF";
  const btf_type* sec = btf__type_by_id(b, static_cast<uint32_t>(sec_id));
  const btf_var_secinfo* v = btf_var_secinfos(sec);
  for (uint16_t i = 0; i < btf_vlen(sec); ++i, ++v) {
    const btf_type* var = btf__type_by_id(b, v->type);
    if (std::strcmp(btf__name_by_offset(b, var->name_off), name) != 0)
      continue;
    if (v->size != size || v->offset + size > data_size)
      return std::string("read-only variable ") + name + " has size " + std::to_string(v->size) +
             ", expected " + std::to_string(size);
    std::vector<char> updated(static_cast<const char*>(data),
                              static_cast<const char*>(data) + data_size);
    std::memcpy(updated.data() + v->offset, value, size);
    if (int e = bpf_map__set_initial_value(rodata, updated.data(), updated.size()); e != 0)
      return std::string("cannot set read-only variable ") + name + ": " + errno_text(e);
    return "";
  }
  return std::string("the tracer object has no read-only variable ") + name;
}

template <typename T> std::string set_rodata(bpf_object* obj, const char* name, const T& value) {
  return set_rodata(obj, name, &value, sizeof(T));
}

// The inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct bits).
uint64_t inverse_mod_2_64(uint64_t odd) {
  uint64_t x = odd; // correct to 3 bits
  for (int i = 0; i < 5; ++i)
    x *= 2 - odd * x;
  return x;
}

} // namespace

const char* tracer_build_name(tracer_build b) {
  switch (b) {
  case tracer_build::core:
    return "core";
  case tracer_build::runtime:
    return "runtime";
  case tracer_build::prebuilt:
    return "prebuilt";
  }
  return "?";
}

std::variant<std::unique_ptr<tracer_object>, load_error>
tracer_object::load(const tracer_load_options& opts) {
  if (opts.build != tracer_build::core)
    return load_attempt(opts, false);
  auto fast = load_attempt(opts, true);
  if (std::holds_alternative<std::unique_ptr<tracer_object>>(fast))
    return fast;
  // The fast TCP path needs an iterator over open files (5.11+, bpf_sock_from_file). Without
  // it the CO-RE tracer still loads, and counts TCP on every send and receive as before.
  auto slow = load_attempt(opts, false);
  if (auto* ok = std::get_if<std::unique_ptr<tracer_object>>(&slow))
    (*ok)->fast_tcp_off_reason_ = std::get<load_error>(fast).message;
  return slow;
}

std::variant<std::unique_ptr<tracer_object>, load_error>
tracer_object::load_attempt(const tracer_load_options& opts, bool fast_tcp) {
  struct stat st {};
  if (opts.build == tracer_build::core && stat("/sys/kernel/btf/vmlinux", &st) != 0)
    return load_error{"kernel BTF is missing (/sys/kernel/btf/vmlinux): the CO-RE tracer needs "
                      "a kernel built with CONFIG_DEBUG_INFO_BTF"};

  std::unique_ptr<tracer_object> self(new tracer_object());
  self->build_ = opts.build;
  self->use_perf_ = opts.use_perf;
  self->max_entries_ = opts.max_tracked_connections;
  self->ncpus_ = libbpf_num_possible_cpus();
  if (self->ncpus_ <= 0)
    return load_error{"cannot count possible CPUs: " + errno_text(self->ncpus_)};

  const void* elf = nullptr;
  size_t elf_size = 0;
  switch (opts.build) {
  case tracer_build::core:
    elf = nl_tracer__elf_bytes(&elf_size);
    break;
  case tracer_build::prebuilt:
    elf = nl_tracer_prebuilt__elf_bytes(&elf_size);
    break;
  case tracer_build::runtime:
    if (opts.object.empty())
      return load_error{"no runtime-compiled tracer object was given"};
    elf = opts.object.data();
    elf_size = opts.object.size();
    break;
  }
  LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = "nl_tracer");
  if (!opts.btf_custom_path.empty())
    open_opts.btf_custom_path = opts.btf_custom_path.c_str();
  self->obj_ = bpf_object__open_mem(elf, elf_size, &open_opts);
  if (!self->obj_) {
    int err = errno;
    self->obj_ = nullptr;
    return describe_load_failure(err, std::string("opening the ") + tracer_build_name(opts.build) +
                                          " tracer BPF object");
  }
  bpf_object* obj = self->obj_;
  struct {
    bpf_map** out;
    const char* name;
  } maps[] = {{&self->active_, "nl_active"},
              {&self->ring_, "nl_closed_ring"},
              {&self->perf_, "nl_closed_perf"},
              {&self->counters_, "nl_counters"},
              {&self->batches_, "nl_closed_batches"}};
  for (auto& m : maps) {
    *m.out = bpf_object__find_map_by_name(obj, m.name);
    if (!*m.out)
      return load_error{std::string("the tracer object has no map ") + m.name};
  }

  // One ring buffer record is 8 bytes of header plus the record, rounded up to 8.
  uint64_t ring_record = (sizeof(nl_closed_record) + 8 + 7) & ~uint64_t{7};
  uint32_t batch = std::min<uint32_t>(std::max<uint32_t>(1, opts.closed_batch_size), NL_BATCH_MAX);
  bool use_perf = opts.use_perf;
  uint64_t wakeup_bytes = ring_record * batch;
  std::string err = set_rodata(obj, "use_perf", use_perf);
  if (err.empty())
    err = set_rodata(obj, "wakeup_bytes", wakeup_bytes);
  if (err.empty())
    err = set_rodata(obj, "batch_size", batch);
  if (err.empty() && opts.build != tracer_build::core) {
    uint64_t secret[2] = {0, 0};
    if (getrandom(secret, sizeof secret, 0) != sizeof secret)
      return load_error{"cannot draw the socket id secret: " + errno_text(errno)};
    self->id_xor_ = secret[0];
    uint64_t mul = secret[1] | 1;
    self->id_mul_inverse_ = inverse_mod_2_64(mul);
    err = set_rodata(obj, "sock_id_xor", self->id_xor_);
    if (err.empty())
      err = set_rodata(obj, "sock_id_mul", mul);
  }
  if (err.empty() && opts.build == tracer_build::prebuilt)
    err = set_rodata(obj, "nl_off", opts.offsets);
  if (err.empty() && opts.build == tracer_build::core) {
    err = set_rodata(obj, "tcp_marks_on", fast_tcp);
    bpf_program* refresh = bpf_object__find_program_by_name(obj, "nl_refresh_tcp");
    if (!refresh)
      err = "the tracer object has no program nl_refresh_tcp";
    else
      bpf_program__set_autoload(refresh, fast_tcp);
  }
  if (!err.empty())
    return load_error{err};

  bpf_map__set_max_entries(self->active_, opts.max_tracked_connections);
  // The transport not in use still exists in the object; keep it as small as the kernel allows.
  long page = sysconf(_SC_PAGESIZE);
  bpf_map__set_max_entries(self->ring_,
                           opts.use_perf ? static_cast<uint32_t>(page) : opts.ring_buffer_bytes);
  if (int load_err = bpf_object__load(obj); load_err != 0)
    return describe_load_failure(load_err, std::string("loading the ") +
                                               tracer_build_name(opts.build) +
                                               " tracer BPF programs");

  const char* tracepoint_kind = opts.build == tracer_build::core ? "tp_btf" : "raw_tp";
  struct {
    const char* prog;
    const char* what;
  } tracepoints[] = {
      {"nl_tcp_state", "inet_sock_set_state"},
      {"nl_tcp_state_nested", "inet_sock_set_state (nested)"},
      {"nl_sock_send", "sock_send_length"},
      {"nl_sock_recv", "sock_recv_length"},
      {"nl_tcp_retransmit", "tcp_retransmit_skb"},
      {"nl_tcp_destroy", "tcp_destroy_sock"},
  };
  for (auto& tp : tracepoints) {
    bpf_program* prog = bpf_object__find_program_by_name(obj, tp.prog);
    if (!prog)
      return load_error{std::string("the tracer object has no program ") + tp.prog};
    bpf_link* link = bpf_program__attach(prog);
    if (!link)
      return describe_load_failure(errno,
                                   std::string("attaching ") + tracepoint_kind + "/" + tp.what);
    self->links_.push_back(link);
  }

  if (fast_tcp) {
    bpf_program* prog = bpf_object__find_program_by_name(obj, "nl_refresh_tcp");
    bpf_link* link = prog ? bpf_program__attach_iter(prog, nullptr) : nullptr;
    if (!link)
      return describe_load_failure(errno, "attaching iter/task_file (nl_refresh_tcp)");
    self->links_.push_back(link);
    self->refresh_link_ = link;
  }

  std::string cgroup = find_cgroup2_mount();
  if (!cgroup.empty()) {
    int fd = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      return describe_load_failure(errno, "opening cgroup v2 root " + cgroup);
    self->cgroup_fd_.reset(fd);
    bpf_program* prog = bpf_object__find_program_by_name(obj, "nl_udp_release");
    if (!prog)
      return load_error{"the tracer object has no program nl_udp_release"};
    bpf_link* link = bpf_program__attach_cgroup(prog, fd);
    if (!link)
      return describe_load_failure(errno, "attaching cgroup/sock_release to " + cgroup);
    self->links_.push_back(link);
    // The peers of datagrams on unconnected UDP sockets (UDP per peer).
    struct {
      const char* prog;
      const char* hook;
    } peer_hooks[] = {{"nl_udp_sendmsg4", "sendmsg4"},
                      {"nl_udp_sendmsg6", "sendmsg6"},
                      {"nl_udp_recvmsg4", "recvmsg4"},
                      {"nl_udp_recvmsg6", "recvmsg6"}};
    for (auto& h : peer_hooks) {
      bpf_program* p = bpf_object__find_program_by_name(obj, h.prog);
      if (!p)
        return load_error{std::string("the tracer object has no program ") + h.prog};
      bpf_link* l = bpf_program__attach_cgroup(p, fd);
      if (!l)
        return describe_load_failure(errno,
                                     std::string("attaching cgroup/") + h.hook + " to " + cgroup);
      self->links_.push_back(l);
    }
  }
  return self;
}

tracer_object::~tracer_object() {
  for (auto it = links_.rbegin(); it != links_.rend(); ++it)
    bpf_link__destroy(*it);
  links_.clear();
  if (obj_)
    bpf_object__close(obj_);
}

int tracer_object::closed_ring_fd() const {
  return bpf_map__fd(ring_);
}
int tracer_object::closed_perf_fd() const {
  return bpf_map__fd(perf_);
}
int tracer_object::active_fd() const {
  return bpf_map__fd(active_);
}
int tracer_object::closed_batches_fd() const {
  return bpf_map__fd(batches_);
}

uint64_t tracer_object::key_of(uint64_t sock_id) const {
  if (build_ == tracer_build::core)
    return sock_id;
  return (sock_id * id_mul_inverse_) ^ id_xor_;
}

nl_tracer_counters tracer_object::read_counters() const {
  std::vector<nl_tracer_counters> per_cpu(static_cast<size_t>(ncpus_));
  uint32_t zero = 0;
  nl_tracer_counters sum{};
  if (bpf_map_lookup_elem(bpf_map__fd(counters_), &zero, per_cpu.data()) != 0)
    return sum;
  for (const auto& c : per_cpu) {
    sum.failed_inserts += c.failed_inserts;
    sum.closed_lost += c.closed_lost;
    sum.closed_emitted += c.closed_emitted;
    sum.events += c.events;
    sum.wakeups += c.wakeups;
    sum.peer_key_clashes += c.peer_key_clashes;
    sum.closes_at_destroy += c.closes_at_destroy;
    sum.opens_completed_late += c.opens_completed_late;
  }
  return sum;
}

void tracer_object::read_active(std::vector<nl_conn>& out, uint32_t batch_size) const {
  // Values land in `out` itself, whose capacity the caller keeps between reads.
  read_whole_table(*this, out, batch_size);
}

bool tracer_object::refresh_live(std::string* why) const {
  if (!refresh_link_)
    return true;
  int fd = bpf_iter_create(bpf_link__fd(refresh_link_));
  if (fd < 0) {
    if (why)
      *why = "creating the TCP refresh iterator: " + errno_text(errno);
    return false;
  }
  // The program writes nothing: one read walks every open file and returns 0 at the end.
  // bpf_iter.c stops a read without output after a million objects with EAGAIN (the next read
  // goes on); a bounded number of those, in case a kernel starts over instead.
  char buf[64];
  bool ok = true;
  int again = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0)
      continue;
    if (n == 0)
      break;
    if (errno == EINTR || (errno == EAGAIN && ++again < 64))
      continue;
    if (why)
      *why = "running the TCP refresh iterator: " + errno_text(errno);
    ok = false;
    break;
  }
  close(fd);
  return ok;
}

void tracer_object::read_active_page(active_cursor& cursor, std::vector<nl_conn>& out,
                                     uint32_t max) const {
  if (cursor.done)
    return;
  if (!cursor.started && cursor.refresh) {
    std::string why;
    if (!refresh_live(&why)) {
      // The entries are read all the same, with the counters of their last refresh or event.
      ++refresh_failures_;
      last_refresh_error_ = why;
    }
  }
  int fd = bpf_map__fd(active_);
  uint32_t batch = std::max<uint32_t>(max, 1);
  std::vector<uint64_t> keys;
  for (;;) {
    keys.resize(batch);
    size_t had = out.size();
    out.resize(had + batch);
    uint32_t count = batch;
    int err = bpf_map_lookup_batch(fd, cursor.started ? &cursor.token : nullptr, &cursor.token,
                                   keys.data(), out.data() + had, &count, nullptr);
    int e = err ? errno : 0;
    out.resize(had + (e == 0 || e == ENOENT ? count : 0));
    if (e == ENOSPC) {
      // One hash bucket holds more than a batch: retry this bucket with room for it.
      batch *= 2;
      continue;
    }
    cursor.started = true;
    if (e != 0)
      cursor.done = true; // ENOENT: the end of the map; anything else ends the read too
    return;
  }
}

size_t tracer_object::count_active() const {
  std::vector<nl_conn> page;
  page.reserve(1024);
  active_cursor cursor;
  cursor.refresh = false;
  size_t n = 0;
  while (!cursor.done) {
    page.clear();
    read_active_page(cursor, page, 1024);
    n += page.size();
  }
  return n;
}

bool tracer_object::remove_active(uint64_t sock_id) {
  uint64_t key = key_of(sock_id);
  return bpf_map_delete_elem(bpf_map__fd(active_), &key) == 0;
}

uint64_t tracer_object::recursion_misses() const {
  uint64_t misses = 0;
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) {
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
  bpf_object__for_each_program(prog, obj_) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0)
      ids.push_back(info.id);
  }
  return ids;
}

} // namespace netlens
