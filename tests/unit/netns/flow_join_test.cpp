// join_flows: a connection owns its egress flow and the reversed ingress flow over every device
// of its namespace; what no connection owns is reported per device.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "actors/netns/device_filter.hpp"
#include "actors/netns/flow_join.hpp"

using namespace netlens;

namespace {

ct_endpoints ends(const char* s, uint16_t sp, const char* d, uint16_t dp) {
  ct_endpoints e;
  inet_pton(AF_INET, s, e.saddr);
  inet_pton(AF_INET, d, e.daddr);
  e.sport = sp;
  e.dport = dp;
  return e;
}

ct_tuple tuple(uint32_t netns, const ct_endpoints& e, uint8_t proto = IPPROTO_TCP) {
  ct_tuple t;
  t.netns = netns;
  t.family = AF_INET;
  t.protocol = proto;
  t.ends = e;
  return t;
}

tc_flow flow(uint32_t netns, uint32_t ifindex, const ct_endpoints& e, nl_tc_direction dir,
             uint64_t packets, uint64_t bytes, uint8_t proto = IPPROTO_TCP) {
  tc_flow f;
  std::memcpy(f.key.saddr, e.saddr, 16);
  std::memcpy(f.key.daddr, e.daddr, 16);
  f.key.sport = e.sport;
  f.key.dport = e.dport;
  f.key.netns = netns;
  f.key.ifindex = ifindex;
  f.key.family = AF_INET;
  f.key.protocol = proto;
  f.key.direction = dir;
  f.packets = packets;
  f.bytes = bytes;
  return f;
}

std::string names(uint32_t netns, uint32_t ifindex) {
  return "dev" + std::to_string(netns) + "." + std::to_string(ifindex);
}

} // namespace

TEST_CASE("join_flows gives a connection its egress and its reversed ingress flow",
          "[netns][flow_join]") {
  auto e = ends("10.0.0.2", 40000, "10.0.0.1", 80);
  std::vector<ct_tuple> conns{tuple(100, e), tuple(100, ends("10.0.0.2", 40001, "10.0.0.1", 80))};
  std::vector<tc_flow> flows{
      flow(100, 2, e, NL_TC_EGRESS, 5, 500),
      flow(100, 2, reversed(e), NL_TC_INGRESS, 4, 4000),
      // the same tuple in another namespace is not this connection's
      flow(200, 2, e, NL_TC_EGRESS, 9, 900),
      // the same tuple the wrong way round (ingress s->d) is not this connection's either
      flow(100, 2, e, NL_TC_INGRESS, 1, 60),
  };
  auto r = join_flows(conns, flows, names);
  REQUIRE(r.devices.size() == 1);
  CHECK(r.devices[0].first == 0);
  CHECK(r.devices[0].second.packets_out == 5);
  CHECK(r.devices[0].second.bytes_out == 500);
  CHECK(r.devices[0].second.packets_in == 4);
  CHECK(r.devices[0].second.bytes_in == 4000);
  REQUIRE(r.device_only.size() == 2);
  for (const auto& d : r.device_only) {
    CHECK(d.device == names(d.netns, d.ifindex));
    if (d.netns == 200) {
      CHECK_FALSE(d.ingress);
      CHECK(d.packets == 9);
      CHECK(d.ends == e);
    } else {
      CHECK(d.ingress);
      CHECK(d.bytes == 60);
    }
  }
}

TEST_CASE("join_flows sums one flow over the devices of its namespace", "[netns][flow_join]") {
  auto e = ends("10.0.0.2", 40000, "10.0.0.1", 53);
  std::vector<ct_tuple> conns{tuple(7, e, IPPROTO_UDP)};
  std::vector<tc_flow> flows{flow(7, 2, e, NL_TC_EGRESS, 1, 100, IPPROTO_UDP),
                             flow(7, 3, e, NL_TC_EGRESS, 2, 200, IPPROTO_UDP),
                             // TCP is another flow
                             flow(7, 3, e, NL_TC_EGRESS, 50, 5000)};
  auto r = join_flows(conns, flows, names);
  REQUIRE(r.devices.size() == 1);
  CHECK(r.devices[0].second.packets_out == 3);
  CHECK(r.devices[0].second.bytes_out == 300);
  CHECK(r.devices[0].second.packets_in == 0);
  REQUIRE(r.device_only.size() == 1);
  CHECK(r.device_only[0].protocol == IPPROTO_TCP);
  CHECK(r.device_only[0].ifindex == 3);
}

TEST_CASE("join_flows with no flows or no connections", "[netns][flow_join]") {
  auto e = ends("10.0.0.2", 1, "10.0.0.1", 2);
  CHECK(join_flows({tuple(1, e)}, {}, names).devices.empty());
  auto r = join_flows({}, {flow(1, 1, e, NL_TC_EGRESS, 1, 1)}, nullptr);
  CHECK(r.devices.empty());
  REQUIRE(r.device_only.size() == 1);
  CHECK(r.device_only[0].device.empty());
}

TEST_CASE("device_selected: exclude wins, an empty include takes every device",
          "[netns][device_filter]") {
  std::vector<std::string> none, lo{"lo"}, veth{"veth", "eth"};
  CHECK(device_selected("eth0", none, lo));
  CHECK_FALSE(device_selected("lo", none, lo));
  CHECK_FALSE(device_selected("loop0", none, lo)); // a prefix, not a name
  CHECK(device_selected("veth12", veth, lo));
  CHECK(device_selected("eth1", veth, lo));
  CHECK_FALSE(device_selected("br0", veth, lo));
  CHECK_FALSE(device_selected("veth1", veth, {"veth1"}));
  CHECK(device_selected("veth2", veth, {"veth1"}));
  CHECK(device_selected("", none, none));
}

TEST_CASE("join_flows gives a DNAT'd connection the flows its packets carry past NAT",
          "[netns][flow_join]") {
  // The socket says 10.0.0.2:40000 -> 10.9.9.9:80; DNAT sends it to 10.0.1.5:8080, and the
  // devices see that address on the wire.
  auto socket_ends = ends("10.0.0.2", 40000, "10.9.9.9", 80);
  auto wire = ends("10.0.0.2", 40000, "10.0.1.5", 8080);
  std::vector<ct_tuple> conns{tuple(5, socket_ends)};
  ct_tuple past_nat = tuple(0, wire); // the netns comes from the connection's tuple
  std::vector<tc_flow> flows{flow(5, 2, wire, NL_TC_EGRESS, 6, 2372),
                             flow(5, 2, reversed(wire), NL_TC_INGRESS, 5, 4300)};
  auto without = join_flows(conns, flows, names);
  CHECK(without.devices.empty());
  CHECK(without.device_only.size() == 2);
  auto r = join_flows(conns, flows, names, {past_nat});
  REQUIRE(r.devices.size() == 1);
  CHECK(r.devices[0].second.packets_out == 6);
  CHECK(r.devices[0].second.bytes_out == 2372);
  CHECK(r.devices[0].second.packets_in == 5);
  CHECK(r.devices[0].second.bytes_in == 4300);
  CHECK(r.device_only.empty());
  // Not translated (family 0): only the socket's tuple.
  CHECK(join_flows(conns, flows, names, {ct_tuple{}}).devices.empty());
}

TEST_CASE("flow_joiner over pages gives what join_flows gives over the whole answer",
          "[netns][flow_join]") {
  // Six connections in one namespace, each with its egress and ingress flow, plus two flows no
  // connection owns; the pages split the connections 2 + 3 + 1 (the last page may be empty).
  std::vector<ct_tuple> conns;
  std::vector<tc_flow> flows;
  for (uint16_t i = 0; i < 6; ++i) {
    auto e = ends("10.0.0.2", static_cast<uint16_t>(40000 + i), "10.0.0.1", 80);
    conns.push_back(tuple(100, e));
    flows.push_back(flow(100, 2, e, NL_TC_EGRESS, i + 1u, 100u * (i + 1)));
    flows.push_back(flow(100, 2, reversed(e), NL_TC_INGRESS, i + 2u, 1000u * (i + 1)));
  }
  flows.push_back(flow(100, 2, ends("10.0.0.9", 1, "10.0.0.8", 2), NL_TC_EGRESS, 7, 70));
  flows.push_back(flow(300, 4, ends("10.0.0.2", 40000, "10.0.0.1", 80), NL_TC_EGRESS, 8, 80));
  auto whole = join_flows(conns, flows, names);

  flow_joiner joiner(flows);
  std::vector<std::pair<uint32_t, device_counts>> paged;
  size_t at = 0;
  for (size_t n : {size_t{2}, size_t{3}, size_t{1}, size_t{0}}) {
    std::vector<ct_tuple> page(conns.begin() + at, conns.begin() + at + n);
    for (auto [index, counts] : joiner.join(page))
      paged.emplace_back(static_cast<uint32_t>(at + index), counts);
    at += n;
  }
  auto left = joiner.unowned(names);
  REQUIRE(paged.size() == whole.devices.size());
  for (size_t i = 0; i < paged.size(); ++i) {
    CHECK(paged[i].first == whole.devices[i].first);
    CHECK(paged[i].second.bytes_out == whole.devices[i].second.bytes_out);
    CHECK(paged[i].second.bytes_in == whole.devices[i].second.bytes_in);
    CHECK(paged[i].second.packets_in == whole.devices[i].second.packets_in);
  }
  REQUIRE(left.size() == 2);
  REQUIRE(whole.device_only.size() == 2);
  uint64_t left_bytes = 0;
  for (const auto& d : left)
    left_bytes += d.bytes;
  CHECK(left_bytes == 150);
  // A flow a connection of an earlier page took is not taken again by a later page's duplicate.
  flow_joiner again(flows);
  CHECK(again.join({conns[0]}).size() == 1);
  CHECK(again.join({conns[0]}).empty());
}
