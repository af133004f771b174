#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "actors/exporter/ipfix_encoder.hpp"

using namespace netlens;

namespace {

using bytes = std::vector<uint8_t>;

// Reads the wire by hand (RFC 7011 sections 3.1 and 3.3), not through the encoder's helpers.
uint16_t u16_at(const bytes& b, size_t at) {
  return static_cast<uint16_t>(b.at(at) << 8 | b.at(at + 1));
}
uint32_t u32_at(const bytes& b, size_t at) {
  return static_cast<uint32_t>(u16_at(b, at)) << 16 | u16_at(b, at + 2);
}

struct parsed_set {
  uint16_t id = 0;
  bytes body; // without the set header
};

// The sets of one message; fails the test when the lengths do not add up.
std::vector<parsed_set> sets_of(const bytes& m) {
  REQUIRE(m.size() >= 16);
  REQUIRE(u16_at(m, 0) == 10);
  REQUIRE(u16_at(m, 2) == m.size());
  std::vector<parsed_set> out;
  size_t at = 16;
  while (at < m.size()) {
    REQUIRE(at + 4 <= m.size());
    uint16_t len = u16_at(m, at + 2);
    REQUIRE(len >= 4);
    REQUIRE(at + len <= m.size());
    out.push_back({u16_at(m, at), bytes(m.begin() + at + 4, m.begin() + at + len)});
    at += len;
  }
  REQUIRE(at == m.size());
  return out;
}

ipfix_template fixed_template(uint16_t id, uint16_t record_length) {
  return ipfix_template{id, {{1, record_length, false}}};
}

} // namespace

TEST_CASE("ipfix header: version, length, zero sequence and time, domain id", "[ipfix]") {
  ipfix_settings s;
  s.observation_domain_id = 0x01020304;
  ipfix_encoder e(s);
  REQUIRE(e.add_template({300, {{1, 8, false}, {2, 8, false}}}) == ipfix_status::ok);
  for (uint8_t i = 0; i < 3; ++i) {
    bytes rec(16, i);
    REQUIRE(e.add_record(300, rec.data(), rec.size()) == ipfix_status::ok);
  }
  std::vector<ipfix_message> out;
  e.flush(out);
  REQUIRE(out.size() == 1);
  const bytes& m = out[0].bytes;
  CHECK(out[0].data_records == 3);
  CHECK_FALSE(out[0].templates_only);
  REQUIRE(m.size() == 16 + 4 + 3 * 16);
  bytes header(m.begin(), m.begin() + 16);
  CHECK(header == bytes{0x00, 0x0a, 0x00, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0x03, 0x04});
  CHECK(u16_at(m, 16) == 300);
  CHECK(u16_at(m, 18) == 4 + 48);
  CHECK(m[20] == 0);
  CHECK(m[20 + 16] == 1);
  CHECK(m[20 + 47] == 2);

  // Nothing left: a second flush yields no empty message.
  out.clear();
  e.flush(out);
  CHECK(out.empty());
}

TEST_CASE("ipfix sequence: stamped per session, data records only, modulo 2^32", "[ipfix]") {
  ipfix_message a{bytes(16, 0), 3, false};
  ipfix_message t{bytes(16, 0), 0, true};
  ipfix_message b{bytes(16, 0), 5, false};
  ipfix_sequence seq;
  CHECK(seq.stamp(a, 0x5f000001) == 0);
  CHECK(seq.stamp(t, 0x5f000002) == 3);
  CHECK(seq.stamp(b, 0x5f000003) == 3);
  CHECK(seq.next() == 8);
  CHECK(u32_at(a.bytes, 4) == 0x5f000001);
  CHECK(u32_at(a.bytes, 8) == 0);
  CHECK(u32_at(t.bytes, 8) == 3);
  CHECK(u32_at(b.bytes, 4) == 0x5f000003);
  CHECK(u32_at(b.bytes, 8) == 3);

  // Another collector's session counts on its own, from the same message.
  ipfix_sequence other;
  CHECK(other.stamp(b, 7) == 0);
  CHECK(u32_at(b.bytes, 8) == 0);

  ipfix_sequence wrap;
  ipfix_message big{bytes(16, 0), 0xFFFFFFFFu, false};
  ipfix_message two{bytes(16, 0), 2, false};
  wrap.stamp(big, 1);
  CHECK(wrap.next() == 0xFFFFFFFFu);
  wrap.stamp(two, 1);
  CHECK(u32_at(two.bytes, 8) == 0xFFFFFFFFu);
  CHECK(wrap.next() == 1);
}

TEST_CASE("ipfix messages never exceed the mtu and are packed full", "[ipfix]") {
  std::mt19937 rng(20240611);
  for (int round = 0; round < 200; ++round) {
    ipfix_settings s;
    s.mtu = std::uniform_int_distribution<size_t>(40, 1500)(rng);
    ipfix_encoder e(s);
    size_t n_templates = std::uniform_int_distribution<size_t>(1, 5)(rng);
    std::vector<uint16_t> lengths;
    for (size_t i = 0; i < n_templates; ++i) {
      auto len = static_cast<uint16_t>(std::uniform_int_distribution<int>(1, 600)(rng));
      lengths.push_back(len);
      REQUIRE(e.add_template(fixed_template(static_cast<uint16_t>(256 + i), len)) ==
              ipfix_status::ok);
    }
    // What went in, in order: template index and a tag byte repeated over the record.
    std::vector<std::pair<size_t, uint8_t>> accepted;
    for (int r = 0; r < 300; ++r) {
      size_t k = std::uniform_int_distribution<size_t>(0, n_templates - 1)(rng);
      auto tag = static_cast<uint8_t>(r);
      bytes rec(lengths[k], tag);
      auto st = e.add_record(static_cast<uint16_t>(256 + k), rec.data(), rec.size());
      if (size_t{20} + lengths[k] > s.mtu) {
        REQUIRE(st == ipfix_status::record_too_large);
      } else {
        REQUIRE(st == ipfix_status::ok);
        accepted.emplace_back(k, tag);
      }
    }
    std::vector<ipfix_message> out;
    e.flush(out);
    size_t next = 0;
    for (size_t mi = 0; mi < out.size(); ++mi) {
      const auto& m = out[mi];
      REQUIRE(m.bytes.size() <= s.mtu);
      uint32_t in_message = 0;
      uint16_t last_set = 0;
      for (const auto& set : sets_of(m.bytes)) {
        REQUIRE(set.id >= 256);
        size_t k = set.id - 256u;
        REQUIRE(set.body.size() % lengths[k] == 0);
        for (size_t at = 0; at < set.body.size(); at += lengths[k]) {
          REQUIRE(next < accepted.size());
          CHECK(accepted[next].first == k);
          CHECK(set.body[at] == accepted[next].second);
          CHECK(set.body[at + lengths[k] - 1] == accepted[next].second);
          ++next;
          ++in_message;
        }
        CHECK(set.id != last_set); // consecutive records of one template share a set
        last_set = set.id;
      }
      CHECK(m.data_records == in_message);
      if (mi + 1 < out.size()) {
        // The first record of the next message would not have fit in this one.
        size_t k = accepted[next].first;
        size_t need = lengths[k] + (last_set == 256 + k ? 0 : 4);
        CHECK(m.bytes.size() + need > s.mtu);
      }
    }
    CHECK(next == accepted.size());
  }
}

TEST_CASE("ipfix variable-length fields: 1-byte length below 255, else 255 and 2 bytes",
          "[ipfix]") {
  bytes value(1000, 0xab);
  for (size_t n : {size_t{0}, size_t{10}, size_t{254}, size_t{255}, size_t{256}, size_t{1000}}) {
    bytes buf(n + 3, 0);
    uint8_t* end = ipfix_put_varlen(buf.data(), value.data(), n);
    if (n < 255) {
      CHECK(end - buf.data() == static_cast<ptrdiff_t>(1 + n));
      CHECK(buf[0] == n);
      CHECK(ipfix_varlen_size(n) == 1 + n);
    } else {
      CHECK(end - buf.data() == static_cast<ptrdiff_t>(3 + n));
      CHECK(buf[0] == 255);
      CHECK(buf[1] == (n >> 8));
      CHECK(buf[2] == (n & 0xff));
      CHECK(ipfix_varlen_size(n) == 3 + n);
    }
  }

  // Through the encoder: one varlen field of 300 bytes.
  ipfix_encoder e(ipfix_settings{});
  REQUIRE(e.add_template({400, {{82, k_ipfix_varlen, false}}}) == ipfix_status::ok);
  bytes rec{255, 0x01, 0x2c};
  rec.insert(rec.end(), 300, 'x');
  REQUIRE(e.add_record(400, rec.data(), rec.size()) == ipfix_status::ok);
  std::vector<ipfix_message> out;
  e.flush(out);
  REQUIRE(out.size() == 1);
  auto sets = sets_of(out[0].bytes);
  REQUIRE(sets.size() == 1);
  CHECK(sets[0].body == rec);
  auto tm = e.template_messages();
  REQUIRE(tm.size() == 1);
  // Template set: id 400, 1 field, IE 82 with length 0xFFFF.
  auto tsets = sets_of(tm[0].bytes);
  REQUIRE(tsets.size() == 1);
  CHECK(tsets[0].id == 2);
  CHECK(tsets[0].body == bytes{0x01, 0x90, 0x00, 0x01, 0x00, 0x52, 0xff, 0xff});
}

TEST_CASE("ipfix templates: enterprise field specifiers, split over the mtu", "[ipfix]") {
  ipfix_settings s;
  s.mtu = 100;
  s.observation_domain_id = 9;
  ipfix_encoder e(s);
  // 4 + 4 + 8 = 16 bytes per template record: 5 fit after 20 bytes of headers.
  for (uint16_t id = 256; id < 268; ++id)
    REQUIRE(e.add_template({id, {{8, 4, false}, {5, 4, true}}}) == ipfix_status::ok);
  auto msgs = e.template_messages();
  REQUIRE(msgs.size() == 3);
  uint16_t expect = 256;
  for (const auto& m : msgs) {
    CHECK(m.templates_only);
    CHECK(m.data_records == 0);
    CHECK(m.bytes.size() <= s.mtu);
    CHECK(u32_at(m.bytes, 12) == 9);
    auto sets = sets_of(m.bytes);
    REQUIRE(sets.size() == 1);
    CHECK(sets[0].id == 2);
    REQUIRE(sets[0].body.size() % 16 == 0);
    for (size_t at = 0; at < sets[0].body.size(); at += 16) {
      bytes rec(sets[0].body.begin() + at, sets[0].body.begin() + at + 16);
      bytes want{static_cast<uint8_t>(expect >> 8),
                 static_cast<uint8_t>(expect & 0xff),
                 0x00,
                 0x02,
                 0x00,
                 0x08,
                 0x00,
                 0x04,
                 0x80,
                 0x05,
                 0x00,
                 0x04,
                 0x00,
                 0x00,
                 0x7e,
                 0xd9};
      CHECK(rec == want);
      ++expect;
    }
  }
  CHECK(expect == 268);
}

TEST_CASE("ipfix template withdrawal: field count 0, template id 2 withdraws all", "[ipfix]") {
  ipfix_encoder e(ipfix_settings{});
  auto w = e.withdrawal_messages({256, 263});
  REQUIRE(w.size() == 1);
  CHECK(w[0].templates_only);
  CHECK(w[0].data_records == 0);
  const bytes& m = w[0].bytes;
  REQUIRE(m.size() == 16 + 4 + 8);
  CHECK(bytes(m.begin() + 16, m.end()) ==
        bytes{0x00, 0x02, 0x00, 0x0c, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x00, 0x00});
  auto all = e.withdraw_all_message();
  CHECK(all.templates_only);
  REQUIRE(all.bytes.size() == 24);
  CHECK(u16_at(all.bytes, 2) == 24);
  CHECK(bytes(all.bytes.begin() + 16, all.bytes.end()) ==
        bytes{0x00, 0x02, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00});
}

TEST_CASE("ipfix errors are values: records and templates that cannot be", "[ipfix]") {
  ipfix_settings s;
  s.mtu = 100;
  ipfix_encoder e(s);
  CHECK(e.add_template({255, {{1, 8, false}}}) == ipfix_status::bad_template);
  CHECK(e.add_template({256, {}}) == ipfix_status::bad_template);
  CHECK(e.add_template({256, {{1, 0, false}}}) == ipfix_status::bad_template);
  REQUIRE(e.add_template({256, {{82, k_ipfix_varlen, false}}}) == ipfix_status::ok);
  CHECK(e.add_template({256, {{1, 8, false}}}) == ipfix_status::bad_template);
  REQUIRE(e.add_template({257, {{1, 8, false}, {2, 8, false}}}) == ipfix_status::ok);
  // 16 header + 4 set header + 21 fields * 4 + 4 = 108 > 100.
  ipfix_template wide{258, std::vector<ipfix_field>(21, ipfix_field{1, 8, false})};
  CHECK(e.add_template(wide) == ipfix_status::template_too_large);

  uint8_t* out = reinterpret_cast<uint8_t*>(&s);
  CHECK(e.add_record(256, 81, &out) == ipfix_status::record_too_large);
  CHECK(out == nullptr);
  CHECK(e.add_record(300, 8, &out) == ipfix_status::unknown_template);
  CHECK(e.add_record(257, 15, &out) == ipfix_status::bad_record_length);
  CHECK(e.add_record(256, 0, &out) == ipfix_status::bad_record_length);
  std::vector<ipfix_message> msgs;
  e.flush(msgs);
  CHECK(msgs.empty());

  REQUIRE(e.add_record(256, 80, &out) == ipfix_status::ok); // exactly the mtu
  REQUIRE(out != nullptr);
  std::fill(out, out + 80, 0);
  out[0] = 79;
  e.flush(msgs);
  REQUIRE(msgs.size() == 1);
  CHECK(msgs[0].bytes.size() == 100);

  // An mtu below a header: every record is an error, never a crash.
  ipfix_settings tiny;
  tiny.mtu = 10;
  ipfix_encoder t(tiny);
  CHECK(t.add_template({256, {{1, 8, false}}}) == ipfix_status::template_too_large);
  CHECK(std::string(to_string(ipfix_status::record_too_large)).find("mtu") != std::string::npos);
}
