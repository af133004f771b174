// The cgroup v2 directory this process runs in, or why there is none: the offset guesser's
// drop program attaches there, so it sees only the guesser's own packets (and those of its
// cgroup siblings). No CAF.
#pragma once

#include <istream>
#include <string>

namespace netlens {

// Where a process sits in the cgroup v2 hierarchy: dir when found, else error says why not.
struct cgroup_dir_lookup {
  std::string dir;   // <cgroup2 mount><path from /proc/self/cgroup>, when found
  std::string error; // "no cgroup v2 hierarchy is mounted", "this process has no cgroup v2 path"
  bool found() const { return error.empty(); }
};

// The directory from where cgroup2 is mounted ("" when it is not) and the text of a
// /proc/<pid>/cgroup file (its "0::<path>" line).
cgroup_dir_lookup cgroup_dir_of(const std::string& cgroup2_mount, std::istream& proc_cgroup);

// This process's own: find_cgroup2_mount() and /proc/self/cgroup.
cgroup_dir_lookup own_cgroup_dir();

} // namespace netlens
