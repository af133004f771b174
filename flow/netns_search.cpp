#include "flow/netns_search.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include "flow/proc_scan.hpp"

namespace netlens {

namespace {

// path opened and adopted when it names namespace inode.
std::optional<netns_handle> open_if(const std::string& path, uint32_t inode, pid_t pid) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return std::nullopt;
  netns_handle h = netns_handle::adopt(fd, inode, pid);
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint32_t>(st.st_ino) != inode)
    return std::nullopt; // h closes it
  return h;
}

// The first handle try(path) gives for an entry of dir.
template <typename Try>
std::optional<netns_handle> first_in(const std::string& dir, Try&& try_path) {
  DIR* d = opendir(dir.c_str());
  if (!d)
    return std::nullopt;
  std::optional<netns_handle> found;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.')
      continue;
    if ((found = try_path(dir + "/" + e->d_name)))
      break;
  }
  closedir(d);
  return found;
}

std::optional<netns_handle> by_name(const std::string& dir, uint32_t inode) {
  return first_in(dir, [inode](const std::string& path) -> std::optional<netns_handle> {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0 || static_cast<uint32_t>(st.st_ino) != inode)
      return std::nullopt;
    return open_if(path, inode, 0);
  });
}

std::optional<netns_handle> by_process(const std::string& proc, uint32_t inode, std::string& why) {
  auto scanner = proc_scanner::open(proc);
  if (auto* err = std::get_if<std::string>(&scanner)) {
    why = *err;
    return std::nullopt;
  }
  std::optional<netns_handle> found;
  auto& s = std::get<proc_scanner>(scanner);
  s.scan({false}, [&](const proc_process& p) {
    if (!found && p.netns_inode == inode)
      found = open_if(proc + "/" + std::to_string(p.pid) + "/ns/net", inode, p.pid);
  });
  return found;
}

std::optional<netns_handle> by_own_fd(const std::string& proc, uint32_t inode) {
  const std::string want = "net:[" + std::to_string(inode) + "]";
  return first_in(proc + "/" + std::to_string(getpid()) + "/fd",
                  [&](const std::string& path) -> std::optional<netns_handle> {
                    char target[64];
                    const ssize_t n = readlink(path.c_str(), target, sizeof target);
                    if (n <= 0 || std::string(target, static_cast<size_t>(n)) != want)
                      return std::nullopt;
                    return open_if(path, inode, getpid());
                  });
}

} // namespace

std::variant<netns_handle, netns_error> find_netns(uint32_t inode,
                                                   const netns_search_roots& roots) {
  // Cheapest first: the agent's own descriptors (the netns actor holds every namespace it
  // serves), the names, and only then a pass over every process.
  if (auto h = by_own_fd(roots.proc, inode))
    return std::move(*h);
  if (auto h = by_name(roots.run_netns, inode))
    return std::move(*h);
  std::string why;
  if (auto h = by_process(roots.proc, inode, why))
    return std::move(*h);
  netns_error err;
  err.code = netns_errc::no_such_process;
  err.message = "network namespace " + std::to_string(inode) + ": no name under " +
                roots.run_netns + ", no process in it, and no descriptor of ours on it" +
                (why.empty() ? std::string() : " (" + why + ")");
  return err;
}

} // namespace netlens
