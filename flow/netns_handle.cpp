#include "flow/netns_handle.hpp"
#include "flow/errno_text.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace netlens {

namespace {

std::string ns_path(pid_t pid) {
  return "/proc/" + std::to_string(pid) + "/ns/net";
}

netns_error from_errno(pid_t pid, const char* what, int e) {
  netns_error err;
  err.sys_errno = e;
  switch (e) {
  case ENOENT:
  case ESRCH:
    err.code = netns_errc::no_such_process;
    break;
  case EACCES:
  case EPERM:
    err.code = netns_errc::permission_denied;
    break;
  default:
    err.code = netns_errc::system_error;
  }
  err.message = "netns of pid " + std::to_string(pid) + ": " + what + " " + ns_path(pid) + ": " +
                errno_text(e);
  if (err.code == netns_errc::no_such_process)
    err.message += " (process gone)";
  return err;
}

} // namespace

const char* to_string(netns_errc c) {
  switch (c) {
  case netns_errc::no_such_process:
    return "no_such_process";
  case netns_errc::permission_denied:
    return "permission_denied";
  case netns_errc::inode_changed:
    return "inode_changed";
  case netns_errc::system_error:
    return "system_error";
  }
  return "unknown";
}

uint32_t netns_handle::inode_of_pid(pid_t pid, netns_error* err) {
  struct stat st {};
  if (pid <= 0) {
    if (err)
      *err = from_errno(pid, "stat", ESRCH);
    return 0;
  }
  if (stat(ns_path(pid).c_str(), &st) != 0) {
    if (err)
      *err = from_errno(pid, "stat", errno);
    return 0;
  }
  return static_cast<uint32_t>(st.st_ino);
}

std::variant<netns_handle, netns_error> netns_handle::open_for_pid(pid_t pid) {
  netns_error err;
  const uint32_t inode = inode_of_pid(pid, &err);
  if (inode == 0)
    return err;
  return open_for_pid(pid, inode);
}

std::variant<netns_handle, netns_error> netns_handle::open_for_pid(pid_t pid,
                                                                   uint32_t expected_inode) {
  if (pid <= 0)
    return from_errno(pid, "open", ESRCH);
  const int fd = open(ns_path(pid).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return from_errno(pid, "open", errno);
  netns_handle h(fd, 0, pid); // owns fd from here, so every return below closes it
  struct stat st {};
  if (fstat(fd, &st) != 0)
    return from_errno(pid, "fstat", errno);
  const auto opened = static_cast<uint32_t>(st.st_ino);
  if (opened != expected_inode) {
    netns_error e;
    e.code = netns_errc::inode_changed;
    e.message = "netns of pid " + std::to_string(pid) + ": expected inode " +
                std::to_string(expected_inode) + ", opened " + std::to_string(opened) +
                " (the process moved to another namespace, or died and its pid was reused)";
    return e;
  }
  h.inode_ = opened;
  return h;
}

netns_handle::netns_handle(netns_handle&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), inode_(std::exchange(other.inode_, 0)),
      pid_(std::exchange(other.pid_, 0)) {}

netns_handle& netns_handle::operator=(netns_handle&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
    inode_ = std::exchange(other.inode_, 0);
    pid_ = std::exchange(other.pid_, 0);
  }
  return *this;
}

void netns_handle::reset() {
  if (fd_ >= 0)
    close(fd_);
  fd_ = -1;
  inode_ = 0;
  pid_ = 0;
}

} // namespace netlens
