#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "actors/api/connection_json.hpp"
#include "tests/support/conn_builder.hpp"

using namespace netlens;
using netlens::testing::make_conn;

TEST_CASE("connections render as valid JSON with every documented field", "[api]") {
  connections_reply reply;
  nl_conn c = make_conn(99, "10.0.0.1", 4000, "127.0.0.1", 80);
  c.bytes_sent = 5;
  c.bytes_recv = 6;
  c.srtt_us = 33;
  c.tcp_state = 1;
  std::memcpy(c.comm, "we\"ird\\\x01\xff", 10);
  reply.connections.push_back({c, true, {1, 2, 3, 4, 5}, false, {}, "", false, {}});
  reply.connections.push_back(
      {make_conn(7, "::1", 1, "::1", 2, 17), false, {}, false, {}, "", false, {}});
  reply.telemetry = {{"records_lost", 0}, {"map_entries", 2}};

  auto j = nlohmann::json::parse(render_connections(reply));
  REQUIRE(j["connections"].size() == 2);
  auto& a = j["connections"][0];
  for (const char* k :
       {"family",     "type",         "saddr",        "sport",       "daddr",      "dport",
        "netns",      "pid",          "comm",         "direction",   "intra_host", "bytes_sent",
        "bytes_recv", "packets_sent", "packets_recv", "retransmits", "rtt_us",     "rtt_var_us",
        "closed",     "cookie",       "nat",          "last"})
    CHECK(a.contains(k));
  CHECK(a["family"] == "v4");
  CHECK(a["type"] == "tcp");
  CHECK(a["saddr"] == "10.0.0.1");
  CHECK(a["dport"] == 80);
  CHECK(a["comm"] == "we\"ird\\\u0001\u00ff");
  CHECK(a["intra_host"] == true);
  CHECK(a["closed"] == true);
  CHECK(a["tcp_state"] == "ESTABLISHED");
  CHECK(a["nat"].is_null());
  CHECK(a["last"]["bytes_sent"] == 1);
  CHECK(a["last"]["retransmits"] == 5);
  CHECK(j["connections"][1]["family"] == "v6");
  CHECK(j["connections"][1]["type"] == "udp");
  CHECK(j["telemetry"]["map_entries"] == 2);
}

TEST_CASE("a translated connection carries its reply direction as nat", "[api]") {
  connections_reply reply;
  connection_view v{
      make_conn(1, "10.0.0.1", 40000, "10.96.0.10", 80), false, {}, false, {}, "", false, {}};
  v.has_nat = true;
  v.nat = {};
  const uint8_t pod[4] = {10, 244, 1, 7}, client[4] = {10, 0, 0, 1};
  std::memcpy(v.nat.saddr, pod, 4);
  std::memcpy(v.nat.daddr, client, 4);
  v.nat.sport = 8080;
  v.nat.dport = 40000;
  reply.connections.push_back(v);
  auto j = nlohmann::json::parse(render_connections(reply));
  auto& nat = j["connections"][0]["nat"];
  REQUIRE(nat.is_object());
  CHECK(nat ==
        nlohmann::json{
            {"saddr", "10.244.1.7"}, {"sport", 8080}, {"daddr", "10.0.0.1"}, {"dport", 40000}});
}

TEST_CASE("a large answer streams in bounded chunks", "[api]") {
  connections_reply reply;
  for (uint64_t i = 0; i < 5000; ++i)
    reply.connections.push_back(
        {make_conn(i, "10.0.0.1", 1, "10.0.0.2", 2), false, {}, false, {}, "", false, {}});
  size_t biggest = 0, total = 0;
  std::string all;
  stream_connections(
      reply,
      [&](std::string_view piece) {
        biggest = std::max(biggest, piece.size());
        total += piece.size();
        all.append(piece);
        return true;
      },
      16 * 1024);
  CHECK(biggest < 16 * 1024 + 2048);
  CHECK(total > 5000 * 300);
  CHECK(nlohmann::json::parse(all)["connections"].size() == 5000);
}

TEST_CASE("streaming stops when the peer goes away", "[api]") {
  connections_reply reply;
  for (uint64_t i = 0; i < 5000; ++i)
    reply.connections.push_back(
        {make_conn(i, "10.0.0.1", 1, "10.0.0.2", 2), false, {}, false, {}, "", false, {}});
  int calls = 0;
  stream_connections(
      reply,
      [&](std::string_view) {
        ++calls;
        return false;
      },
      1024);
  CHECK(calls == 1);
}

TEST_CASE("attribution renders: container id, device counts and device-only flows", "[api]") {
  connections_reply reply;
  connection_view v{
      make_conn(1, "10.1.0.2", 5000, "10.1.0.1", 80), false, {}, false, {}, "", false, {}};
  v.container_id = std::string(64, 'a');
  v.has_device = true;
  v.device = {3, 300, 4, 400};
  reply.connections.push_back(v);
  reply.connections.push_back(
      {make_conn(2, "10.1.0.2", 5001, "10.1.0.1", 80), false, {}, false, {}, "", false, {}});
  device_flow f;
  f.netns = 4026532000u;
  f.ifindex = 7;
  f.device = "veth0";
  f.family = AF_INET6;
  f.protocol = IPPROTO_UDP;
  f.ingress = true;
  inet_pton(AF_INET6, "fd00::2", f.ends.saddr);
  inet_pton(AF_INET6, "fd00::1", f.ends.daddr);
  f.ends.sport = 53;
  f.ends.dport = 4444;
  f.packets = 2;
  f.bytes = 180;
  reply.device_flows.push_back(f);

  auto j = nlohmann::json::parse(render_connections(reply));
  auto& a = j["connections"][0];
  CHECK(a["container_id"] == std::string(64, 'a'));
  CHECK(a["device"]["packets_in"] == 3);
  CHECK(a["device"]["bytes_in"] == 300);
  CHECK(a["device"]["packets_out"] == 4);
  CHECK(a["device"]["bytes_out"] == 400);
  CHECK(j["connections"][1]["container_id"] == "");
  CHECK(j["connections"][1]["device"].is_null());
  REQUIRE(j["device_flows"].size() == 1);
  auto& d = j["device_flows"][0];
  CHECK(d["netns"] == 4026532000u);
  CHECK(d["ifindex"] == 7);
  CHECK(d["device"] == "veth0");
  CHECK(d["direction"] == "ingress");
  CHECK(d["family"] == "v6");
  CHECK(d["type"] == "udp");
  CHECK(d["saddr"] == "fd00::2");
  CHECK(d["sport"] == 53);
  CHECK(d["daddr"] == "fd00::1");
  CHECK(d["dport"] == 4444);
  CHECK(d["packets"] == 2);
  CHECK(d["bytes"] == 180);
}

TEST_CASE("a TCP connection closed before it was established says why it failed", "[api]") {
  connections_reply reply;
  struct {
    uint8_t sk_err;
    const char* failure;
  } cases[] = {{ECONNREFUSED, "refused"},
               {ETIMEDOUT, "timeout"},
               {ECONNRESET, "reset"},
               {EHOSTUNREACH, "unreachable"},
               {ENETUNREACH, "unreachable"},
               {0, "aborted"},
               {EACCES, "other"},
               {NL_SK_ERR_UNKNOWN, "unknown"}};
  for (const auto& k : cases) {
    nl_conn c = make_conn(1, "10.0.0.1", 40000, "10.0.0.2", 80);
    c.flags = 0; // never established: no counting base
    c.tcp_state = 7;
    c.sk_err = k.sk_err;
    reply.connections.push_back({c, true, {}, false, {}, "", false, {}});
  }
  nl_conn established = make_conn(2, "10.0.0.1", 40001, "10.0.0.2", 80);
  established.flags = NL_FLAG_TCP_BASE_KNOWN;
  established.sk_err = ECONNRESET; // a reset after establishment is not a failed connect
  reply.connections.push_back({established, true, {}, false, {}, "", false, {}});
  nl_conn open = make_conn(3, "10.0.0.1", 40002, "10.0.0.2", 80);
  reply.connections.push_back({open, false, {}, false, {}, "", false, {}});

  auto j = nlohmann::json::parse(render_connections(reply));
  REQUIRE(j["connections"].size() == std::size(cases) + 2);
  for (size_t i = 0; i < std::size(cases); ++i) {
    INFO("sk_err " << int(cases[i].sk_err));
    CHECK(j["connections"][i]["failed"] == true);
    CHECK(j["connections"][i]["failure"] == cases[i].failure);
    CHECK(j["connections"][i]["sport"] == 40000);
  }
  CHECK(j["connections"][std::size(cases)]["failed"] == false);
  CHECK(j["connections"][std::size(cases)]["failure"].is_null());
  CHECK(j["connections"][std::size(cases) + 1]["failure"].is_null());
}
