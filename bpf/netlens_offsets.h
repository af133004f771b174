/* Where the prebuilt tracer finds each kernel struct field it reads: byte offsets found by the
 * offset guesser (actors/offset_guesser) and written into the prebuilt object's read-only data
 * before load. Shared by the kernel programs and user space. Every member is an offset from the
 * start of the named struct; net_ns_inum is from the start of struct net (reached through the
 * pointer at sock_common.skc_net). Field access is the only difference between the prebuilt,
 * runtime-compiled and CO-RE tracers: what they count is the same code. */
#ifndef NETLENS_OFFSETS_H
#define NETLENS_OFFSETS_H

#ifdef __BPF__
/* vmlinux.h or the caller already defines __u16 */
#else
#include <linux/types.h>
#endif

struct nl_offsets {
  /* struct sock_common (the first member of struct sock, so also offsets into struct sock) */
  __u16 skc_daddr;         /* __be32 */
  __u16 skc_rcv_saddr;     /* __be32 */
  __u16 skc_dport;         /* __be16 */
  __u16 skc_num;           /* __u16, host order */
  __u16 skc_family;        /* unsigned short */
  __u16 skc_state;         /* volatile unsigned char */
  __u16 skc_flags;         /* unsigned long: SOCK_DONE is bit 1 */
  __u16 skc_net;           /* struct net * (possible_net_t) */
  __u16 skc_v6_daddr;      /* struct in6_addr */
  __u16 skc_v6_rcv_saddr;  /* struct in6_addr */
  __u16 skc_cookie;        /* atomic64_t: the socket cookie (SO_COOKIE), 0 until assigned */
  /* struct net */
  __u16 net_ns_inum;       /* unsigned int, net->ns.inum */
  /* struct sock */
  __u16 sk_protocol;       /* u16 */
  __u16 sk_shutdown;       /* u8: RCV_SHUTDOWN 1, SEND_SHUTDOWN 2 */
  /* struct tcp_sock */
  __u16 tcp_bytes_acked;    /* u64 */
  __u16 tcp_bytes_received; /* u64 */
  __u16 tcp_segs_out;       /* u32 */
  __u16 tcp_segs_in;        /* u32 */
  __u16 tcp_srtt_us;        /* u32, smoothed RTT << 3 */
  __u16 tcp_mdev_us;        /* u32, medium deviation << 2 */
  __u16 tcp_total_retrans;  /* u32 */
  __u16 tcp_snd_una;        /* u32 */
  __u16 tcp_write_seq;      /* u32 */
  __u16 tcp_mstamp;         /* u64, tcp_clock_us() of the last packet */
};

#endif
