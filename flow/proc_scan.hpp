// One pass over /proc listing every process with its network namespace inode, built for hosts
// with 100k processes (the reference agent's scan timed out there): the directory is read with
// getdents64 into one reused buffer and each process costs a single readlinkat of <pid>/ns/net
// on the /proc dirfd ("net:[<inode>]"). Anything else (comm, the container id) is read only when
// asked for. No CAF.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "flow/unique_fd.hpp"

namespace netlens {

struct proc_process {
  pid_t pid = 0;
  uint32_t netns_inode = 0; // nsfs inode of /proc/<pid>/ns/net
  std::string comm;         // only when proc_scan_options::comm
};

struct proc_scan_options {
  bool comm = true; // one open+read of <pid>/comm per process
};

struct proc_scan_stats {
  size_t processes = 0;     // handed to the visitor
  size_t without_netns = 0; // listed, but gone or a zombie by the time it was read
  std::string error;        // a failed directory read: the scan stopped there
};

class proc_scanner {
public:
  // Opens the proc root (another path serves tests that lay out a fake tree). An error names
  // the path and the cause.
  static std::variant<proc_scanner, std::string> open(const std::string& root = "/proc");

  // Calls visit once per process that still has a network namespace when it is reached.
  // Processes born during the scan may or may not be listed; the exec events cover them.
  proc_scan_stats scan(const proc_scan_options& opts,
                       const std::function<void(const proc_process&)>& visit);

  // The lazy parts, for the processes the caller cares about. nullopt: the process is gone.
  std::optional<std::string> comm(pid_t pid) const;
  // The text of <pid>/cgroup (actors/netns/container_id reads the container from it).
  std::optional<std::string> cgroup(pid_t pid) const;
  // nsfs inode of pid's namespace, 0 when it is gone.
  uint32_t netns_inode(pid_t pid) const;

  proc_scanner(proc_scanner&& other) noexcept = default;
  proc_scanner& operator=(proc_scanner&& other) noexcept = default;
  proc_scanner(const proc_scanner&) = delete;
  proc_scanner& operator=(const proc_scanner&) = delete;

private:
  explicit proc_scanner(int root_fd);
  std::optional<std::string> read_small(pid_t pid, const char* file, size_t limit) const;

  unique_fd root_fd_;
  std::vector<char> dents_; // getdents64 buffer, kept between scans
};

} // namespace netlens
