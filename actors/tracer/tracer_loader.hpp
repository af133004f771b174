// Chooses how the tracer is loaded: tracer.mode names one build (core, runtime, prebuilt) or
// "auto", which tries them in that order and keeps why each one it skipped failed. The
// prebuilt build needs offsets the offset guesser finds, which the tracer actor asks for only
// when it comes to that, so loading is two steps.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bpf/runtime_compiler.hpp"
#include "bpf/tracer_object.hpp"
#include "config/config.hpp"

namespace netlens {

class tracer_loader {
public:
  tracer_loader(tracer_mode mode, tracer_load_options base, runtime_build_options runtime);

  // Marks a build unusable before trying anything: a test build uses it to make a mode fail
  // as it would on a host without BTF or clang (build/netlens-fault only).
  void disable(tracer_build build, std::string why);

  // Tries, in order, the builds that need no offsets (core, runtime) that the mode allows.
  // Null when none of them loaded.
  std::unique_ptr<tracer_object> try_without_offsets();
  // True when nothing has loaded yet and the mode allows the prebuilt build.
  bool wants_offsets() const;
  // The prebuilt build with the guesser's answer (offsets, or why there are none).
  std::unique_ptr<tracer_object> try_prebuilt(const std::variant<nl_offsets, std::string>& offsets);

  // Why nothing loaded: each mode tried with its reason, on one line.
  std::string failure() const;
  // The reasons of the builds tried before the one that loaded ("core: ...").
  const std::vector<std::string>& skipped() const { return reasons_; }
  // Set once a build loaded.
  tracer_build used() const { return used_; }
  // The runtime build's compile, when it ran (from cache or compiled).
  const runtime_build* runtime_info() const { return runtime_ok_ ? &runtime_info_ : nullptr; }

  // How loaded (what this loader loaded) came to be, as /stats shows it: the build and the
  // mode configured, why the builds before it were skipped, the runtime object, the TCP fast
  // path. Logs the same, warnings for what the operator should know.
  std::vector<std::pair<std::string, std::string>> report(const tracer_object& loaded) const;

private:
  std::unique_ptr<tracer_object> attempt(tracer_build build, tracer_load_options opts);
  bool allows(tracer_build build) const;
  // True (and the reason noted) when a test disabled this build.
  bool refused(tracer_build build);

  std::vector<std::pair<tracer_build, std::string>> disabled_;
  tracer_mode mode_;
  tracer_load_options base_;
  runtime_build_options runtime_;
  std::vector<std::string> reasons_;
  tracer_build used_ = tracer_build::core;
  runtime_build runtime_info_;
  bool runtime_ok_ = false;
};

const char* tracer_mode_name(tracer_mode mode);

} // namespace netlens
