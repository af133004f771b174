// The TCP listener of the metrics port (http_server::bind_tcp) and the handler that keeps it
// to /metrics. Loopback only; no privileges needed.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "actors/api/api_actor.hpp"
#include "actors/api/http_server.hpp"

using namespace netlens;

namespace {

// One GET over TCP; the raw response, or empty when the connection was refused.
std::string tcp_get(int family, const char* address, uint16_t port, const std::string& target) {
  sockaddr_storage addr{};
  socklen_t len;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, address, &a->sin_addr);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, address, &a->sin6_addr);
    len = sizeof(*a);
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    close(fd);
    return {};
  }
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  REQUIRE(send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
    resp.append(buf, static_cast<size_t>(n));
  close(fd);
  return resp;
}

http_server::handler echo = [](const http_request& req) {
  return http_response{200, "text/plain", "path " + req.path, {}};
};

} // namespace

TEST_CASE("the TCP listener serves on loopback and releases its port on stop", "[api]") {
  auto bound = http_server::bind_tcp("127.0.0.1", 0, echo);
  REQUIRE(std::holds_alternative<std::unique_ptr<http_server>>(bound));
  auto& server = std::get<std::unique_ptr<http_server>>(bound);
  uint16_t port = server->port();
  REQUIRE(port != 0);
  server->start();

  std::string resp = tcp_get(AF_INET, "127.0.0.1", port, "/metrics");
  CHECK(resp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(resp.find("\r\n\r\npath /metrics") != std::string::npos);
  CHECK(server->requests() == 1);

  // The same port twice: the second bind names the address and the reason.
  auto second = http_server::bind_tcp("127.0.0.1", port, echo);
  REQUIRE(std::holds_alternative<std::string>(second));
  CHECK(std::get<std::string>(second) ==
        "cannot bind 127.0.0.1:" + std::to_string(port) + ": Address already in use");

  server->stop();
  CHECK(tcp_get(AF_INET, "127.0.0.1", port, "/metrics").empty());
  // Released: the port can be bound again at once.
  CHECK(std::holds_alternative<std::unique_ptr<http_server>>(
      http_server::bind_tcp("127.0.0.1", port, echo)));
}

TEST_CASE("the TCP listener refuses what is not an address literal", "[api]") {
  for (const char* bad : {"localhost", "", "127.0.0.1:80", "1.2.3", "[::1]"}) {
    INFO(bad);
    auto bound = http_server::bind_tcp(bad, 0, echo);
    REQUIRE(std::holds_alternative<std::string>(bound));
    CHECK(std::get<std::string>(bound) ==
          "\"" + std::string(bad) + "\" is not an IPv4 or IPv6 address");
  }
}

TEST_CASE("the TCP listener serves on the IPv6 loopback", "[api]") {
  auto bound = http_server::bind_tcp("::1", 0, echo);
  if (auto* err = std::get_if<std::string>(&bound)) {
    WARN("no IPv6 loopback here: " << *err);
    return;
  }
  auto& server = std::get<std::unique_ptr<http_server>>(bound);
  server->start();
  CHECK(tcp_get(AF_INET6, "::1", server->port(), "/x").find("path /x") != std::string::npos);
  server->stop();
}

TEST_CASE("the metrics port answers 404 to every path but /metrics", "[api]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  supervisor_actor nobody; // never reached: the path is refused first
  for (const char* path : {"/connections", "/stats", "/healthz", "/fault", "/", "/metrics/"}) {
    INFO(path);
    http_request req{"GET", path, {}};
    auto r = serve_metrics_request(sys, nobody, req);
    CHECK(r.status == 404);
    CHECK(r.body == "only /metrics is served on this port\n");
    CHECK(!r.stream);
  }
}
