// Writes the binary seed inputs under fuzz/corpus/ (netlink, record, batch_tracker): small valid
// inputs the fuzzers mutate from, so they start past the magic numbers and length fields. The
// netlink messages come from libnetfilter_conntrack's own builder, laid out as the kernel does.
// Run it again (tools/fuzz --seeds) when a record layout changes; the files are checked in.
#include <arpa/inet.h>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <linux/netlink.h>
#include <string>
#include <vector>

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>

#include "bpf/netlens_records.h"
#include "tests/support/conn_builder.hpp"

namespace {

using bytes = std::vector<uint8_t>;

bool write_file(const std::string& path, const bytes& b) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f)
    return false;
  const bool ok = std::fwrite(b.data(), 1, b.size(), f) == b.size();
  return std::fclose(f) == 0 && ok;
}

struct flow {
  int family;
  uint8_t protocol;
  const char* orig_src;
  const char* orig_dst;
  const char* reply_src;
  uint16_t sport, dport, reply_sport;
};

void set_addr(nf_conntrack* ct, int family, nf_conntrack_attr v4, nf_conntrack_attr v6,
              const char* text) {
  uint8_t a[16] = {};
  inet_pton(family, text, a);
  if (family == AF_INET) {
    uint32_t v;
    std::memcpy(&v, a, sizeof v);
    nfct_set_attr_u32(ct, v4, v);
  } else {
    nfct_set_attr(ct, v6, a);
  }
}

// One ctnetlink message for the flow: header, nfgenmsg, then the builder's attributes.
bytes conntrack_message(const flow& f, uint8_t msg_type, uint16_t flags) {
  std::vector<uint32_t> storage(1024); // aligned: the builder writes through typed pointers
  auto* nlh = reinterpret_cast<nlmsghdr*>(storage.data());
  nlh->nlmsg_len = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  nlh->nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | msg_type);
  nlh->nlmsg_flags = flags;
  auto* gen = reinterpret_cast<nfgenmsg*>(reinterpret_cast<uint8_t*>(nlh) + NLMSG_HDRLEN);
  gen->nfgen_family = static_cast<uint8_t>(f.family);
  gen->version = NFNETLINK_V0;

  nf_conntrack* ct = nfct_new();
  nfct_set_attr_u8(ct, ATTR_ORIG_L3PROTO, static_cast<uint8_t>(f.family));
  nfct_set_attr_u8(ct, ATTR_ORIG_L4PROTO, f.protocol);
  set_addr(ct, f.family, ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC, f.orig_src);
  set_addr(ct, f.family, ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST, f.orig_dst);
  nfct_set_attr_u16(ct, ATTR_ORIG_PORT_SRC, htons(f.sport));
  nfct_set_attr_u16(ct, ATTR_ORIG_PORT_DST, htons(f.dport));
  nfct_set_attr_u8(ct, ATTR_REPL_L3PROTO, static_cast<uint8_t>(f.family));
  nfct_set_attr_u8(ct, ATTR_REPL_L4PROTO, f.protocol);
  set_addr(ct, f.family, ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC, f.reply_src);
  set_addr(ct, f.family, ATTR_REPL_IPV4_DST, ATTR_REPL_IPV6_DST, f.orig_src);
  nfct_set_attr_u16(ct, ATTR_REPL_PORT_SRC, htons(f.reply_sport));
  nfct_set_attr_u16(ct, ATTR_REPL_PORT_DST, htons(f.sport));
  nfct_set_attr_u32(ct, ATTR_TIMEOUT, 120);
  nfct_set_attr_u32(ct, ATTR_STATUS, IPS_CONFIRMED);
  if (f.protocol == IPPROTO_TCP)
    nfct_set_attr_u8(ct, ATTR_TCP_STATE, 3);
  const int rc = nfct_nlmsg_build(nlh, ct);
  nfct_destroy(ct);
  if (rc != 0)
    return {};
  const auto* p = reinterpret_cast<const uint8_t*>(nlh);
  return bytes(p, p + nlh->nlmsg_len);
}

// NLMSG_DONE or NLMSG_ERROR with its error code.
bytes control_message(uint16_t type, int error) {
  bytes b(NLMSG_HDRLEN + sizeof(nlmsgerr), 0);
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(b.size());
  h.nlmsg_type = type;
  std::memcpy(b.data(), &h, sizeof h);
  std::memcpy(b.data() + NLMSG_HDRLEN, &error, sizeof error);
  return b;
}

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
    out.resize(NLMSG_ALIGN(out.size()), 0);
  }
  return out;
}

// A batch as a perf record carries it: the header and count records.
bytes batch_record(uint32_t cpu, uint64_t id, uint16_t count) {
  nl_closed_batch b{};
  b.magic = NL_BATCH_MAGIC;
  b.version = NL_RECORD_VERSION;
  b.count = count;
  b.cpu = cpu;
  b.id = id;
  for (uint16_t i = 0; i < count; ++i) {
    b.conns[i] = netlens::testing::make_conn(
        100 + i, i % 2 ? "fd00::1" : "10.0.0.1", static_cast<uint16_t>(40000 + i),
        i % 2 ? "fd00::2" : "10.0.0.2", 443, i % 3 ? IPPROTO_TCP : IPPROTO_UDP);
  }
  const size_t size = offsetof(nl_closed_batch, conns) + size_t{count} * sizeof(nl_conn);
  const auto* p = reinterpret_cast<const uint8_t*>(&b);
  return bytes(p, p + size);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const flow natted_tcp{AF_INET,       IPPROTO_TCP, "10.0.0.1", "10.0.0.2",
                        "192.168.1.7", 40000,       80,         8080};
  const flow plain_udp{AF_INET, IPPROTO_UDP, "10.0.0.1", "10.0.0.53", "10.0.0.53", 5353, 53, 53};
  const flow v6_tcp{AF_INET6, IPPROTO_TCP, "fd00::1", "fd00::2", "fd00:1::99", 40000, 443, 8443};

  using netlens::testing::make_conn;
  using netlens::testing::record_bytes;
  nl_conn mapped = make_conn(9, "::ffff:10.0.0.1", 5000, "::ffff:10.0.0.2", 53, IPPROTO_UDP);
  bytes padded = record_bytes(make_conn(3, "10.0.0.1", 1234, "10.0.0.2", 80));
  padded.resize(padded.size() + 4, 0); // a perf sample's size includes its alignment padding

  const std::vector<std::pair<std::string, bytes>> seeds = {
      {"netlink/new_tcp_nat",
       conntrack_message(natted_tcp, IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL)},
      {"netlink/destroy_udp", conntrack_message(plain_udp, IPCTNL_MSG_CT_DELETE, 0)},
      {"netlink/new_v6", conntrack_message(v6_tcp, IPCTNL_MSG_CT_NEW, NLM_F_CREATE)},
      {"netlink/dump", concat({conntrack_message(natted_tcp, IPCTNL_MSG_CT_NEW, NLM_F_MULTI),
                               conntrack_message(v6_tcp, IPCTNL_MSG_CT_NEW, NLM_F_MULTI),
                               control_message(NLMSG_DONE, 0)})},
      {"netlink/error", control_message(NLMSG_ERROR, -ENOBUFS)},
      {"record/closed_v4_tcp", record_bytes(make_conn(7, "10.0.0.1", 1234, "10.0.0.2", 80))},
      {"record/closed_mapped_udp", record_bytes(mapped)},
      {"record/closed_padded", padded},
      {"record/batch_of_3", batch_record(1, 42, 3)},
      {"record/batch_full", batch_record(0, 7, NL_BATCH_MAX)},
      // Scripts of (op, cpu, argument) bytes; see batch_tracker_fuzz.cpp for the ops.
      {"batch_tracker/take_then_arrive", {0, 0, 2, 3, 0, 0, 0, 0, 1, 0, 2, 0, 3, 0, 5, 0, 3, 0}},
      {"batch_tracker/lost_batch",
       {0, 1, 3, 3, 0, 1, 1, 2, 1, 6, 1, 7, 0, 200, 3, 0, 0, 1, 0, 3, 0}},
      {"batch_tracker/read_before_reset", {0, 2, 3, 1, 2, 3, 0, 5, 2, 3, 0, 2, 2, 3, 0}},
  };
  for (const auto& [name, content] : seeds) {
    if (content.empty() || !write_file(dir + "/" + name, content)) {
      std::fprintf(stderr, "cannot build or write %s/%s\n", dir.c_str(), name.c_str());
      return 1;
    }
  }
  return 0;
}
