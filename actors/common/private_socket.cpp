#include "actors/common/private_socket.hpp"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "flow/errno_text.hpp"

namespace netlens {

bool fill_unix_addr(const std::string& path, sockaddr_un& addr) {
  if (path.size() >= sizeof(addr.sun_path))
    return false;
  std::memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}

bool unix_socket_answers(const std::string& path) {
  sockaddr_un addr;
  if (!fill_unix_addr(path, addr))
    return false;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

std::variant<int, std::string> listen_private_socket(const private_socket_options& opts) {
  const std::string& path = opts.path;
  sockaddr_un addr;
  if (!fill_unix_addr(path, addr))
    return "socket path too long: " + path;
  // The directory is private to root: nobody can race us between bind and chmod.
  std::string dir = path.substr(0, path.find_last_of('/'));
  if (!dir.empty() && mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return "cannot create " + dir + ": " + errno_text(errno);
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return path + " exists and is not a socket";
    if (unix_socket_answers(path))
      return opts.busy_message;
    unlink(path.c_str()); // left behind by a process that died
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return "socket(): " + errno_text(errno);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    close(fd);
    return e == EADDRINUSE ? opts.busy_message : "cannot bind " + path + ": " + errno_text(e);
  }
  // The socket file exists from here: every error path below removes it.
  auto fail = [&](const std::string& what) -> std::variant<int, std::string> {
    std::string err = what + ": " + errno_text(errno);
    close(fd);
    unlink(path.c_str());
    return err;
  };
  if (chmod(path.c_str(), 0600) != 0)
    return fail("cannot chmod " + path);
  if (opts.allowed_uid != 0 &&
      (chown(path.c_str(), opts.allowed_uid, static_cast<gid_t>(-1)) != 0 ||
       (!dir.empty() && chmod(dir.c_str(), 0711) != 0)))
    return fail("cannot give uid " + std::to_string(opts.allowed_uid) + " access to " + path);
  if (listen(fd, opts.backlog) != 0)
    return fail("cannot listen on " + path);
  return fd;
}

} // namespace netlens
