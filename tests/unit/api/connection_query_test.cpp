// The query of /connections: every parameter parsed or refused by name, and the filters, the
// orders and the limit applied to an answer built here.
#include <catch2/catch.hpp>

#include <cstring>
#include <netinet/in.h>

#include "actors/api/connection_query.hpp"

using namespace netlens;

namespace {

connection_view conn(uint8_t proto, uint32_t pid, const char* comm, uint16_t sport, uint16_t dport,
                     bool closed, uint64_t bytes, uint32_t srtt, uint32_t retrans, uint64_t start,
                     bool established = true) {
  connection_view v{};
  v.conn.protocol = proto;
  v.conn.pid = pid;
  std::strncpy(v.conn.comm, comm, sizeof v.conn.comm - 1);
  v.conn.sport = sport;
  v.conn.dport = dport;
  v.conn.bytes_sent = bytes / 2;
  v.conn.bytes_recv = bytes - bytes / 2;
  v.conn.srtt_us = srtt;
  v.conn.retransmits = retrans;
  v.conn.start_ns = start;
  if (proto == IPPROTO_TCP && established)
    v.conn.flags |= NL_FLAG_TCP_BASE_KNOWN;
  v.closed = closed;
  return v;
}

connection_query parse(std::map<std::string, std::string> p) {
  auto q = parse_connection_query(p);
  if (auto* err = std::get_if<std::string>(&q))
    FAIL(*err);
  return std::get<connection_query>(q);
}

std::string refused(std::map<std::string, std::string> p) {
  auto q = parse_connection_query(p);
  REQUIRE(std::holds_alternative<std::string>(q));
  return std::get<std::string>(q);
}

std::vector<uint32_t> pids(const std::vector<connection_view>& v) {
  std::vector<uint32_t> out;
  for (const auto& c : v)
    out.push_back(c.conn.pid);
  return out;
}

std::vector<connection_view> sample() {
  std::vector<connection_view> v;
  v.push_back(conn(IPPROTO_TCP, 1, "nginx", 443, 51000, false, 5000, 300, 0, 10));
  v.push_back(conn(IPPROTO_TCP, 2, "curl", 52000, 443, true, 900, 900, 4, 20));
  v.push_back(conn(IPPROTO_UDP, 3, "dnsmasq", 53, 40000, false, 120, 0, 0, 30));
  v.push_back(conn(IPPROTO_TCP, 4, "curl", 53000, 8080, true, 0, 0, 0, 40, false)); // refused
  v.push_back(conn(IPPROTO_TCP, 5, "postgres", 5432, 41000, false, 70000, 150, 1, 5));
  v[4].container_id = "3f2a9c0d11e4aa";
  return v;
}

} // namespace

TEST_CASE("connection query: every parameter parses", "[api][query]") {
  auto q = parse({{"client_id", "x"},
                  {"proto", "udp"},
                  {"pid", "42"},
                  {"comm", "nginx"},
                  {"container", "3f2a"},
                  {"port", "443"},
                  {"state", "failed"},
                  {"sort", "rtt"},
                  {"top", "3"}});
  CHECK(q.protocol == IPPROTO_UDP);
  CHECK(q.pid == 42u);
  CHECK(q.comm == "nginx");
  CHECK(q.container == "3f2a");
  CHECK(q.port == 443);
  CHECK(q.state == conn_state_filter::failed);
  CHECK(q.sort == conn_sort::rtt);
  CHECK(q.top == 3u);
  CHECK(q.filters());
  CHECK_FALSE(parse({{"sort", "bytes"}, {"top", "1"}}).filters());
}

TEST_CASE("connection query: a bad value or an unknown name is refused by name", "[api][query]") {
  CHECK(refused({{"proto", "icmp"}}) == "proto: 'icmp' is not tcp or udp");
  CHECK(refused({{"port", "70000"}}) == "port: '70000' is not a port (1-65535)");
  CHECK(refused({{"port", "0"}}) == "port: '0' is not a port (1-65535)");
  CHECK(refused({{"port", "8o"}}) == "port: '8o' is not a port (1-65535)");
  CHECK(refused({{"pid", "-1"}}) == "pid: '-1' is not a process id (1-4194304)");
  CHECK(refused({{"state", "listening"}}) == "state: 'listening' is not open, closed or failed");
  CHECK(refused({{"sort", "size"}}) == "sort: 'size' is not bytes, rtt, retransmits or start");
  CHECK(refused({{"top", "0"}}) == "top: '0' is not a count (1-1000000)");
  CHECK(refused({{"comm", "a-name-longer-than-15"}}).rfind("comm: ", 0) == 0);
  CHECK(refused({{"prot", "tcp"}}).rfind("unknown parameter 'prot'", 0) == 0);
}

TEST_CASE("connection query: filters select, each on its own and together", "[api][query]") {
  auto run = [](std::map<std::string, std::string> p) {
    auto v = sample();
    apply_connection_query(parse(p), v);
    return pids(v);
  };
  CHECK(run({}) == std::vector<uint32_t>{1, 2, 3, 4, 5});
  CHECK(run({{"proto", "udp"}}) == std::vector<uint32_t>{3});
  CHECK(run({{"proto", "tcp"}}) == std::vector<uint32_t>{1, 2, 4, 5});
  CHECK(run({{"pid", "2"}}) == std::vector<uint32_t>{2});
  CHECK(run({{"comm", "curl"}}) == std::vector<uint32_t>{2, 4});
  CHECK(run({{"comm", "cur"}}).empty()); // the command exactly
  CHECK(run({{"container", "3f2a"}}) == std::vector<uint32_t>{5});
  CHECK(run({{"port", "443"}}) == std::vector<uint32_t>{1, 2}); // local or peer
  CHECK(run({{"state", "open"}}) == std::vector<uint32_t>{1, 3, 5});
  CHECK(run({{"state", "closed"}}) == std::vector<uint32_t>{2, 4});
  CHECK(run({{"state", "failed"}}) == std::vector<uint32_t>{4});
  CHECK(run({{"comm", "curl"}, {"state", "failed"}}) == std::vector<uint32_t>{4});
}

TEST_CASE("connection query: orders are descending and stable, top cuts after", "[api][query]") {
  auto run = [](std::map<std::string, std::string> p) {
    auto v = sample();
    apply_connection_query(parse(p), v);
    return pids(v);
  };
  CHECK(run({{"sort", "bytes"}}) == std::vector<uint32_t>{5, 1, 2, 3, 4});
  CHECK(run({{"sort", "rtt"}}) == std::vector<uint32_t>{2, 1, 5, 3, 4});
  CHECK(run({{"sort", "retransmits"}}) == std::vector<uint32_t>{2, 5, 1, 3, 4});
  CHECK(run({{"sort", "start"}}) == std::vector<uint32_t>{4, 3, 2, 1, 5});
  CHECK(run({{"sort", "bytes"}, {"top", "2"}}) == std::vector<uint32_t>{5, 1});
  CHECK(run({{"proto", "tcp"}, {"sort", "rtt"}, {"top", "1"}}) == std::vector<uint32_t>{2});
}

TEST_CASE("connection query: a filtering query leaves device-only flows out", "[api][query]") {
  connections_reply reply;
  reply.connections = sample();
  reply.device_flows.resize(2);
  apply_connection_query(parse({{"sort", "bytes"}}), reply);
  CHECK(reply.device_flows.size() == 2);
  apply_connection_query(parse({{"proto", "tcp"}}), reply);
  CHECK(reply.device_flows.empty());
}
