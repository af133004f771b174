// The tracer's runtime build (tracer.mode = "runtime"): time to compile it cold (vmlinux.h
// from BTF, then clang) and to take it from the cache, on this host. Prints median and max.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "bpf/runtime_compiler.hpp"

using namespace netlens;

namespace {

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// Human line, then the line bench/run_all collects (no target: the issue asks for the figure).
void report(const char* what, std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  std::printf("%-28s median %8.1f ms   max %8.1f ms   (%zu runs)\n", what, ms[ms.size() / 2],
              ms.back(), ms.size());
  std::printf("RESULT|runtime_compile|%s, median of %zu|%.1f|ms|-|-\n", what, ms.size(),
              ms[ms.size() / 2]);
}

} // namespace

int main(int argc, char** argv) {
  int cold_runs = argc > 1 ? std::atoi(argv[1]) : 5;
  int cached_runs = argc > 2 ? std::atoi(argv[2]) : 50;
  std::string tmpl = (std::filesystem::temp_directory_path() / "netlens-bench.XXXXXX").string();
  if (!mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    return 1;
  }
  runtime_build_options opts;
  opts.cache_dir = tmpl;
  std::vector<double> cold, cached;
  int rc = 0;
  for (int i = 0; i < cold_runs && rc == 0; ++i) {
    opts.use_cache = false;
    auto start = std::chrono::steady_clock::now();
    auto built = build_runtime_tracer(opts);
    cold.push_back(ms_since(start));
    if (auto* err = std::get_if<std::string>(&built)) {
      std::fprintf(stderr, "runtime build failed: %s\n", err->c_str());
      rc = 1;
    }
  }
  for (int i = 0; i < cached_runs && rc == 0; ++i) {
    opts.use_cache = true;
    auto start = std::chrono::steady_clock::now();
    auto built = build_runtime_tracer(opts);
    cached.push_back(ms_since(start));
    if (!std::holds_alternative<runtime_build>(built) ||
        !std::get<runtime_build>(built).from_cache) {
      std::fprintf(stderr, "expected a cache hit\n");
      rc = 1;
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  if (rc != 0)
    return rc;
  report("runtime compile, cold", cold);
  report("runtime object, cached", cached);
  return 0;
}
