// What each console command prints, from the values the actors answer with.
#include <catch2/catch.hpp>

#include <arpa/inet.h>

#include "actors/console/command_parser.hpp"
#include "actors/console/console_format.hpp"
#include "tests/support/conn_builder.hpp"

using namespace netlens;
using netlens::testing::make_conn;

namespace {

actor_stats actor(const std::string& name, uint64_t id, uint64_t handled) {
  actor_stats a;
  a.name = name;
  a.state = actor_state::running;
  a.id = id;
  a.messages_handled = handled;
  a.mailbox_size = 3;
  a.uptime_ms = 65000;
  a.messages_per_s = 12.5;
  return a;
}

conn_filter filter_of(const std::string& line) {
  return std::get<console_command>(parse_command(line)).filter;
}

connection_view view(nl_conn c) {
  connection_view v;
  v.conn = c;
  return v;
}

size_t count_lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

} // namespace

TEST_CASE("uptimes read at a glance", "[console]") {
  CHECK(format_uptime(1234) == "1.2s");
  CHECK(format_uptime(65000) == "1m05s");
  CHECK(format_uptime(2 * 3600000 + 3 * 60000) == "2h03m");
  CHECK(format_uptime(3 * 86400000ull + 4 * 3600000) == "3d04h");
}

TEST_CASE("the actors table has every column and marks an actor that did not answer", "[console]") {
  agent_stats s;
  s.actors.push_back(actor("supervisor", 1, 100));
  actor_stats slow = actor("tracer", 7, 0);
  slow.answered = false;
  slow.state = actor_state::unresponsive;
  slow.restarts = 2;
  slow.last_error = "boom";
  s.actors.push_back(slow);
  actor_stats down;
  down.name = "api";
  down.state = actor_state::down;
  s.actors.push_back(down);
  std::string t = format_actors_table(s);
  CHECK(count_lines(t) == 4);
  for (const char* col :
       {"ACTOR", "ID", "STATE", "MAILBOX", "HANDLED", "MSG/S", "RESTARTS", "UPTIME", "LAST ERROR"})
    CHECK(t.find(col) != std::string::npos);
  CHECK(t.find("supervisor") != std::string::npos);
  CHECK(t.find("1m05s") != std::string::npos);
  CHECK(t.find("12.5") != std::string::npos);
  CHECK(t.find("not answering") != std::string::npos);
  CHECK(t.find("boom") != std::string::npos);
  CHECK(t.find("down") != std::string::npos);
}

TEST_CASE("inspect shows one actor's runtime figures and its own counters", "[console]") {
  agent_stats s;
  actor_stats c = actor("conntrack", 9, 50);
  c.counters = {{"entries", 12}, {"lookups_hit", 3}};
  s.actors.push_back(c);
  std::string out;
  REQUIRE(format_inspect(s, "conntrack", out));
  CHECK(out.find("id                 9") != std::string::npos);
  CHECK(out.find("mailbox            3") != std::string::npos);
  CHECK(out.find("entries      12") != std::string::npos);
  CHECK(out.find("lookups_hit  3") != std::string::npos);
  CHECK_FALSE(format_inspect(s, "nobody", out));
  CHECK(out == "no actor named 'nobody'; actors: conntrack");
}

TEST_CASE("conns filters by port, pid, address, netns and protocol", "[console]") {
  connections_reply r;
  auto a = make_conn(1, "10.0.0.1", 40000, "93.184.216.34", 443);
  a.pid = 12;
  a.netns = 100;
  auto b = make_conn(2, "10.0.0.1", 40001, "10.0.0.9", 53, IPPROTO_UDP);
  b.pid = 13;
  b.netns = 200;
  auto c = make_conn(3, "::1", 5000, "::1", 8080);
  c.pid = 12;
  r.connections = {view(a), view(b), view(c)};
  // b is NAT'd: its translation carries the port the filter asks for.
  r.connections[1].has_nat = true;
  inet_pton(AF_INET, "172.16.0.5", r.connections[1].nat.saddr);
  r.connections[1].nat.sport = 5353;

  auto matching = [&](const std::string& line) {
    std::vector<uint64_t> ids;
    for (auto& v : r.connections)
      if (connection_matches(v, filter_of(line)))
        ids.push_back(v.conn.cookie);
    return ids;
  };
  CHECK(matching("conns") == std::vector<uint64_t>{1, 2, 3});
  CHECK(matching("conns port=443") == std::vector<uint64_t>{1});
  CHECK(matching("conns port=443 pid=12") == std::vector<uint64_t>{1});
  CHECK(matching("conns port=443 pid=13").empty());
  CHECK(matching("conns pid=12") == std::vector<uint64_t>{1, 3});
  CHECK(matching("conns addr=10.0.0.1") == std::vector<uint64_t>{1, 2});
  CHECK(matching("conns addr=::1") == std::vector<uint64_t>{3});
  CHECK(matching("conns addr=172.16.0.5") == std::vector<uint64_t>{2});
  CHECK(matching("conns port=5353") == std::vector<uint64_t>{2});
  CHECK(matching("conns netns=200") == std::vector<uint64_t>{2});
  CHECK(matching("conns proto=udp") == std::vector<uint64_t>{2});

  std::string t = format_connections(r, filter_of("conns pid=12"));
  CHECK(t.find("10.0.0.1:40000") != std::string::npos);
  CHECK(t.find("93.184.216.34:443") != std::string::npos);
  CHECK(t.find("[::1]:8080") != std::string::npos);
  CHECK(t.find("10.0.0.9") == std::string::npos);
  CHECK(t.find("2 of 3 connections match the filter") != std::string::npos);
}

TEST_CASE("a process name cannot put control bytes on the operator's terminal", "[console]") {
  connections_reply r;
  auto a = make_conn(1, "10.0.0.1", 1, "10.0.0.2", 2);
  std::strcpy(a.comm, "ev\x1b[2Jil");
  r.connections = {view(a)};
  std::string t = format_connections(r, {});
  CHECK(t.find('\x1b') == std::string::npos);
  CHECK(t.find("ev?[2Jil") != std::string::npos);
}

TEST_CASE("cache lists entries with both directions and the orphan mark", "[console]") {
  conntrack_listing l;
  l.total = 7;
  ct_cache_row row;
  row.entry.family = AF_INET;
  row.entry.protocol = IPPROTO_TCP;
  row.entry.netns = 4026531840u;
  inet_pton(AF_INET, "10.0.0.1", row.entry.orig.saddr);
  inet_pton(AF_INET, "10.96.0.10", row.entry.orig.daddr);
  row.entry.orig.sport = 40000;
  row.entry.orig.dport = 80;
  inet_pton(AF_INET, "10.244.1.5", row.entry.reply.saddr);
  inet_pton(AF_INET, "10.0.0.1", row.entry.reply.daddr);
  row.entry.reply.sport = 8080;
  row.entry.reply.dport = 40000;
  row.orphan = true;
  l.rows.push_back(row);
  std::string t = format_cache(l);
  CHECK(t.find("10.0.0.1:40000>10.96.0.10:80") != std::string::npos);
  CHECK(t.find("10.244.1.5:8080>10.0.0.1:40000") != std::string::npos);
  CHECK(t.find("yes") != std::string::npos);
  CHECK(t.find("1 of 7 cache entries") != std::string::npos);
}

TEST_CASE("a shutdown phase line has its duration and who missed the deadline", "[console]") {
  shutdown_phase_report r;
  r.phase = "stop";
  r.duration_us = 1234;
  CHECK(format_phase(r) == "phase stop: done in 1.2 ms\n");
  r.no_answer = {"perf_consumer (request_timeout)"};
  CHECK(format_phase(r) ==
        "phase stop: done in 1.2 ms; no answer from: perf_consumer (request_timeout)\n");
}

TEST_CASE("top shows the counters that moved, per second, fastest first", "[console]") {
  agent_stats before;
  actor_stats t0 = actor("tracer", 2, 10);
  t0.counters = {{"events", 100}, {"idle", 5}, {"drops", 0}};
  before.actors.push_back(t0);
  agent_stats now = before;
  now.actors[0].counters = {{"events", 300}, {"idle", 5}, {"drops", 10}};
  std::string frame = format_top(now, before, 2.0, "12:00:00 UTC");
  CHECK(frame.find("12:00:00 UTC") != std::string::npos);
  auto events = frame.find("tracer.events");
  auto drops = frame.find("tracer.drops");
  REQUIRE(events != std::string::npos);
  REQUIRE(drops != std::string::npos);
  CHECK(events < drops);
  CHECK(frame.find("100") != std::string::npos); // 200 events in 2 s
  CHECK(frame.find("tracer.idle") == std::string::npos);
  CHECK(format_top(now, {}, 0, "t").find("(from the next refresh)") != std::string::npos);
}
