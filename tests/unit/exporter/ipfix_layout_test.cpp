#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "actors/exporter/ipfix_layout.hpp"

using namespace netlens;

namespace {

using bytes = std::vector<uint8_t>;
constexpr uint32_t k_pen = 32473;

// ---- An independent minimal IPFIX reader (RFC 7011 sections 3.1-3.4 and 7), by hand. ----

uint16_t u16_at(const bytes& b, size_t at) {
  return static_cast<uint16_t>(b.at(at) << 8 | b.at(at + 1));
}
uint32_t u32_at(const bytes& b, size_t at) {
  return static_cast<uint32_t>(u16_at(b, at)) << 16 | u16_at(b, at + 2);
}
uint64_t uint_of(const bytes& b) {
  uint64_t v = 0;
  for (uint8_t x : b)
    v = v << 8 | x;
  return v;
}

// An element key: enterprise number (0 for IANA) and element id.
using ie_key = std::pair<uint32_t, uint16_t>;
ie_key iana(uint16_t id) {
  return {0, id};
}
ie_key ent(uint16_t id) {
  return {k_pen, id};
}

struct spec {
  ie_key key;
  uint16_t length;
};

struct collector {
  std::map<uint16_t, std::vector<spec>> templates;
  // Every data record in order, with its template id.
  std::vector<std::pair<uint16_t, std::map<ie_key, bytes>>> records;

  void read(const bytes& m) {
    REQUIRE(m.size() >= 16);
    REQUIRE(u16_at(m, 0) == 10);
    REQUIRE(u16_at(m, 2) == m.size());
    size_t at = 16;
    while (at < m.size()) {
      uint16_t set_id = u16_at(m, at);
      uint16_t set_len = u16_at(m, at + 2);
      REQUIRE(set_len >= 4);
      REQUIRE(at + set_len <= m.size());
      bytes body(m.begin() + at + 4, m.begin() + at + set_len);
      if (set_id == 2)
        read_templates(body);
      else
        read_data(set_id, body);
      at += set_len;
    }
  }

  void read_templates(const bytes& b) {
    size_t at = 0;
    while (at + 4 <= b.size()) {
      uint16_t id = u16_at(b, at);
      uint16_t count = u16_at(b, at + 2);
      at += 4;
      std::vector<spec> fields;
      for (uint16_t i = 0; i < count; ++i) {
        uint16_t raw = u16_at(b, at);
        uint16_t len = u16_at(b, at + 2);
        at += 4;
        uint32_t pen = 0;
        if (raw & 0x8000) {
          pen = u32_at(b, at);
          at += 4;
        }
        fields.push_back({{pen, static_cast<uint16_t>(raw & 0x7fff)}, len});
      }
      templates[id] = fields;
    }
    REQUIRE(at == b.size());
  }

  void read_data(uint16_t set_id, const bytes& b) {
    REQUIRE(templates.count(set_id) == 1);
    const auto& fields = templates[set_id];
    size_t at = 0;
    while (at < b.size()) {
      std::map<ie_key, bytes> rec;
      for (const auto& f : fields) {
        size_t len = f.length;
        if (len == 0xffff) {
          len = b.at(at++);
          if (len == 255) {
            len = u16_at(b, at);
            at += 2;
          }
        }
        REQUIRE(at + len <= b.size());
        rec[f.key] = bytes(b.begin() + at, b.begin() + at + len);
        at += len;
      }
      records.emplace_back(set_id, rec);
    }
  }
};

// ---- Reports with literal values. ----

bytes v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return {a, b, c, d};
}
bytes v6(const char* text) {
  bytes out(16);
  REQUIRE(inet_pton(AF_INET6, text, out.data()) == 1);
  return out;
}
void put_addr(uint8_t* dst16, const bytes& a) {
  std::memset(dst16, 0, 16);
  std::memcpy(dst16, a.data(), a.size());
}

const std::string k_container(64, 'c');

struct addrs {
  bytes local, peer, nat_peer, nat_local;
};
addrs addrs_for(bool is_v6) {
  if (is_v6)
    return {v6("2001:db8::1"), v6("2001:db8::7"), v6("2001:db8:ffff::9"), v6("2001:db8:eeee::5")};
  return {v4(10, 0, 0, 1), v4(192, 0, 2, 7), v4(198, 51, 100, 9), v4(203, 0, 113, 5)};
}

flow_report make_report(bool is_v6, bool nat, bool device) {
  flow_report r;
  auto a = addrs_for(is_v6);
  r.conn.family = is_v6 ? AF_INET6 : AF_INET;
  put_addr(r.conn.saddr, a.local);
  put_addr(r.conn.daddr, a.peer);
  r.conn.sport = 40000;
  r.conn.dport = 443;
  r.conn.protocol = IPPROTO_TCP;
  r.conn.direction = NL_DIR_OUTGOING;
  r.conn.pid = 4242;
  r.conn.netns = 4026531993u;
  r.conn.srtt_us = 1500;
  r.conn.rttvar_us = 300;
  r.conn.retransmits = 3;
  std::strcpy(r.conn.comm, "curl");
  r.conn.bytes_sent = 1000;
  r.conn.bytes_recv = 5000;
  r.conn.packets_sent = 10;
  r.conn.packets_recv = 12;
  r.delta.bytes_sent = 100;
  r.delta.bytes_recv = 500;
  r.delta.packets_sent = 2;
  r.delta.packets_recv = 3;
  r.start_unix_ms = 1700000000123ull;
  r.end_unix_ms = 1700000005456ull;
  r.reason = flow_end_reason::active_timeout;
  r.has_nat = nat;
  if (nat) {
    // The reply direction beyond NAT: from the peer's real address to our public one.
    put_addr(r.nat.saddr, a.nat_peer);
    put_addr(r.nat.daddr, a.nat_local);
    r.nat.sport = 8443;
    r.nat.dport = 61000;
  }
  r.has_device = device;
  if (device) {
    r.device_delta.packets_in = 4;
    r.device_delta.bytes_in = 700;
    r.device_delta.packets_out = 3;
    r.device_delta.bytes_out = 260;
  }
  r.container_id = k_container;
  return r;
}

bytes be(uint64_t v, size_t n) {
  bytes out(n);
  for (size_t i = 0; i < n; ++i)
    out[n - 1 - i] = static_cast<uint8_t>(v >> (8 * i));
  return out;
}
bytes str(const std::string& s) {
  return bytes(s.begin(), s.end());
}

collector encode_all(const std::vector<flow_report>& reports, size_t mtu = 1400,
                     std::vector<ipfix_message>* keep = nullptr) {
  ipfix_settings s;
  s.mtu = mtu;
  ipfix_encoder e(s);
  REQUIRE(add_netlens_templates(e) == ipfix_status::ok);
  std::vector<ipfix_message> msgs = e.template_messages();
  for (const auto& r : reports)
    REQUIRE(encode_flow_report(e, r) == ipfix_status::ok);
  e.flush(msgs);
  collector c;
  for (const auto& m : msgs) {
    REQUIRE(m.bytes.size() <= mtu);
    c.read(m.bytes);
  }
  if (keep != nullptr)
    *keep = msgs;
  return c;
}

// The fields every record of this shape must have, with their length.
std::map<ie_key, uint16_t> expected_fields(bool is_v6, bool nat, bool device) {
  uint16_t al = is_v6 ? 16 : 4;
  std::map<ie_key, uint16_t> f = {{iana(is_v6 ? 27 : 8), al},
                                  {iana(is_v6 ? 28 : 12), al},
                                  {iana(7), 2},
                                  {iana(11), 2},
                                  {iana(4), 1},
                                  {iana(61), 1},
                                  {iana(136), 1},
                                  {iana(152), 8},
                                  {iana(153), 8},
                                  {iana(401), 8},
                                  {ent(1), 4},
                                  {ent(2), 0xffff},
                                  {ent(3), 0xffff},
                                  {ent(4), 4},
                                  {ent(5), 4},
                                  {ent(6), 4},
                                  {ent(7), 4},
                                  {ent(8), 1},
                                  {ent(9), 8},
                                  {ent(10), 8},
                                  {ent(11), 8}};
  if (device) {
    f[iana(1)] = 8;
    f[iana(2)] = 8;
  }
  if (nat) {
    f[iana(is_v6 ? 281 : 225)] = al;
    f[iana(is_v6 ? 282 : 226)] = al;
    f[iana(227)] = 2;
    f[iana(228)] = 2;
  }
  return f;
}

} // namespace

TEST_CASE("ipfix layout: every field of v4/v6 x nat x device, both directions", "[ipfix][layout]") {
  for (int is_v6 = 0; is_v6 < 2; ++is_v6)
    for (int nat = 0; nat < 2; ++nat)
      for (int device = 0; device < 2; ++device) {
        CAPTURE(is_v6, nat, device);
        auto r = make_report(is_v6, nat, device);
        collector c = encode_all({r});
        REQUIRE(c.templates.size() == 8);
        REQUIRE(c.records.size() == 2);
        uint16_t tid = static_cast<uint16_t>(256 + 4 * is_v6 + 2 * nat + device);
        // The template holds exactly the documented elements.
        std::map<ie_key, uint16_t> got;
        for (const auto& f : c.templates.at(tid))
          got[f.key] = f.length;
        CHECK(got == expected_fields(is_v6, nat, device));

        auto a = addrs_for(is_v6);
        auto sent = c.records[0];
        auto recv = c.records[1];
        CHECK(sent.first == tid);
        CHECK(recv.first == tid);
        uint16_t src = is_v6 ? 27 : 8, dst = is_v6 ? 28 : 12;
        for (auto* rec : {&sent.second, &recv.second}) {
          auto& f = *rec;
          CHECK(f.size() == expected_fields(is_v6, nat, device).size());
          CHECK(f[iana(4)] == bytes{6});
          CHECK(f[iana(136)] == bytes{2});
          CHECK(uint_of(f[iana(152)]) == 1700000000123ull);
          CHECK(uint_of(f[iana(153)]) == 1700000005456ull);
          CHECK(uint_of(f[ent(1)]) == 4242);
          CHECK(f[ent(2)] == str("curl"));
          CHECK(f[ent(3)] == str(k_container));
          CHECK(uint_of(f[ent(4)]) == 4026531993u);
          CHECK(uint_of(f[ent(5)]) == 1500);
          CHECK(uint_of(f[ent(6)]) == 300);
          CHECK(f[ent(8)] == bytes{1});
        }
        // Sent: local -> peer.
        auto& s = sent.second;
        CHECK(s[iana(61)] == bytes{1});
        CHECK(s[iana(src)] == a.local);
        CHECK(s[iana(dst)] == a.peer);
        CHECK(s[iana(7)] == be(40000, 2));
        CHECK(s[iana(11)] == be(443, 2));
        CHECK(s[iana(401)] == be(100, 8));
        CHECK(s[ent(7)] == be(3, 4));
        CHECK(s[ent(9)] == be(1000, 8));
        CHECK(s[ent(10)] == be(10, 8));
        CHECK(s[ent(11)] == be(2, 8));
        // Received: peer -> local.
        auto& v = recv.second;
        CHECK(v[iana(61)] == bytes{0});
        CHECK(v[iana(src)] == a.peer);
        CHECK(v[iana(dst)] == a.local);
        CHECK(v[iana(7)] == be(443, 2));
        CHECK(v[iana(11)] == be(40000, 2));
        CHECK(v[iana(401)] == be(500, 8));
        CHECK(v[ent(7)] == be(0, 4));
        CHECK(v[ent(9)] == be(5000, 8));
        CHECK(v[ent(10)] == be(12, 8));
        CHECK(v[ent(11)] == be(3, 8));
        if (device) {
          CHECK(s[iana(1)] == be(260, 8));
          CHECK(s[iana(2)] == be(3, 8));
          CHECK(v[iana(1)] == be(700, 8));
          CHECK(v[iana(2)] == be(4, 8));
        }
        if (nat) {
          uint16_t psrc = is_v6 ? 281 : 225, pdst = is_v6 ? 282 : 226;
          // Beyond NAT the sent packets go from our public address to the peer's real one.
          CHECK(s[iana(psrc)] == a.nat_local);
          CHECK(s[iana(pdst)] == a.nat_peer);
          CHECK(s[iana(227)] == be(61000, 2));
          CHECK(s[iana(228)] == be(8443, 2));
          CHECK(v[iana(psrc)] == a.nat_peer);
          CHECK(v[iana(pdst)] == a.nat_local);
          CHECK(v[iana(227)] == be(8443, 2));
          CHECK(v[iana(228)] == be(61000, 2));
        }
      }
}

TEST_CASE("ipfix layout: which directions a report yields", "[ipfix][layout]") {
  auto base = make_report(false, false, false);
  auto directions = [](const flow_report& r) {
    collector c = encode_all({r});
    std::string out;
    for (const auto& rec : c.records)
      out += rec.second.at(iana(61)) == bytes{1} ? "S" : "R";
    return out;
  };
  auto r = base;
  CHECK(directions(r) == "SR");

  r = base;
  r.delta = conn_counters{};
  r.delta.bytes_sent = 1;
  CHECK(directions(r) == "S");
  r.delta = conn_counters{};
  r.delta.packets_recv = 1; // a pure ACK moved
  CHECK(directions(r) == "R");

  // Nothing moved while open: nothing to say.
  r.delta = conn_counters{};
  CHECK(directions(r) == "");

  // Nothing moved, but the flow ends: the initiator's direction shows the end.
  for (auto reason : {flow_end_reason::idle_timeout, flow_end_reason::end_of_flow,
                      flow_end_reason::forced_end, flow_end_reason::lack_of_resources}) {
    r.reason = reason;
    r.conn.direction = NL_DIR_OUTGOING;
    CHECK(directions(r) == "S");
    r.conn.direction = NL_DIR_INCOMING;
    CHECK(directions(r) == "R");
    r.conn.direction = NL_DIR_NONE;
    CHECK(directions(r) == "S");
  }
  r.conn.direction = NL_DIR_INCOMING;
  r.reason = flow_end_reason::end_of_flow;
  {
    collector c = encode_all({r});
    REQUIRE(c.records.size() == 1);
    CHECK(c.records[0].second.at(iana(136)) == bytes{3});
    CHECK(c.records[0].second.at(ent(8)) == bytes{2});
    CHECK(c.records[0].second.at(iana(401)) == be(0, 8));
  }

  // Movement only the devices saw counts as movement.
  r = make_report(false, false, true);
  r.delta = conn_counters{};
  r.device_delta = device_counts{};
  r.device_delta.packets_out = 1;
  CHECK(directions(r) == "S");

  // reason none is never a record.
  r = base;
  r.reason = flow_end_reason::none;
  CHECK(directions(r) == "");
  uint32_t n = 99;
  ipfix_encoder e(ipfix_settings{});
  REQUIRE(add_netlens_templates(e) == ipfix_status::ok);
  CHECK(encode_flow_report(e, r, &n) == ipfix_status::ok);
  CHECK(n == 0);
  CHECK(encode_flow_report(e, base, &n) == ipfix_status::ok);
  CHECK(n == 2);

  // Unknown initiator.
  r = base;
  r.conn.direction = NL_DIR_NONE;
  collector c = encode_all({r});
  CHECK(c.records.at(0).second.at(ent(8)) == bytes{0});
}

TEST_CASE(
    "ipfix layout: variable-length values are bounded, k_netlens_ipfix_min_mtu holds the largest",
    "[ipfix][layout]") {
  auto r = make_report(true, true, true);
  std::memset(r.conn.comm, 'p', sizeof r.conn.comm); // no NUL
  r.container_id = std::string(100, 'x');
  std::vector<ipfix_message> msgs;
  collector c = encode_all({r}, k_netlens_ipfix_min_mtu, &msgs);
  REQUIRE(c.records.size() == 2);
  CHECK(c.records[0].second.at(ent(2)) == bytes(16, 'p'));
  CHECK(c.records[0].second.at(ent(3)) == bytes(64, 'x'));
  // Each of the two largest records fills a message of exactly k_netlens_ipfix_min_mtu... or less.
  size_t data_messages = 0;
  for (const auto& m : msgs) {
    CHECK(m.bytes.size() <= k_netlens_ipfix_min_mtu);
    if (!m.templates_only) {
      ++data_messages;
      CHECK(m.bytes.size() == 16 + 4 + k_ipfix_max_record_size);
    }
  }
  CHECK(data_messages == 2);
  size_t widest = 0;
  for (const auto& t : netlens_templates())
    widest = std::max(widest, ipfix_template_record_size(t));
  CHECK(widest == k_ipfix_max_template_record_size);
  CHECK(k_netlens_ipfix_min_mtu == 16 + 4 + std::max(k_ipfix_max_record_size, widest));

  // One byte less and the largest record is refused as a value.
  ipfix_settings s;
  s.mtu = k_netlens_ipfix_min_mtu - 1;
  ipfix_encoder e(s);
  REQUIRE(add_netlens_templates(e) == ipfix_status::ok);
  CHECK(encode_flow_report(e, r) == ipfix_status::record_too_large);
  std::vector<ipfix_message> none;
  e.flush(none);
  CHECK(none.empty());
}

// ---- tshark: what a real decoder makes of the bytes. ----

namespace {

void put16(bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}
void put32_le(bytes& b, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// A classic pcap file, Ethernet link type, one IPv4/UDP datagram to port 4739 per message.
bytes pcap_of(const std::vector<ipfix_message>& msgs) {
  bytes f;
  put32_le(f, 0xa1b2c3d4);
  f.push_back(2), f.push_back(0), f.push_back(4), f.push_back(0); // version 2.4, LE
  put32_le(f, 0);
  put32_le(f, 0);
  put32_le(f, 65535);
  put32_le(f, 1); // LINKTYPE_ETHERNET
  uint32_t t = 1700000000;
  for (const auto& m : msgs) {
    bytes p = {0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00};
    size_t ip_len = 20 + 8 + m.bytes.size();
    bytes ip = {0x45, 0};
    put16(ip, static_cast<uint16_t>(ip_len));
    put16(ip, 1);
    put16(ip, 0x4000);
    ip.push_back(64);
    ip.push_back(17);
    put16(ip, 0);
    ip.insert(ip.end(), {127, 0, 0, 1, 127, 0, 0, 2});
    uint32_t sum = 0;
    for (size_t i = 0; i < 20; i += 2)
      sum += static_cast<uint32_t>(ip[i] << 8 | ip[i + 1]);
    while (sum >> 16)
      sum = (sum & 0xffff) + (sum >> 16);
    ip[10] = static_cast<uint8_t>(~sum >> 8);
    ip[11] = static_cast<uint8_t>(~sum);
    p.insert(p.end(), ip.begin(), ip.end());
    put16(p, 40000);
    put16(p, 4739);
    put16(p, static_cast<uint16_t>(8 + m.bytes.size()));
    put16(p, 0); // no UDP checksum
    p.insert(p.end(), m.bytes.begin(), m.bytes.end());
    put32_le(f, t++);
    put32_le(f, 0);
    put32_le(f, static_cast<uint32_t>(p.size()));
    put32_le(f, static_cast<uint32_t>(p.size()));
    f.insert(f.end(), p.begin(), p.end());
  }
  return f;
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  pclose(p);
  return out;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < s.size()) {
    size_t nl = s.find('\n', at);
    if (nl == std::string::npos)
      nl = s.size();
    out.push_back(s.substr(at, nl - at));
    at = nl + 1;
  }
  return out;
}

} // namespace

TEST_CASE("ipfix layout: tshark decodes the messages without errors", "[ipfix][tshark]") {
  if (access("/usr/bin/tshark", X_OK) != 0) {
    WARN("tshark is not installed (/usr/bin/tshark): the tshark decoding test is skipped");
    return;
  }
  // One message per report, templates first; every shape, and an end with no movement.
  ipfix_encoder e(ipfix_settings{});
  REQUIRE(add_netlens_templates(e) == ipfix_status::ok);
  std::vector<ipfix_message> msgs = e.template_messages();
  std::vector<flow_report> reports;
  for (int is_v6 = 0; is_v6 < 2; ++is_v6)
    for (int nat = 0; nat < 2; ++nat)
      for (int device = 0; device < 2; ++device)
        reports.push_back(make_report(is_v6, nat, device));
  auto ended = make_report(false, false, false);
  ended.delta = conn_counters{};
  ended.reason = flow_end_reason::end_of_flow;
  reports.push_back(ended);
  for (const auto& r : reports) {
    REQUIRE(encode_flow_report(e, r) == ipfix_status::ok);
    e.flush(msgs);
  }
  ipfix_sequence seq;
  for (auto& m : msgs)
    seq.stamp(m, 1700000000);

  char dir[] = "/tmp/netlens_ipfix_XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string file = std::string(dir) + "/ipfix.pcap";
  {
    bytes f = pcap_of(msgs);
    std::ofstream out(file, std::ios::binary);
    out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size()));
  }
  std::string base = "/usr/bin/tshark -n -r " + file + " -d udp.port==4739,cflow ";
  std::string verbose = run(base + "-V 2>&1");
  INFO(verbose.substr(0, 20000));
  CHECK(verbose.find("Malformed") == std::string::npos);
  CHECK(verbose.find("Expert Info (Error") == std::string::npos);
  CHECK(verbose.find("Expert Info (Warn") == std::string::npos);
  CHECK(verbose.find("Data Template (V10 [IPFIX])") != std::string::npos);
  CHECK(verbose.find("no template found") == std::string::npos);
  CHECK(verbose.find("Template Id: 263") != std::string::npos);
  CHECK(verbose.find("32473") != std::string::npos);
  CHECK(verbose.find("StartTime: Nov 14, 2023 22:13:20.123000000 UTC") != std::string::npos);
  CHECK(verbose.find("EndTime: Nov 14, 2023 22:13:25.456000000 UTC") != std::string::npos);

  std::string fields =
      run(base + "-Y cflow.srcport -T fields -E separator='|' -e cflow.srcport -e cflow.dstport "
                 "-e cflow.srcaddr -e cflow.dstaddr -e cflow.srcaddrv6 -e cflow.dstaddrv6 "
                 "-e cflow.transport_octet_delta_count -e cflow.flow_end_reason "
                 "-e cflow.direction -e cflow.protocol -e cflow.sequence 2>/dev/null");
  auto got = lines_of(fields);
  INFO(fields);
  REQUIRE(got.size() == 9);
  const std::string v4_common = "40000,443|443,40000|10.0.0.1,192.0.2.7|192.0.2.7,10.0.0.1||";
  const std::string v6_common =
      "40000,443|443,40000|||2001:db8::1,2001:db8::7|2001:db8::7,2001:db8::1";
  for (size_t i = 0; i < 8; ++i) {
    bool is_v6 = i >= 4;
    std::string want =
        (is_v6 ? v6_common : v4_common) + "|100,500|2,2|1,0|6,6|" + std::to_string(2 * i);
    CHECK(got[i] == want);
  }
  CHECK(got[8] == "40000|443|10.0.0.1|192.0.2.7|||0|3|1|6|16");

  std::string nat4 =
      run(base + "-Y cflow.post_natsource_ipv4_address -T fields -E separator='|' "
                 "-e cflow.post_natsource_ipv4_address -e cflow.post_natdestination_ipv4_address "
                 "-e cflow.post_naptsource_transport_port "
                 "-e cflow.post_naptdestination_transport_port -e cflow.octets 2>/dev/null");
  auto n4 = lines_of(nat4);
  INFO(nat4);
  REQUIRE(n4.size() == 2);
  CHECK(n4[0] == "203.0.113.5,198.51.100.9|198.51.100.9,203.0.113.5|61000,8443|8443,61000|");
  CHECK(n4[1] == "203.0.113.5,198.51.100.9|198.51.100.9,203.0.113.5|61000,8443|8443,61000|260,700");
  std::string nat6 = run(base + "-Y cflow.post_nat_source_ipv6_address -T fields -E separator='|' "
                                "-e cflow.post_nat_source_ipv6_address "
                                "-e cflow.post_nat_destination_ipv6_address 2>/dev/null");
  auto n6 = lines_of(nat6);
  INFO(nat6);
  REQUIRE(n6.size() == 2);
  CHECK(n6[0] == "2001:db8:eeee::5,2001:db8:ffff::9|2001:db8:ffff::9,2001:db8:eeee::5");

  std::remove(file.c_str());
  rmdir(dir);
}
