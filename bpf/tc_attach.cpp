#include "bpf/tc_attach.hpp"

#include <fcntl.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <thread>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/expected_kernel_errors.hpp"
#include "flow/errno_text.hpp"
#include "tc_flows.skel.h"

namespace netlens {
namespace {

uint32_t inode_of_fd(int fd) {
  struct stat st {};
  return fstat(fd, &st) == 0 ? static_cast<uint32_t>(st.st_ino) : 0;
}

// The namespace fd to keep for a device: a dup of the caller's, or the calling thread's own
// namespace opened (-1), so that a later detach from any thread reaches the same namespace.
int own_netns_fd(int netns_fd) {
  if (netns_fd < 0)
    return open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  return fcntl(netns_fd, F_DUPFD_CLOEXEC, 0);
}

std::string where(int ifindex, uint32_t netns_inode) {
  return "device " + std::to_string(ifindex) + " in netns " + std::to_string(netns_inode);
}

// Runs f on a thread that has entered the namespace netns_fd and ends with it: setns changes
// only the calling thread's namespace, and the netlink sockets libbpf opens inside f are
// created in the namespace of the thread that opens them.
template <typename R>
R in_netns(int netns_fd, uint32_t inode, const std::function<R()>& f,
           const std::function<R(tc_error)>& fail) {
  std::optional<R> result;
  std::thread worker([&] {
    if (setns(netns_fd, CLONE_NEWNET) != 0) {
      result = fail(tc_error{"entering netns " + std::to_string(inode) + ": " + errno_text(errno)});
      return;
    }
    result = f();
  });
  worker.join();
  return std::move(*result);
}

const char* hook_name(bpf_tc_attach_point p) {
  return p == BPF_TC_INGRESS ? "ingress" : "egress";
}

// The program id of the bpf filter at netlens's handle and priority on that hook: 0 with
// ENOENT when there is none. libbpf asks for kind "bpf": a filter of another kind there
// answers EINVAL.
int query_ours(int ifindex, bpf_tc_attach_point point, uint32_t* prog_id) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = k_tc_handle, .priority = k_tc_priority);
  // "Cannot find specified filter chain" (clsact, nothing at our slot) and "Parent Qdisc
  // doesn't exists" (no clsact) are the usual answers.
  expected_kernel_errors quiet;
  int err = bpf_tc_query(&hook, &opts);
  *prog_id = err == 0 ? opts.prog_id : 0;
  return err;
}

int detach_at(int ifindex, bpf_tc_attach_point point) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = k_tc_handle, .priority = k_tc_priority);
  expected_kernel_errors quiet; // the filter or the qdisc already gone: the caller handles it
  return bpf_tc_detach(&hook, &opts);
}

std::string program_name(uint32_t id) {
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0)
    return "";
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  std::string name;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0)
    name = info.name;
  close(fd);
  return name;
}

uint32_t program_id(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 ? info.id : 0;
}

// netlens's slot as `tc filter show` prints it.
std::string slot() {
  char text[48];
  std::snprintf(text, sizeof text, "0x%x at pref %u", k_tc_handle, k_tc_priority);
  return text;
}

bool gone(int err) {
  return err == -ENODEV || err == -ENOENT;
}

// Whether device ifindex of the calling thread's namespace has a clsact qdisc: an RTM_GETQDISC
// dump read through. (The TC filter query cannot tell: "no qdisc" and "no filter there" are
// both EINVAL.) 1: yes, 0: no, -errno: the dump failed.
int has_clsact(int ifindex) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0)
    return -errno;
  struct {
    nlmsghdr nh;
    tcmsg tc;
  } req{};
  req.nh.nlmsg_len = sizeof(req);
  req.nh.nlmsg_type = RTM_GETQDISC;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.tc.tcm_family = AF_UNSPEC;
  req.tc.tcm_ifindex = ifindex;
  if (send(fd, &req, sizeof(req), 0) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  int found = 0;
  alignas(nlmsghdr) char buf[16384];
  for (bool done = false; !done;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      found = -errno;
      break;
    }
    int len = static_cast<int>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_type == NLMSG_DONE) {
        done = true;
        break;
      }
      if (nh->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(nh));
        found = e->error < 0 ? e->error : found;
        done = true;
        break;
      }
      if (nh->nlmsg_type != RTM_NEWQDISC)
        continue;
      auto* tc = static_cast<tcmsg*>(NLMSG_DATA(nh));
      if (tc->tcm_ifindex != ifindex || tc->tcm_parent != TC_H_CLSACT)
        continue;
      int alen = static_cast<int>(nh->nlmsg_len - NLMSG_LENGTH(sizeof(*tc)));
      for (auto* a =
               reinterpret_cast<rtattr*>(reinterpret_cast<char*>(tc) + NLMSG_ALIGN(sizeof(*tc)));
           RTA_OK(a, alen); a = RTA_NEXT(a, alen))
        if (a->rta_type == TCA_KIND && std::strcmp(static_cast<char*>(RTA_DATA(a)), "clsact") == 0)
          found = found < 0 ? found : 1;
    }
  }
  close(fd);
  return found;
}

// TCX (Linux 6.6): BPF_LINK_CREATE of a SCHED_CLS program with these attach types, the device
// as the target. libbpf 1.1 has no helper for it and Debian 12's uapi headers predate it, so the
// values are the kernel's own (enum bpf_attach_type; BPF_F_BEFORE of the mprog flags).
constexpr int k_bpf_tcx_ingress = 46;
constexpr int k_bpf_tcx_egress = 47;
constexpr uint32_t k_bpf_f_before = 1U << 3;

// Whether the kernel has TCX, asked without attaching anything: a link to ifindex 0 fails with
// ENODEV where TCX exists (the device is looked up after the attach type is accepted) and with
// EINVAL where the attach type is unknown. 0: TCX; else the kernel's answer.
int probe_tcx(int prog_fd) {
  int fd = bpf_link_create(prog_fd, 0, static_cast<bpf_attach_type>(k_bpf_tcx_ingress), nullptr);
  if (fd >= 0) {
    close(fd); // no kernel attaches to "no device"; should one, nothing stays attached
    return 0;
  }
  return fd == -ENODEV ? 0 : fd;
}

// A TCX link of prog_fd on ifindex (in the calling thread's namespace), first in the device's
// chain so netlens counts each packet before another program decides on it. The fd, or -errno.
int tcx_link(int prog_fd, int ifindex, int attach_type) {
  LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = k_bpf_f_before);
  return bpf_link_create(prog_fd, ifindex, static_cast<bpf_attach_type>(attach_type), &opts);
}

} // namespace

std::variant<std::unique_ptr<tc_attach>, tc_error> tc_attach::load(const tc_load_options& opts) {
  std::unique_ptr<tc_attach> self(new tc_attach());
  self->ncpus_ = libbpf_num_possible_cpus();
  if (self->ncpus_ <= 0)
    return tc_error{"cannot count possible CPUs: " + errno_text(self->ncpus_)};
  size_t elf_size = 0;
  const void* elf = nl_tc_flows__elf_bytes(&elf_size);
  LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = "nl_tc_flows");
  self->obj_ = bpf_object__open_mem(elf, elf_size, &open_opts);
  if (!self->obj_) {
    int err = errno;
    self->obj_ = nullptr;
    return tc_error{"opening the tc_flows BPF object: " + errno_text(err)};
  }
  self->flows_ = bpf_object__find_map_by_name(self->obj_, "nl_tc_flows");
  self->counters_ = bpf_object__find_map_by_name(self->obj_, "nl_tc_counters");
  if (!self->flows_ || !self->counters_)
    return tc_error{"the tc_flows object lacks its maps"};
  // Before load: the kernel creates the map with this size (a preallocated hash holds exactly
  // max_entries elements; the next new flow fails its insert).
  if (int err = bpf_map__set_max_entries(self->flows_, std::max<uint32_t>(1, opts.max_flows));
      err != 0)
    return tc_error{"sizing the flow map to " + std::to_string(opts.max_flows) +
                    " flows: " + errno_text(err)};
  if (int err = bpf_object__load(self->obj_); err != 0) {
    int e = err < 0 ? -err : err;
    std::string hint = (e == EPERM || e == EACCES) ? " (run as root or grant CAP_BPF and "
                                                     "CAP_NET_ADMIN)"
                                                   : "";
    return tc_error{"loading the tc_flows BPF programs: " + errno_text(e) + hint};
  }
  bpf_program* in = bpf_object__find_program_by_name(self->obj_, k_tc_ingress_program);
  bpf_program* out = bpf_object__find_program_by_name(self->obj_, k_tc_egress_program);
  if (!in || !out)
    return tc_error{"the tc_flows object lacks its programs"};
  self->ingress_fd_ = bpf_program__fd(in);
  self->egress_fd_ = bpf_program__fd(out);
  self->ingress_id_ = program_id(self->ingress_fd_);
  self->egress_id_ = program_id(self->egress_fd_);
  if (self->ingress_id_ == 0 || self->egress_id_ == 0)
    return tc_error{"cannot read the tc_flows programs' ids: " + errno_text(errno)};
  self->create_clsact_ = opts.create_clsact;
  if (!opts.use_tcx) {
    self->classic_reason_ = "TCX turned off by the configuration";
  } else if (int err = probe_tcx(self->ingress_fd_); err != 0) {
    self->classic_reason_ = "the kernel has no TCX (Linux 6.6+): " + errno_text(err);
  } else {
    self->tcx_ = true;
  }
  return self;
}

void tc_attach::release(attachment& a) {
  for (int* fd : {&a.ingress_link, &a.egress_link, &a.netns_fd}) {
    if (*fd >= 0)
      close(*fd);
    *fd = -1;
  }
}

std::optional<tc_error> tc_attach::attach_tcx(attachment& a, const std::string& at) {
  using result = std::optional<tc_error>;
  return in_netns<result>(
      a.netns_fd, a.netns_inode,
      [&]() -> result {
        int in = tcx_link(ingress_fd_, a.ifindex, k_bpf_tcx_ingress);
        if (in < 0)
          return tc_error{"attaching the ingress TCX link on " + at + ": " + errno_text(in)};
        int out = tcx_link(egress_fd_, a.ifindex, k_bpf_tcx_egress);
        if (out < 0) {
          close(in); // a failed attach leaves nothing behind
          return tc_error{"attaching the egress TCX link on " + at + ": " + errno_text(out)};
        }
        a.ingress_link = in;
        a.egress_link = out;
        return std::nullopt;
      },
      [](tc_error e) -> result { return e; });
}

tc_attach::~tc_attach() {
  (void)detach_all();
  if (obj_)
    bpf_object__close(obj_);
}

std::optional<tc_error> tc_attach::attach(int ifindex, int netns_fd) {
  attachment a;
  a.ifindex = ifindex;
  a.netns_fd = own_netns_fd(netns_fd);
  if (a.netns_fd < 0)
    return tc_error{"opening the netns of device " + std::to_string(ifindex) + ": " +
                    errno_text(errno)};
  a.netns_inode = inode_of_fd(a.netns_fd);
  for (const auto& known : attached_) {
    if (known.netns_inode == a.netns_inode && known.ifindex == ifindex) {
      close(a.netns_fd);
      return std::nullopt;
    }
  }
  const std::string at = where(ifindex, a.netns_inode);
  auto err = tcx_ ? attach_tcx(a, at) : attach_classic(a, at);
  if (err) {
    release(a);
    return err;
  }
  attached_.push_back(a);
  return std::nullopt;
}

std::optional<tc_error> tc_attach::attach_classic(const attachment& a, const std::string& at) {
  const int ifindex = a.ifindex;
  using result = std::optional<tc_error>;
  return in_netns<result>(
      a.netns_fd, a.netns_inode,
      [&]() -> result {
        LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
                    .attach_point =
                        static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
        if (create_clsact_) {
          // EEXIST: the device has a clsact qdisc already (another tool's, or ours); the
          // kernel's "Exclusivity flag on, cannot modify" that comes with it is expected.
          int e;
          {
            expected_kernel_errors quiet;
            e = bpf_tc_hook_create(&hook);
          }
          if (e != 0 && e != -EEXIST)
            return tc_error{"creating the clsact qdisc on " + at + ": " + errno_text(e)};
        } else {
          // Only a device that has a clsact qdisc already: creating one drops the packets in
          // flight.
          int has = has_clsact(ifindex);
          if (has < 0)
            return tc_error{"listing the qdiscs of " + at + ": " + errno_text(has)};
          if (has == 0) {
            tc_error skipped{"no clsact qdisc on " + at + ", and netns.tc_create_clsact is off"};
            skipped.code = tc_errc::no_clsact;
            return skipped;
          }
        }
        struct {
          bpf_tc_attach_point point;
          int fd;
          uint32_t id;
        } hooks[] = {{BPF_TC_INGRESS, ingress_fd_, ingress_id_},
                     {BPF_TC_EGRESS, egress_fd_, egress_id_}};
        for (size_t i = 0; i < 2; ++i) {
          hook.attach_point = hooks[i].point;
          LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = hooks[i].fd, .handle = k_tc_handle,
                      .priority = k_tc_priority);
          int e = bpf_tc_attach(&hook, &opts);
          uint32_t there = 0;
          if (e == -EEXIST && query_ours(ifindex, hooks[i].point, &there) == 0 &&
              there == hooks[i].id)
            continue; // ours already: a detach that failed half-way left it there
          if (e != 0) {
            std::string what = "attaching the " + std::string(hook_name(hooks[i].point)) +
                               " classifier on " + at + ": " + errno_text(e);
            if (e == -EEXIST)
              what += " (another filter holds netlens's handle " + slot() + ")";
            else if (e == -EINVAL)
              what += " (a filter of another kind or protocol may hold priority " +
                      std::to_string(k_tc_priority) + ")";
            // Undo the ingress half, so a failed attach leaves nothing behind.
            if (i == 1 && query_ours(ifindex, BPF_TC_INGRESS, &there) == 0 && there == ingress_id_)
              detach_at(ifindex, BPF_TC_INGRESS);
            return tc_error{what};
          }
        }
        return std::nullopt;
      },
      [](tc_error e) -> result { return e; });
}

std::optional<tc_error> tc_attach::detach_one(const attachment& a) {
  if (a.ingress_link >= 0 || a.egress_link >= 0)
    return std::nullopt; // TCX: closing the links (release) detaches them; a gone device took
                         // them with it
  const std::string at = where(a.ifindex, a.netns_inode);
  using result = std::optional<tc_error>;
  return in_netns<result>(
      a.netns_fd, a.netns_inode,
      [&]() -> result {
        result first;
        for (auto point : {BPF_TC_INGRESS, BPF_TC_EGRESS}) {
          const uint32_t ours = point == BPF_TC_INGRESS ? ingress_id_ : egress_id_;
          uint32_t there = 0;
          int e = query_ours(a.ifindex, point, &there);
          if (e == -ENOENT || e == -ENODEV)
            continue; // removed already, or the device is gone and took its filters with it
          if (e != 0 || there != ours) {
            if (!first)
              first = tc_error{
                  "the " + std::string(hook_name(point)) + " filter at netlens's " +
                  "handle and priority on " + at + " is not netlens's (" +
                  (e != 0 ? "query: " + errno_text(e) : "program id " + std::to_string(there)) +
                  "): left in place"};
            continue;
          }
          // Between the query and this delete only another process that replaced our filter
          // at our own handle could interfere: a tool that does that already removed ours.
          e = detach_at(a.ifindex, point);
          if (e != 0 && !gone(e) && !first)
            first = tc_error{"detaching the " + std::string(hook_name(point)) + " classifier on " +
                             at + ": " + errno_text(e)};
        }
        return first;
      },
      [](tc_error e) -> result { return e; });
}

std::optional<tc_error> tc_attach::detach(int ifindex, int netns_fd) {
  int fd = own_netns_fd(netns_fd);
  uint32_t inode = fd >= 0 ? inode_of_fd(fd) : 0;
  if (fd >= 0)
    close(fd);
  if (inode == 0)
    return tc_error{"detach: cannot identify the netns of device " + std::to_string(ifindex)};
  return detach_inode(inode, ifindex);
}

std::optional<tc_error> tc_attach::detach_inode(uint32_t netns_inode, int ifindex) {
  auto it = std::find_if(attached_.begin(), attached_.end(), [&](const attachment& a) {
    return a.netns_inode == netns_inode && a.ifindex == ifindex;
  });
  if (it == attached_.end())
    return tc_error{"detach: netlens attached nothing on " + where(ifindex, netns_inode)};
  auto err = detach_one(*it);
  // Forgotten either way: what is left there is not ours to remove (or will be, by
  // remove_leftovers of a later run).
  release(*it);
  attached_.erase(it);
  return err;
}

std::optional<tc_error> tc_attach::detach_all() {
  std::optional<tc_error> first;
  for (auto it = attached_.rbegin(); it != attached_.rend(); ++it) {
    auto err = detach_one(*it);
    if (err && !first)
      first = err;
    release(*it);
  }
  attached_.clear();
  return first;
}

std::variant<size_t, tc_error> tc_attach::remove_leftovers(int netns_fd) {
  int fd = own_netns_fd(netns_fd);
  if (fd < 0)
    return tc_error{"remove_leftovers: opening the netns: " + errno_text(errno)};
  const uint32_t inode = inode_of_fd(fd);
  using result = std::variant<size_t, tc_error>;
  result r = in_netns<result>(
      fd, inode,
      [&]() -> result {
        // The interfaces of the namespace this thread is in: if_nameindex asks through a
        // socket it opens, and sockets belong to their creator's namespace.
        struct if_nameindex* ifs = if_nameindex();
        if (!ifs)
          return tc_error{"listing the devices of netns " + std::to_string(inode) + ": " +
                          errno_text(errno)};
        size_t removed = 0;
        std::optional<tc_error> first;
        for (struct if_nameindex* i = ifs; i->if_index != 0; ++i) {
          const int ifindex = static_cast<int>(i->if_index);
          for (auto point : {BPF_TC_INGRESS, BPF_TC_EGRESS}) {
            uint32_t there = 0;
            if (query_ours(ifindex, point, &there) != 0)
              continue; // nothing at our handle and priority, or not a bpf filter
            if (there == ingress_id_ || there == egress_id_)
              continue; // this run's own filter
            const std::string name = program_name(there);
            if (name != k_tc_ingress_program && name != k_tc_egress_program)
              continue; // another tool's program happens to sit there: not ours to remove
            int e = detach_at(ifindex, point);
            if (e == 0)
              ++removed;
            else if (!gone(e) && !first)
              first = tc_error{"removing a leftover " + std::string(hook_name(point)) +
                               " classifier (program " + std::to_string(there) + ") on " +
                               i->if_name + " (" + where(ifindex, inode) + "): " + errno_text(e)};
          }
        }
        if_freenameindex(ifs);
        if (first)
          return *first;
        return removed;
      },
      [](tc_error e) -> result { return e; });
  close(fd);
  return r;
}

// One flow's counts summed over CPUs (last_ns: the latest CPU's). False when the key is gone.
bool tc_attach::read_flow(const nl_tc_flow_key& key, std::vector<nl_tc_flow_value>& per_cpu,
                          tc_flow& out) const {
  if (bpf_map_lookup_elem(bpf_map__fd(flows_), &key, per_cpu.data()) != 0)
    return false; // removed meanwhile
  out = tc_flow{};
  out.key = key;
  for (const auto& v : per_cpu) {
    out.packets += v.packets;
    out.bytes += v.bytes;
    out.last_ns = std::max<uint64_t>(out.last_ns, v.last_ns);
  }
  return true;
}

std::vector<tc_flow> tc_attach::read_flows() const {
  std::vector<tc_flow> out;
  const int fd = bpf_map__fd(flows_);
  std::vector<nl_tc_flow_value> per_cpu(static_cast<size_t>(ncpus_));
  nl_tc_flow_key key{};
  nl_tc_flow_key next{};
  const nl_tc_flow_key* prev = nullptr;
  tc_flow f;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    if (read_flow(key, per_cpu, f))
      out.push_back(f);
  }
  return out;
}

size_t tc_attach::remove_idle(uint64_t idle_ns) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts); // bpf_ktime_get_ns() reads this clock
  const uint64_t now = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  if (idle_ns >= now)
    return 0;
  const uint64_t cutoff = now - idle_ns;
  // Keys first, deletes after: deleting the key get_next_key stands on restarts the walk.
  std::vector<nl_tc_flow_key> idle;
  for (const tc_flow& f : read_flows())
    if (f.last_ns < cutoff)
      idle.push_back(f.key);
  // Each key's last packet is read again just before its delete, which shrinks but does not
  // close the window: a packet counted between that lookup and the delete is lost with the
  // flow (the map has no compare-and-delete). Such a flow comes back with its next packet.
  const int fd = bpf_map__fd(flows_);
  std::vector<nl_tc_flow_value> per_cpu(static_cast<size_t>(ncpus_));
  size_t removed = 0;
  tc_flow f;
  for (const auto& k : idle)
    if (read_flow(k, per_cpu, f) && f.last_ns < cutoff && bpf_map_delete_elem(fd, &k) == 0)
      ++removed;
  return removed;
}

nl_tc_counters tc_attach::read_counters() const {
  std::vector<nl_tc_counters> per_cpu(static_cast<size_t>(ncpus_));
  nl_tc_counters sum{};
  uint32_t zero = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(counters_), &zero, per_cpu.data()) != 0)
    return sum;
  for (const auto& c : per_cpu) {
    sum.failed_inserts += c.failed_inserts;
    sum.unparsed += c.unparsed;
  }
  return sum;
}

} // namespace netlens
