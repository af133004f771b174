// The loaded connection tracer: owns the BPF object (programs, maps, links) and releases all
// of it on destruction, on every path. The only file that touches the tracer's objects, in
// each of their three builds (CO-RE, runtime-compiled, prebuilt).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "bpf/netlens_offsets.h"
#include "bpf/netlens_records.h"
#include "flow/active_table.hpp"
#include "flow/failure.hpp"
#include "flow/unique_fd.hpp"

struct bpf_object;
struct bpf_map;
struct bpf_link;

namespace netlens {

// Names what is missing or refused.
using load_error = failure<>;

// Which build of the tracer to load: how its programs reach kernel struct fields.
enum class tracer_build {
  core,     // tp_btf + CO-RE, embedded; needs the kernel's BTF
  runtime,  // raw_tp, compiled on this host (runtime_compiler): object passed in
  prebuilt, // raw_tp, embedded; offsets passed in (from the offset guesser)
};

const char* tracer_build_name(tracer_build b);

struct tracer_load_options {
  tracer_build build = tracer_build::core;
  nl_offsets offsets{};        // prebuilt: where each field is
  std::vector<uint8_t> object; // runtime: the compiled ELF
  // Kernel BTF libbpf resolves CO-RE relocations against; empty: the running kernel's. A test
  // points it at a file with no BTF to show the raw_tp builds do not need any.
  std::string btf_custom_path;
  uint32_t max_tracked_connections = 65536;
  bool use_perf = false;
  uint32_t ring_buffer_bytes = 4u << 20;
  uint32_t closed_batch_size = NL_BATCH_DEFAULT; // closed records per batch: per wakeup (ring),
                                                 // per sample (perf)
};

class tracer_object : public active_table {
public:
  static std::variant<std::unique_ptr<tracer_object>, load_error>
  load(const tracer_load_options& opts);
  ~tracer_object();
  tracer_object(const tracer_object&) = delete;
  tracer_object& operator=(const tracer_object&) = delete;

  tracer_build build() const { return build_; }
  bool uses_perf() const { return use_perf_; }
  int closed_ring_fd() const;
  int closed_perf_fd() const;
  // Perf mode: the per-CPU batches still filling (read before each connections answer).
  int closed_batches_fd() const;
  uint32_t max_entries() const { return max_entries_; }
  // False when no cgroup v2 hierarchy was found: UDP flows then end only by idle expiry.
  bool udp_release_attached() const { return static_cast<bool>(cgroup_fd_); }

  // Sums the per-CPU counters the programs keep about themselves.
  nl_tracer_counters read_counters() const;
  // Replaces out with every active connection, read from the map in batches.
  void read_active(std::vector<nl_conn>& out, uint32_t batch_size = 4096) const;
  // A read of the active map in pages, for callers that must not hold all of it at once.
  void read_active_page(active_cursor& cursor, std::vector<nl_conn>& out,
                        uint32_t max) const override;
  // CO-RE build: copies every counted TCP socket's live counters into its map entry (the send
  // and receive programs do not: they return at once on a socket already counted). read_active
  // and read_active_page do it first; the raw_tp builds count on every event and need nothing.
  // False with the reason in *why when the kernel refused the run.
  bool refresh_live(std::string* why = nullptr) const;
  // Refreshes the kernel refused since load, and the last reason (for /stats).
  uint64_t refresh_failures() const { return refresh_failures_; }
  const std::string& last_refresh_error() const { return last_refresh_error_; }
  // How many connections the map holds, counted a page at a time.
  size_t count_active() const;
  // Removes one active connection by its sock_id; false if it was not there (closed
  // meanwhile).
  bool remove_active(uint64_t sock_id) override;
  // The active map's fd, still owned here: for tests that plant what a missed close leaves.
  int active_fd() const;
  // The map key of a sock_id: the same on CO-RE (the cookie), the scramble undone on raw_tp.
  uint64_t key_of(uint64_t sock_id) const;
  // Kernel ids of the loaded programs, for tests and for leak checks.
  std::vector<uint32_t> program_ids() const;
  // Runs the kernel skipped because the program was already running on that CPU.
  uint64_t recursion_misses() const;

  // CO-RE: why sends and receives on a counted TCP socket still do the full work ("" when
  // they return at once and the counters are refreshed before each read of the map).
  const std::string& fast_tcp_off_reason() const { return fast_tcp_off_reason_; }
  bool fast_tcp() const { return refresh_link_ != nullptr; }

private:
  tracer_object() = default;
  static std::variant<std::unique_ptr<tracer_object>, load_error>
  load_attempt(const tracer_load_options& opts, bool fast_tcp);

  tracer_build build_ = tracer_build::core;
  bpf_object* obj_ = nullptr;
  bpf_map* active_ = nullptr;
  bpf_map* ring_ = nullptr;
  bpf_map* perf_ = nullptr;
  bpf_map* counters_ = nullptr;
  bpf_map* batches_ = nullptr;
  uint64_t id_xor_ = 0;
  uint64_t id_mul_inverse_ = 1;
  std::vector<bpf_link*> links_;
  bpf_link* refresh_link_ = nullptr; // CO-RE: the iterator over nl_tcp_marks (in links_ too)
  mutable uint64_t refresh_failures_ = 0;
  mutable std::string last_refresh_error_;
  std::string fast_tcp_off_reason_;
  unique_fd cgroup_fd_;
  bool use_perf_ = false;
  uint32_t max_entries_ = 0;
  int ncpus_ = 1;
};

// Where the cgroup v2 hierarchy is mounted, or "" if it is not.
std::string find_cgroup2_mount();

} // namespace netlens
