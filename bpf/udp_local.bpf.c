// SPDX-License-Identifier: GPL-2.0
/* An sk_lookup program that records, for each UDP datagram the kernel looks a socket up for, the
 * address the datagram was sent to, under its peer and destination port. A socket bound to the
 * wildcard (0.0.0.0 or ::) keeps one flow per peer, and no other hook here says which of the
 * namespace's addresses a datagram reached (docs/kernel-notes.md). It only observes: it assigns
 * no socket and always passes, so the kernel's own lookup decides as if it were not there.
 *
 * The kernel runs it only for datagrams no connected socket took (connected UDP sockets are
 * found first) and, for TCP, only at listener lookups (SYNs), which return at once. An sk_lookup
 * program cannot tell which namespace it runs in (bpf_get_netns_cookie is refused there), so
 * the loader loads one instance per namespace with the namespace's inode in .rodata; the map is
 * shared. Only the program context's own fields are read: no kernel struct, no CO-RE. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "netlens_udp_local.h"

#define NL_AF_INET 2
#define NL_AF_INET6 10
#define NL_IPPROTO_UDP 17
#define NL_SK_PASS 1

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 nl_netns = 0;

/* Bounded: the loader sets max_entries; the least recently used entry goes first. Both maps
 * are shared by every instance (the loader creates them once). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct nl_udp_port_key);
  __type(value, struct nl_udp_port_value);
} nl_udp_ports SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct nl_udp_local_key);
  __type(value, struct nl_udp_local_value);
} nl_udp_local SEC(".maps");

/* Two 16-byte addresses compared as two words each (no memcmp in BPF). */
static __always_inline int same_address(const __u8 *a, const __u8 *b) {
  __u64 a0, a1, b0, b1;
  __builtin_memcpy(&a0, a, 8);
  __builtin_memcpy(&a1, a + 8, 8);
  __builtin_memcpy(&b0, b, 8);
  __builtin_memcpy(&b1, b + 8, 8);
  return a0 == b0 && a1 == b1;
}

SEC("sk_lookup")
int nl_udp_local_addr(struct bpf_sk_lookup *ctx) {
  if (ctx->protocol != NL_IPPROTO_UDP)
    return NL_SK_PASS;
  struct nl_udp_local_key k = {};
  struct nl_udp_local_value v = {};
  k.netns = nl_netns;
  k.family = (__u8)ctx->family;
  k.local_port = (__u16)ctx->local_port;
  k.remote_port = bpf_ntohs(ctx->remote_port);
  if (ctx->family == NL_AF_INET) {
    __u32 r = ctx->remote_ip4, l = ctx->local_ip4;
    __builtin_memcpy(k.remote, &r, 4);
    __builtin_memcpy(v.local, &l, 4);
  } else if (ctx->family == NL_AF_INET6) {
    /* One word at a time: the verifier refuses an indexed read of a modified context pointer. */
    __u32 r0 = ctx->remote_ip6[0], r1 = ctx->remote_ip6[1], r2 = ctx->remote_ip6[2],
          r3 = ctx->remote_ip6[3];
    __u32 l0 = ctx->local_ip6[0], l1 = ctx->local_ip6[1], l2 = ctx->local_ip6[2],
          l3 = ctx->local_ip6[3];
    __builtin_memcpy(k.remote, &r0, 4);
    __builtin_memcpy(k.remote + 4, &r1, 4);
    __builtin_memcpy(k.remote + 8, &r2, 4);
    __builtin_memcpy(k.remote + 12, &r3, 4);
    __builtin_memcpy(v.local, &l0, 4);
    __builtin_memcpy(v.local + 4, &l1, 4);
    __builtin_memcpy(v.local + 8, &l2, 4);
    __builtin_memcpy(v.local + 12, &l3, 4);
  } else {
    return NL_SK_PASS;
  }
  /* Most ports only ever see one address: one lookup of the port, nothing written. Keeping
   * every peer instead costs an LRU update per new peer (650-820 ns measured, a DNS server's
   * every query), so peers are kept only for ports that saw several addresses. */
  struct nl_udp_port_key pk = {};
  pk.netns = k.netns;
  pk.local_port = k.local_port;
  pk.family = k.family;
  struct nl_udp_port_value *port = bpf_map_lookup_elem(&nl_udp_ports, &pk);
  if (!port) {
    struct nl_udp_port_value pv = {};
    __builtin_memcpy(pv.local, v.local, 16);
    bpf_map_update_elem(&nl_udp_ports, &pk, &pv, BPF_NOEXIST);
    return NL_SK_PASS;
  }
  if (!port->several) {
    if (same_address(port->local, v.local))
      return NL_SK_PASS;
    port->several = 1; /* only ever set: a race writes the same */
  }
  /* Several addresses at this port: each peer's latest, written only when it changes. */
  const struct nl_udp_local_value *cur = bpf_map_lookup_elem(&nl_udp_local, &k);
  if (cur && same_address(cur->local, v.local))
    return NL_SK_PASS;
  bpf_map_update_elem(&nl_udp_local, &k, &v, BPF_ANY);
  return NL_SK_PASS;
}
