#include "actors/tracer/tracer_loader.hpp"

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

} // namespace netlens
