// The running kernel's release (uname -r), "unknown" when uname fails: the key of the offset
// guesser's cache and of the runtime-compiled tracer's cache.
#pragma once

#include <string>
#include <sys/utsname.h>

namespace netlens {

inline std::string kernel_release() {
  utsname u{};
  return uname(&u) == 0 ? u.release : "unknown";
}

} // namespace netlens
