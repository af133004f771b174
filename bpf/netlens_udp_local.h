/* The local address of each UDP datagram delivered to a socket by lookup (a socket that is not
 * connected, typically one bound to the wildcard), as the sk_lookup program (udp_local.bpf.c)
 * records it and its loader (udp_local.cpp) reads it. Plain C, fixed-width types, no implicit
 * padding. */
#ifndef NETLENS_UDP_LOCAL_H
#define NETLENS_UDP_LOCAL_H

#ifdef __BPF__
/* vmlinux.h already defines __u8.. __u64 */
#else
#include <linux/types.h>
#endif

/* A port of a namespace, and the one local address its datagrams have reached, or that they
 * reached several (from then on each peer's is kept, below). Almost every port sees one: a
 * socket bound to the wildcard in a namespace with one address, or reached at one. */
struct nl_udp_port_key {
  __u32 netns; /* inode of the network namespace */
  __u16 local_port;
  __u8 family; /* AF_INET or AF_INET6 */
  __u8 pad;
};

struct nl_udp_port_value {
  __u8 local[16];
  __u32 several; /* 1 once a datagram reached another address; then see nl_udp_local_key */
  __u32 pad;
};

/* A peer as a socket's per-peer flow knows it: the namespace, the socket's port and the peer.
 * Addresses in network byte order, v4 in the first 4 bytes and the rest zero; ports in host
 * byte order. */
struct nl_udp_local_key {
  __u32 netns; /* inode of the network namespace */
  __u16 local_port;
  __u16 remote_port;
  __u8 family; /* AF_INET or AF_INET6 */
  __u8 pad[3];
  __u8 remote[16];
};

/* The destination address of the peer's latest datagram to that port, kept only for ports
 * whose datagrams reached several addresses. */
struct nl_udp_local_value {
  __u8 local[16];
};

#endif
