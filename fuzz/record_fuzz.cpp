// Fuzzes the closed-record decoder the ways the reader feeds it: a ring-buffer or perf record
// (one connection, or a whole batch when its magic says so), and a per-CPU batch slot read from
// the map while it still fills. The walks below follow closed_reader's on_record, on_batch and
// read_pending step for step; those need libbpf and a live map, so they cannot run here as is.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <netinet/in.h>
#include <sys/socket.h>

#include "flow/batch_tracker.hpp"
#include "flow/record_decoder.hpp"

namespace {

using netlens::decode_status;

// What the reader allocates per CPU for a map lookup: the slot rounded up to 8 bytes.
constexpr size_t k_slot_size = (sizeof(nl_closed_batch) + 7) / 8 * 8;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "record_fuzz: %s\n", what);
  std::abort();
}

// What the tracer and the API take for granted about a connection the decoder let through.
void check_conn(const nl_conn& c) {
  if (c.family != AF_INET && c.family != AF_INET6)
    fail("connection of an unexpected family");
  if (c.protocol != IPPROTO_TCP && c.protocol != IPPROTO_UDP)
    fail("connection of an unexpected protocol");
  if (c.direction > NL_DIR_INCOMING)
    fail("connection of an unexpected direction");
  nl_conn again = c;
  netlens::normalize_family(again);
  if (std::memcmp(&again, &c, sizeof c) != 0)
    fail("normalize_family changes a connection it already normalized");
}

void on_batch(const uint8_t* data, size_t size) {
  netlens::closed_batch_header h;
  if (netlens::decode_batch_header(data, size, h) != decode_status::ok)
    return;
  if (h.count == 0 || h.count > NL_BATCH_MAX)
    fail("batch header accepted with a count out of range");
  if (h.conns != data + offsetof(nl_closed_batch, conns) ||
      offsetof(nl_closed_batch, conns) + size_t{h.count} * sizeof(nl_conn) > size)
    fail("batch header accepted with records beyond the record");
  netlens::batch_tracker tracker;
  const size_t skip = tracker.arrived(h.cpu, h.id);
  for (size_t i = skip; i < h.count; ++i) {
    nl_conn c;
    if (netlens::decode_conn(h.conns + i * sizeof(nl_conn), c) == decode_status::ok)
      check_conn(c);
  }
}

void on_record(const uint8_t* data, size_t size) {
  uint32_t magic = 0;
  if (size >= sizeof magic)
    std::memcpy(&magic, data, sizeof magic);
  if (magic == NL_BATCH_MAGIC) {
    on_batch(data, size);
    return;
  }
  nl_conn c;
  if (netlens::decode_closed_record(data, size, c) == decode_status::ok)
    check_conn(c);
}

// The input as one CPU's slot of the batch map (cut or zero-padded to the slot's size), read
// twice the same, as read_pending sees a CPU that did not send in between.
void read_pending(const uint8_t* data, size_t size) {
  std::unique_ptr<uint8_t[]> slot(new uint8_t[k_slot_size]());
  std::memcpy(slot.get(), data, size < k_slot_size ? size : k_slot_size);
  nl_closed_batch h;
  std::memcpy(&h, slot.get(), offsetof(nl_closed_batch, conns));
  netlens::batch_tracker tracker;
  tracker.forget_stale(0, h.id, 0, 60ull * 1000000000ull);
  if (h.count == 0 || h.count > NL_BATCH_MAX)
    return;
  const size_t first = tracker.take_partial(0, h.id, h.count);
  for (size_t i = first; i < h.count; ++i) {
    nl_conn c;
    if (netlens::decode_conn(slot.get() + offsetof(nl_closed_batch, conns) + i * sizeof(nl_conn),
                             c) == decode_status::ok)
      check_conn(c);
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  on_record(data, size);
  read_pending(data, size);
  return 0;
}
