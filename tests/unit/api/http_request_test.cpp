#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include "actors/api/http_server.hpp"

using namespace netlens;

TEST_CASE("a GET with a query string is parsed", "[api]") {
  auto r = parse_http_request("GET /connections?client_id=a%20b&x= HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(std::holds_alternative<http_request>(r));
  auto& req = std::get<http_request>(r);
  CHECK(req.method == "GET");
  CHECK(req.path == "/connections");
  CHECK(req.query.at("client_id") == "a b");
  CHECK(req.query.at("x").empty());
}

TEST_CASE("malformed request lines are refused with a reason", "[api]") {
  CHECK(std::get<std::string>(parse_http_request("garbage")) == "no request line");
  CHECK(std::get<std::string>(parse_http_request("GET\r\n\r\n")) == "malformed request line");
  CHECK(std::get<std::string>(parse_http_request("GET / SPDY/3\r\n\r\n")) ==
        "unsupported protocol version");
  CHECK(std::get<std::string>(parse_http_request("GET x HTTP/1.1\r\n\r\n")) ==
        "bad request target");
}

TEST_CASE("the server serves on a unix socket, refuses a second one, and cleans up", "[api]") {
  std::string path = "/tmp/netlens-unit-" + std::to_string(getpid()) + "/api.sock";
  auto bound = http_server::bind(path, [](const http_request& req) {
    return http_response{200, "text/plain", "hello " + req.path, {}};
  });
  REQUIRE(std::holds_alternative<std::unique_ptr<http_server>>(bound));
  auto& server = std::get<std::unique_ptr<http_server>>(bound);
  server->start();

  auto got = http_get_unix(path, "/x");
  REQUIRE(std::holds_alternative<http_result>(got));
  CHECK(std::get<http_result>(got).status == 200);
  CHECK(std::get<http_result>(got).body == "hello /x");

  auto second = http_server::bind(path, [](const http_request&) { return http_response{}; });
  REQUIRE(std::holds_alternative<std::string>(second));
  CHECK(std::get<std::string>(second) == "another netlens is already serving on " + path);

  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  server->stop();
  CHECK(stat(path.c_str(), &st) != 0);
  rmdir(path.substr(0, path.rfind('/')).c_str());
}
