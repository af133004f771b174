// netlens's TC classifiers: the loaded tc_flows object and every attachment it made, on any
// device of any network namespace. On kernels with TCX (6.6+) each attachment is a pair of TCX
// links: no qdisc is created, another tool's programs and filters are untouched, and the links
// go with the process however it ends. Elsewhere (or when told) they are classic TC filters
// in a clsact qdisc, which is created only when the options allow it (creating one drops the
// device's packets in flight). It removes exactly what it attached (and, at start, the filters
// a killed earlier run left), never another tool's, and all of its own on destruction.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "bpf/netlens_tc.h"
#include "flow/failure.hpp"

struct bpf_object;
struct bpf_map;
struct bpf_program;

namespace netlens {

// Where netlens's filters sit in each clsact hook (ingress, egress), fixed so that a later run
// and an operator reading `tc filter show` can tell them apart. The priority is low (filters
// run in ascending priority, and one that returns a verdict ends the walk) so netlens counts
// packets before most tools decide on them; 1 is left to the tools that insist on it (tc and
// libbpf pick 49152 and below when asked for none). The handle spells "NL".
constexpr uint32_t k_tc_priority = 3;
constexpr uint32_t k_tc_handle = 0x4e4c;
// The programs' names as the kernel keeps them (at most 15 characters): how a leftover is known.
constexpr const char* k_tc_ingress_program = "nl_tc_ingress";
constexpr const char* k_tc_egress_program = "nl_tc_egress";

enum class tc_errc : uint8_t {
  failed,
  // Classic TC only: the device has no clsact qdisc and the options do not allow creating one.
  // Nothing was attached; not a failure of the device.
  no_clsact,
};
// The message names the step, the device and the namespace.
using tc_error = failure<tc_errc>;

struct tc_load_options {
  uint32_t max_flows = 65536; // flows kept at most (the map's size); one more is counted as a
                              // failed insert
  bool use_tcx = true;        // TCX links where the kernel has them; false: classic TC filters
  bool create_clsact = false; // classic TC: create a clsact qdisc on a device that has none
};

// One flow's counts, summed over CPUs.
struct tc_flow {
  nl_tc_flow_key key{};
  uint64_t packets = 0;
  uint64_t bytes = 0;
  uint64_t last_ns = 0; // CLOCK_MONOTONIC of the flow's last packet (the latest over CPUs)
};

class tc_attach {
public:
  static std::variant<std::unique_ptr<tc_attach>, tc_error> load(const tc_load_options& opts = {});
  ~tc_attach();
  tc_attach(const tc_attach&) = delete;
  tc_attach& operator=(const tc_attach&) = delete;

  // Attaches ingress and egress on device ifindex of the namespace netns_fd (-1: the calling
  // thread's): two TCX links, first in the device's chain, or classic TC filters (the clsact
  // qdisc created only if the options allow; else an error with no_clsact set). Attaching
  // twice is a no-op.
  // The netlink calls run on a short-lived thread that enters the namespace: the caller's
  // thread never changes namespace. The namespace is kept open until the device is detached.
  std::optional<tc_error> attach(int ifindex, int netns_fd);
  // Removes what this object attached on that device: its TCX links closed, or its classic
  // filters, after checking that the filter at netlens's handle and priority still carries
  // this object's program. A device or namespace that is gone has taken them with it: that is
  // success. A clsact qdisc stays (other tools' filters may hang on it).
  std::optional<tc_error> detach(int ifindex, int netns_fd);
  // The same, for a namespace known by inode: the attachment keeps its own handle on it, so
  // this works after the caller's handle is closed.
  std::optional<tc_error> detach_inode(uint32_t netns_inode, int ifindex);
  // Removes, on every device of the namespace, the filters at netlens's handle and priority
  // whose program has a netlens program name and is not one of this object's: the filters of
  // a killed earlier run. Returns how many were removed.
  std::variant<size_t, tc_error> remove_leftovers(int netns_fd);
  // Detaches every device (as the destructor does); the first error, having tried them all.
  std::optional<tc_error> detach_all();

  // Every flow counted so far.
  std::vector<tc_flow> read_flows() const;
  // Deletes every flow whose last packet is older than now (CLOCK_MONOTONIC) - idle_ns and
  // returns how many went: without it the map only grows until new flows no longer fit.
  size_t remove_idle(uint64_t idle_ns);
  nl_tc_counters read_counters() const;
  size_t attached_devices() const { return attached_.size(); }
  // True when attachments are TCX links; false: classic TC filters in clsact qdiscs.
  bool uses_tcx() const { return tcx_; }
  // Why classic TC is used (empty with TCX): the kernel's answer to the TCX probe, or the
  // options.
  const std::string& classic_reason() const { return classic_reason_; }
  uint32_t ingress_program_id() const { return ingress_id_; }
  uint32_t egress_program_id() const { return egress_id_; }

private:
  struct attachment {
    int netns_fd = -1; // owned (a dup, or the caller's namespace opened)
    uint32_t netns_inode = 0;
    int ifindex = 0;
    int ingress_link = -1; // TCX: the links, owned; closing them detaches
    int egress_link = -1;
  };

  tc_attach() = default;
  std::optional<tc_error> detach_one(const attachment& a);
  std::optional<tc_error> attach_tcx(attachment& a, const std::string& at);
  std::optional<tc_error> attach_classic(const attachment& a, const std::string& at);
  static void release(attachment& a);
  bool read_flow(const nl_tc_flow_key& key, std::vector<nl_tc_flow_value>& per_cpu,
                 tc_flow& out) const;

  bpf_object* obj_ = nullptr;
  bpf_map* flows_ = nullptr;
  bpf_map* counters_ = nullptr;
  int ingress_fd_ = -1;
  int egress_fd_ = -1;
  uint32_t ingress_id_ = 0;
  uint32_t egress_id_ = 0;
  int ncpus_ = 1;
  bool tcx_ = false;
  bool create_clsact_ = false;
  std::string classic_reason_;
  std::vector<attachment> attached_;
};

} // namespace netlens
