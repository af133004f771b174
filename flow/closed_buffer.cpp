#include "flow/closed_buffer.hpp"

#include <fcntl.h>

#include "flow/errno_text.hpp"

namespace netlens {

std::variant<std::shared_ptr<const closed_buffer>, std::string>
closed_buffer::share(const closed_buffer_info& info) {
  std::shared_ptr<closed_buffer> b(new closed_buffer());
  b->settings_ = info;
  b->map_.reset(fcntl(info.map_fd, F_DUPFD_CLOEXEC, 0));
  if (!b->map_)
    return std::string("duplicating the closed-buffer map fd: ") + errno_text();
  if (info.batches_fd >= 0) {
    b->batches_.reset(fcntl(info.batches_fd, F_DUPFD_CLOEXEC, 0));
    if (!b->batches_)
      return std::string("duplicating the batch map fd: ") + errno_text();
  }
  b->settings_.map_fd = b->settings_.batches_fd = -1;
  return std::shared_ptr<const closed_buffer>(std::move(b));
}

} // namespace netlens
