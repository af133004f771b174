// SPDX-License-Identifier: GPL-2.0
/* The offset guesser's kernel side (actors/offset_guesser/guess_session.cpp drives it; the
 * sockets it is triggered on come from socket_lab.cpp).
 *
 * nl_guess_copy (raw_tp/sock_recv_length): when the guesser's own thread calls recv() on one
 * of its known sockets, copies a window of the raw struct sock (tcp_sock for TCP) into
 * `window`; in the second step it copies a window of whatever the guesser points it at (a
 * candidate struct net). Only raw bytes are read with bpf_probe_read_kernel: no struct field is
 * named, so the object carries no CO-RE relocation and loads on kernels without BTF. vmlinux.h
 * is included for scalar types and enums only.
 *
 * nl_guess_drop (cgroup_skb/ingress, attached to the guesser's own cgroup): lets `skip` data
 * segments pass and then drops `budget` of them, on the guesser's own loopback connections
 * that it names in `drops`: their senders retransmit a known number of times, or hold data
 * in flight while the guesser looks. Every other packet passes. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Bytes copied per request. tcp_sock ends at 2304 bytes on 6.18 (total_retrans at 2200);
 * lockdep or other debug options make it much larger, hence the margin. */
#define NL_GUESS_WINDOW 4096
/* Copied in chunks: a chunk that faults (past the end of a mapped page) is zeroed on its own
 * and reported in chunk_faults instead of emptying the whole window. */
#define NL_GUESS_CHUNK 512
#define NL_GUESS_MAX_DROPS 8

#define NL_GUESS_COPY_SOCK 1
#define NL_GUESS_COPY_PTR 2

/* Set before load: only this process's recv() calls are looked at. */
const volatile __u32 target_tgid = 0;

/* Written by user space through the mmap'ed .bss before each trigger, answered here. */
struct {
  __u32 tid;          /* the thread whose next recv() is answered; 0: nothing asked */
  __u32 mode;         /* NL_GUESS_COPY_SOCK or NL_GUESS_COPY_PTR */
  __u64 ptr;          /* NL_GUESS_COPY_PTR: the kernel address to copy from */
  __u32 done;         /* out: 1 once window holds the copy */
  __u32 chunk_faults; /* out: bit i set when chunk i could not be read (it is zero) */
} request;

__u8 window[NL_GUESS_WINDOW];

/* A data segment to drop on its way into one of the guesser's sockets (network order). */
struct {
  __u32 saddr;
  __u32 daddr;
  __u16 sport;
  __u16 dport;
  __s32 skip;   /* data segments still to let pass before dropping */
  __s32 budget; /* data segments still to drop */
} drops[NL_GUESS_MAX_DROPS];

__u64 dropped;

SEC("raw_tp/sock_recv_length")
int nl_guess_copy(__u64* ctx) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  if ((__u32)(pid_tgid >> 32) != target_tgid || (__u32)pid_tgid != request.tid || request.done)
    return 0;
  __u64 src = ctx[0]; /* TP_PROTO(struct sock *sk, int ret, int flags) */
  /* Keeps clang from merging the two loads into one instruction on a context or a map
   * pointer, which the verifier refuses ("same insn cannot be used with different
   * pointers"). */
  barrier_var(src);
  if (request.mode == NL_GUESS_COPY_PTR)
    src = request.ptr;
  if (!src)
    return 0;
  __u32 faults = 0;
#pragma unroll
  for (int i = 0; i < NL_GUESS_WINDOW / NL_GUESS_CHUNK; i++) {
    if (bpf_probe_read_kernel(&window[i * NL_GUESS_CHUNK], NL_GUESS_CHUNK,
                              (const void*)(src + i * NL_GUESS_CHUNK)) != 0)
      faults |= 1u << i;
  }
  request.chunk_faults = faults;
  request.done = 1;
  return 0;
}

#define NL_ETH_P_IPV4_VERSION 4
#define NL_IPPROTO_TCP 6

SEC("cgroup_skb/ingress")
int nl_guess_drop(struct __sk_buff* skb) {
  __u8 ip[20];
  if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip)) != 0)
    return 1;
  if ((ip[0] >> 4) != NL_ETH_P_IPV4_VERSION || ip[9] != NL_IPPROTO_TCP)
    return 1;
  __u32 ihl = (ip[0] & 0xf) * 4;
  __u32 total = ((__u32)ip[2] << 8) | ip[3];
  __u32 saddr, daddr;
  __builtin_memcpy(&saddr, &ip[12], 4);
  __builtin_memcpy(&daddr, &ip[16], 4);
  __u8 tcp[13];
  if (ihl < 20 || bpf_skb_load_bytes(skb, ihl, tcp, sizeof(tcp)) != 0)
    return 1;
  __u16 sport, dport;
  __builtin_memcpy(&sport, &tcp[0], 2);
  __builtin_memcpy(&dport, &tcp[2], 2);
  __u32 doff = (tcp[12] >> 4) * 4;
  if (total <= ihl + doff)
    return 1; /* no payload: handshake, pure ACK, FIN, RST pass */
#pragma unroll
  for (int i = 0; i < NL_GUESS_MAX_DROPS; i++) {
    if (drops[i].saddr != saddr || drops[i].daddr != daddr || drops[i].sport != sport ||
        drops[i].dport != dport)
      continue;
    /* A rule's segments arrive one after the other (one flow, one direction): no two CPUs
     * race for the same counts. The atomic keeps the count exact without -mcpu=v3. */
    if (drops[i].skip > 0) {
      __sync_fetch_and_add(&drops[i].skip, -1);
      return 1;
    }
    if (drops[i].budget <= 0)
      return 1;
    __sync_fetch_and_add(&drops[i].budget, -1);
    __sync_fetch_and_add(&dropped, 1);
    return 0;
  }
  return 1;
}
