#include "actors/api/http_server.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace netlens {
namespace {

constexpr size_t k_max_request_bytes = 8192;
constexpr int k_read_timeout_ms = 2000;

std::string errno_text() {
  return std::strerror(errno);
}

std::string url_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && isxdigit(s[i + 1]) && isxdigit(s[i + 2])) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

const char* reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 413:
    return "Payload Too Large";
  case 503:
    return "Service Unavailable";
  default:
    return "Error";
  }
}

bool write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void send_response(int fd, const http_response& r) {
  std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) +
                     "\r\nContent-Type: " + r.content_type;
  if (!r.stream)
    head += "\r\nContent-Length: " + std::to_string(r.body.size());
  head += "\r\nConnection: close\r\n\r\n";
  if (!write_all(fd, head.data(), head.size()))
    return;
  if (r.stream)
    r.stream([fd](std::string_view piece) { return write_all(fd, piece.data(), piece.size()); });
  else
    write_all(fd, r.body.data(), r.body.size());
}

} // namespace

std::variant<http_request, std::string> parse_http_request(const std::string& head) {
  size_t eol = head.find("\r\n");
  if (eol == std::string::npos)
    return std::string("no request line");
  std::string line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos)
    return std::string("malformed request line");
  http_request req;
  req.method = line.substr(0, sp1);
  std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string version = line.substr(sp2 + 1);
  if (version.rfind("HTTP/1.", 0) != 0)
    return std::string("unsupported protocol version");
  if (target.empty() || target[0] != '/')
    return std::string("bad request target");
  size_t q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string::npos) {
    std::string query = target.substr(q + 1);
    size_t pos = 0;
    while (pos <= query.size()) {
      size_t amp = query.find('&', pos);
      std::string pair =
          query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
      if (!pair.empty()) {
        size_t eq = pair.find('=');
        req.query[url_decode(pair.substr(0, eq))] =
            eq == std::string::npos ? "" : url_decode(pair.substr(eq + 1));
      }
      if (amp == std::string::npos)
        break;
      pos = amp + 1;
    }
  }
  return req;
}

std::variant<std::unique_ptr<http_server>, std::string>
http_server::bind(const std::string& path, handler h, uint32_t allowed_uid) {
  auto listening = listen_private_socket(
      {path, allowed_uid, 64, "another netlens is already serving on " + path});
  if (auto* err = std::get_if<std::string>(&listening))
    return *err;
  std::unique_ptr<http_server> self(new http_server());
  self->path_ = path;
  self->handler_ = std::move(h);
  self->allowed_uid_ = allowed_uid;
  self->listen_fd_ = std::get<int>(listening);
  if (pipe2(self->wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0)
    return "pipe2(): " + errno_text();
  return self;
}

std::variant<std::unique_ptr<http_server>, std::string>
http_server::bind_tcp(const std::string& address, uint16_t port, handler h) {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    addr_len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    addr_len = sizeof(*v6);
  } else {
    return "\"" + address + "\" is not an IPv4 or IPv6 address";
  }
  std::string where =
      (addr.ss_family == AF_INET6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
  std::unique_ptr<http_server> self(new http_server());
  self->handler_ = std::move(h);
  self->check_peer_ = false;
  // Owned by self from here, so every return below closes it.
  self->listen_fd_ = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (self->listen_fd_ < 0)
    return "socket(): " + errno_text();
  int one = 1;
  // A restart must not wait for the previous listener's connections to leave TIME_WAIT.
  setsockopt(self->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // "::" must mean IPv6 only: serving IPv4 too would be a wider exposure than configured.
  if (addr.ss_family == AF_INET6)
    setsockopt(self->listen_fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (::bind(self->listen_fd_, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0)
    return "cannot bind " + where + ": " + errno_text();
  if (listen(self->listen_fd_, 64) != 0)
    return "cannot listen on " + where + ": " + errno_text();
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  if (getsockname(self->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0)
    return "getsockname(): " + errno_text();
  self->port_ =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (pipe2(self->wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0)
    return "pipe2(): " + errno_text();
  return self;
}

http_server::~http_server() {
  stop();
  for (int fd : wake_pipe_)
    if (fd >= 0)
      close(fd);
}

void http_server::start() {
  if (running_.exchange(true))
    return;
  thread_ = std::thread([this] { serve(); });
}

void http_server::stop() {
  if (running_.exchange(false) && wake_pipe_[1] >= 0) {
    char b = 1;
    (void)!write(wake_pipe_[1], &b, 1);
  }
  if (thread_.joinable())
    thread_.join();
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
    if (!path_.empty())
      unlink(path_.c_str());
  }
}

void http_server::serve() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
  while (running_.load()) {
    int n = poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (fds[1].revents)
      break;
    if (fds[0].revents & POLLIN) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        handle(fd);
        close(fd);
      }
    }
  }
}

void http_server::handle(int fd) {
  timeval tv{k_read_timeout_ms / 1000, (k_read_timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string head;
  char buf[2048];
  while (head.find("\r\n\r\n") == std::string::npos) {
    if (head.size() > k_max_request_bytes) {
      send_response(fd, {413, "text/plain", "request too large\n", {}});
      return;
    }
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return; // peer gone or too slow
    head.append(buf, static_cast<size_t>(n));
  }
  // Checked once the head is in: answering before reading it would close the socket with
  // unread data, which becomes a reset the client sees instead of the 403.
  ucred peer{};
  socklen_t len = sizeof(peer);
  if (check_peer_ && (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
                      (peer.uid != 0 && peer.uid != allowed_uid_))) {
    ++refused_;
    send_response(fd, {403,
                       "text/plain",
                       "uid " + std::to_string(peer.uid) +
                           " may not use this API (root, or agent.api_allowed_uid)\n",
                       {}});
    return;
  }
  ++requests_;
  auto parsed = parse_http_request(head);
  if (auto* err = std::get_if<std::string>(&parsed)) {
    send_response(fd, {400, "text/plain", *err + "\n", {}});
    return;
  }
  auto& req = std::get<http_request>(parsed);
  if (req.method != "GET") {
    send_response(fd, {405, "text/plain", "only GET is served\n", {}});
    return;
  }
  send_response(fd, handler_(req));
}

std::variant<http_result, std::string> http_get_unix(const std::string& socket_path,
                                                     const std::string& target, int timeout_ms) {
  sockaddr_un addr;
  if (!fill_unix_addr(socket_path, addr))
    return "socket path too long: " + socket_path;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return "socket(): " + errno_text();
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::string err =
        "cannot connect to " + socket_path + ": " + errno_text() + " (is netlens running?)";
    close(fd);
    return err;
  }
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: netlens\r\nConnection: close\r\n\r\n";
  if (!write_all(fd, req.data(), req.size())) {
    close(fd);
    return "sending the request: " + errno_text();
  }
  std::string resp;
  char buf[65536];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      close(fd);
      return "reading the response: " + errno_text();
    }
    if (n == 0)
      break;
    resp.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  size_t end = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos)
    return std::string("malformed response from the agent");
  http_result r;
  r.status = std::atoi(resp.c_str() + 9);
  r.body = resp.substr(end + 4);
  return r;
}

} // namespace netlens
