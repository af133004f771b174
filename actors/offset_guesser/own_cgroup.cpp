#include "actors/offset_guesser/own_cgroup.hpp"

#include <fstream>

#include "flow/cgroup2_mount.hpp"

namespace netlens {

cgroup_dir_lookup cgroup_dir_of(const std::string& cgroup2_mount, std::istream& proc_cgroup) {
  cgroup_dir_lookup r;
  if (cgroup2_mount.empty()) {
    r.error = "no cgroup v2 hierarchy is mounted";
    return r;
  }
  std::string line;
  while (std::getline(proc_cgroup, line))
    if (line.rfind("0::", 0) == 0) {
      r.dir = cgroup2_mount + line.substr(3);
      return r;
    }
  r.error = "this process has no cgroup v2 path";
  return r;
}

cgroup_dir_lookup own_cgroup_dir() {
  std::ifstream self("/proc/self/cgroup");
  return cgroup_dir_of(find_cgroup2_mount(), self);
}

} // namespace netlens
