// Network namespaces named PREFIX<pid> by a test or bench run that was killed before it could
// delete them: removed when their creator no longer exists. Shared by the kernel tests and the
// benches that build namespaces of their own.
#pragma once

#include <dirent.h>
#include <signal.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

namespace netlens::testing {

inline void remove_orphan_netns(const std::string& prefix) {
  DIR* dir = opendir("/run/netns");
  if (!dir)
    return;
  std::vector<std::string> orphans;
  while (dirent* e = readdir(dir)) {
    std::string n = e->d_name;
    if (n.rfind(prefix, 0) != 0)
      continue;
    pid_t owner = static_cast<pid_t>(std::atol(n.c_str() + prefix.size()));
    if (owner > 0 && kill(owner, 0) != 0 && errno == ESRCH)
      orphans.push_back(n);
  }
  closedir(dir);
  for (const auto& n : orphans)
    (void)!std::system(("ip netns del " + n + " 2>/dev/null").c_str());
}

} // namespace netlens::testing
