// The cgroup v2 directory of a process, from the cgroup2 mount point and /proc/<pid>/cgroup.
#include <catch2/catch.hpp>

#include <sstream>

#include "actors/offset_guesser/own_cgroup.hpp"

using namespace netlens;

TEST_CASE("the cgroup v2 directory is the mount point and the 0:: path", "[offset_guesser]") {
  std::istringstream unified("0::/system.slice/netlens.service\n");
  cgroup_dir_lookup r = cgroup_dir_of("/sys/fs/cgroup", unified);
  CHECK(r.found());
  CHECK(r.dir == "/sys/fs/cgroup/system.slice/netlens.service");

  // A hybrid host lists v1 hierarchies first.
  std::istringstream hybrid("12:memory:/user.slice\n1:name=systemd:/user.slice/s.scope\n0::/\n");
  cgroup_dir_lookup root = cgroup_dir_of("/sys/fs/cgroup/unified", hybrid);
  CHECK(root.found());
  CHECK(root.dir == "/sys/fs/cgroup/unified/");
}

TEST_CASE("no cgroup v2 directory says why", "[offset_guesser]") {
  std::istringstream unified("0::/system.slice/netlens.service\n");
  cgroup_dir_lookup unmounted = cgroup_dir_of("", unified);
  CHECK_FALSE(unmounted.found());
  CHECK(unmounted.error == "no cgroup v2 hierarchy is mounted");

  std::istringstream v1_only("12:memory:/user.slice\n1:name=systemd:/user.slice\n");
  cgroup_dir_lookup no_path = cgroup_dir_of("/sys/fs/cgroup", v1_only);
  CHECK_FALSE(no_path.found());
  CHECK(no_path.error == "this process has no cgroup v2 path");
}
