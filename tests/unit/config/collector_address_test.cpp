// Tests of parse_collector_address, the one reading of export.ipfix.collectors entries.
#include <catch2/catch.hpp>

#include "config/collector_address.hpp"

#include <string>

namespace {

using netlens::collector_address;

collector_address parsed(std::string_view text) {
  auto result = netlens::parse_collector_address(text);
  if (const auto* problem = std::get_if<std::string>(&result))
    FAIL("unexpected error: " << *problem);
  return std::get<collector_address>(result);
}

std::string problem_with(std::string_view text) {
  auto result = netlens::parse_collector_address(text);
  REQUIRE(std::holds_alternative<std::string>(result));
  return std::get<std::string>(result);
}

} // namespace

TEST_CASE("collector addresses: IPv4, bracketed IPv6 and host names", "[config]") {
  CHECK(parsed("127.0.0.1:4739") == collector_address{"127.0.0.1", 4739, true, AF_INET});
  CHECK(parsed("[::1]:2055") == collector_address{"::1", 2055, true, AF_INET6});
  CHECK(parsed("collector.example.org:4739") ==
        collector_address{"collector.example.org", 4739, false, AF_UNSPEC});
  CHECK(parsed("localhost:1") == collector_address{"localhost", 1, false, AF_UNSPEC});
  CHECK(parsed("a-1.b2:65535").port == 65535);
  CHECK(parsed("10.0.0.1:04739").port == 4739);
}

TEST_CASE("collector addresses are canonical, so one collector has one spelling", "[config]") {
  CHECK(parsed("[2001:DB8:0:0::1]:4739").host == "2001:db8::1");
  CHECK(parsed("[::ffff:192.0.2.1]:4739").host == "::ffff:192.0.2.1");
  CHECK(parsed("Collector.Example.ORG:4739").host == "collector.example.org");
}

TEST_CASE("bad collector addresses say what is wrong", "[config]") {
  CHECK(problem_with("") == "is empty; expected host:port");
  CHECK(problem_with("collector.example.org") ==
        "missing \":port\" (write host:port, e.g. 192.0.2.1:4739)");
  CHECK(problem_with(":4739") == "missing host before \":port\"");
  CHECK(problem_with("10.0.0.1:") == "missing port number after ':'");
  CHECK(problem_with("10.0.0.1:0") == "port 0 is out of range [1, 65535]");
  CHECK(problem_with("10.0.0.1:70000") == "port 70000 is out of range [1, 65535]");
  CHECK(problem_with("10.0.0.1:99999999999999999999") == "port is out of range [1, 65535]");
  CHECK(problem_with("10.0.0.1:+80") == "port is not a number");
  CHECK(problem_with("10.0.0.1:http") == "port is not a number");
  CHECK(problem_with("[::1") == "unterminated IPv6 literal: no ']'");
  CHECK(problem_with("[::1]") == "missing \":port\" after the IPv6 literal");
  CHECK(problem_with("[::1]4739") == "expected \":port\" right after ']'");
  CHECK(problem_with("[]:4739") == "the part in brackets is not an IPv6 address");
  CHECK(problem_with("[192.0.2.1]:4739") == "the part in brackets is not an IPv6 address");
  CHECK(problem_with("[fe80::1%eth0]:4739") == "the part in brackets is not an IPv6 address");
  CHECK(problem_with("::1:4739") == "an IPv6 address needs brackets, as in [2001:db8::1]:4739");
  CHECK(problem_with("collector example.org:4739") ==
        "host name contains a space; only letters, digits, '-' and '.' are allowed");
  CHECK(problem_with("coll_ector:4739") ==
        "host name contains '_'; only letters, digits, '-' and '.' are allowed");
  CHECK(problem_with("coll\nector:4739") ==
        "host name contains byte 0x0A; only letters, digits, '-' and '.' are allowed");
  CHECK(problem_with("collector..org:4739") ==
        "host name has an empty label (a leading, trailing or doubled '.')");
  CHECK(problem_with("collector.org.:4739") ==
        "host name has an empty label (a leading, trailing or doubled '.')");
  CHECK(problem_with("-collector.org:4739") == "a host name label cannot start or end with '-'");
  CHECK(problem_with(std::string(64, 'a') + ".org:4739") ==
        "host name label is 64 bytes; at most 63");
  std::string long_name;
  for (int i = 0; i < 4; ++i)
    long_name += std::string(63, 'a') + ".";
  long_name += "org"; // 4 * 64 + 3 = 259 bytes
  CHECK(problem_with(long_name + ":4739") == "host name is 259 bytes; at most 253");
  // The resolver would read these as numbers (10.1 is 10.0.0.1), never as names.
  const std::string not_a_name =
      "neither an IPv4 address nor a host name (a host name's last label is not all digits)";
  CHECK(problem_with("10.1:4739") == not_a_name);
  CHECK(problem_with("256.0.0.1:4739") == not_a_name);
  CHECK(problem_with("4739:4739") == not_a_name);
}
