// Which network devices get netlens's TC classifiers: the config's include and exclude lists of
// name prefixes (netns.tc_include, netns.tc_exclude). Pure.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace netlens {

// True when name starts with one of include (or include is empty) and with none of exclude:
// exclude wins.
inline bool device_selected(std::string_view name, const std::vector<std::string>& include,
                            const std::vector<std::string>& exclude) {
  auto starts = [&](const std::string& p) { return name.substr(0, p.size()) == p; };
  for (const auto& p : exclude)
    if (starts(p))
      return false;
  if (include.empty())
    return true;
  for (const auto& p : include)
    if (starts(p))
      return true;
  return false;
}

} // namespace netlens
