// SPDX-License-Identifier: GPL-2.0
/* TC classifiers (clsact, direct action) on a device's ingress and egress that count packets
 * and bytes per TCP/UDP flow. They only observe: every packet leaves with TC_ACT_UNSPEC, which
 * lets the filters after ours run and, when none decides, lets the packet through, so netlens
 * never drops, redirects or hides a packet from another tool. One loaded object serves every
 * device of every namespace: the namespace is read from the device, not from .rodata.
 *
 * Headers are read with bpf_skb_load_bytes: it is bounds-checked against the packet by the
 * kernel and also reads headers that sit in paged fragments, where direct access (data..
 * data_end) would need bpf_skb_pull_data, which changes the skb of someone else's traffic. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "netlens_tc.h"

#define NL_AF_INET 2
#define NL_AF_INET6 10
#define NL_ETH_P_IP 0x0800
#define NL_ETH_P_IPV6 0x86DD
#define NL_ETH_P_8021Q 0x8100
#define NL_ETH_P_8021AD 0x88A8
#define NL_ETH_HLEN 14
#define NL_IPPROTO_TCP 6
#define NL_IPPROTO_UDP 17
#define NL_TC_ACT_UNSPEC (-1)
#define NL_IP_OFFSET_MASK 0x1fff

char LICENSE[] SEC("license") = "GPL";

/* Bounded: max_entries is set by the loader; a flow that does not fit is counted, not kept.
 * Flows idle for long are removed by the loader (tc_attach::remove_idle), never here. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct nl_tc_flow_key);
  __type(value, struct nl_tc_flow_value);
} nl_tc_flows SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct nl_tc_counters);
} nl_tc_counters SEC(".maps");

extern void* bpf_cast_to_kern_ctx(void* obj) __ksym;

static __always_inline struct nl_tc_counters* counters(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&nl_tc_counters, &zero);
}

static __always_inline void add_flow(struct nl_tc_flow_key* key, __u64 packets, __u64 bytes) {
  const __u64 now = bpf_ktime_get_ns();
  struct nl_tc_flow_value* v = bpf_map_lookup_elem(&nl_tc_flows, key);
  if (!v) {
    struct nl_tc_flow_value init = {.packets = packets, .bytes = bytes, .last_ns = now};
    long err = bpf_map_update_elem(&nl_tc_flows, key, &init, BPF_NOEXIST);
    if (err == 0)
      return;
    /* Another CPU created the flow meanwhile: our CPU's slot of it is zero, add to it. */
    v = bpf_map_lookup_elem(&nl_tc_flows, key);
    if (!v) {
      struct nl_tc_counters* c = counters();
      if (c)
        c->failed_inserts++;
      return;
    }
  }
  /* Per-CPU value: no other CPU writes this slot, and a program is not preempted by itself. */
  v->packets += packets;
  v->bytes += bytes;
  v->last_ns = now;
}

static __always_inline void count_unparsed(void) {
  struct nl_tc_counters* c = counters();
  if (c)
    c->unparsed++;
}

static __always_inline int count(struct __sk_buff* skb, __u8 direction) {
  struct sk_buff* kskb = bpf_cast_to_kern_ctx(skb);
  struct nl_tc_flow_key key = {};
  key.direction = direction;
  key.ifindex = skb->ifindex;
  key.netns = BPF_CORE_READ(kskb, dev, nd_net.net, ns.inum);

  /* At both hooks skb->data is the link-layer header; the network header's offset from it is
   * 0 on L3 devices (tun, wireguard) and the Ethernet header's length on veth and NICs. */
  __u32 nhoff = (__u32)BPF_CORE_READ(kskb, network_header) - BPF_CORE_READ(kskb, mac_header);
  __u16 proto = bpf_ntohs(skb->protocol);
  if (proto == NL_ETH_P_8021Q || proto == NL_ETH_P_8021AD) {
    /* An in-band tag (an accelerated one is already out of the frame, in vlan_tci). */
    __be16 inner;
    if (bpf_skb_load_bytes(skb, NL_ETH_HLEN + 2, &inner, sizeof(inner)) != 0)
      return NL_TC_ACT_UNSPEC;
    proto = bpf_ntohs(inner);
    nhoff = NL_ETH_HLEN + 4;
  }
  if (nhoff > 64)
    return NL_TC_ACT_UNSPEC;

  __u32 l3_len = 0;  /* IP-level length of this skb as its header says */
  __u32 hdr_len = 0; /* the IP header's length, repeated in every segment of a GSO packet */
  __u32 l4off = 0;
  bool later_fragment = false;
  if (proto == NL_ETH_P_IP) {
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, nhoff, &ip, sizeof(ip)) != 0) {
      count_unparsed();
      return NL_TC_ACT_UNSPEC;
    }
    key.family = NL_AF_INET;
    key.protocol = ip.protocol;
    __builtin_memcpy(key.saddr, &ip.saddr, 4);
    __builtin_memcpy(key.daddr, &ip.daddr, 4);
    hdr_len = ip.ihl * 4;
    l3_len = bpf_ntohs(ip.tot_len);
    l4off = nhoff + hdr_len;
    later_fragment = (bpf_ntohs(ip.frag_off) & NL_IP_OFFSET_MASK) != 0;
  } else if (proto == NL_ETH_P_IPV6) {
    struct ipv6hdr ip6;
    if (bpf_skb_load_bytes(skb, nhoff, &ip6, sizeof(ip6)) != 0) {
      count_unparsed();
      return NL_TC_ACT_UNSPEC;
    }
    /* Extension headers are not walked: such a packet's next header is not TCP or UDP. */
    key.family = NL_AF_INET6;
    key.protocol = ip6.nexthdr;
    __builtin_memcpy(key.saddr, &ip6.saddr, 16);
    __builtin_memcpy(key.daddr, &ip6.daddr, 16);
    hdr_len = sizeof(ip6);
    l3_len = sizeof(ip6) + bpf_ntohs(ip6.payload_len);
    l4off = nhoff + hdr_len;
  } else {
    return NL_TC_ACT_UNSPEC;
  }
  if (key.protocol != NL_IPPROTO_TCP && key.protocol != NL_IPPROTO_UDP)
    return NL_TC_ACT_UNSPEC;

  __u32 l4_hdr_len = 8;
  if (!later_fragment) {
    /* TCP and UDP both start with the two ports; TCP's data offset is in byte 12. */
    __u8 l4[13];
    if (bpf_skb_load_bytes(skb, l4off, l4, key.protocol == NL_IPPROTO_TCP ? 13 : 4) != 0) {
      count_unparsed();
      return NL_TC_ACT_UNSPEC;
    }
    key.sport = ((__u16)l4[0] << 8) | l4[1];
    key.dport = ((__u16)l4[2] << 8) | l4[3];
    if (key.protocol == NL_IPPROTO_TCP)
      l4_hdr_len = (l4[12] >> 4) * 4;
  }

  /* A GSO packet (TSO on veth, GRO on a NIC) leaves as gso_segs wire packets, each carrying its
   * own IP and L4 headers; its own IP length field may be 0 (BIG TCP), so take the skb's. */
  __u64 packets = 1;
  __u64 bytes = l3_len;
  __u32 segs = skb->gso_segs;
  if (skb->gso_size != 0 && segs > 1) {
    packets = segs;
    bytes = (__u64)(skb->len - nhoff) + (__u64)(segs - 1) * (hdr_len + l4_hdr_len);
  }
  add_flow(&key, packets, bytes);
  return NL_TC_ACT_UNSPEC;
}

SEC("tc")
int nl_tc_ingress(struct __sk_buff* skb) {
  return count(skb, NL_TC_INGRESS);
}

SEC("tc")
int nl_tc_egress(struct __sk_buff* skb) {
  return count(skb, NL_TC_EGRESS);
}
