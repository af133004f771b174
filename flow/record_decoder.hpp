// Turns the bytes of one closed-connection record from the kernel into an nl_conn, rejecting
// anything malformed, and presents v4-mapped v6 addresses as v4.
#pragma once

#include <cstddef>
#include <cstdint>

#include "bpf/netlens_records.h"

namespace netlens {

enum class decode_status { ok, bad_size, bad_magic, bad_version, bad_field };

const char* to_string(decode_status s);

decode_status decode_closed_record(const void* data, size_t size, nl_conn& out);

// One nl_conn as the kernel wrote it (in a batch), checked field by field.
decode_status decode_conn(const void* data, nl_conn& out);

// A perf record holding a batch (struct nl_closed_batch, cut after count records): the header
// checked, and where its records start (count of them, each sizeof(nl_conn), unaligned).
struct closed_batch_header {
  uint32_t cpu = 0;
  uint64_t id = 0;
  uint16_t count = 0;
  const uint8_t* conns = nullptr;
};
decode_status decode_batch_header(const void* data, size_t size, closed_batch_header& out);

// A dual-stack socket talking to a v4 peer shows ::ffff:a.b.c.d; users expect a v4 flow.
void normalize_family(nl_conn& c);

} // namespace netlens
