/* Flow counters kept by the TC classifiers (tc_flows.bpf.c), shared by the kernel programs and
 * their loader (tc_attach.cpp). Plain C, fixed-width types, no implicit padding. */
#ifndef NETLENS_TC_H
#define NETLENS_TC_H

#ifdef __BPF__
/* vmlinux.h already defines __u8.. __u64 */
#else
#include <linux/types.h>
#endif

/* Which hook of the device saw the packet. */
enum nl_tc_direction { NL_TC_INGRESS = 1, NL_TC_EGRESS = 2 };

/* One flow as one device saw it in one direction. Addresses are in network byte order, v4 in
 * the first 4 bytes and the rest zero; ports in host byte order, 0 for an IPv4 fragment after
 * the first (it carries no L4 header). Only TCP and UDP are counted. */
struct nl_tc_flow_key {
  __u8 saddr[16];
  __u8 daddr[16];
  __u32 netns;   /* inode of the device's network namespace */
  __u32 ifindex; /* the device's index inside that namespace */
  __u16 sport;
  __u16 dport;
  __u16 family;   /* AF_INET or AF_INET6 */
  __u8 protocol;  /* IPPROTO_TCP or IPPROTO_UDP */
  __u8 direction; /* enum nl_tc_direction */
};

/* Packets count what goes on the wire: a GSO packet counts as its segments. Bytes are IP-level
 * lengths (IP header + payload, no link-layer header), each segment's headers included. The
 * flow's last packet is the largest last_ns over CPUs; the loader removes flows idle too long. */
struct nl_tc_flow_value {
  __u64 packets;
  __u64 bytes;
  __u64 last_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of this CPU's last packet of the flow */
};

/* What the programs report about themselves (one per-CPU array slot). */
struct nl_tc_counters {
  __u64 failed_inserts; /* a new flow did not fit in the map (full, or no memory) */
  __u64 unparsed;       /* IP packets whose headers could not be read (truncated) */
};

#endif
