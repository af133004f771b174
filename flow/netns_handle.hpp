// One open network-namespace fd (/proc/<pid>/ns/net), owned: it keeps the namespace alive and
// reachable (setns, netlink sockets inside it) after every process in it has gone. Closed by
// the destructor on every path. No CAF.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "flow/failure.hpp"
#include <variant>

namespace netlens {

enum class netns_errc {
  system_error,      // anything else; sys_errno says what
  no_such_process,   // the pid is gone (or a zombie: it has no namespaces any more)
  permission_denied, // no ptrace access to the process (not root, or a stricter LSM)
  inode_changed,     // the process moved to another namespace (or died and its pid was reused)
};
const char* to_string(netns_errc c);

// The message names the pid and the cause.
using netns_error = failure<netns_errc>;

class netns_handle {
public:
  // Looks the namespace inode of pid up (stat of /proc/<pid>/ns/net), then opens it and checks
  // the open fd names the same inode.
  static std::variant<netns_handle, netns_error> open_for_pid(pid_t pid);

  // Opens the namespace of pid and refuses it unless its inode is expected_inode: the caller
  // learnt the inode earlier (a /proc scan, an exec event) and the process may have moved or
  // died since; a handle on another namespace would be filed under the wrong inode.
  static std::variant<netns_handle, netns_error> open_for_pid(pid_t pid, uint32_t expected_inode);

  // The namespace inode of pid without opening anything; 0 with err set when it cannot be read.
  static uint32_t inode_of_pid(pid_t pid, netns_error* err = nullptr);

  // Takes ownership of an fd the caller opened some other way (a bind mount under /run/netns, an
  // fd received from another process); the caller vouches that it names namespace inode.
  static netns_handle adopt(int fd, uint32_t inode, pid_t pid = 0) { return {fd, inode, pid}; }

  netns_handle() = default;
  ~netns_handle() { reset(); }
  netns_handle(netns_handle&& other) noexcept;
  netns_handle& operator=(netns_handle&& other) noexcept;
  netns_handle(const netns_handle&) = delete;
  netns_handle& operator=(const netns_handle&) = delete;

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }            // still owned by this handle
  uint32_t inode() const { return inode_; } // nsfs inode, as the kernel tags sockets with
  pid_t opened_from() const { return pid_; }

  // Closes the fd now (the destructor does it otherwise).
  void reset();

private:
  netns_handle(int fd, uint32_t inode, pid_t pid) : fd_(fd), inode_(inode), pid_(pid) {}

  int fd_ = -1;
  uint32_t inode_ = 0;
  pid_t pid_ = 0;
};

} // namespace netlens
