#include "flow/record_decoder.hpp"

#include <cstddef>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>

#include "flow/flow_key.hpp"

namespace netlens {
namespace {

constexpr uint8_t k_v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool is_v4_mapped(const uint8_t* a) {
  return std::memcmp(a, k_v4_mapped_prefix, 12) == 0;
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
  // The header is checked in place; the connection is copied once, straight into out.
  const auto* bytes = static_cast<const uint8_t*>(data);
  uint32_t magic;
  uint16_t version, rec_size;
  std::memcpy(&magic, bytes + offsetof(nl_closed_record, magic), sizeof(magic));
  std::memcpy(&version, bytes + offsetof(nl_closed_record, version), sizeof(version));
  std::memcpy(&rec_size, bytes + offsetof(nl_closed_record, size), sizeof(rec_size));
  if (magic != NL_RECORD_MAGIC)
    return decode_status::bad_magic;
  if (version != NL_RECORD_VERSION)
    return decode_status::bad_version;
  if (rec_size != sizeof(nl_closed_record))
    return decode_status::bad_size;
  return decode_conn(bytes + offsetof(nl_closed_record, conn), out);
}

decode_status decode_conn(const void* data, nl_conn& out) {
  nl_conn c;
  std::memcpy(&c, data, sizeof(c));
  if ((c.family != AF_INET && c.family != AF_INET6) ||
      (c.protocol != IPPROTO_TCP && c.protocol != IPPROTO_UDP) || c.direction > NL_DIR_INCOMING)
    return decode_status::bad_field;
  out = c;
  normalize_family(out);
  return decode_status::ok;
}

decode_status decode_batch_header(const void* data, size_t size, closed_batch_header& out) {
  constexpr size_t header = offsetof(nl_closed_batch, conns);
  if (size < header)
    return decode_status::bad_size;
  nl_closed_batch h;
  std::memcpy(&h, data, header);
  if (h.magic != NL_BATCH_MAGIC)
    return decode_status::bad_magic;
  if (h.version != NL_RECORD_VERSION)
    return decode_status::bad_version;
  if (h.count == 0 || h.count > NL_BATCH_MAX)
    return decode_status::bad_field;
  if (size < header + size_t{h.count} * sizeof(nl_conn))
    return decode_status::bad_size;
  out.cpu = h.cpu;
  out.id = h.id;
  out.count = h.count;
  out.conns = static_cast<const uint8_t*>(data) + header;
  return decode_status::ok;
}

} // namespace netlens
