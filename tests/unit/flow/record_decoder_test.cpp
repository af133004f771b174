#include <catch2/catch.hpp>

#include "flow/record_decoder.hpp"
#include "tests/support/conn_builder.hpp"

using namespace netlens;
using netlens::testing::make_conn;
using netlens::testing::record_bytes;

TEST_CASE("a well-formed closed record decodes to the same connection", "[decoder]") {
  nl_conn in = make_conn(7, "10.0.0.1", 1234, "10.0.0.2", 80);
  in.bytes_sent = 111;
  in.bytes_recv = 222;
  auto bytes = record_bytes(in);
  nl_conn out{};
  REQUIRE(decode_closed_record(bytes.data(), bytes.size(), out) == decode_status::ok);
  CHECK(out.cookie == 7);
  CHECK(out.bytes_sent == 111);
  CHECK(out.bytes_recv == 222);
  CHECK(std::memcmp(out.saddr, in.saddr, 16) == 0);
}

TEST_CASE("malformed records are rejected with the reason", "[decoder]") {
  nl_conn in = make_conn(1, "10.0.0.1", 1, "10.0.0.2", 2);
  nl_conn out{};
  auto bytes = record_bytes(in);

  SECTION("short") {
    CHECK(decode_closed_record(bytes.data(), bytes.size() - 1, out) == decode_status::bad_size);
    CHECK(decode_closed_record(bytes.data(), 0, out) == decode_status::bad_size);
  }
  SECTION("wrong magic") {
    bytes[0] ^= 0xff;
    CHECK(decode_closed_record(bytes.data(), bytes.size(), out) == decode_status::bad_magic);
  }
  SECTION("unknown version") {
    nl_closed_record rec;
    std::memcpy(&rec, bytes.data(), sizeof(rec));
    rec.version = NL_RECORD_VERSION + 1;
    CHECK(decode_closed_record(&rec, sizeof(rec), out) == decode_status::bad_version);
  }
  SECTION("size field disagrees") {
    nl_closed_record rec;
    std::memcpy(&rec, bytes.data(), sizeof(rec));
    rec.size = 12;
    CHECK(decode_closed_record(&rec, sizeof(rec), out) == decode_status::bad_size);
  }
  SECTION("family, protocol, direction out of range") {
    nl_conn bad = in;
    bad.family = 1;
    auto b1 = record_bytes(bad);
    CHECK(decode_closed_record(b1.data(), b1.size(), out) == decode_status::bad_field);
    bad = in;
    bad.protocol = 1;
    auto b2 = record_bytes(bad);
    CHECK(decode_closed_record(b2.data(), b2.size(), out) == decode_status::bad_field);
    bad = in;
    bad.direction = 9;
    auto b3 = record_bytes(bad);
    CHECK(decode_closed_record(b3.data(), b3.size(), out) == decode_status::bad_field);
  }
}

TEST_CASE("v4-mapped v6 connections are shown as v4", "[decoder]") {
  nl_conn c = make_conn(1, "::ffff:10.1.2.3", 5000, "::ffff:10.1.2.4", 80);
  normalize_family(c);
  CHECK(c.family == AF_INET);
  CHECK(c.saddr[0] == 10);
  CHECK(c.saddr[3] == 3);
  CHECK(c.daddr[3] == 4);
  for (int i = 4; i < 16; ++i)
    CHECK(c.saddr[i] == 0);
}

TEST_CASE("a mapped source with an unspecified peer (unconnected UDP) becomes v4", "[decoder]") {
  nl_conn c = make_conn(1, "::ffff:127.0.0.1", 5000, "::", 0, 17);
  normalize_family(c);
  CHECK(c.family == AF_INET);
  CHECK(c.saddr[0] == 127);
}

TEST_CASE("real v6 connections stay v6", "[decoder]") {
  nl_conn c = make_conn(1, "2001:db8::1", 5000, "::ffff:10.0.0.1", 80);
  normalize_family(c);
  CHECK(c.family == AF_INET6);
  nl_conn d = make_conn(2, "::", 5000, "::", 0, 17);
  normalize_family(d);
  CHECK(d.family == AF_INET6);
}

TEST_CASE("a batch record decodes its header and exactly count records", "[decoder]") {
  nl_closed_batch b{};
  b.magic = NL_BATCH_MAGIC;
  b.version = NL_RECORD_VERSION;
  b.count = 3;
  b.cpu = 1;
  b.id = 42;
  for (int i = 0; i < 3; ++i)
    b.conns[i] = make_conn(100 + i, "10.0.0.1", static_cast<uint16_t>(1000 + i), "10.0.0.2", 80);
  const size_t size = offsetof(nl_closed_batch, conns) + 3 * sizeof(nl_conn);
  closed_batch_header h;
  REQUIRE(decode_batch_header(&b, size, h) == decode_status::ok);
  CHECK(h.cpu == 1);
  CHECK(h.id == 42);
  CHECK(h.count == 3);
  nl_conn c{};
  REQUIRE(decode_conn(h.conns + 2 * sizeof(nl_conn), c) == decode_status::ok);
  CHECK(c.cookie == 102);

  CHECK(decode_batch_header(&b, size - 1, h) == decode_status::bad_size);
  CHECK(decode_batch_header(&b, 4, h) == decode_status::bad_size);
  b.count = NL_BATCH_MAX + 1;
  CHECK(decode_batch_header(&b, sizeof(b), h) == decode_status::bad_field);
  b.count = 0;
  CHECK(decode_batch_header(&b, sizeof(b), h) == decode_status::bad_field);
  b.count = 3;
  b.version = NL_RECORD_VERSION + 1;
  CHECK(decode_batch_header(&b, size, h) == decode_status::bad_version);
  b.magic = NL_RECORD_MAGIC;
  CHECK(decode_batch_header(&b, size, h) == decode_status::bad_magic);
}
