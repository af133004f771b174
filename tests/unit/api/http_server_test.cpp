// The HTTP server under abuse: clients that never finish their request, clients that never read
// their answer, more clients than it admits, kept-alive scrapers, and a stop with all of them
// connected. Unix sockets in a private directory; no privileges beyond the caller's own uid.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "actors/api/http_server.hpp"

using namespace netlens;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

int connect_unix(const std::string& path) {
  sockaddr_un addr;
  REQUIRE(fill_unix_addr(path, addr));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

void send_text(int fd, const std::string& text) {
  REQUIRE(send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
}

// Reads until the peer closes or `timeout` passes; what arrived.
std::string read_until_close(int fd, std::chrono::milliseconds timeout) {
  std::string got;
  auto deadline = steady::now() + timeout;
  char buf[4096];
  while (steady::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0)
      continue;
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0)
      break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// Reads one response with a Content-Length body from a kept-alive connection; what arrived past
// it stays in `got` for the next call.
std::string read_one_response(int fd, std::string& got) {
  char buf[4096];
  for (;;) {
    size_t end = got.find("\r\n\r\n");
    if (end != std::string::npos) {
      size_t cl = got.find("Content-Length: ");
      REQUIRE(cl != std::string::npos);
      size_t length = std::stoul(got.substr(cl + 16));
      if (got.size() >= end + 4 + length) {
        std::string one = got.substr(0, end + 4 + length);
        got.erase(0, one.size());
        return one;
      }
    }
    pollfd p{fd, POLLIN, 0};
    REQUIRE(poll(&p, 1, 5000) == 1);
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    REQUIRE(n > 0);
    got.append(buf, static_cast<size_t>(n));
  }
}

struct served {
  std::string dir = "/tmp/netlens-unit-http-" + std::to_string(getpid());
  std::string path = dir + "/api.sock";
  std::unique_ptr<http_server> server;

  served(http_limits limits, http_server::handler h) {
    auto bound = http_server::bind(path, std::move(h), geteuid());
    REQUIRE(std::holds_alternative<std::unique_ptr<http_server>>(bound));
    server = std::move(std::get<std::unique_ptr<http_server>>(bound));
    server->set_limits(limits);
    server->start();
  }
  ~served() {
    server->stop();
    rmdir(dir.c_str());
  }
};

http_response hello(const http_request& req) {
  return {200, "text/plain", "hello " + req.path, {}};
}

} // namespace

TEST_CASE("clients holding half-written requests do not delay another client's answer",
          "[api][http]") {
  http_limits limits;
  limits.head_timeout_ms = 60000; // they stay for the whole test
  served s(limits, hello);
  std::vector<int> slow;
  for (int i = 0; i < 64; ++i) {
    slow.push_back(connect_unix(s.path));
    send_text(slow.back(), "GET /connections HTTP/1.1\r\nHost: x\r\n"); // no blank line
  }
  // Every one of them has its own reader now; the next client is answered at once. (The old
  // server read one connection at a time: each slow one held the rest for its 2 s timeout.)
  auto t0 = steady::now();
  auto got = http_get_unix(s.path, "/healthz", 30000);
  auto took = steady::now() - t0;
  REQUIRE(std::holds_alternative<http_result>(got));
  CHECK(std::get<http_result>(got).body == "hello /healthz");
  CHECK(took < 1s); // 64 × 2 s in the old server
  CHECK(s.server->open_connections() == 64);
  for (int fd : slow)
    close(fd);
}

TEST_CASE("a request head not complete by its deadline is answered 408 and cut", "[api][http]") {
  http_limits limits;
  limits.head_timeout_ms = 300;
  served s(limits, hello);
  int fd = connect_unix(s.path);
  send_text(fd, "GET /x HTTP/1.1\r\n");
  std::string got = read_until_close(fd, 5000ms);
  close(fd);
  CHECK(got.rfind("HTTP/1.1 408 ", 0) == 0);
  CHECK(s.server->timed_out() == 1);
  CHECK(s.server->requests() == 0);
}

TEST_CASE("past the bound on open connections a client gets 503, and is served once one leaves",
          "[api][http]") {
  http_limits limits;
  limits.max_connections = 4;
  limits.head_timeout_ms = 60000;
  served s(limits, hello);
  std::vector<int> held;
  for (int i = 0; i < 4; ++i)
    held.push_back(connect_unix(s.path));
  // The accept thread admits them in order; wait until it has.
  for (int i = 0; i < 200 && s.server->open_connections() < 4; ++i)
    std::this_thread::sleep_for(10ms);
  REQUIRE(s.server->open_connections() == 4);
  auto refused = http_get_unix(s.path, "/x", 5000);
  REQUIRE(std::holds_alternative<http_result>(refused));
  CHECK(std::get<http_result>(refused).status == 503);
  CHECK(std::get<http_result>(refused).body.find("too many connections") != std::string::npos);
  CHECK(s.server->rejected() == 1);
  close(held.back());
  held.pop_back();
  for (int i = 0; i < 200 && s.server->open_connections() > 3; ++i)
    std::this_thread::sleep_for(10ms);
  auto served_now = http_get_unix(s.path, "/x", 5000);
  REQUIRE(std::holds_alternative<http_result>(served_now));
  CHECK(std::get<http_result>(served_now).status == 200);
  for (int fd : held)
    close(fd);
}

TEST_CASE("a kept-alive connection serves several requests, then closes when idle", "[api][http]") {
  http_limits limits;
  limits.idle_timeout_ms = 300;
  served s(limits, hello);
  int fd = connect_unix(s.path);
  // Two requests in one write (pipelined), then a third.
  send_text(fd, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string buffered;
  std::string a = read_one_response(fd, buffered);
  std::string b = read_one_response(fd, buffered);
  CHECK(buffered.empty());
  CHECK(a.find("Connection: keep-alive") != std::string::npos);
  CHECK(a.substr(a.size() - 8) == "hello /a");
  CHECK(b.substr(b.size() - 8) == "hello /b");
  send_text(fd, "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string c = read_until_close(fd, 5000ms); // closed after it: the client asked
  CHECK(c.find("Connection: close") != std::string::npos);
  CHECK(c.substr(c.size() - 8) == "hello /c");
  close(fd);
  CHECK(s.server->requests() == 3);

  // Left idle, a kept-alive connection is closed at its idle deadline, not counted as cut.
  fd = connect_unix(s.path);
  send_text(fd, "GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
  read_one_response(fd, buffered);
  auto t0 = steady::now();
  CHECK(read_until_close(fd, 5000ms).empty());
  CHECK(steady::now() - t0 < 4s);
  close(fd);
  CHECK(s.server->timed_out() == 0);
}

TEST_CASE("a client that does not read a large answer is cut at the write deadline",
          "[api][http]") {
  http_limits limits;
  limits.write_timeout_ms = 300;
  std::atomic<bool> cut{false};
  served s(limits, [&](const http_request& req) {
    if (req.path != "/big")
      return hello(req);
    http_response r;
    r.stream = [&](const std::function<bool(std::string_view)>& write) {
      std::string piece(64 * 1024, 'x');
      for (int i = 0; i < 4096; ++i) // 256 MB: more than any socket buffer holds
        if (!write(piece)) {
          cut = true;
          return;
        }
    };
    return r;
  });
  int fd = connect_unix(s.path);
  send_text(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  // Read nothing; meanwhile another client is served.
  auto got = http_get_unix(s.path, "/x", 5000);
  REQUIRE(std::holds_alternative<http_result>(got));
  // The handler sees its write fail first; the server counts the cut once the handler returns.
  for (int i = 0; i < 300 && (!cut || s.server->timed_out() == 0); ++i)
    std::this_thread::sleep_for(10ms);
  CHECK(cut);
  CHECK(s.server->timed_out() == 1);
  close(fd);
}

TEST_CASE("stop cuts every open connection and returns", "[api][http]") {
  http_limits limits;
  limits.head_timeout_ms = 60000;
  served s(limits, hello);
  std::vector<int> held;
  for (int i = 0; i < 16; ++i) {
    held.push_back(connect_unix(s.path));
    send_text(held.back(), "GET /x HTTP/1.1\r\n");
  }
  for (int i = 0; i < 200 && s.server->open_connections() < 16; ++i)
    std::this_thread::sleep_for(10ms);
  auto t0 = steady::now();
  s.server->stop();
  CHECK(steady::now() - t0 < 2s); // not the head deadline of 60 s
  CHECK(s.server->open_connections() == 0);
  for (int fd : held) {
    CHECK(read_until_close(fd, 2000ms).empty()); // closed, no answer
    close(fd);
  }
}
