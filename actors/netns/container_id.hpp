// The container a process runs in, from the text of its /proc/<pid>/cgroup: the 64-hex id
// that docker, containerd (cri), cri-o and podman put in the cgroup path, under cgroup v1
// ("N:controllers:/path", one line per hierarchy) and v2 ("0::/path"). Pure: no file access.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "flow/proc_scan.hpp"

namespace netlens {

// The id (64 lowercase hex digits), or "" when the process is not in a container (host
// services, user sessions, a pod-level cgroup, a runtime's own monitor such as conmon).
std::string container_id_from_cgroup(std::string_view cgroup_file);

// The container of pid, read through scanner's /proc: "" when not in one, nullopt when the
// process is gone.
std::optional<std::string> container_id_of(const proc_scanner& scanner, pid_t pid);

} // namespace netlens
