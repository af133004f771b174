// The console's command language: every command, every way a line is refused, completion.
#include <catch2/catch.hpp>

#include <netinet/in.h>

#include "actors/console/command_parser.hpp"

using namespace netlens;

namespace {

console_command parsed(const std::string& line) {
  auto r = parse_command(line);
  if (auto* e = std::get_if<parse_error>(&r))
    FAIL("'" << line << "' did not parse: " << e->message);
  return std::get<console_command>(r);
}

std::string error_of(const std::string& line) {
  auto r = parse_command(line);
  if (!std::holds_alternative<parse_error>(r))
    FAIL("'" << line << "' parsed");
  return std::get<parse_error>(r).message;
}

} // namespace

TEST_CASE("words are split on spaces and tabs", "[console]") {
  CHECK(tokenize("  conns\tport=443   pid=12 ") ==
        std::vector<std::string>{"conns", "port=443", "pid=12"});
  CHECK(tokenize("").empty());
  CHECK(tokenize(" \t ").empty());
  CHECK(is_blank(" \t"));
  CHECK_FALSE(is_blank(" x"));
}

TEST_CASE("each command parses with its arguments", "[console]") {
  CHECK(parsed("help").kind == command_kind::help);
  CHECK(parsed("help cache").argument == "cache");
  CHECK(parsed("actors").kind == command_kind::actors);
  auto i = parsed("inspect tracer");
  CHECK(i.kind == command_kind::inspect);
  CHECK(i.argument == "tracer");
  CHECK(parsed("cache").rows == k_cache_default_rows);
  CHECK(parsed("cache 5").rows == 5);
  CHECK(parsed("cache 1000").rows == 1000);
  CHECK(parsed("config").kind == command_kind::config);
  auto l = parsed("log level debug");
  CHECK(l.kind == command_kind::log_level);
  CHECK(l.argument == "debug");
  CHECK(parsed("top").kind == command_kind::top);
  CHECK(parsed("shutdown").kind == command_kind::shutdown);
  CHECK(parsed("quit").kind == command_kind::quit);
}

TEST_CASE("conns filters are checked and every key is kept", "[console]") {
  auto c = parsed("conns port=443 pid=12 netns=4026531840 addr=10.0.0.1 proto=udp");
  REQUIRE(c.filter.port);
  CHECK(*c.filter.port == 443);
  CHECK(*c.filter.pid == 12);
  CHECK(*c.filter.netns == 4026531840u);
  REQUIRE(c.filter.addr);
  CHECK(c.filter.addr->family == AF_INET);
  CHECK(c.filter.addr->bytes[0] == 10);
  CHECK(c.filter.addr->bytes[3] == 1);
  CHECK(*c.filter.protocol == IPPROTO_UDP);
  CHECK(parsed("conns").filter.empty());
  auto v6 = parsed("conns addr=::1");
  CHECK(v6.filter.addr->family == AF_INET6);
  CHECK(v6.filter.addr->bytes[15] == 1);

  CHECK(error_of("conns port=70000").find("port=70000 is not a port number") != std::string::npos);
  CHECK(error_of("conns port=-1").find("port=-1") != std::string::npos);
  CHECK(error_of("conns pid=abc").find("pid=abc is not a process id") != std::string::npos);
  CHECK(error_of("conns addr=10.0.0.300").find("not an IPv4 or IPv6 address") != std::string::npos);
  CHECK(error_of("conns 443").find("'443' is not KEY=VALUE") != std::string::npos);
  CHECK(error_of("conns port=").find("has no value") != std::string::npos);
  CHECK(error_of("conns color=red").find("unknown filter key 'color'") != std::string::npos);
  CHECK(error_of("conns port=1 port=2").find("given twice") != std::string::npos);
  CHECK(error_of("conns proto=icmp").find("neither tcp nor udp") != std::string::npos);
  // Every conns error shows the usage.
  CHECK(error_of("conns port=x").find("usage: conns") != std::string::npos);
}

TEST_CASE("bad arguments are refused with the command's usage", "[console]") {
  CHECK(error_of("frobnicate").find("unknown command 'frobnicate'") != std::string::npos);
  CHECK(error_of("inspect").find("usage: inspect ACTOR") != std::string::npos);
  CHECK(error_of("inspect a b").find("exactly one actor") != std::string::npos);
  CHECK(error_of("cache 0").find("'0' is not a number from 1 to 1000") != std::string::npos);
  CHECK(error_of("cache 1001").find("from 1 to 1000") != std::string::npos);
  CHECK(error_of("cache 99999999999999999999").find("from 1 to 1000") != std::string::npos);
  CHECK(error_of("cache 5x").find("'5x'") != std::string::npos);
  CHECK(error_of("cache 1 2").find("at most one number") != std::string::npos);
  CHECK(error_of("log debug").find("log needs 'level'") != std::string::npos);
  CHECK(error_of("log level").find("exactly one level") != std::string::npos);
  CHECK(error_of("log level loud").find("unknown log level 'loud'") != std::string::npos);
  CHECK(error_of("actors now").find("actors takes no arguments") != std::string::npos);
  CHECK(error_of("help nothing").find("no command named 'nothing'") != std::string::npos);
  CHECK(error_of("   ") == "empty command");
}

TEST_CASE("control and non-ASCII bytes are refused, naming byte and column", "[console]") {
  CHECK_FALSE(check_line_bytes("conns port=443\tpid=1"));
  auto nul = check_line_bytes(std::string("act\0rs", 6));
  REQUIRE(nul);
  CHECK(nul->find("control byte 0x00 at column 4") != std::string::npos);
  auto esc = check_line_bytes("\x1b[A");
  REQUIRE(esc);
  CHECK(esc->find("control byte 0x1b at column 1") != std::string::npos);
  auto del = check_line_bytes("top\x7f");
  REQUIRE(del);
  CHECK(del->find("0x7f at column 4") != std::string::npos);
  auto high = check_line_bytes("inspect tr\xc3\xa4");
  REQUIRE(high);
  CHECK(high->find("non-ASCII byte 0xc3 at column 11") != std::string::npos);
  // parse_command applies the same rule.
  CHECK(error_of("help\x01").find("control byte 0x01") != std::string::npos);
}

TEST_CASE("completion offers the words that fit where the cursor is", "[console]") {
  std::vector<std::string> actors = {"supervisor", "tracer", "conntrack", "console"};
  CHECK(completion_candidates("", actors) == command_names());
  CHECK(completion_candidates("co", actors) == std::vector<std::string>{"conns", "config"});
  CHECK(completion_candidates("sh", actors) == std::vector<std::string>{"shutdown"});
  CHECK(completion_candidates("inspect ", actors) == actors);
  CHECK(completion_candidates("inspect con", actors) ==
        std::vector<std::string>{"conntrack", "console"});
  CHECK(completion_candidates("inspect tracer ", actors).empty());
  CHECK(completion_candidates("log ", actors) == std::vector<std::string>{"level"});
  CHECK(completion_candidates("log level d", actors) == std::vector<std::string>{"debug"});
  CHECK(completion_candidates("help ca", actors) == std::vector<std::string>{"cache"});
  CHECK(completion_candidates("conns p", actors) ==
        std::vector<std::string>{"port=", "pid=", "proto="});
  // A key already given is not offered again.
  CHECK(completion_candidates("conns port=1 p", actors) ==
        std::vector<std::string>{"pid=", "proto="});
  CHECK(completion_candidates("conns proto=t", actors) == std::vector<std::string>{"proto=tcp"});
  CHECK(completion_candidates("xyz", actors).empty());
  CHECK(completion_candidates("actors ", actors).empty());
  CHECK(completion_candidates("insp\x01", actors).empty());
}

TEST_CASE("complete keeps the typed line, trailing space included", "[console]") {
  auto c = parsed("complete inspect ");
  CHECK(c.kind == command_kind::complete);
  CHECK(c.text == "inspect ");
  CHECK(parsed("complete").text.empty());
  CHECK(parsed("complete co").text == "co");
}

TEST_CASE("help lists every command and explains one", "[console]") {
  auto all = std::get<std::string>(help_text(""));
  for (auto& name : command_names())
    CHECK(all.find("  " + name) != std::string::npos);
  CHECK(all.find("  complete") == std::string::npos); // the client's, not the operator's
  auto one = std::get<std::string>(help_text("conns"));
  CHECK(one.find("conns [addr=IP] [port=N] [pid=N] [netns=N] [proto=tcp|udp]") == 0);
  CHECK(std::holds_alternative<parse_error>(help_text("nope")));
}
