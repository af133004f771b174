#include "flow/proc_scan.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "flow/errno_text.hpp"

namespace netlens {

namespace {

// Large enough that /proc with 100k processes is read in a few dozen calls.
constexpr size_t k_dents_bytes = 256 * 1024;
// comm is at most 16 bytes; a cgroup file with every v1 hierarchy and deep paths stays far below.
constexpr size_t k_comm_limit = 64;
constexpr size_t k_cgroup_limit = 64 * 1024;

// A pid directory name: digits only, no leading zero. Returns 0 for anything else.
pid_t parse_pid(const char* name) {
  if (name[0] < '1' || name[0] > '9')
    return 0;
  long v = 0;
  for (const char* p = name; *p; ++p) {
    if (*p < '0' || *p > '9' || v > (1L << 31) / 10)
      return 0;
    v = v * 10 + (*p - '0');
  }
  return v > 0x7fffffffL ? 0 : static_cast<pid_t>(v);
}

// "<pid>/<file>" into buf without allocating.
void pid_path(char (&buf)[64], pid_t pid, const char* file) {
  char digits[16];
  int n = 0;
  for (unsigned v = static_cast<unsigned>(pid); v != 0 || n == 0; v /= 10)
    digits[n++] = static_cast<char>('0' + v % 10);
  size_t at = 0;
  while (n > 0)
    buf[at++] = digits[--n];
  buf[at++] = '/';
  for (const char* f = file; *f && at + 1 < sizeof buf; ++f)
    buf[at++] = *f;
  buf[at] = '\0';
}

// The target of an ns link, "net:[4026531840]", to its inode; 0 for anything else.
uint32_t parse_ns_link(const char* s, ssize_t n) {
  constexpr char k_head[] = "net:[";
  constexpr ssize_t k_head_len = sizeof k_head - 1;
  if (n < k_head_len + 2 || std::memcmp(s, k_head, k_head_len) != 0 || s[n - 1] != ']')
    return 0;
  uint64_t v = 0;
  for (ssize_t i = k_head_len; i < n - 1; ++i) {
    if (s[i] < '0' || s[i] > '9' || v > 0xffffffffull)
      return 0;
    v = v * 10 + static_cast<uint64_t>(s[i] - '0');
  }
  return v > 0xffffffffull ? 0 : static_cast<uint32_t>(v);
}

} // namespace

std::variant<proc_scanner, std::string> proc_scanner::open(const std::string& root) {
  const int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return "open " + root + ": " + errno_text();
  return proc_scanner(fd);
}

proc_scanner::proc_scanner(int root_fd) : root_fd_(root_fd) {}

proc_scan_stats proc_scanner::scan(const proc_scan_options& opts,
                                   const std::function<void(const proc_process&)>& visit) {
  proc_scan_stats stats;
  if (lseek(root_fd_.get(), 0, SEEK_SET) != 0) {
    stats.error = std::string("rewinding the proc root: ") + errno_text();
    return stats;
  }
  dents_.resize(k_dents_bytes);
  proc_process proc;
  for (;;) {
    const ssize_t n = getdents64(root_fd_.get(), dents_.data(), dents_.size());
    if (n == 0)
      break;
    if (n < 0) {
      stats.error = std::string("reading the proc root: ") + errno_text();
      break;
    }
    for (ssize_t at = 0; at < n;) {
      const auto* d = reinterpret_cast<const dirent64*>(dents_.data() + at);
      at += d->d_reclen;
      if (d->d_type != DT_DIR && d->d_type != DT_UNKNOWN)
        continue;
      const pid_t pid = parse_pid(d->d_name);
      if (pid == 0)
        continue;
      const uint32_t inode = netns_inode(pid);
      if (inode == 0) {
        ++stats.without_netns;
        continue;
      }
      proc.pid = pid;
      proc.netns_inode = inode;
      proc.comm.clear();
      if (opts.comm) {
        if (auto c = comm(pid))
          proc.comm = std::move(*c);
      }
      ++stats.processes;
      visit(proc);
    }
  }
  return stats;
}

std::optional<std::string> proc_scanner::read_small(pid_t pid, const char* file,
                                                    size_t limit) const {
  char path[64];
  pid_path(path, pid, file);
  const int fd = openat(root_fd_.get(), path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return std::nullopt;
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      close(fd);
      return std::nullopt; // ESRCH: it died while we read
    }
    if (n == 0 || out.size() >= limit)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

std::optional<std::string> proc_scanner::comm(pid_t pid) const {
  auto c = read_small(pid, "comm", k_comm_limit);
  if (c && !c->empty() && c->back() == '\n')
    c->pop_back();
  return c;
}

std::optional<std::string> proc_scanner::cgroup(pid_t pid) const {
  return read_small(pid, "cgroup", k_cgroup_limit);
}

uint32_t proc_scanner::netns_inode(pid_t pid) const {
  char path[64];
  pid_path(path, pid, "ns/net");
  // Reading the link's text is cheaper than following it (a third less time per process
  // here): the kernel formats the inode without reaching into nsfs.
  char target[32];
  const ssize_t n = readlinkat(root_fd_.get(), path, target, sizeof target);
  if (n > 0)
    if (const uint32_t inode = parse_ns_link(target, n); inode != 0)
      return inode;
  if (n < 0 && errno != EINVAL)
    return 0; // gone, or a zombie
  // Not a link of that shape (a tree laid out by hand): the inode of what the path names.
  struct stat st {};
  if (fstatat(root_fd_.get(), path, &st, 0) != 0)
    return 0;
  return static_cast<uint32_t>(st.st_ino);
}

} // namespace netlens
