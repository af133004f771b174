// Loads the tracer the way NETLENS_TEST_TRACER_MODE says (core, runtime or prebuilt; core when
// unset), so the same kernel tests prove each build. The runtime build compiles into a cache
// directory of this process, removed at exit; the prebuilt build takes the offsets the offset
// guesser finds on this kernel.
#pragma once

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "actors/offset_guesser/guess_offsets.hpp"
#include "actors/tracer/tracer_loader.hpp"

namespace netlens {

inline tracer_mode test_tracer_mode() {
  const char* env = std::getenv("NETLENS_TEST_TRACER_MODE");
  std::string mode = env ? env : "core";
  if (mode == "runtime")
    return tracer_mode::runtime;
  if (mode == "prebuilt")
    return tracer_mode::prebuilt;
  if (mode != "core")
    FAIL("NETLENS_TEST_TRACER_MODE must be core, runtime or prebuilt, not " << mode);
  return tracer_mode::core;
}

// A cache directory for this test process, removed when it exits.
inline const std::string& test_cache_dir() {
  struct dir {
    std::string path;
    dir() {
      std::string tmpl = (std::filesystem::temp_directory_path() / "netlens-test-cache.XXXXXX");
      if (mkdtemp(tmpl.data()))
        path = tmpl;
    }
    ~dir() {
      std::error_code ec;
      if (!path.empty())
        std::filesystem::remove_all(path, ec);
    }
  };
  static dir d;
  return d.path;
}

// A fresh guess on this kernel (no cache), as the agent's offset guesser makes it.
inline std::variant<nl_offsets, std::string> guess_offsets_for_test() {
  guess_settings settings;
  auto report = guess_offsets(settings);
  if (!report.ok)
    return report.error;
  return report.offsets;
}

inline std::unique_ptr<tracer_object> load_tracer_for_test(const tracer_load_options& opts) {
  runtime_build_options rt;
  rt.cache_dir = test_cache_dir();
  tracer_loader loader(test_tracer_mode(), opts, rt);
  auto t = loader.try_without_offsets();
  if (!t && loader.wants_offsets())
    t = loader.try_prebuilt(guess_offsets_for_test());
  if (!t)
    FAIL("loading the tracer: " << loader.failure());
  return t;
}

} // namespace netlens
