// The one error type the cores and loaders return (they never throw): a message that names the
// thing (the device, the pid, the program, the line) and the cause, fit for a log line or an
// answer as it is; a code where a caller must tell causes apart; the errno behind it where a
// system call failed. Code is the domain's own enum; without one, failure<>.
#pragma once

#include <cstdint>
#include <string>

namespace netlens {

enum class no_code : uint8_t { none };

template <class Code = no_code> struct failure {
  std::string message;
  Code code{}; // the enum's first value unless set: make it the general case
  int sys_errno = 0;
};

} // namespace netlens
