// Builds nl_conn values and record byte images for tests and benchmarks.
#pragma once

#include <arpa/inet.h>
#include <cstring>
#include <string>
#include <vector>

#include "bpf/netlens_records.h"

namespace netlens::testing {

inline nl_conn make_conn(uint64_t cookie, const char* saddr, uint16_t sport, const char* daddr,
                         uint16_t dport, uint8_t protocol = 6) {
  nl_conn c{};
  c.cookie = cookie;
  c.sock_id = cookie; // as the CO-RE tracer keys them
  bool v6 = std::strchr(saddr, ':') != nullptr;
  c.family = v6 ? AF_INET6 : AF_INET;
  inet_pton(c.family, saddr, c.saddr);
  inet_pton(c.family, daddr, c.daddr);
  c.sport = sport;
  c.dport = dport;
  c.protocol = protocol;
  c.direction = NL_DIR_OUTGOING;
  c.pid = 42;
  std::strncpy(c.comm, "test", sizeof(c.comm));
  return c;
}

inline std::vector<uint8_t> record_bytes(const nl_conn& c) {
  nl_closed_record rec{};
  rec.magic = NL_RECORD_MAGIC;
  rec.version = NL_RECORD_VERSION;
  rec.size = sizeof(rec);
  rec.conn = c;
  std::vector<uint8_t> out(sizeof(rec));
  std::memcpy(out.data(), &rec, sizeof(rec));
  return out;
}

} // namespace netlens::testing
