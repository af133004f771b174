/* How the tracer reads kernel struct fields: the only part of the tracer that differs between
 * its three builds. tracer.bpf.c holds what is counted; this file holds where it is read from.
 *
 *   NL_MODE_CORE (default): tp_btf programs, fields read through BTF-typed pointers with CO-RE
 *     relocations, the socket cookie from the kernel. Needs the kernel's BTF.
 *   NL_MODE_RUNTIME: raw_tp programs compiled on the host by netlens itself; field offsets are
 *     compile-time constants from the headers it was compiled against (a vmlinux.h generated
 *     from this kernel, built with BPF_NO_PRESERVE_ACCESS_INDEX: no relocations to resolve).
 *   NL_MODE_PREBUILT: raw_tp programs shipped in the binary; field offsets come from nl_off,
 *     written into read-only data before load from what the offset guesser found.
 *
 * raw_tp programs get untyped pointers: every field is a bpf_probe_read_kernel at an offset,
 * and the helpers that need a BTF pointer (bpf_get_socket_cookie, bpf_skc_to_tcp_sock) are
 * not available to them. */
#ifndef NETLENS_TRACER_ACCESS_BPF_H
#define NETLENS_TRACER_ACCESS_BPF_H

#include "netlens_offsets.h"

#if defined(NL_MODE_RUNTIME) || defined(NL_MODE_PREBUILT)
#define NL_RAW_TP 1
#define NL_TP(name) "raw_tp/" name
#else
#define NL_MODE_CORE 1
#define NL_TP(name) "tp_btf/" name
#endif

#ifdef NL_RAW_TP

#ifdef NL_MODE_PREBUILT
/* Written by the loader before load (the guessed offsets); the verifier sees constants. */
const volatile struct nl_offsets nl_off = {};
#define NL_OFF(field) (nl_off.field)
#else
#define NL_OFF(field) NL_OFFSETOF_##field
#define NL_OFFSETOF_skc_daddr __builtin_offsetof(struct sock, __sk_common.skc_daddr)
#define NL_OFFSETOF_skc_rcv_saddr __builtin_offsetof(struct sock, __sk_common.skc_rcv_saddr)
#define NL_OFFSETOF_skc_dport __builtin_offsetof(struct sock, __sk_common.skc_dport)
#define NL_OFFSETOF_skc_num __builtin_offsetof(struct sock, __sk_common.skc_num)
#define NL_OFFSETOF_skc_family __builtin_offsetof(struct sock, __sk_common.skc_family)
#define NL_OFFSETOF_skc_state __builtin_offsetof(struct sock, __sk_common.skc_state)
#define NL_OFFSETOF_skc_flags __builtin_offsetof(struct sock, __sk_common.skc_flags)
#define NL_OFFSETOF_skc_net __builtin_offsetof(struct sock, __sk_common.skc_net)
#define NL_OFFSETOF_skc_v6_daddr __builtin_offsetof(struct sock, __sk_common.skc_v6_daddr)
#define NL_OFFSETOF_skc_v6_rcv_saddr                                                              \
  __builtin_offsetof(struct sock, __sk_common.skc_v6_rcv_saddr)
#define NL_OFFSETOF_skc_cookie __builtin_offsetof(struct sock, __sk_common.skc_cookie)
#define NL_OFFSETOF_net_ns_inum __builtin_offsetof(struct net, ns.inum)
#define NL_OFFSETOF_sk_protocol __builtin_offsetof(struct sock, sk_protocol)
#define NL_OFFSETOF_sk_shutdown __builtin_offsetof(struct sock, sk_shutdown)
#define NL_OFFSETOF_tcp_bytes_acked __builtin_offsetof(struct tcp_sock, bytes_acked)
#define NL_OFFSETOF_tcp_bytes_received __builtin_offsetof(struct tcp_sock, bytes_received)
#define NL_OFFSETOF_tcp_segs_out __builtin_offsetof(struct tcp_sock, segs_out)
#define NL_OFFSETOF_tcp_segs_in __builtin_offsetof(struct tcp_sock, segs_in)
#define NL_OFFSETOF_tcp_srtt_us __builtin_offsetof(struct tcp_sock, srtt_us)
#define NL_OFFSETOF_tcp_mdev_us __builtin_offsetof(struct tcp_sock, mdev_us)
#define NL_OFFSETOF_tcp_total_retrans __builtin_offsetof(struct tcp_sock, total_retrans)
#define NL_OFFSETOF_tcp_snd_una __builtin_offsetof(struct tcp_sock, snd_una)
#define NL_OFFSETOF_tcp_write_seq __builtin_offsetof(struct tcp_sock, write_seq)
#define NL_OFFSETOF_tcp_mstamp __builtin_offsetof(struct tcp_sock, tcp_mstamp)
#endif

/* The map key is the socket's address: the one identity the raw_tp programs and the cgroup
 * program (whose context is the socket) both have. What user space sees as sock_id is that
 * address scrambled (bijectively: odd multiplier) with a per-load secret, so no kernel address
 * reaches an API client. Set before load. */
const volatile __u64 sock_id_xor = 0;
const volatile __u64 sock_id_mul = 1;

#define NL_READ_AT(type, base, off)                                                               \
  ({                                                                                             \
    type nl_v_ = 0;                                                                              \
    bpf_probe_read_kernel(&nl_v_, sizeof(nl_v_), (const char *)(base) + (off));                  \
    nl_v_;                                                                                       \
  })
#define NL_SK(type, sk, field) NL_READ_AT(type, sk, NL_OFF(field))

#define nl_tcp_sock const void

static __always_inline __u16 nl_sk_family(const struct sock *sk) {
  return NL_SK(__u16, sk, skc_family);
}
static __always_inline __u16 nl_sk_num(const struct sock *sk) { return NL_SK(__u16, sk, skc_num); }
static __always_inline __u16 nl_sk_dport_be(const struct sock *sk) {
  return NL_SK(__u16, sk, skc_dport);
}
static __always_inline __u32 nl_sk_rcv_saddr(const struct sock *sk) {
  return NL_SK(__u32, sk, skc_rcv_saddr);
}
static __always_inline __u32 nl_sk_daddr(const struct sock *sk) {
  return NL_SK(__u32, sk, skc_daddr);
}
static __always_inline void nl_sk_v6_rcv_saddr(const struct sock *sk, __u8 *out) {
  bpf_probe_read_kernel(out, 16, (const char *)sk + NL_OFF(skc_v6_rcv_saddr));
}
static __always_inline void nl_sk_v6_daddr(const struct sock *sk, __u8 *out) {
  bpf_probe_read_kernel(out, 16, (const char *)sk + NL_OFF(skc_v6_daddr));
}
static __always_inline __u8 nl_sk_state(const struct sock *sk) { return NL_SK(__u8, sk, skc_state); }
static __always_inline __u16 nl_sk_protocol(const struct sock *sk) {
  return NL_SK(__u16, sk, sk_protocol);
}
static __always_inline __u8 nl_sk_shutdown(const struct sock *sk) {
  return NL_SK(__u8, sk, sk_shutdown);
}
static __always_inline __u64 nl_sk_flags(const struct sock *sk) {
  return NL_SK(__u64, sk, skc_flags);
}
static __always_inline __u32 nl_sk_netns(const struct sock *sk) {
  const void *net = NL_SK(const void *, sk, skc_net);
  return net ? NL_READ_AT(__u32, net, NL_OFF(net_ns_inum)) : 0;
}
/* 0 until something asked the kernel for it (SO_COOKIE, sock_diag, a cgroup program). */
static __always_inline __u64 nl_sk_cookie(const struct sock *sk) {
  return NL_SK(__u64, sk, skc_cookie);
}
static __always_inline __u64 nl_sk_key(const void *sk) { return (__u64)(unsigned long)sk; }
static __always_inline __u64 key_to_sock_id(__u64 key) { return (key ^ sock_id_xor) * sock_id_mul; }
/* The cookie a record carries: the one the socket has (see sk_cookie). */
static __always_inline __u64 conn_cookie(const struct sock *sk, __u64 key) { return nl_sk_cookie(sk); }
/* The programs see only full sockets; for TCP the sock is the tcp_sock. */
static __always_inline nl_tcp_sock *nl_sk_tcp(const struct sock *sk) {
  return nl_sk_protocol(sk) == IPPROTO_TCP ? (nl_tcp_sock *)sk : 0;
}
#define NL_TP_FIELD(type, tp, field) NL_READ_AT(type, tp, NL_OFF(tcp_##field))
static __always_inline __u64 tp_bytes_acked(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u64, tp, bytes_acked);
}
static __always_inline __u64 tp_bytes_received(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u64, tp, bytes_received);
}
static __always_inline __u32 tp_segs_out(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u32, tp, segs_out);
}
static __always_inline __u32 tp_segs_in(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u32, tp, segs_in);
}
static __always_inline __u32 tp_srtt_us(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u32, tp, srtt_us);
}
static __always_inline __u32 tp_mdev_us(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u32, tp, mdev_us);
}
static __always_inline __u32 tp_total_retrans(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u32, tp, total_retrans);
}
static __always_inline __u32 tp_snd_una(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u32, tp, snd_una);
}
static __always_inline __u32 tp_write_seq(nl_tcp_sock *tp) {
  return NL_TP_FIELD(__u32, tp, write_seq);
}
static __always_inline __u64 tp_mstamp(nl_tcp_sock *tp) {
  return NL_READ_AT(__u64, tp, NL_OFF(tcp_mstamp));
}
/* SOCK_DONE has been bit 1 of enum sock_flags since the enum exists. */
#define NL_SOCK_DONE_BIT 1

/* A failed connect's error and its source port (inet_sport, which stays set when the port is
 * released at close; skc_num does not). Their offsets are not guessed: the prebuilt build does
 * without (NL_SK_ERR_UNKNOWN, port 0). */
/* Bytes received that the application has not read yet (rcv_nxt - copied_seq, a FIN received
 * counting one): not guessed either, the prebuilt build says 0. */
#ifdef NL_MODE_PREBUILT
static __always_inline int nl_sk_err(const struct sock *sk) { return -1; }
static __always_inline __u16 tp_inet_sport(nl_tcp_sock *tp) { return 0; }
static __always_inline __u32 tp_unread(nl_tcp_sock *tp) { return 0; }
#else
static __always_inline __u32 tp_unread(nl_tcp_sock *tp) {
  __u32 rcv_nxt = NL_READ_AT(__u32, tp, __builtin_offsetof(struct tcp_sock, rcv_nxt));
  __u32 copied = NL_READ_AT(__u32, tp, __builtin_offsetof(struct tcp_sock, copied_seq));
  __s32 d = (__s32)(rcv_nxt - copied);
  return d > 0 ? (__u32)d : 0;
}
static __always_inline int nl_sk_err(const struct sock *sk) {
  return NL_READ_AT(int, sk, __builtin_offsetof(struct sock, sk_err));
}
static __always_inline __u16 tp_inet_sport(nl_tcp_sock *tp) {
  return bpf_ntohs(NL_READ_AT(__u16, tp, __builtin_offsetof(struct inet_sock, inet_sport)));
}
#endif

#else /* NL_MODE_CORE */

/* A macro, not a typedef: CO-RE relocations name the type, and the kernel has no typedef. */
#define nl_tcp_sock struct tcp_sock

static __always_inline __u16 nl_sk_family(const struct sock *sk) {
  return sk->__sk_common.skc_family;
}
static __always_inline __u16 nl_sk_num(const struct sock *sk) { return sk->__sk_common.skc_num; }
static __always_inline __u16 nl_sk_dport_be(const struct sock *sk) {
  return sk->__sk_common.skc_dport;
}
static __always_inline __u32 nl_sk_rcv_saddr(const struct sock *sk) {
  return sk->__sk_common.skc_rcv_saddr;
}
static __always_inline __u32 nl_sk_daddr(const struct sock *sk) { return sk->__sk_common.skc_daddr; }
static __always_inline void nl_sk_v6_rcv_saddr(const struct sock *sk, __u8 *out) {
#pragma unroll
  for (int i = 0; i < 4; i++)
    *(__u32 *)&out[i * 4] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
}
static __always_inline void nl_sk_v6_daddr(const struct sock *sk, __u8 *out) {
#pragma unroll
  for (int i = 0; i < 4; i++)
    *(__u32 *)&out[i * 4] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
}
static __always_inline __u8 nl_sk_state(const struct sock *sk) { return sk->__sk_common.skc_state; }
static __always_inline __u16 nl_sk_protocol(const struct sock *sk) { return sk->sk_protocol; }
static __always_inline __u8 nl_sk_shutdown(const struct sock *sk) { return sk->sk_shutdown; }
static __always_inline __u64 nl_sk_flags(const struct sock *sk) { return sk->__sk_common.skc_flags; }
static __always_inline __u32 nl_sk_netns(const struct sock *sk) {
  return sk->__sk_common.skc_net.net->ns.inum;
}
static __always_inline __u64 nl_sk_cookie(const struct sock *sk) {
  return bpf_get_socket_cookie((void *)sk);
}
static __always_inline __u64 nl_sk_key(const void *sk) { return bpf_get_socket_cookie((void *)sk); }
static __always_inline __u64 key_to_sock_id(__u64 key) { return key; }
static __always_inline __u64 conn_cookie(const struct sock *sk, __u64 key) { return key; }
static __always_inline nl_tcp_sock *nl_sk_tcp(const struct sock *sk) {
  return bpf_skc_to_tcp_sock((void *)sk);
}
static __always_inline __u64 tp_bytes_acked(nl_tcp_sock *tp) { return tp->bytes_acked; }
static __always_inline __u64 tp_bytes_received(nl_tcp_sock *tp) { return tp->bytes_received; }
static __always_inline __u32 tp_segs_out(nl_tcp_sock *tp) { return tp->segs_out; }
static __always_inline __u32 tp_segs_in(nl_tcp_sock *tp) { return tp->segs_in; }
static __always_inline __u32 tp_srtt_us(nl_tcp_sock *tp) { return tp->srtt_us; }
static __always_inline __u32 tp_mdev_us(nl_tcp_sock *tp) { return tp->mdev_us; }
static __always_inline __u32 tp_total_retrans(nl_tcp_sock *tp) { return tp->total_retrans; }
static __always_inline __u32 tp_snd_una(nl_tcp_sock *tp) { return tp->snd_una; }
static __always_inline __u32 tp_write_seq(nl_tcp_sock *tp) { return tp->write_seq; }
static __always_inline __u64 tp_mstamp(nl_tcp_sock *tp) { return tp->tcp_mstamp; }
static __always_inline int nl_sk_err(const struct sock *sk) { return sk->sk_err; }
static __always_inline __u16 tp_inet_sport(nl_tcp_sock *tp) {
  return bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
}
static __always_inline __u32 tp_unread(nl_tcp_sock *tp) {
  __s32 d = (__s32)(tp->rcv_nxt - tp->copied_seq);
  return d > 0 ? (__u32)d : 0;
}
#define NL_SOCK_DONE_BIT bpf_core_enum_value(enum sock_flags, SOCK_DONE)

#endif

#endif
