// Where the cgroup v2 hierarchy is mounted, from /proc/self/mounts ("" when it is not): the
// cgroup socket programs attach under it.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

namespace netlens {

inline std::string find_cgroup2_mount() {
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string source, target, type;
    fields >> source >> target >> type;
    if (type == "cgroup2")
      return target;
  }
  return "";
}

} // namespace netlens
