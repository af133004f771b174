// A small HTTP/1.1 server on a unix socket (or, for the metrics port, a TCP socket): GET only,
// one request per connection, bounded request size and read time. Its accept thread only calls
// the handler it was given.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <variant>

#include "actors/common/private_socket.hpp" // unix_socket_answers, for callers of this server

namespace netlens {

struct http_request {
  std::string method;
  std::string path;
  std::map<std::string, std::string> query;
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // When set, the body is produced piece by piece instead (ended by closing the connection),
  // so a large answer never sits in memory whole.
  std::function<void(const std::function<bool(std::string_view)>&)> stream;
};

// Parses "GET /path?a=b HTTP/1.1\r\n...". Returns an error text for anything else.
std::variant<http_request, std::string> parse_http_request(const std::string& head);

class http_server {
public:
  using handler = std::function<http_response(const http_request&)>;

  // Binds the socket (mode 0600, parent dir created 0700 if missing). Refuses when another
  // server answers on the path; removes a stale socket file left by a dead process.
  // allowed_uid: besides root, the one user whose requests are served (0: root only); the
  // socket is then owned by that user and the directory made traversable (0711). Every
  // connection's peer is checked (SO_PEERCRED) whatever the file modes say.
  static std::variant<std::unique_ptr<http_server>, std::string>
  bind(const std::string& path, handler h, uint32_t allowed_uid = 0);
  // Binds a TCP listener on an IPv4 or IPv6 literal (IPv6 only, never v4-mapped). There is no
  // peer identity on TCP: the handler decides what it may serve. Port 0 picks a free port.
  static std::variant<std::unique_ptr<http_server>, std::string>
  bind_tcp(const std::string& address, uint16_t port, handler h);
  ~http_server();
  void start();
  // Stops accepting, joins the thread, removes the socket file. Idempotent.
  void stop();
  uint64_t requests() const { return requests_.load(); }
  uint64_t refused() const { return refused_.load(); } // peers neither root nor allowed_uid
  uint16_t port() const { return port_; }              // TCP only: the port bound

private:
  http_server() = default;
  void serve();
  void handle(int fd);

  std::string path_;
  handler handler_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> refused_{0};
  uint32_t allowed_uid_ = 0;
  bool check_peer_ = true; // unix sockets only: SO_PEERCRED means nothing on TCP
  uint16_t port_ = 0;
};

// Client side, for the CLI and tests: one GET, returns status and body or an error text.
struct http_result {
  int status = 0;
  std::string body;
};
std::variant<http_result, std::string>
http_get_unix(const std::string& socket_path, const std::string& target, int timeout_ms = 10000);

} // namespace netlens
