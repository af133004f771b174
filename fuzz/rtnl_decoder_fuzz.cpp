// Fuzzes the rtnetlink link decoder with what a NETLINK_ROUTE socket could hand it: any bytes.
// Beyond not crashing or reading past the input, what it lets through must be what the link
// watcher relies on: a positive ifindex and a name of 1..IFNAMSIZ-1 characters without NUL.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <linux/if.h>
#include <memory>
#include <vector>

#include "actors/netns/rtnl_decoder.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "rtnl_decoder_fuzz: %s\n", what);
  std::abort();
}

void decode(const uint8_t* buf, size_t len) {
  netlens::rtnl_decoder d;
  std::vector<netlens::rtnl_message> out;
  d.decode(buf, len, out);
  const auto& s = d.stats();
  if (out.size() != s.decoded)
    fail("messages handed out differ from the decoded count");
  if (s.decoded + s.malformed + s.unknown > s.messages)
    fail("more verdicts than messages");
  if (s.messages > len / 16 + 1)
    fail("more messages than headers fit in the input");
  for (const auto& m : out) {
    if (m.kind == netlens::rtnl_kind::new_link || m.kind == netlens::rtnl_kind::del_link) {
      if (m.ifindex <= 0)
        fail("link with an ifindex <= 0");
      if (m.name.empty() || m.name.size() >= IFNAMSIZ)
        fail("link name empty or too long");
      if (std::memchr(m.name.data(), '\0', m.name.size()))
        fail("link name with a NUL inside");
    } else if (m.ifindex != 0 || !m.name.empty()) {
      fail("done/error message carrying a link");
    }
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  decode(data, size);
  // A receive buffer need not be aligned the way the headers are: the same bytes again at an
  // odd address (the copy ends where the input does, so overreads are still caught).
  std::unique_ptr<uint8_t[]> shifted(new uint8_t[size + 1]);
  if (size > 0)
    std::memcpy(shifted.get() + 1, data, size);
  decode(shifted.get() + 1, size);
  return 0;
}
