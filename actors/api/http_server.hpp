// A small HTTP/1.1 server on a unix socket (or, for the metrics port, a TCP socket): GET only,
// bounded request size. Each connection is served by its own thread, up to a bound on open
// connections (beyond it: 503 and close), so a slow or silent client never delays another.
// Every connection has deadlines: for its request head, for an idle keep-alive, and for writing
// an answer to a slow reader. The accept thread only accepts; connection threads call the
// handler they were given, several at once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>

#include "actors/common/private_socket.hpp" // unix_socket_answers, for callers of this server
#include "flow/unique_fd.hpp"
#include "flow/wake_signal.hpp"

namespace netlens {

struct http_request {
  std::string method;
  std::string path;
  std::map<std::string, std::string> query;
  // HTTP/1.1 without "Connection: close" and without a body: the connection may serve the
  // client's next request too (scrapers keep theirs open).
  bool keep_alive = false;
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

// What one server allows each connection, and how many at once.
struct http_limits {
  size_t max_connections = 128; // open at once; the next ones get 503 and are closed
  int head_timeout_ms = 2000;   // a request head must be in this long after it starts
  int idle_timeout_ms = 5000;   // a kept-alive connection may wait this long for its next one
  int write_timeout_ms = 10000; // an answer must be read by the client within this long
};

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
  // Before start() only.
  void set_limits(const http_limits& limits) { limits_ = limits; }
  void start();
  // Stops accepting, ends every connection, joins every thread, removes the socket file.
  // Connections waiting for a request end at once; an answer being written has up to a second
  // to finish before it is cut; a handler still computing its answer is waited for. Idempotent.
  void stop();
  uint64_t requests() const { return requests_.load(); }
  uint64_t refused() const { return refused_.load(); }     // peers neither root nor allowed_uid
  uint64_t rejected() const { return rejected_.load(); }   // over max_connections: 503
  uint64_t timed_out() const { return timed_out_.load(); } // cut at a head or write deadline
  size_t open_connections() const;
  uint16_t port() const { return port_; } // TCP only: the port bound

private:
  // The stop signal the serving thread polls; an error names the call.
  std::optional<std::string> open_wake();

  struct connection {
    int fd = -1;
    std::thread thread;
    bool done = false;
  };

  http_server() = default;
  void serve();
  void serve_connection(uint64_t id, int fd);
  // One request and its answer; false when the connection must close.
  bool serve_request(int fd, std::string& pending, bool first);
  void reject(int fd);
  void reap(bool all);

  std::string path_;
  handler handler_;
  http_limits limits_;
  unique_fd listen_fd_;
  wake_signal wake_; // stop
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> rejected_{0};
  std::atomic<uint64_t> timed_out_{0};
  mutable std::mutex mutex_;         // guards connections_ and next_id_
  std::condition_variable finished_; // a connection ended
  std::map<uint64_t, connection> connections_;
  uint64_t next_id_ = 0;
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
