// Fuzzes the conntrack netlink decoder with what a socket could hand it: any bytes, as events
// and as a dump's answer. Beyond not crashing, what it lets through must be what the cache
// relies on: TCP or UDP over v4 or v6, the namespace it was told, v4 addresses zero-padded.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <netinet/in.h>
#include <sys/socket.h>
#include <vector>

#include "actors/conntrack/netlink_decoder.hpp"

namespace {

constexpr uint32_t k_netns = 4026531992u;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "netlink_fuzz: %s\n", what);
  std::abort();
}

bool v4_padding_is_zero(const netlens::ct_endpoints& e) {
  for (int i = 4; i < 16; ++i)
    if (e.saddr[i] != 0 || e.daddr[i] != 0)
      return false;
  return true;
}

void check(const netlens::netlink_decoder& d, const std::vector<netlens::ct_event>& out,
           bool from_dump) {
  const auto& s = d.stats();
  if (out.size() != s.decoded)
    fail("events handed out differ from the decoded count");
  if (s.decoded + s.malformed + s.unknown + s.errors > s.messages)
    fail("more verdicts than messages");
  for (const auto& ev : out) {
    const auto& e = ev.entry;
    if (e.netns != k_netns)
      fail("entry not tagged with its namespace");
    if (e.family != AF_INET && e.family != AF_INET6)
      fail("entry of an unexpected family");
    if (e.protocol != IPPROTO_TCP && e.protocol != IPPROTO_UDP)
      fail("entry of an unexpected protocol");
    if (e.family == AF_INET && (!v4_padding_is_zero(e.orig) || !v4_padding_is_zero(e.reply)))
      fail("v4 entry with bytes beyond its address (the cache hashes them)");
    if (from_dump != (ev.kind == netlens::ct_event_kind::dumped))
      fail("event kind does not match where the message came from");
  }
}

void decode(const uint8_t* buf, size_t len, bool from_dump) {
  netlens::netlink_decoder d;
  std::vector<netlens::ct_event> out;
  d.decode(buf, len, k_netns, from_dump, out);
  check(d, out, from_dump);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  decode(data, size, false);
  // A receive buffer need not be aligned the way the headers are: the same bytes again at an
  // odd address (the copy ends where the input does, so overreads are still caught).
  std::unique_ptr<uint8_t[]> shifted(new uint8_t[size + 1]);
  if (size > 0)
    std::memcpy(shifted.get() + 1, data, size);
  decode(shifted.get() + 1, size, true);
  return 0;
}
