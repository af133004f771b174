#include "actors/api/http_server.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <system_error>
#include <unistd.h>
#include <vector>

#include "flow/errno_text.hpp"

namespace netlens {
namespace {

constexpr size_t k_max_request_bytes = 8192;
constexpr int k_stop_grace_ms = 1000; // for answers being written when the server stops

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

using steady = std::chrono::steady_clock;

// Blocking, for the client side (its socket has SO_SNDTIMEO).
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

enum class io { ok, closed, late };

// Waits until fd is ready for `events` (or hung up) or the deadline passes.
io wait_ready(int fd, short events, steady::time_point deadline) {
  for (;;) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()).count();
    if (left <= 0)
      return io::late;
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, static_cast<int>(std::min<long long>(left, INT_MAX)));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return io::closed;
    if (n > 0)
      return io::ok; // ready, or hung up: the next read or write says which
  }
}

// The server's sockets are non-blocking: a slow reader costs its own deadline, nothing else.
io send_until(int fd, const char* data, size_t n, steady::time_point deadline) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      data += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (io r = wait_ready(fd, POLLOUT, deadline); r != io::ok)
        return r;
      continue;
    }
    return io::closed;
  }
  return io::ok;
}

io send_response(int fd, const http_response& r, bool keep_alive, steady::time_point deadline) {
  std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) +
                     "\r\nContent-Type: " + r.content_type;
  if (!r.stream)
    head += "\r\nContent-Length: " + std::to_string(r.body.size());
  head += keep_alive ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
  if (io w = send_until(fd, head.data(), head.size(), deadline); w != io::ok)
    return w;
  if (!r.stream)
    return send_until(fd, r.body.data(), r.body.size(), deadline);
  io result = io::ok;
  r.stream([&](std::string_view piece) {
    result = send_until(fd, piece.data(), piece.size(), deadline);
    return result == io::ok;
  });
  return result;
}

// A short answer on a connection that is about to close: written if the socket takes it now.
void send_now(int fd, const http_response& r) {
  (void)send_response(fd, r, false, steady::now() + std::chrono::milliseconds(100));
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Reads what the head's header lines say about the connection's future.
bool head_allows_keep_alive(const std::string& head) {
  size_t pos = head.find("\r\n");
  while (pos != std::string::npos && pos + 2 < head.size()) {
    size_t next = head.find("\r\n", pos + 2);
    std::string line =
        lower(head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2));
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      if (name == "connection" && value.find("close") != std::string::npos)
        return false;
      // A body we do not read would be taken for the next request.
      if (name == "transfer-encoding" || (name == "content-length" && value != "0"))
        return false;
    }
    pos = next;
  }
  return true;
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
  req.keep_alive = version == "HTTP/1.1" && head_allows_keep_alive(head);
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
  self->listen_fd_.reset(std::get<int>(listening));
  if (auto err = self->open_wake())
    return *err;
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
  self->listen_fd_.reset(socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!self->listen_fd_)
    return "socket(): " + errno_text();
  int one = 1;
  // A restart must not wait for the previous listener's connections to leave TIME_WAIT.
  setsockopt(self->listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // "::" must mean IPv6 only: serving IPv4 too would be a wider exposure than configured.
  if (addr.ss_family == AF_INET6)
    setsockopt(self->listen_fd_.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (::bind(self->listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) != 0)
    return "cannot bind " + where + ": " + errno_text();
  if (listen(self->listen_fd_.get(), 64) != 0)
    return "cannot listen on " + where + ": " + errno_text();
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  if (getsockname(self->listen_fd_.get(), reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0)
    return "getsockname(): " + errno_text();
  self->port_ =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (auto err = self->open_wake())
    return *err;
  return self;
}

std::optional<std::string> http_server::open_wake() {
  auto wake = wake_signal::open();
  if (auto* err = std::get_if<std::string>(&wake))
    return *err;
  wake_ = std::move(std::get<wake_signal>(wake));
  return std::nullopt;
}

http_server::~http_server() {
  stop();
}

void http_server::start() {
  if (running_.exchange(true))
    return;
  thread_ = std::thread([this] { serve(); });
}

void http_server::stop() {
  if (running_.exchange(false) && wake_)
    wake_.notify();
  if (thread_.joinable())
    thread_.join();
  if (listen_fd_) {
    listen_fd_.reset();
    if (!path_.empty())
      unlink(path_.c_str());
  }
  reap(true);
}

size_t http_server::open_connections() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(),
                                           [](const auto& c) { return !c.second.done; }));
}

// Joins the threads of finished connections; with `all`, ends the open ones first and joins
// every thread.
void http_server::reap(bool all) {
  std::vector<std::thread> finished;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (all) {
      // A connection's fd is closed under this lock, so these never reach a reused number.
      // Reading ends first: clients waiting to send a request, or idle between two, are done.
      // An answer being written gets a moment to finish: it may be the one that stopped this
      // server (a fault injected into the API actor), and its client waits for it.
      for (auto& [id, c] : connections_)
        if (c.fd >= 0)
          shutdown(c.fd, SHUT_RD);
      finished_.wait_for(lock, std::chrono::milliseconds(k_stop_grace_ms), [this] {
        return std::all_of(connections_.begin(), connections_.end(),
                           [](const auto& c) { return c.second.done; });
      });
      for (auto& [id, c] : connections_)
        if (c.fd >= 0)
          shutdown(c.fd, SHUT_RDWR);
    }
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (!all && !it->second.done) {
        ++it;
        continue;
      }
      finished.push_back(std::move(it->second.thread));
      it = connections_.erase(it);
    }
  }
  for (auto& t : finished)
    if (t.joinable())
      t.join();
}

void http_server::serve() {
  pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_.fd(), POLLIN, 0}};
  while (running_.load()) {
    // Wakes once a second at least, to join the threads of connections that ended.
    int n = poll(fds, 2, 1000);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (fds[1].revents)
      break;
    reap(false);
    if (!(fds[0].revents & POLLIN))
      continue;
    int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      // Out of descriptors: the pending connection stays queued; try again shortly rather than
      // spin on a listener that stays readable.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
        poll(&fds[1], 1, 100);
      continue;
    }
    bool admitted = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      size_t open = static_cast<size_t>(std::count_if(
          connections_.begin(), connections_.end(), [](const auto& c) { return !c.second.done; }));
      if (open < limits_.max_connections) {
        uint64_t id = next_id_++;
        auto& c = connections_[id];
        c.fd = fd;
        try {
          c.thread = std::thread([this, id, fd] { serve_connection(id, fd); });
          admitted = true;
        } catch (const std::system_error&) {
          connections_.erase(id); // no thread to serve it: refused like one over the bound
        }
      }
    }
    if (!admitted)
      reject(fd);
  }
}

void http_server::reject(int fd) {
  ++rejected_;
  // The client may not have written its request yet. Answering and closing at once would make
  // its write fail (EPIPE on a unix socket, a reset on TCP) before it reads the 503: wait a
  // moment for the request, read it, answer, and read what still comes before closing. At most
  // ~100 ms of the accept thread, and only past the bound.
  char buf[4096];
  auto drain = [&](int wait_ms) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, wait_ms) <= 0)
      return;
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    }
  };
  drain(50);
  send_now(fd, {503,
                "text/plain",
                "too many connections: " + std::to_string(limits_.max_connections) +
                    " are open; try again\n",
                {}});
  shutdown(fd, SHUT_WR);
  drain(50);
  close(fd);
}

void http_server::serve_connection(uint64_t id, int fd) {
  std::string pending; // bytes read past the last request head (a pipelined next request)
  for (bool first = true; running_.load() && serve_request(fd, pending, first); first = false) {
  }
  std::lock_guard<std::mutex> lock(mutex_);
  close(fd);
  auto it = connections_.find(id);
  if (it != connections_.end()) {
    it->second.fd = -1;
    it->second.done = true;
  }
  finished_.notify_all();
}

bool http_server::serve_request(int fd, std::string& pending, bool first) {
  // A kept-alive connection waits for its next request's first byte, then has the head's time.
  if (!first && pending.empty()) {
    auto idle = steady::now() + std::chrono::milliseconds(limits_.idle_timeout_ms);
    if (wait_ready(fd, POLLIN, idle) != io::ok)
      return false;
  }
  auto deadline = steady::now() + std::chrono::milliseconds(limits_.head_timeout_ms);
  size_t end;
  char buf[2048];
  while ((end = pending.find("\r\n\r\n")) == std::string::npos) {
    if (pending.size() > k_max_request_bytes) {
      send_now(fd, {413, "text/plain", "request too large\n", {}});
      return false;
    }
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      pending.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      io r = wait_ready(fd, POLLIN, deadline);
      if (r == io::late) {
        ++timed_out_;
        send_now(fd, {408, "text/plain", "request head not complete in time\n", {}});
      }
      if (r != io::ok)
        return false;
      continue;
    }
    return false; // the peer closed, or the server is stopping
  }
  std::string head = pending.substr(0, end + 4);
  pending.erase(0, end + 4);
  // Checked once the head is in: answering before reading it would close the socket with
  // unread data, which becomes a reset the client sees instead of the 403.
  ucred peer{};
  socklen_t len = sizeof(peer);
  if (check_peer_ && (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
                      (peer.uid != 0 && peer.uid != allowed_uid_))) {
    ++refused_;
    send_now(fd, {403,
                  "text/plain",
                  "uid " + std::to_string(peer.uid) +
                      " may not use this API (root, or agent.api_allowed_uid)\n",
                  {}});
    return false;
  }
  ++requests_;
  auto parsed = parse_http_request(head);
  if (auto* err = std::get_if<std::string>(&parsed)) {
    send_now(fd, {400, "text/plain", *err + "\n", {}});
    return false;
  }
  auto& req = std::get<http_request>(parsed);
  if (req.method != "GET") {
    send_now(fd, {405, "text/plain", "only GET is served\n", {}});
    return false;
  }
  http_response response = handler_(req);
  // A streamed answer has no length: it ends when the connection closes.
  bool keep = req.keep_alive && !response.stream && running_.load();
  auto write_deadline = steady::now() + std::chrono::milliseconds(limits_.write_timeout_ms);
  io sent = send_response(fd, response, keep, write_deadline);
  if (sent == io::late)
    ++timed_out_;
  return keep && sent == io::ok;
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
