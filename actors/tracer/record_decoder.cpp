#include "actors/tracer/record_decoder.hpp"

#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>

namespace netlens {
namespace {

constexpr uint8_t k_v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool is_v4_mapped(const uint8_t* a) { return std::memcmp(a, k_v4_mapped_prefix, 12) == 0; }

bool is_unspecified(const uint8_t* a) {
  static constexpr uint8_t zero[16] = {};
  return std::memcmp(a, zero, 16) == 0;
}

void unmap(uint8_t* a) {
  if (is_unspecified(a))
    return;
  std::memmove(a, a + 12, 4);
  std::memset(a + 4, 0, 12);
}

} // namespace

const char* to_string(decode_status s) {
  switch (s) {
  case decode_status::ok:
    return "ok";
  case decode_status::bad_size:
    return "bad size";
  case decode_status::bad_magic:
    return "bad magic";
  case decode_status::bad_version:
    return "unknown version";
  case decode_status::bad_field:
    return "field out of range";
  }
  return "?";
}

void normalize_family(nl_conn& c) {
  if (c.family != AF_INET6)
    return;
  bool s_mapped = is_v4_mapped(c.saddr), d_mapped = is_v4_mapped(c.daddr);
  bool s_ok = s_mapped || is_unspecified(c.saddr);
  bool d_ok = d_mapped || is_unspecified(c.daddr);
  if (!(s_ok && d_ok && (s_mapped || d_mapped)))
    return;
  unmap(c.saddr);
  unmap(c.daddr);
  c.family = AF_INET;
}

decode_status decode_closed_record(const void* data, size_t size, nl_conn& out) {
  if (size < sizeof(nl_closed_record))
    return decode_status::bad_size;
  nl_closed_record rec;
  std::memcpy(&rec, data, sizeof(rec));
  if (rec.magic != NL_RECORD_MAGIC)
    return decode_status::bad_magic;
  if (rec.version != NL_RECORD_VERSION)
    return decode_status::bad_version;
  if (rec.size != sizeof(nl_closed_record))
    return decode_status::bad_size;
  const nl_conn& c = rec.conn;
  if ((c.family != AF_INET && c.family != AF_INET6) ||
      (c.protocol != IPPROTO_TCP && c.protocol != IPPROTO_UDP) || c.direction > NL_DIR_INCOMING)
    return decode_status::bad_field;
  out = c;
  normalize_family(out);
  return decode_status::ok;
}

} // namespace netlens
