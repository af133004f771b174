#include "actors/tracer/tracer_loader.hpp"

#include <spdlog/spdlog.h>

#include <utility>

namespace netlens {

const char* tracer_mode_name(tracer_mode mode) {
  switch (mode) {
  case tracer_mode::auto_select:
    return "auto";
  case tracer_mode::core:
    return "core";
  case tracer_mode::runtime:
    return "runtime";
  case tracer_mode::prebuilt:
    return "prebuilt";
  }
  return "?";
}

tracer_loader::tracer_loader(tracer_mode mode, tracer_load_options base,
                             runtime_build_options runtime)
    : mode_(mode), base_(std::move(base)), runtime_(std::move(runtime)) {}

bool tracer_loader::allows(tracer_build build) const {
  switch (mode_) {
  case tracer_mode::auto_select:
    return true;
  case tracer_mode::core:
    return build == tracer_build::core;
  case tracer_mode::runtime:
    return build == tracer_build::runtime;
  case tracer_mode::prebuilt:
    return build == tracer_build::prebuilt;
  }
  return false;
}

void tracer_loader::disable(tracer_build build, std::string why) {
  disabled_.emplace_back(build, std::move(why));
}

bool tracer_loader::refused(tracer_build build) {
  for (const auto& [b, why] : disabled_) {
    if (b == build) {
      reasons_.push_back(std::string(tracer_build_name(build)) + ": " + why);
      return true;
    }
  }
  return false;
}

std::unique_ptr<tracer_object> tracer_loader::attempt(tracer_build build,
                                                      tracer_load_options opts) {
  if (refused(build))
    return nullptr;
  opts.build = build;
  auto loaded = tracer_object::load(opts);
  if (auto* err = std::get_if<load_error>(&loaded)) {
    reasons_.push_back(std::string(tracer_build_name(build)) + ": " + err->message);
    return nullptr;
  }
  used_ = build;
  return std::move(std::get<std::unique_ptr<tracer_object>>(loaded));
}

std::unique_ptr<tracer_object> tracer_loader::try_without_offsets() {
  if (allows(tracer_build::core))
    if (auto t = attempt(tracer_build::core, base_))
      return t;
  if (allows(tracer_build::runtime) && !refused(tracer_build::runtime)) {
    auto built = build_runtime_tracer(runtime_);
    if (auto* err = std::get_if<std::string>(&built)) {
      reasons_.push_back("runtime: " + *err);
    } else {
      runtime_info_ = std::move(std::get<runtime_build>(built));
      runtime_ok_ = true;
      tracer_load_options opts = base_;
      opts.object = runtime_info_.object;
      opts.build = tracer_build::runtime;
      auto loaded = tracer_object::load(opts);
      if (auto* err = std::get_if<load_error>(&loaded)) {
        reasons_.push_back("runtime: " + err->message);
      } else {
        used_ = tracer_build::runtime;
        return std::move(std::get<std::unique_ptr<tracer_object>>(loaded));
      }
    }
  }
  return nullptr;
}

bool tracer_loader::wants_offsets() const {
  return allows(tracer_build::prebuilt);
}

std::unique_ptr<tracer_object>
tracer_loader::try_prebuilt(const std::variant<nl_offsets, std::string>& offsets) {
  if (!allows(tracer_build::prebuilt))
    return nullptr;
  if (auto* err = std::get_if<std::string>(&offsets)) {
    reasons_.push_back("prebuilt: " + *err);
    return nullptr;
  }
  tracer_load_options opts = base_;
  opts.offsets = std::get<nl_offsets>(offsets);
  return attempt(tracer_build::prebuilt, std::move(opts));
}

std::string tracer_loader::failure() const {
  std::string out =
      mode_ == tracer_mode::auto_select
          ? "no tracer mode works"
          : std::string("tracer.mode = \"") + tracer_mode_name(mode_) + "\" is not available here";
  for (const auto& r : reasons_)
    out += "; " + r;
  return out;
}

std::vector<std::pair<std::string, std::string>>
tracer_loader::report(const tracer_object& loaded) const {
  std::vector<std::pair<std::string, std::string>> info;
  const char* build = tracer_build_name(loaded.build());
  info.emplace_back("mode", build);
  info.emplace_back("mode_configured", tracer_mode_name(mode_));
  for (const auto& why : reasons_) {
    spdlog::warn("tracer: skipped {}", why);
    info.emplace_back("skipped_" + why.substr(0, why.find(':')), why.substr(why.find(':') + 2));
  }
  if (const runtime_build* rt = runtime_info(); rt && loaded.build() == tracer_build::runtime) {
    info.emplace_back("runtime_object", rt->path);
    info.emplace_back("runtime_from_cache", rt->from_cache ? "true" : "false");
    if (!rt->types_from.empty())
      info.emplace_back("runtime_types_from", rt->types_from);
    if (rt->rebuilt_corrupt)
      spdlog::warn("tracer: the cached runtime object {} was corrupt; rebuilt it", rt->path);
    if (!rt->from_cache)
      spdlog::info("tracer: compiled the runtime tracer in {} ms", rt->compile_us / 1000);
  }
  if (!loaded.udp_release_attached())
    spdlog::warn("tracer: no cgroup v2 hierarchy mounted; UDP flows end only by idle expiry");
  if (loaded.build() == tracer_build::core) {
    // Where the kernel has no iterator over open files, every TCP send and receive reads the
    // socket's counters, as the raw_tp builds always do.
    info.emplace_back("tcp_fast_path", loaded.fast_tcp() ? "on" : "off");
    if (!loaded.fast_tcp()) {
      info.emplace_back("tcp_fast_path_off_because", loaded.fast_tcp_off_reason());
      spdlog::warn("tracer: the TCP fast path is off, every send and receive counts: {}",
                   loaded.fast_tcp_off_reason());
    }
  }
  std::string ids;
  for (uint32_t id : loaded.program_ids())
    ids += (ids.empty() ? "" : ",") + std::to_string(id);
  spdlog::info("tracer: BPF programs loaded ({} build, {}), closed buffer: {}, program ids {}",
               build, loaded.build() == tracer_build::core ? "tp_btf" : "raw_tp",
               loaded.uses_perf() ? "perf" : "ring", ids);
  return info;
}

} // namespace netlens
