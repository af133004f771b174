// The traffic metrics: what each label says, the ephemeral-port rule, the hard series budget
// and its fold counter, and a page promtool accepts even with 50,000 distinct peers.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "actors/exporter/traffic_metrics.hpp"
#include "config/config.hpp"

using namespace netlens;

namespace {

struct conn_spec {
  uint8_t protocol = IPPROTO_TCP;
  uint8_t direction = NL_DIR_OUTGOING;
  std::string peer = "10.0.0.1"; // v6 when it holds a ':'
  uint16_t sport = 40000;
  uint16_t dport = 443;
  std::string comm = "curl";
  uint32_t netns = 4026531840u;
  std::string container_id;
};

flow_report report_of(const conn_spec& s, conn_counters delta = {}) {
  flow_report r;
  r.conn.protocol = s.protocol;
  r.conn.direction = s.direction;
  bool v6 = s.peer.find(':') != std::string::npos;
  r.conn.family = v6 ? AF_INET6 : AF_INET;
  REQUIRE(inet_pton(v6 ? AF_INET6 : AF_INET, s.peer.c_str(), r.conn.daddr) == 1);
  r.conn.sport = s.sport;
  r.conn.dport = s.dport;
  std::memcpy(r.conn.comm, s.comm.data(), std::min<size_t>(s.comm.size(), NL_COMM_LEN));
  r.conn.netns = s.netns;
  r.container_id = s.container_id;
  r.delta = delta;
  return r;
}

conn_counters bytes(uint64_t sent, uint64_t recv = 0) {
  conn_counters c;
  c.bytes_sent = sent;
  c.bytes_recv = recv;
  return c;
}

std::string page_of(const traffic_metrics& m) {
  std::string out;
  m.render(out);
  return out;
}

// "name{labels}" -> value, for every sample line of a page.
std::map<std::string, uint64_t> samples_of(const std::string& page) {
  std::map<std::string, uint64_t> out;
  std::istringstream in(page);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stoull(line.substr(space + 1));
  }
  return out;
}

// The samples of one family: labels text -> value.
std::map<std::string, uint64_t> family_of(const std::string& page, const std::string& name) {
  std::map<std::string, uint64_t> out;
  for (const auto& [key, value] : samples_of(page))
    if (key.compare(0, name.size(), name) == 0 &&
        (key.size() == name.size() || key[name.size()] == '{'))
      out[key.substr(name.size())] = value;
  return out;
}

const char* k_sent = "netlens_traffic_sent_bytes_total";

// One label set's sent bytes with only `label` chosen.
std::map<std::string, uint64_t> sent_by(const std::string& label,
                                        const std::vector<conn_spec>& conns) {
  traffic_metrics m({label});
  for (const auto& c : conns)
    m.observe(report_of(c, bytes(1)));
  return family_of(page_of(m), k_sent);
}

struct promtool_result {
  int exit_code = -1;
  std::string output;
};

// The page on promtool's stdin; what it printed, stdout and stderr together.
promtool_result run_promtool(const std::string& page) {
  char path[] = "/tmp/traffic_metrics_page_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, page.data(), page.size()) == static_cast<ssize_t>(page.size()));
  close(fd);
  std::string cmd = "promtool check metrics < " + std::string(path) + " 2>&1";
  promtool_result r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  unlink(path);
  return r;
}

bool have_promtool() {
  return access("/usr/bin/promtool", X_OK) == 0;
}

} // namespace

// The config loader checks export.metrics.labels against its own list; a label added to one
// side only would be refused by the loader or silently skipped here.
TEST_CASE("the known labels are the ones the config loader accepts", "[traffic_metrics]") {
  std::vector<std::string_view> config_labels(std::begin(k_traffic_metrics_labels),
                                              std::end(k_traffic_metrics_labels));
  CHECK(traffic_metrics::known_labels() == config_labels);
  // enum label in traffic_metrics.hpp follows this order.
  CHECK(config_labels.front() == "protocol");
  CHECK(config_labels.back() == "peer_port");
}

TEST_CASE("the default labels are protocol and direction", "[traffic_metrics]") {
  traffic_metrics m;
  conn_spec tcp_out;
  conn_spec udp_in;
  udp_in.protocol = IPPROTO_UDP;
  udp_in.direction = NL_DIR_INCOMING;
  conn_spec none;
  none.direction = NL_DIR_NONE;
  m.observe(report_of(tcp_out, bytes(100)));
  m.observe(report_of(udp_in, bytes(20)));
  m.observe(report_of(none, bytes(3)));
  m.observe(report_of(tcp_out, bytes(1)));
  auto sent = family_of(page_of(m), k_sent);
  CHECK(sent == std::map<std::string, uint64_t>{{"{protocol=\"tcp\",direction=\"outgoing\"}", 101},
                                                {"{protocol=\"udp\",direction=\"incoming\"}", 20},
                                                {"{protocol=\"tcp\",direction=\"unknown\"}", 3}});
  CHECK(m.stats().series == 3);
  CHECK(m.stats().observations == 4);
}

TEST_CASE("each label says what the connection is", "[traffic_metrics]") {
  conn_spec v4;
  conn_spec v6;
  v6.peer = "2001:db8::1";
  conn_spec odd_direction;
  odd_direction.direction = 7; // not an nl_direction: one series with NL_DIR_NONE
  conn_spec none;
  none.direction = NL_DIR_NONE;

  SECTION("family") {
    CHECK(sent_by("family", {v4, v6}) ==
          std::map<std::string, uint64_t>{{"{family=\"ipv4\"}", 1}, {"{family=\"ipv6\"}", 1}});
  }
  SECTION("direction: unknown for NL_DIR_NONE and anything else") {
    CHECK(sent_by("direction", {v4, none, odd_direction}) ==
          std::map<std::string, uint64_t>{{"{direction=\"outgoing\"}", 1},
                                          {"{direction=\"unknown\"}", 2}});
  }
  SECTION("protocol") {
    conn_spec udp;
    udp.protocol = IPPROTO_UDP;
    CHECK(sent_by("protocol", {v4, udp, v4}) ==
          std::map<std::string, uint64_t>{{"{protocol=\"tcp\"}", 2}, {"{protocol=\"udp\"}", 1}});
  }
  SECTION("comm") {
    conn_spec nginx;
    nginx.comm = "nginx";
    conn_spec full; // 16 bytes, no terminator in the record
    full.comm = "abcdefghijklmnop";
    CHECK(sent_by("comm", {v4, nginx, full}) ==
          std::map<std::string, uint64_t>{
              {"{comm=\"curl\"}", 1}, {"{comm=\"nginx\"}", 1}, {"{comm=\"abcdefghijklmnop\"}", 1}});
  }
  SECTION("container_id: empty when not in a container") {
    conn_spec in_container;
    in_container.container_id = "3f2a9c";
    CHECK(sent_by("container_id", {v4, in_container}) ==
          std::map<std::string, uint64_t>{{"{container_id=\"\"}", 1},
                                          {"{container_id=\"3f2a9c\"}", 1}});
  }
  SECTION("netns: the inode in decimal") {
    conn_spec other_ns;
    other_ns.netns = 4026532999u;
    CHECK(sent_by("netns", {v4, other_ns}) ==
          std::map<std::string, uint64_t>{{"{netns=\"4026531840\"}", 1},
                                          {"{netns=\"4026532999\"}", 1}});
  }
  SECTION("peer_address: v4 and v6 text") {
    CHECK(sent_by("peer_address", {v4, v6, v4}) ==
          std::map<std::string, uint64_t>{{"{peer_address=\"10.0.0.1\"}", 2},
                                          {"{peer_address=\"2001:db8::1\"}", 1}});
  }
}

TEST_CASE("ports: only the server's, never an ephemeral one", "[traffic_metrics]") {
  // Three outgoing connections to one server port from three ephemeral local ports, and two
  // incoming ones to a local server port from two ephemeral peer ports.
  std::vector<conn_spec> conns;
  for (uint16_t eph : {40001, 40002, 40003}) {
    conn_spec out;
    out.sport = eph;
    out.dport = 443;
    conns.push_back(out);
  }
  for (uint16_t eph : {50001, 50002}) {
    conn_spec in;
    in.direction = NL_DIR_INCOMING;
    in.sport = 8080;
    in.dport = eph;
    conns.push_back(in);
  }
  SECTION("local_port: the server port of incoming connections, empty for outgoing") {
    CHECK(sent_by("local_port", conns) ==
          std::map<std::string, uint64_t>{{"{local_port=\"\"}", 3}, {"{local_port=\"8080\"}", 2}});
  }
  SECTION("peer_port: the server port of outgoing connections, empty for incoming") {
    CHECK(sent_by("peer_port", conns) ==
          std::map<std::string, uint64_t>{{"{peer_port=\"443\"}", 3}, {"{peer_port=\"\"}", 2}});
  }
  SECTION("both: one series per server port, no ephemeral port anywhere") {
    traffic_metrics m({"local_port", "peer_port"});
    for (const auto& c : conns)
      m.observe(report_of(c, bytes(1)));
    CHECK(family_of(page_of(m), k_sent) ==
          std::map<std::string, uint64_t>{{"{local_port=\"\",peer_port=\"443\"}", 3},
                                          {"{local_port=\"8080\",peer_port=\"\"}", 2}});
  }
}

TEST_CASE("every counter adds what the report says moved", "[traffic_metrics]") {
  traffic_metrics m;
  conn_spec c;
  conn_counters d;
  d.bytes_sent = 1000;
  d.bytes_recv = 5000;
  d.packets_sent = 10;
  d.packets_recv = 7;
  d.retransmits = 2;
  auto first = report_of(c, d);
  first.first_report = true;
  m.observe(first);
  // Only a closed socket or an idle UDP flow counts as closed: a live sample, an active timeout,
  // the agent's shutdown and a lost connection do not.
  for (auto reason : {flow_end_reason::none, flow_end_reason::active_timeout,
                      flow_end_reason::forced_end, flow_end_reason::lack_of_resources,
                      flow_end_reason::end_of_flow, flow_end_reason::idle_timeout}) {
    auto r = report_of(c, d);
    r.reason = reason;
    m.observe(r);
  }
  auto s = samples_of(page_of(m));
  const std::string labels = "{protocol=\"tcp\",direction=\"outgoing\"}";
  CHECK(s["netlens_traffic_sent_bytes_total" + labels] == 7000);
  CHECK(s["netlens_traffic_received_bytes_total" + labels] == 35000);
  CHECK(s["netlens_traffic_sent_packets_total" + labels] == 70);
  CHECK(s["netlens_traffic_received_packets_total" + labels] == 49);
  CHECK(s["netlens_traffic_retransmits_total" + labels] == 14);
  CHECK(s["netlens_traffic_connections_opened_total" + labels] == 1);
  CHECK(s["netlens_traffic_connections_closed_total" + labels] == 2);
  CHECK(s["netlens_traffic_series"] == 1);
  CHECK(s["netlens_traffic_series_limit"] == 5000);
  CHECK(s["netlens_traffic_label_sets_folded_total"] == 0);
}

TEST_CASE("the page has HELP and TYPE for every family, payload bytes said so",
          "[traffic_metrics]") {
  traffic_metrics m;
  auto page = page_of(m); // no series yet: families with no samples, still well formed
  for (const char* counter :
       {"netlens_traffic_sent_bytes_total", "netlens_traffic_received_bytes_total",
        "netlens_traffic_sent_packets_total", "netlens_traffic_received_packets_total",
        "netlens_traffic_retransmits_total", "netlens_traffic_connections_opened_total",
        "netlens_traffic_connections_closed_total", "netlens_traffic_label_sets_folded_total"})
    CHECK(page.find("# TYPE " + std::string(counter) + " counter\n") != std::string::npos);
  for (const char* gauge : {"netlens_traffic_series", "netlens_traffic_series_limit"})
    CHECK(page.find("# TYPE " + std::string(gauge) + " gauge\n") != std::string::npos);
  CHECK(page.find("# HELP netlens_traffic_sent_bytes_total Transport payload") !=
        std::string::npos);
  CHECK(page.find("# HELP netlens_traffic_received_bytes_total Transport payload") !=
        std::string::npos);
  CHECK(samples_of(page)["netlens_traffic_series"] == 0);
}

TEST_CASE("a new label set past the budget folds into `other`", "[traffic_metrics]") {
  const uint64_t max_series = 4;
  traffic_metrics m({"peer_address", "protocol"}, max_series);
  // 10 distinct peers, observed in rounds so folded sets repeat; counters vary by peer and round.
  uint64_t expected_sent = 0, expected_recv = 0, expected_opened = 0;
  uint64_t observations = 0, folded_observations = 0;
  for (int round = 0; round < 3; ++round) {
    for (int peer = 0; peer < 10; ++peer) {
      conn_spec c;
      c.peer = "192.0.2." + std::to_string(peer + 1);
      auto r = report_of(c, bytes(100 * peer + round + 1, 7 * peer + 3));
      r.first_report = round == 0;
      m.observe(r);
      expected_sent += 100 * peer + round + 1;
      expected_recv += 7 * peer + 3;
      expected_opened += round == 0;
      ++observations;
      folded_observations += peer >= static_cast<int>(max_series);
    }
  }
  auto st = m.stats();
  CHECK(st.series == max_series + 1);
  CHECK(st.series_limit == max_series);
  CHECK(st.label_sets_folded == 6); // each distinct folded set once, however often it came back
  CHECK_FALSE(st.label_sets_folded_estimated);
  CHECK(st.folded_observations == folded_observations);
  CHECK(st.observations == observations);

  auto page = page_of(m);
  auto sent = family_of(page, k_sent);
  CHECK(sent.size() == max_series + 1);
  CHECK(sent.count("{peer_address=\"192.0.2.1\",protocol=\"tcp\"}") == 1);
  CHECK(sent.count("{peer_address=\"192.0.2.4\",protocol=\"tcp\"}") == 1);
  CHECK(sent.count("{peer_address=\"192.0.2.5\",protocol=\"tcp\"}") == 0);
  REQUIRE(sent.count("{peer_address=\"other\",protocol=\"other\"}") == 1);
  // Peers 5..10 (0-based 4..9), three rounds each, all in `other`.
  uint64_t expected_other = 0;
  for (int peer = 4; peer < 10; ++peer)
    for (int round = 0; round < 3; ++round)
      expected_other += 100 * peer + round + 1;
  CHECK(sent["{peer_address=\"other\",protocol=\"other\"}"] == expected_other);

  auto sum = [](const std::map<std::string, uint64_t>& f) {
    uint64_t total = 0;
    for (const auto& kv : f)
      total += kv.second;
    return total;
  };
  CHECK(sum(sent) == expected_sent);
  CHECK(sum(family_of(page, "netlens_traffic_received_bytes_total")) == expected_recv);
  CHECK(sum(family_of(page, "netlens_traffic_connections_opened_total")) == expected_opened);
  auto s = samples_of(page);
  CHECK(s["netlens_traffic_series"] == max_series + 1);
  CHECK(s["netlens_traffic_series_limit"] == max_series);
  CHECK(s["netlens_traffic_label_sets_folded_total"] == 6);
  CHECK(s["netlens_traffic_folded_observations_total"] == folded_observations);
}

TEST_CASE("a series, once created, stays", "[traffic_metrics]") {
  traffic_metrics m({"comm"}, 2);
  conn_spec a;
  a.comm = "a";
  conn_spec b;
  b.comm = "b";
  m.observe(report_of(a, bytes(1)));
  m.observe(report_of(b, bytes(1)));
  for (int i = 0; i < 100; ++i) {
    conn_spec c;
    c.comm = "p" + std::to_string(i);
    m.observe(report_of(c, bytes(1)));
  }
  m.observe(report_of(a, bytes(1)));
  auto sent = family_of(page_of(m), k_sent);
  CHECK(sent == std::map<std::string, uint64_t>{
                    {"{comm=\"a\"}", 2}, {"{comm=\"b\"}", 1}, {"{comm=\"other\"}", 100}});
}

TEST_CASE("a comm literally named `other` shares the fold series", "[traffic_metrics]") {
  traffic_metrics m({"comm"}, 1);
  conn_spec literal;
  literal.comm = "other";
  conn_spec late;
  late.comm = "late";
  conn_spec third;
  third.comm = "third";
  m.observe(report_of(literal, bytes(1)));
  m.observe(report_of(late, bytes(10)));   // the budget of one is still free: "other" took none
  m.observe(report_of(third, bytes(100))); // folded into the literal one's series
  // One sample per label set: a second {comm="other"} would make the page invalid.
  CHECK(family_of(page_of(m), k_sent) ==
        std::map<std::string, uint64_t>{{"{comm=\"late\"}", 10}, {"{comm=\"other\"}", 101}});
  CHECK(m.stats().series == 2);
  CHECK(m.stats().label_sets_folded == 1);
}

TEST_CASE("label values are escaped and valid UTF-8", "[traffic_metrics]") {
  traffic_metrics m({"comm", "container_id"});
  conn_spec nasty;
  nasty.comm = "a\"b\\c\nd";
  m.observe(report_of(nasty, bytes(1)));
  conn_spec cut; // a two-byte character cut after its first byte, then a stray byte
  cut.comm = "caf\xc3";
  cut.container_id = "x\xff"
                     "y\xc3\xa9";
  m.observe(report_of(cut, bytes(2)));
  auto sent = family_of(page_of(m), k_sent);
  CHECK(sent ==
        std::map<std::string, uint64_t>{{"{comm=\"a\\\"b\\\\c\\nd\",container_id=\"\"}", 1},
                                        {"{comm=\"caf?\",container_id=\"x?y\xc3\xa9\"}", 2}});
}

TEST_CASE("unknown or repeated label names given to the constructor are skipped",
          "[traffic_metrics]") {
  traffic_metrics m({"protocol", "pid", "protocol"});
  m.observe(report_of(conn_spec{}, bytes(1)));
  CHECK(family_of(page_of(m), k_sent) ==
        std::map<std::string, uint64_t>{{"{protocol=\"tcp\"}", 1}});
}

TEST_CASE("no labels: one series", "[traffic_metrics]") {
  traffic_metrics m(std::vector<std::string>{}, 5);
  conn_spec udp;
  udp.protocol = IPPROTO_UDP;
  m.observe(report_of(conn_spec{}, bytes(1)));
  m.observe(report_of(udp, bytes(2)));
  CHECK(family_of(page_of(m), k_sent) == std::map<std::string, uint64_t>{{"", 3}});
  CHECK(m.stats().series == 1);
}

namespace {

conn_spec peer_number(uint32_t i) {
  conn_spec c;
  uint32_t addr = htonl(0x0a000000u + i); // 10.x.y.z
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &addr, text, sizeof text);
  c.peer = text;
  return c;
}

} // namespace

TEST_CASE("50,000 distinct peers stay within the budget", "[traffic_metrics][promtool]") {
  const uint64_t max_series = 5000;
  const uint32_t peers = 50000;
  traffic_metrics m({"peer_address"}, max_series);
  uint64_t expected_sent = 0;
  uint64_t memory_at_20k = 0;
  for (uint32_t i = 0; i < peers; ++i) {
    m.observe(report_of(peer_number(i), bytes(i % 977 + 1)));
    expected_sent += i % 977 + 1;
    if (i + 1 == 20000)
      memory_at_20k = m.stats().memory_bytes;
  }
  // The first 5,000 again: they keep their own series.
  for (uint32_t i = 0; i < max_series; ++i) {
    m.observe(report_of(peer_number(i), bytes(1)));
    ++expected_sent;
  }
  auto st = m.stats();
  CHECK(st.series == max_series + 1);
  CHECK(st.folded_observations == peers - max_series);
  // 45,000 distinct folded sets: past the exact table, estimated (1.6% standard error; the
  // hash is deterministic, so is this figure).
  CHECK(st.label_sets_folded_estimated);
  CHECK(st.label_sets_folded > 45000 * 0.95);
  CHECK(st.label_sets_folded < 45000 * 1.05);
  // Memory stopped growing once the budget was full, and is a few hundred bytes a series.
  CHECK(st.memory_bytes == memory_at_20k);
  CHECK(st.memory_bytes < max_series * 1024);
  INFO("memory_bytes " << st.memory_bytes);

  auto page = page_of(m);
  auto sent = family_of(page, k_sent);
  CHECK(sent.size() == max_series + 1);
  uint64_t total = 0;
  for (const auto& kv : sent)
    total += kv.second;
  CHECK(total == expected_sent);

  if (!have_promtool()) {
    WARN("promtool not found at /usr/bin/promtool: the page is not checked");
    return;
  }
  auto r = run_promtool(page);
  INFO("promtool printed:\n" << r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("promtool accepts every label, escaped values and empty ones",
          "[traffic_metrics][promtool]") {
  traffic_metrics m({"protocol", "family", "direction", "comm", "container_id", "netns",
                     "peer_address", "local_port", "peer_port"},
                    3);
  conn_spec nasty;
  nasty.comm = "a\"b\\c\nd";
  nasty.container_id = "0123abcd";
  conn_spec v6_in;
  v6_in.peer = "2001:db8::2";
  v6_in.direction = NL_DIR_INCOMING;
  v6_in.sport = 22;
  v6_in.comm = "caf\xc3";
  conn_spec none;
  none.direction = NL_DIR_NONE;
  none.comm = "";
  for (const auto& c : {nasty, v6_in, none, peer_number(7), peer_number(8)})
    m.observe(report_of(c, bytes(5)));
  CHECK(m.stats().series == 4);
  if (!have_promtool()) {
    WARN("promtool not found at /usr/bin/promtool: the page is not checked");
    return;
  }
  auto page = page_of(m);
  auto r = run_promtool(page);
  INFO("page:\n" << page << "promtool printed:\n" << r.output);
  CHECK(r.exit_code == 0);
}
