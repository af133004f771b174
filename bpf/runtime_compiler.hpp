// The tracer's runtime build: netlens compiles its embedded BPF source on the host it runs on,
// with the host's clang, against a vmlinux.h it generates from the kernel's BTF or, on a kernel
// without BTF, against the kernel's headers (/lib/modules/<release>/build), and caches the
// object by kernel release and source hash. Field offsets are then compile-time constants of
// this very kernel (tracer_access.bpf.h, NL_MODE_RUNTIME).
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace netlens {

struct embedded_source {
  const char* name; // file name the source includes it by
  const char* text;
};

// The tracer source and the libbpf headers it includes (generated at build time).
const std::vector<embedded_source>& runtime_tracer_sources();

struct runtime_build_options {
  std::string cache_dir = "/var/cache/netlens";
  std::string btf_path = "/sys/kernel/btf/vmlinux";
  std::string clang;          // empty: the first clang, clang-NN found in PATH
  std::string kernel_release; // empty: uname -r
  bool use_cache = true;      // false: always compile (and still store the result)
  // The kernel's header tree; empty: /lib/modules/<release>/build. Used when there is no BTF
  // at btf_path, or always when prefer_kernel_headers is set.
  std::string kernel_headers_dir;
  bool prefer_kernel_headers = false;
};

struct runtime_build {
  std::vector<uint8_t> object; // the ELF to load
  std::string path;            // where it is cached
  bool from_cache = false;
  bool rebuilt_corrupt = false; // a cached entry failed its checksum and was rebuilt
  uint64_t compile_us = 0;      // 0 when it came from the cache
  std::string types_from;       // "BTF <path>" or "kernel headers <dir>"
};

// The object, from the cache or freshly compiled. An error says what is missing (no clang, no
// BTF or kernel headers) or shows the compiler's last lines.
std::variant<runtime_build, std::string> build_runtime_tracer(const runtime_build_options& opts);

// Name of the cache entry for this kernel release, these sources and where the kernel's types
// come from.
std::string runtime_cache_name(const std::string& kernel_release, bool kernel_headers);

} // namespace netlens
