// Descriptors this process holds open now (the one reading /proc/self/fd not counted): what a
// leak check compares before and after.
#pragma once

#include <dirent.h>

#include <cstddef>
#include <cstdlib>

namespace netlens::testing {

inline size_t open_fds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d)
    return 0;
  while (dirent* e = readdir(d))
    n += e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d);
  closedir(d);
  return n;
}

} // namespace netlens::testing
