#include "actors/offset_guesser/guess_session.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "actors/offset_guesser/own_cgroup.hpp"
#include "actors/offset_guesser/socket_lab.hpp"
#include "flow/errno_text.hpp"
#include "offset_guess.skel.h"

namespace netlens {
namespace {

constexpr uint32_t k_copy_sock = 1; // request.mode values, as in offset_guess.bpf.c
constexpr uint32_t k_copy_ptr = 2;
constexpr size_t k_chunk = 512; // NL_GUESS_CHUNK

// The lab's way into the loaded object: drop rules and copy requests written to its .bss,
// copies read back from its window.
class skeleton_kernel final : public lab_kernel {
public:
  explicit skeleton_kernel(nl_offset_guess* skel) : skel_(skel) {}

  void arm_drop(int slot, const drop_rule& rule) override {
    auto& d = skel_->bss->drops[slot];
    d.saddr = rule.saddr;
    d.daddr = rule.daddr;
    d.sport = rule.sport;
    d.dport = rule.dport;
    // Nothing is dropped while budget is 0: the addresses are in place before it is set.
    __atomic_store_n(&d.skip, rule.skip, __ATOMIC_SEQ_CST);
    __atomic_store_n(&d.budget, rule.budget, __ATOMIC_SEQ_CST);
  }

  void clear_drops() override {
    for (auto& d : skel_->bss->drops)
      std::memset(&d, 0, sizeof(d));
  }

  std::variant<std::vector<uint8_t>, try_failure> copy_sock(int fd) override {
    return copy(fd, k_copy_sock, 0);
  }

  // A window of the kernel memory at ptr, copied when trigger_fd is read.
  std::variant<std::vector<uint8_t>, try_failure> copy_at(int trigger_fd, uint64_t ptr) {
    return copy(trigger_fd, k_copy_ptr, ptr);
  }

private:
  std::variant<std::vector<uint8_t>, try_failure> copy(int trigger_fd, uint32_t mode, uint64_t ptr);

  nl_offset_guess* skel_;
};

std::variant<std::vector<uint8_t>, try_failure> skeleton_kernel::copy(int trigger_fd, uint32_t mode,
                                                                      uint64_t ptr) {
  auto* req = &skel_->bss->request;
  req->mode = mode;
  req->ptr = ptr;
  req->chunk_faults = 0;
  __atomic_store_n(&req->done, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&req->tid, static_cast<uint32_t>(syscall(SYS_gettid)), __ATOMIC_SEQ_CST);
  // A zero-length peek: it changes nothing in the socket, and sock_recv_length fires for it.
  recv(trigger_fd, nullptr, 0, MSG_PEEK | MSG_DONTWAIT);
  __atomic_store_n(&req->tid, 0, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&req->done, __ATOMIC_SEQ_CST))
    return try_failure{"the guessing program did not run on recv() (tracepoint "
                       "sock:sock_recv_length missing?)"};
  size_t usable = sizeof(skel_->bss->window);
  for (size_t i = 0; i < sizeof(skel_->bss->window) / k_chunk; ++i)
    if (req->chunk_faults & (1u << i)) {
      usable = i * k_chunk;
      break;
    }
  return std::vector<uint8_t>(skel_->bss->window, skel_->bss->window + usable);
}

// One try: the lab's samples, then the windows behind each candidate skc_net pointer, then
// the scan.
std::variant<scan_outcome, try_failure> run_try(nl_offset_guess* skel,
                                                std::chrono::milliseconds timeout) {
  skeleton_kernel kernel(skel);
  socket_lab lab(kernel, timeout);
  auto sampled = lab.run();
  if (auto* f = std::get_if<try_failure>(&sampled))
    return *f;
  const auto& samples = std::get<std::vector<scan_sample>>(sampled);
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) != 0)
    return try_failure{"stat /proc/self/ns/net: " + errno_text(errno)};
  std::vector<net_window> nets;
  for (const auto& cand : net_pointer_candidates(samples)) {
    auto bytes = kernel.copy_at(lab.trigger_fd(), cand.pointer);
    if (auto* f = std::get_if<try_failure>(&bytes))
      return *f;
    nets.push_back({cand.offset, std::move(std::get<std::vector<uint8_t>>(bytes))});
  }
  return scan_offsets(samples, nets, static_cast<uint32_t>(st.st_ino));
}

} // namespace

std::variant<std::unique_ptr<guess_session>, std::string> guess_session::open() {
  std::unique_ptr<guess_session> self(new guess_session());
  self->skel_ = nl_offset_guess__open();
  if (!self->skel_)
    return "opening the offset guessing BPF object: " + errno_text(errno);
  self->skel_->rodata->target_tgid = static_cast<uint32_t>(getpid());
  if (int err = nl_offset_guess__load(self->skel_); err != 0)
    return "loading the offset guessing BPF programs: " + errno_text(err);
  self->copy_link_ = bpf_program__attach(self->skel_->progs.nl_guess_copy);
  if (!self->copy_link_)
    return "attaching raw_tp/sock_recv_length: " + errno_text(errno);
  cgroup_dir_lookup cgroup = own_cgroup_dir();
  if (!cgroup.found())
    return "the offset guesser drops its own segments with a cgroup program: " + cgroup.error;
  self->cgroup_fd_.reset(::open(cgroup.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!self->cgroup_fd_)
    return "opening cgroup " + cgroup.dir + ": " + errno_text(errno);
  self->drop_link_ =
      bpf_program__attach_cgroup(self->skel_->progs.nl_guess_drop, self->cgroup_fd_.get());
  if (!self->drop_link_)
    return "attaching cgroup_skb/ingress to " + cgroup.dir + ": " + errno_text(errno);
  return self;
}

guess_session::~guess_session() {
  if (drop_link_)
    bpf_link__destroy(drop_link_);
  if (copy_link_)
    bpf_link__destroy(copy_link_);
  if (skel_)
    nl_offset_guess__destroy(skel_);
}

std::vector<uint32_t> guess_session::program_ids() const {
  std::vector<uint32_t> ids;
  for (bpf_program* p : {skel_->progs.nl_guess_copy, skel_->progs.nl_guess_drop}) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len) == 0)
      ids.push_back(info.id);
  }
  return ids;
}

scan_outcome guess_session::guess_once(std::chrono::milliseconds timeout) {
  auto result = run_try(skel_, timeout);
  if (auto* f = std::get_if<try_failure>(&result)) {
    scan_outcome out;
    out.errors.push_back(f->what);
    return out;
  }
  return std::get<scan_outcome>(result);
}

} // namespace netlens
