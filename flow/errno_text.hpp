// The system's words for an error number, for messages that name what failed and why.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>

namespace netlens {

// err or -err: libbpf and the netlink helpers return negative error numbers.
inline std::string errno_text(int err) {
  return std::strerror(err < 0 ? -err : err);
}

// The calling thread's errno, read at the call.
inline std::string errno_text() {
  return errno_text(errno);
}

} // namespace netlens
