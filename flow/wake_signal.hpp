// Wakes threads blocked in poll(): an eventfd they poll beside their own descriptors. notify()
// makes it readable until clear(), so one notify wakes every thread polling it, now or later
// (a server's accept thread and all its sessions); a reader that must sleep again clears it.
// The one wake-up of netlens's threads; it owns its descriptor.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <variant>

#include "flow/errno_text.hpp"
#include "flow/unique_fd.hpp"

namespace netlens {

class wake_signal {
public:
  wake_signal() = default; // none: open() makes one

  // A fresh signal, not readable. An error names the call and the cause.
  static std::variant<wake_signal, std::string> open() {
    wake_signal w;
    w.fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!w.fd_)
      return "eventfd(): " + errno_text();
    return w;
  }

  int fd() const { return fd_.get(); }
  explicit operator bool() const { return static_cast<bool>(fd_); }

  // Readable from now until clear(). Never blocks (the counter cannot fill from here).
  void notify() const {
    const uint64_t one = 1;
    while (::write(fd_.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
  // Not readable any more, until the next notify().
  void clear() const {
    uint64_t value;
    while (::read(fd_.get(), &value, sizeof value) < 0 && errno == EINTR) {
    }
  }

private:
  unique_fd fd_;
};

} // namespace netlens
