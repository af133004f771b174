// SPDX-License-Identifier: GPL-2.0
/* The connection tracer: programs on socket tracepoints, plus one cgroup program that sees
 * UDP sockets released (UDP has no state tracepoint to close on). Built three ways from this
 * one source (see tracer_access.bpf.h): CO-RE on tp_btf, and raw_tp with field offsets either
 * compiled in on the host (runtime) or written before load (prebuilt). What is counted is here,
 * once; where a field is read from is the only difference.
 *
 * Active connections live in nl_active keyed by sk_key (the cookie, or the socket's address on
 * raw_tp). A closed connection is copied out as an nl_closed_record through the ring buffer or,
 * when use_perf is set before load, the perf buffer, and removed from the map. */
#if defined(NL_MODE_RUNTIME) || defined(NL_MODE_PREBUILT)
/* No CO-RE relocations: these builds load on kernels without BTF. The runtime build's
 * offsets are the compiled-in ones of this kernel's own types, the prebuilt build reads no
 * struct through a type at all (the cgroup context struct bpf_sock is UAPI, fixed). */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#endif
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "netlens_records.h"
#include "tracer_access.bpf.h"

#define NL_AF_INET 2
#define NL_AF_INET6 10
#define NL_MSG_PEEK 2
#define NL_SEND_SHUTDOWN 2

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader before load; the verifier prunes the branch not taken. */
const volatile bool use_perf = false;
/* Perf mode: closed records per batch (1: every record on its own). */
const volatile __u32 batch_size = 4;
/* CO-RE: mark counted TCP sockets so their sends and receives return at once (the loader
 * turns it off where the kernel refuses the refresh iterator, nl_refresh_tcp). */
const volatile bool tcp_marks_on = false;
/* Ring buffer bytes (whole records) that make up one batch: only the record that completes a
 * batch wakes the reader. Every wakeup is an irq_work self-IPI on this CPU, a VM exit on a
 * virtual machine; the reader picks up smaller remainders on its own timer. */
const volatile __u64 wakeup_bytes = 64 * sizeof(struct nl_closed_record);

/* What one closed record takes in the ring buffer: 8 bytes of header, rounded up to 8. */
#define NL_RING_RECORD_BYTES ((sizeof(struct nl_closed_record) + 8 + 7) & ~7ul)

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536); /* resized from tracer.max_tracked_connections */
  __type(key, __u64);
  __type(value, struct nl_conn);
} nl_active SEC(".maps");

#ifdef NL_MODE_CORE
/* A mark on each TCP socket whose entry is complete (in nl_active, owner known): a send or
 * receive on a marked socket has nothing to do and returns after one look at the socket's own
 * storage, no hash lookup, no tcp_sock read. Its live counters are read when someone asks
 * (nl_refresh_tcp, run before every read of nl_active), and at close as before. Socket storage
 * needs BTF: the raw_tp builds keep counting on every send and receive. */
struct nl_tcp_mark {
  __u32 pid;
};

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct nl_tcp_mark);
} nl_tcp_marks SEC(".maps");
#endif

/* UDP per peer. The cgroup sendmsg/recvmsg programs see the peer of each datagram a process
 * sends to or receives from an unconnected UDP socket (sendto, recvfrom: the address the
 * application passes or asks for), but not its length; sock_send_length / sock_recv_length see
 * the length but not the peer. Both run in the same system call, on the same thread, the
 * cgroup program first: it leaves the peer in a note of the thread's own, and the tracepoint
 * takes it. A note carries its socket and direction, and is taken once. */
struct nl_peer_note {
  __u64 sk_key;
  __u8 addr[16]; /* in the socket's family: v4 in the first 4 bytes, or v6 (v4-mapped) */
  __u16 port;    /* host order */
  __u8 is_send;
  __u8 valid;
  __u32 pad;
};

#ifdef NL_MODE_CORE
/* CO-RE: the note lives in the thread's own storage, made at its first note and freed with
 * the thread. Reaching it is a pointer walk from the task, where a hash map costs a hash and a
 * bucket walk on each side of every datagram. */
struct {
  __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct nl_peer_note);
} nl_peer_notes SEC(".maps");

static __always_inline struct nl_peer_note *thread_note(bool create) {
  return bpf_task_storage_get(&nl_peer_notes, bpf_get_current_task_btf(), 0,
                              create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}
#else
/* raw_tp builds (no BTF needed): a hash by thread id. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384); /* threads sending or receiving UDP at once, with room */
  __type(key, __u64);         /* bpf_get_current_pid_tgid() */
  __type(value, struct nl_peer_note);
} nl_peer_notes SEC(".maps");

static __always_inline struct nl_peer_note *thread_note(bool create) {
  __u64 id = bpf_get_current_pid_tgid();
  struct nl_peer_note *n = bpf_map_lookup_elem(&nl_peer_notes, &id);
  if (n || !create)
    return n;
  struct nl_peer_note empty = {};
  bpf_map_update_elem(&nl_peer_notes, &id, &empty, BPF_ANY);
  return bpf_map_lookup_elem(&nl_peer_notes, &id);
}
#endif

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 1 << 22); /* resized from tracer.ring_buffer_bytes */
} nl_closed_ring SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
  __uint(key_size, sizeof(int));
  __uint(value_size, sizeof(int));
} nl_closed_perf SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct nl_tracer_counters);
} nl_counters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct nl_closed_batch);
} nl_closed_batches SEC(".maps");

/* Set while nl_tcp_state runs on a CPU (programs are not migrated while they run), so its
 * twin knows when an event interrupted it. NR_CPUS is at most 8192, so no two CPUs share a
 * slot; plain stores suffice, as each slot has one writer. */
#define NL_MAX_CPUS 8192
__u8 nl_primary_running[NL_MAX_CPUS];

static __always_inline struct nl_tracer_counters *counters(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&nl_counters, &zero);
}

static __always_inline bool is_inet(__u16 family) {
  return family == NL_AF_INET || family == NL_AF_INET6;
}

/* States in which a TCP socket still belongs to a live connection. */
static __always_inline bool tcp_state_has_peer(int state) {
  return state == TCP_ESTABLISHED || state == TCP_CLOSE_WAIT || state == TCP_FIN_WAIT1 ||
         state == TCP_FIN_WAIT2 || state == TCP_CLOSING || state == TCP_LAST_ACK;
}

static __always_inline void read_tuple(struct nl_conn *c, const struct sock *sk) {
  __u16 family = nl_sk_family(sk);
  c->family = family;
  c->sport = nl_sk_num(sk);
  c->dport = bpf_ntohs(nl_sk_dport_be(sk));
  if (family == NL_AF_INET) {
    *(__u32 *)&c->saddr[0] = nl_sk_rcv_saddr(sk);
    *(__u32 *)&c->daddr[0] = nl_sk_daddr(sk);
  } else {
    nl_sk_v6_rcv_saddr(sk, c->saddr);
    nl_sk_v6_daddr(sk, c->daddr);
  }
}

static __always_inline void set_owner(struct nl_conn *c) {
  c->pid = bpf_get_current_pid_tgid() >> 32;
  bpf_get_current_comm(c->comm, sizeof(c->comm));
}

/* raw_tp: the cookie is known once the kernel assigned one; until then the record says 0. */
static __always_inline void refresh_cookie(struct nl_conn *c, const struct sock *sk) {
#ifdef NL_RAW_TP
  if (c->cookie == 0)
    c->cookie = nl_sk_cookie(sk);
#endif
}

#define NL_EEXIST 17

/* Fills a new entry on the stack; the caller completes it before insert_conn, so a new
 * connection costs one map operation, not an insert and a lookup. */
static __always_inline void init_conn(struct nl_conn *c, __u64 key, const struct sock *sk,
                                      __u8 protocol, __u8 direction, bool in_process_context) {
  c->cookie = conn_cookie(sk, key);
  c->sock_id = key_to_sock_id(key);
  c->protocol = protocol;
  c->direction = direction;
  c->start_ns = bpf_ktime_get_ns();
  c->last_ns = c->start_ns;
  c->netns = nl_sk_netns(sk);
  read_tuple(c, sk);
  if (in_process_context)
    set_owner(c);
}

/* Returns NULL when c went in (or the map is full: counted), else the entry another CPU
 * inserted first, for the caller to update instead. */
static __always_inline struct nl_conn *insert_conn(__u64 key, struct nl_conn *c) {
  long err = bpf_map_update_elem(&nl_active, &key, c, BPF_NOEXIST);
  if (err == 0)
    return NULL;
  if (err == -NL_EEXIST)
    return bpf_map_lookup_elem(&nl_active, &key);
  struct nl_tracer_counters *k = counters();
  if (k)
    __sync_fetch_and_add(&k->failed_inserts, 1);
  return NULL;
}

static __always_inline void set_tcp_base(struct nl_conn *c, nl_tcp_sock *tp) {
  c->base_acked = tp_bytes_acked(tp);
  c->base_received = tp_bytes_received(tp);
  c->base_segs_out = tp_segs_out(tp);
  c->base_segs_in = tp_segs_in(tp);
  c->flags |= NL_FLAG_TCP_BASE_KNOWN;
}

/* The base of a TCP connection first seen mid-life (established before netlens started) at
 * a send or receive of ret bytes. Nothing says when bytes moved before that, so it counts what
 * the applications move from then on, each direction at the application's own position in
 * the stream (packets: the segments that move from this moment on; those this very send put
 * out before its tracepoint fired are not counted, as the segment counters say nothing of
 * which bytes they carried):
 * - Sent: from the first byte of this send (write_seq - ret; a receive: write_seq). The peer's
 *   ACKs are processed while sendmsg runs (a large write waits for them), so part of this very
 *   send may be acknowledged when its tracepoint fires: it counts (measured on loopback: 16,796
 *   of a first write of 30,000 in 1,000-byte segments). Bytes written before and still
 *   unacknowledged do not: bytes_acked will count them, so the base is raised by them.
 * - Received: from the application's read position before this receive (copied_seq - ret; a
 *   send: copied_seq). What arrived before and is still queued behind this read is read by the
 *   application later and counts (the prebuilt build cannot read that position: there it does
 *   not count). */
static __always_inline void set_tcp_base_mid_life(struct nl_conn *c, nl_tcp_sock *tp, int ret,
                                                  bool is_send) {
  set_tcp_base(c, tp);
  __u64 behind = tp_unread(tp) + (is_send ? 0 : (__u32)ret);
  c->base_received = c->base_received >= behind ? c->base_received - behind : 0;
  __u32 first = tp_write_seq(tp) - (is_send ? (__u32)ret : 0);
  __s32 acked_beyond = (__s32)(tp_snd_una(tp) - first); /* < 0: older bytes unacknowledged */
  if (acked_beyond > ret && is_send)
    acked_beyond = ret;
  if (acked_beyond >= 0)
    c->base_acked = c->base_acked >= (__u64)acked_beyond ? c->base_acked - acked_beyond : 0;
  else
    c->base_acked += (__u64)(-(__s64)acked_beyond);
}

/* The base of a connection seen from its opening (at ESTABLISHED, from SYN_SENT or SYN_RECV):
 * its first sequence number, not what the counters say by then. bytes_acked holds the SYN's
 * sequence number on the active side (1), nothing on the passive side (the child socket starts
 * with the SYN-ACK acknowledged); bytes_received never counts the SYN. Anything beyond that
 * crossed with the handshake and is the connection's payload: TCP Fast Open data in the SYN
 * (acknowledged by the SYN-ACK before the client's ESTABLISHED, taken in by the server's child
 * before its ESTABLISHED), or what a Fast Open server sent in SYN_RECV. Taking the counters
 * as the base lost all of it. */
static __always_inline void set_tcp_base_at_open(struct nl_conn *c, nl_tcp_sock *tp) {
  __u64 acked = tp_bytes_acked(tp);
  c->base_acked = c->direction == NL_DIR_OUTGOING && acked > 0 ? 1 : 0;
  c->base_received = 0;
  c->base_segs_out = 0; /* the handshake's segments are the connection's */
  c->base_segs_in = 0;
  c->flags |= NL_FLAG_TCP_BASE_KNOWN;
}

/* An entry made at connect (SYN_SENT) whose SYN_SENT -> ESTABLISHED never came: under packet
 * loss the kernel sometimes fires no inet_sock_set_state for a handshake completed by a
 * retransmitted SYN (docs/kernel-notes.md). The socket has moved on, so the connection did open:
 * its base is the constant one of an active open, and its tuple is bound by now (a close has
 * released skc_num, so the port comes from inet_sport). */
static __always_inline void complete_missed_open(struct nl_conn *c, const struct sock *sk,
                                                 nl_tcp_sock *tp) {
  if ((c->flags & NL_FLAG_TCP_BASE_KNOWN) || c->tcp_state != TCP_SYN_SENT)
    return;
  read_tuple(c, sk);
  if (c->sport == 0)
    c->sport = tp_inet_sport(tp);
  refresh_cookie(c, sk);
  set_tcp_base_at_open(c, tp);
  struct nl_tracer_counters *k = counters();
  if (k)
    __sync_fetch_and_add(&k->opens_completed_late, 1);
}

/* What is read from a TCP socket: the fields of tcp_sock the counters come from. */
struct nl_tcp_snap {
  __u64 acked;
  __u64 received;
  __u64 sock_bits;
  __u64 mstamp;
  __u32 segs_out;
  __u32 segs_in;
  __u32 srtt_us;
  __u32 mdev_us;
  __u32 total_retrans;
  __u32 snd_una;
  __u32 write_seq;
};

static __always_inline void snap_tcp(struct nl_tcp_snap *s, const struct sock *sk,
                                     nl_tcp_sock *tp) {
  s->acked = tp_bytes_acked(tp);
  s->received = tp_bytes_received(tp);
  s->sock_bits = nl_sk_flags(sk);
  s->mstamp = tp_mstamp(tp);
  s->segs_out = tp_segs_out(tp);
  s->segs_in = tp_segs_in(tp);
  s->srtt_us = tp_srtt_us(tp);
  s->mdev_us = tp_mdev_us(tp);
  s->total_retrans = tp_total_retrans(tp);
  s->snd_una = tp_snd_una(tp);
  s->write_seq = tp_write_seq(tp);
}

/* Everything TCP is read from tcp_sock, so the numbers are the stack's own: payload bytes are
 * the sequence space acknowledged / received since counting began, without the SYN (in the
 * base) and without a FIN, which takes a sequence number too. This counts what splice and
 * sendfile move as well, and the value at close is exact. */
static __always_inline void apply_tcp(struct nl_conn *c, const struct nl_tcp_snap *s) {
  c->packets_sent = (__u32)(s->segs_out - c->base_segs_out);
  c->packets_recv = (__u32)(s->segs_in - c->base_segs_in);
  c->srtt_us = s->srtt_us >> 3;
  c->rttvar_us = s->mdev_us >> 2;
  c->retransmits = s->total_retrans;
  if (!(c->flags & NL_FLAG_TCP_BASE_KNOWN))
    return;
  __u64 acked = s->acked - c->base_acked;
  __u64 received = s->received - c->base_received;
  /* Only a FIN that was sent and acknowledged is in bytes_acked: shut for sending is not
   * enough, close() sets that before it decides between a FIN and a reset. */
  bool fin_acked = (c->flags & NL_FLAG_FIN_SENT) && s->snd_una == s->write_seq;
  __u64 done_bit = 1ULL << NL_SOCK_DONE_BIT;
  bool fin_received = s->sock_bits & done_bit;
  if (fin_acked && acked > 0)
    acked--;
  if (fin_received && received > 0)
    received--;
  c->bytes_sent = acked;
  c->bytes_recv = received;
}

static __always_inline void read_tcp(struct nl_conn *c, const struct sock *sk,
                                     nl_tcp_sock *tp) {
  struct nl_tcp_snap s;
  snap_tcp(&s, sk, tp);
  apply_tcp(c, &s);
}

/* When the stack last sent or received a packet on this socket: tcp_mstamp is tcp_clock_us(),
 * CLOCK_MONOTONIC like bpf_ktime_get_ns, refreshed by the stack itself, so no clock read here. */
static __always_inline __u64 tcp_time_ns(nl_tcp_sock *tp) {
  __u64 us = tp_mstamp(tp);
  return us ? us * 1000 : bpf_ktime_get_ns();
}

/* Perf mode: adds c to this CPU's batch, and sends the batch when it is full. False when the
 * batch is in use by the program this one interrupted (the caller sends c on its own). */
static __always_inline bool add_to_batch(void *ctx, struct nl_conn *c,
                                         struct nl_tracer_counters *k) {
  __u32 zero = 0;
  struct nl_closed_batch *b = bpf_map_lookup_elem(&nl_closed_batches, &zero);
  if (!b || b->busy)
    return false;
  b->busy = 1;
  __u32 n = b->count;
  if (n >= NL_BATCH_MAX)
    n = 0; /* cannot happen: a full batch leaves at once */
  b->conns[n & (NL_BATCH_MAX - 1)] = *c;
  /* The record is in place before the count says so: user space reads partial batches. */
  asm volatile("" ::: "memory");
  b->count = n + 1;
  if (n + 1 >= batch_size) {
    b->magic = NL_BATCH_MAGIC;
    b->version = NL_RECORD_VERSION;
    b->cpu = bpf_get_smp_processor_id();
    __u64 size = __builtin_offsetof(struct nl_closed_batch, conns) +
                 (__u64)(n + 1) * sizeof(struct nl_conn);
    if (size > sizeof(*b))
      size = sizeof(*b);
    long err = bpf_perf_event_output(ctx, &nl_closed_perf, BPF_F_CURRENT_CPU, b, size);
    if (k) {
      __sync_fetch_and_add(err ? &k->closed_lost : &k->closed_emitted, n + 1);
      __sync_fetch_and_add(&k->wakeups, 1);
    }
    b->count = 0;
    asm volatile("" ::: "memory");
    b->id++;
  }
  b->busy = 0;
  return true;
}

static __always_inline void emit_closed(void *ctx, struct nl_conn *c) {
  struct nl_tracer_counters *k = counters();
  if (use_perf) {
    if (batch_size > 1 && add_to_batch(ctx, c, k))
      return;
    struct nl_closed_record rec = {};
    rec.magic = NL_RECORD_MAGIC;
    rec.version = NL_RECORD_VERSION;
    rec.size = sizeof(rec);
    rec.conn = *c;
    long err = bpf_perf_event_output(ctx, &nl_closed_perf, BPF_F_CURRENT_CPU, &rec, sizeof(rec));
    if (k) {
      __sync_fetch_and_add(err ? &k->closed_lost : &k->closed_emitted, 1);
      __sync_fetch_and_add(&k->wakeups, 1);
    }
    return;
  }
  struct nl_closed_record *rec = bpf_ringbuf_reserve(&nl_closed_ring, sizeof(*rec), 0);
  if (!rec) {
    if (k)
      __sync_fetch_and_add(&k->closed_lost, 1);
    return;
  }
  rec->magic = NL_RECORD_MAGIC;
  rec->version = NL_RECORD_VERSION;
  rec->size = sizeof(*rec);
  rec->conn = *c;
  __u64 queued = bpf_ringbuf_query(&nl_closed_ring, BPF_RB_AVAIL_DATA);
  bool completes_batch = queued >= wakeup_bytes && queued < wakeup_bytes + NL_RING_RECORD_BYTES;
  bpf_ringbuf_submit(rec, completes_batch ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
  if (k) {
    __sync_fetch_and_add(&k->closed_emitted, 1);
    if (completes_batch)
      __sync_fetch_and_add(&k->wakeups, 1);
  }
}

static __always_inline int on_tcp_state(void *ctx, const struct sock *sk, int oldstate,
                                        int newstate) {
  /* Listening sockets are not connections. */
  if (newstate == TCP_LISTEN || oldstate == TCP_LISTEN)
    return 0;
  if (nl_sk_protocol(sk) != IPPROTO_TCP || !is_inet(nl_sk_family(sk)))
    return 0;
  __u64 key = nl_sk_key(sk);
  struct nl_conn *c;

  if (newstate == TCP_SYN_SENT) {
    /* A socket entering SYN_SENT is new to the map: an entry under its key belongs to a socket
     * whose close was missed (a raw_tp build keys by address, which a new socket may reuse). It
     * is reported closed, reconciled, and this connection starts with its own owner, start and
     * counters instead of inheriting them. */
    c = bpf_map_lookup_elem(&nl_active, &key);
    if (c) {
      c->flags |= NL_FLAG_RECONCILED;
      emit_closed(ctx, c);
      bpf_map_delete_elem(&nl_active, &key);
    }
    /* connect() runs in the caller's context: the one moment the owner is known for sure. */
    struct nl_conn fresh = {};
    init_conn(&fresh, key, sk, IPPROTO_TCP, NL_DIR_OUTGOING, true);
    fresh.tcp_state = newstate;
    c = insert_conn(key, &fresh);
    if (c)
      c->tcp_state = newstate;
    return 0;
  }

  if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE) {
#ifdef NL_MODE_CORE
    /* FIN_WAIT2, CLOSE_WAIT, CLOSING, TIME_WAIT: only the state moves, and the refresh reads
     * it when someone asks. A socket no process holds keeps FIN_WAIT1 or LAST_ACK until its
     * close. */
    if (tcp_marks_on && newstate != TCP_FIN_WAIT1 && newstate != TCP_LAST_ACK)
      return 0;
#endif
    c = bpf_map_lookup_elem(&nl_active, &key);
    if (!c)
      return 0;
    if (c->tcp_state == TCP_SYN_SENT && !(c->flags & NL_FLAG_TCP_BASE_KNOWN)) {
      nl_tcp_sock *tp = nl_sk_tcp(sk);
      if (tp)
        complete_missed_open(c, sk, tp);
    }
    c->tcp_state = newstate;
    /* These two come from the owner's own shutdown() or close(), which sends a FIN: an
     * accepted socket that never sent or received learns its process here. */
    if (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK) {
      c->flags |= NL_FLAG_FIN_SENT;
      if (c->pid == 0)
        set_owner(c);
    }
    return 0;
  }

  nl_tcp_sock *tp = nl_sk_tcp(sk);
  if (!tp)
    return 0;

  if (newstate == TCP_ESTABLISHED) {
    c = bpf_map_lookup_elem(&nl_active, &key);
    /* An accepted socket has no entry before this: one with other ports belongs to a socket
     * whose close was missed, at the address (raw_tp key) this one reuses. */
    if (c && oldstate == TCP_SYN_RECV &&
        (c->sport != nl_sk_num(sk) || c->dport != bpf_ntohs(nl_sk_dport_be(sk)))) {
      c->flags |= NL_FLAG_RECONCILED;
      emit_closed(ctx, c);
      bpf_map_delete_elem(&nl_active, &key);
      c = 0;
    }
    if (c && c->tcp_state == TCP_ESTABLISHED && (c->flags & NL_FLAG_TCP_BASE_KNOWN))
      return 0; /* the twin after the primary: already done */
    bool at_open = oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV;
    if (!c) {
      /* Passive open completes in softirq: the current task is not the owner, the first
       * send or receive in process context names it. */
      __u8 dir = oldstate == TCP_SYN_RECV   ? NL_DIR_INCOMING
                 : oldstate == TCP_SYN_SENT ? NL_DIR_OUTGOING
                                            : NL_DIR_NONE;
      struct nl_conn fresh = {};
      init_conn(&fresh, key, sk, IPPROTO_TCP, dir, false);
      if (at_open)
        set_tcp_base_at_open(&fresh, tp);
      else
        set_tcp_base(&fresh, tp);
      read_tcp(&fresh, sk, tp);
      fresh.tcp_state = newstate;
      fresh.last_ns = tcp_time_ns(tp);
      c = insert_conn(key, &fresh);
      if (!c)
        return 0;
    } else {
      read_tuple(c, sk); /* the source port and address are bound by now */
      refresh_cookie(c, sk);
    }
    if (at_open)
      set_tcp_base_at_open(c, tp);
    else
      set_tcp_base(c, tp);
    read_tcp(c, sk, tp);
    c->tcp_state = newstate;
    c->last_ns = tcp_time_ns(tp);
    return 0;
  }

  c = bpf_map_lookup_elem(&nl_active, &key);
  if (!c)
    return 0;
  if (oldstate != TCP_SYN_SENT)
    complete_missed_open(c, sk, tp); /* it opened, unseen, and closes now */
  if (oldstate == TCP_SYN_SENT) {
    /* A connect that failed (or was given up). connect() enters SYN_SENT before it picks the
     * source port, and the close releases the port (skc_num = 0) before this tracepoint: only
     * inet_sport still holds it. The socket's error says why it failed. */
    if (c->sport == 0)
      c->sport = tp_inet_sport(tp);
    int err = nl_sk_err(sk);
    c->sk_err = err < 0 ? NL_SK_ERR_UNKNOWN : err > 254 ? 254 : err;
  }
  c->tcp_state = newstate;
  read_tcp(c, sk, tp);
  c->last_ns = tcp_time_ns(tp);
  refresh_cookie(c, sk);
  emit_closed(ctx, c);
  bpf_map_delete_elem(&nl_active, &key);
  return 0;
}

SEC(NL_TP("inet_sock_set_state"))
int BPF_PROG(nl_tcp_state, const struct sock *sk, int oldstate, int newstate) {
  __u32 cpu = bpf_get_smp_processor_id() & (NL_MAX_CPUS - 1);
  nl_primary_running[cpu] = 1;
  int ret = on_tcp_state(ctx, sk, oldstate, newstate);
  nl_primary_running[cpu] = 0;
  return ret;
}

/* The kernel skips a program that fires while the same program is already running on this
 * CPU: a softirq state change interrupting nl_tcp_state in process context is lost, and a
 * lost TCP_CLOSE leaves an entry forever. This second program is not running then, so it sees
 * the nested event. It acts only when nl_primary_running says it interrupted nl_tcp_state,
 * and only on the transitions that happen in softirq and matter (ESTABLISHED sets the base,
 * CLOSE emits and removes); both are idempotent. Every other time it returns at once, so the
 * common case pays one array read for it. */
SEC(NL_TP("inet_sock_set_state"))
int BPF_PROG(nl_tcp_state_nested, const struct sock *sk, int oldstate, int newstate) {
  if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
    return 0;
  /* Only when this event interrupted nl_tcp_state on this CPU, which the kernel then skipped;
   * otherwise nl_tcp_state has just handled it. */
  if (!nl_primary_running[bpf_get_smp_processor_id() & (NL_MAX_CPUS - 1)])
    return 0;
  return on_tcp_state(ctx, sk, oldstate, newstate);
}

/* Sends and receives a TCP socket does the full way before it is marked. Creating socket
 * storage costs more than a few events do (an allocation, a lock): a short connection (a
 * request and its answer) is cheaper unmarked, a long one pays once. */
#define NL_MARK_AFTER_EVENTS 4

/* Marks a TCP socket whose entry is complete, so its next sends and receives return at once. */
static __always_inline void mark_tcp_known(struct sock *sk, struct nl_conn *c) {
#ifdef NL_MODE_CORE
  if (c->io_events < 255)
    c->io_events++;
  if (c->io_events < NL_MARK_AFTER_EVENTS)
    return;
  /* Only sockets an application holds by a file: the refresh finds sockets through files (a
   * kernel socket, which has none, keeps counting on every event). */
  if (!tcp_marks_on || c->pid == 0)
    return;
  struct socket *sock = sk->sk_socket;
  if (!sock || !sock->file)
    return;
  struct nl_tcp_mark *m = bpf_sk_storage_get(&nl_tcp_marks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (m)
    m->pid = c->pid;
#endif
}

/* The peer note this thread's cgroup program left for this datagram, if any: taken (so no
 * later datagram can use it) and copied to *out. A note for another socket or the other
 * direction is stale (its system call failed after the cgroup program ran) and is dropped. */
static __always_inline bool take_peer_note(__u64 key, bool is_send, struct nl_peer_note *out) {
  struct nl_peer_note *n = thread_note(false);
  if (!n || !n->valid)
    return false;
  n->valid = 0;
  if (n->sk_key != key || n->is_send != is_send)
    return false;
  *out = *n;
  return true;
}

/* The key of a socket's flow with one peer: the socket, its entry's start (a raw_tp build's
 * key is the socket's address, which a later socket may reuse) and the peer, mixed. The top
 * bit keeps it apart from every socket key: cookies count up from 1, kernel addresses have it
 * set. Two peers that mix alike are told apart by the entry's own fields (on_udp_peer). */
static __always_inline __u64 peer_key(__u64 sock_key, __u64 start_ns,
                                      const struct nl_peer_note *n) {
  __u64 h = (sock_key ^ (start_ns * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
#pragma unroll
  for (int i = 0; i < 4; i++)
    h = (h ^ *(const __u32 *)&n->addr[i * 4]) * 0xc4ceb9fe1a85ec53ull;
  h = (h ^ n->port) * 0xff51afd7ed558ccdull;
  h ^= h >> 33;
#ifdef NL_RAW_TP
  return h & ~(1ull << 63);
#else
  return h | (1ull << 63);
#endif
}

static __always_inline bool same_peer(const struct nl_conn *c, __u64 parent_id,
                                      const struct nl_peer_note *n) {
  return c->parent_sock_id == parent_id && c->dport == n->port &&
         *(const __u64 *)&c->daddr[0] == *(const __u64 *)&n->addr[0] &&
         *(const __u64 *)&c->daddr[8] == *(const __u64 *)&n->addr[8];
}

static __always_inline void count_udp(struct nl_conn *c, int ret, bool is_send) {
  /* Threads may share one UDP socket: add atomically. */
  if (is_send) {
    __sync_fetch_and_add(&c->bytes_sent, ret);
    __sync_fetch_and_add(&c->packets_sent, 1);
  } else {
    __sync_fetch_and_add(&c->bytes_recv, ret);
    __sync_fetch_and_add(&c->packets_recv, 1);
  }
}

/* Counts one datagram of an unconnected UDP socket in the flow of its peer (n), under the
 * socket's own entry (made empty if it is not there yet). fresh is room on the caller's stack:
 * a program has 512 bytes, two connections do not fit beside the rest. */
static __always_inline int on_udp_peer(struct sock *sk, __u64 key, const struct nl_peer_note *n,
                                       int ret, bool is_send, struct nl_conn *fresh) {
  __u8 dir = is_send ? NL_DIR_OUTGOING : NL_DIR_INCOMING;
  struct nl_conn *parent = bpf_map_lookup_elem(&nl_active, &key);
  if (!parent) {
    __builtin_memset(fresh, 0, sizeof(*fresh));
    init_conn(fresh, key, sk, IPPROTO_UDP, dir, true);
    fresh->flags = NL_FLAG_UDP_PEERS;
    parent = insert_conn(key, fresh);
    if (!parent)
      parent = bpf_map_lookup_elem(&nl_active, &key);
    if (!parent)
      return 0; /* the map is full: counted */
  } else {
    if (parent->pid == 0) {
      set_owner(parent);
      refresh_cookie(parent, sk);
    }
    /* Flags of a UDP entry are written only here: racing writers set the same bit. */
    if (!(parent->flags & NL_FLAG_UDP_PEERS))
      parent->flags |= NL_FLAG_UDP_PEERS;
  }
  __u64 now = bpf_ktime_get_ns();
  /* The socket's entry is never quieter than its peers': its idle expiry ends them all. */
  parent->last_ns = now;

  __u64 parent_id = key_to_sock_id(key);
  __u64 pk = peer_key(key, parent->start_ns, n);
  struct nl_conn *c = bpf_map_lookup_elem(&nl_active, &pk);
  if (!c) {
    __builtin_memset(fresh, 0, sizeof(*fresh));
    init_conn(fresh, pk, sk, IPPROTO_UDP, dir, true);
    fresh->cookie = conn_cookie(sk, key); /* the socket's: a client can match it with ss */
    fresh->parent_sock_id = parent_id;
    /* Not after the socket entry's last_ns: a close read from it covers this flow. */
    fresh->start_ns = now;
    fresh->last_ns = now;
    __builtin_memcpy(fresh->daddr, n->addr, 16);
    fresh->dport = n->port;
    if (is_send) {
      fresh->bytes_sent = ret;
      fresh->packets_sent = 1;
    } else {
      fresh->bytes_recv = ret;
      fresh->packets_recv = 1;
    }
    c = insert_conn(pk, fresh);
    if (!c)
      return 0; /* in (or the map is full: counted as a failed insert) */
  }
  if (!same_peer(c, parent_id, n)) {
    struct nl_tracer_counters *k = counters();
    if (k)
      __sync_fetch_and_add(&k->peer_key_clashes, 1);
    c = parent;
  }
  count_udp(c, ret, is_send);
  c->last_ns = now;
  return 0;
}

static __always_inline int on_io(struct sock *sk, int ret, int flags, bool is_send) {
  if (ret <= 0)
    return 0;
  __u16 protocol = nl_sk_protocol(sk);
#ifdef NL_MODE_CORE
  /* The hot path: a TCP socket already counted. Only TCP sockets ever have the mark, so a
   * UDP datagram does not look for one. */
  if (protocol == IPPROTO_TCP && bpf_sk_storage_get(&nl_tcp_marks, sk, 0, 0))
    return 0;
#endif
  if (!is_inet(nl_sk_family(sk)))
    return 0;
  if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
    return 0;
  __u64 key = nl_sk_key(sk);
  /* Taken before a peek returns: the note of a peeked datagram must not name a later one. */
  struct nl_peer_note peer;
  bool has_peer = protocol == IPPROTO_UDP && take_peer_note(key, is_send, &peer) &&
                  nl_sk_dport_be(sk) == 0; /* a connected socket is one flow */
  if (!is_send && (flags & NL_MSG_PEEK))
    return 0; /* peeked bytes are received again later */
  struct nl_conn fresh;
  if (has_peer)
    return on_udp_peer(sk, key, &peer, ret, is_send, &fresh);

  struct nl_conn *c = bpf_map_lookup_elem(&nl_active, &key);
  if (!c) {
    /* A TCP socket already closed (its record is out) may still hand queued data to the
     * application; an entry made now would never see a close and would stay forever. */
    if (protocol == IPPROTO_TCP && !tcp_state_has_peer(nl_sk_state(sk)))
      return 0;
    __u8 dir = NL_DIR_NONE;
    if (protocol == IPPROTO_UDP)
      dir = is_send ? NL_DIR_OUTGOING : NL_DIR_INCOMING;
    __builtin_memset(&fresh, 0, sizeof(fresh));
    init_conn(&fresh, key, sk, protocol, dir, true);
    if (protocol == IPPROTO_TCP) {
      /* Established before netlens started: count from now on. */
      nl_tcp_sock *tp = nl_sk_tcp(sk);
      if (!tp)
        return 0;
      fresh.flags |= NL_FLAG_PREEXISTING;
      fresh.tcp_state = nl_sk_state(sk);
      /* First seen after its FIN went out: these states come only after sending one. */
      if (fresh.tcp_state == TCP_FIN_WAIT1 || fresh.tcp_state == TCP_FIN_WAIT2 ||
          fresh.tcp_state == TCP_CLOSING || fresh.tcp_state == TCP_LAST_ACK)
        fresh.flags |= NL_FLAG_FIN_SENT;
      set_tcp_base_mid_life(&fresh, tp, ret, is_send);
      read_tcp(&fresh, sk, tp);
      fresh.last_ns = tcp_time_ns(tp);
    } else if (is_send) {
      fresh.bytes_sent = ret;
      fresh.packets_sent = 1;
    } else {
      fresh.bytes_recv = ret;
      fresh.packets_recv = 1;
    }
    c = insert_conn(key, &fresh);
    if (!c)
      return 0; /* in, complete */
  } else if (c->pid == 0 || (c->flags & NL_FLAG_OWNER_HELD)) {
    /* The first process to send or receive owns it (a forked server's child, not the parent
     * that accepted and held it). */
    set_owner(c);
    c->flags &= ~NL_FLAG_OWNER_HELD;
    refresh_cookie(c, sk);
  }

  if (protocol == IPPROTO_UDP) {
    count_udp(c, ret, is_send);
    /* connect() or an implicit bind since the last event shows as a port change; an
     * unconnected socket (peer port 0 for good) is not re-read on every datagram. */
    if (c->sport != nl_sk_num(sk) || c->dport != bpf_ntohs(nl_sk_dport_be(sk)))
      read_tuple(c, sk);
    c->last_ns = bpf_ktime_get_ns();
    return 0;
  }
  nl_tcp_sock *tp = nl_sk_tcp(sk);
  if (tp) {
    /* Its open was missed: the data moving says it happened (not a Fast Open send, which
     * moves data in SYN_SENT and whose ESTABLISHED comes after). */
    if (c->tcp_state == TCP_SYN_SENT && tcp_state_has_peer(nl_sk_state(sk)))
      complete_missed_open(c, sk, tp);
    read_tcp(c, sk, tp);
    c->last_ns = tcp_time_ns(tp);
  }
  mark_tcp_known(sk, c);
  return 0;
}

SEC(NL_TP("sock_send_length"))
int BPF_PROG(nl_sock_send, struct sock *sk, int ret, int flags) {
  return on_io(sk, ret, flags, true);
}

SEC(NL_TP("sock_recv_length"))
int BPF_PROG(nl_sock_recv, struct sock *sk, int ret, int flags) {
  return on_io(sk, ret, flags, false);
}

/* Fires before total_retrans moves; the next read of tcp_sock makes the count exact. */
SEC(NL_TP("tcp_retransmit_skb"))
int BPF_PROG(nl_tcp_retransmit, const struct sock *sk, const struct sk_buff *skb, int err) {
  if (err != 0)
    return 0;
  __u64 key = nl_sk_key(sk);
  struct nl_conn *c = bpf_map_lookup_elem(&nl_active, &key);
  if (c)
    __sync_fetch_and_add(&c->retransmits, 1);
  return 0;
}

/* A TCP socket is destroyed after its state became CLOSE (inet_csk_destroy_sock): an entry
 * still here missed that state change (under packet loss some never fire: docs/kernel-notes.md,
 * seen with the FIN_WAIT1 and LAST_ACK ends of a close). It ends here with its final counters,
 * not 30 s later by reconciliation without them. Normally the entry is gone: one lookup per
 * TCP socket. */
SEC(NL_TP("tcp_destroy_sock"))
int BPF_PROG(nl_tcp_destroy, const struct sock *sk) {
  if (!is_inet(nl_sk_family(sk)))
    return 0;
  __u64 key = nl_sk_key(sk);
  struct nl_conn *c = bpf_map_lookup_elem(&nl_active, &key);
  if (!c || c->protocol != IPPROTO_TCP)
    return 0;
  nl_tcp_sock *tp = nl_sk_tcp(sk);
  if (tp) {
    if (c->tcp_state == TCP_SYN_SENT && !(c->flags & NL_FLAG_TCP_BASE_KNOWN)) {
      if (tp_bytes_acked(tp) > 0) { /* the SYN was acknowledged: it opened */
        complete_missed_open(c, sk, tp);
      } else { /* a connect that failed, as at its CLOSE */
        if (c->sport == 0)
          c->sport = tp_inet_sport(tp);
        int err = nl_sk_err(sk);
        c->sk_err = err < 0 ? NL_SK_ERR_UNKNOWN : err > 254 ? 254 : err;
      }
    }
    read_tcp(c, sk, tp);
    c->last_ns = tcp_time_ns(tp);
  }
  c->tcp_state = TCP_CLOSE;
  refresh_cookie(c, sk);
  emit_closed(ctx, c);
  bpf_map_delete_elem(&nl_active, &key);
  struct nl_tracer_counters *k = counters();
  if (k)
    __sync_fetch_and_add(&k->closes_at_destroy, 1);
  return 0;
}

/* UDP sockets end here (close of the last reference); TCP ends on its state machine. */
SEC("cgroup/sock_release")
int nl_udp_release(struct bpf_sock *sk) {
  if (sk->protocol != IPPROTO_UDP || !is_inet(sk->family))
    return 1;
#ifdef NL_RAW_TP
  /* The context is the socket itself: its address is the key the raw_tp programs used. */
  __u64 key = (__u64)(unsigned long)sk;
#else
  __u64 key = bpf_get_socket_cookie(sk);
#endif
  struct nl_conn *c = bpf_map_lookup_elem(&nl_active, &key);
  if (!c)
    return 1;
  c->last_ns = bpf_ktime_get_ns();
  /* A cgroup program may ask for the cookie whatever the tracer's build. */
  c->cookie = bpf_get_socket_cookie(sk);
  emit_closed(sk, c);
  bpf_map_delete_elem(&nl_active, &key);
  return 1;
}

/* The peer of a datagram on an unconnected UDP socket, noted for the tracepoint that follows
 * in the same system call (see nl_peer_notes). sendmsg: the address the application sends to
 * (the program runs only when it passes one). recvmsg: the source the kernel hands back (only
 * when the application asks for it, as recvfrom does). A v4 peer of a v6 socket comes to the
 * v4 sendmsg program; it is noted v4-mapped, as the socket itself would hold it. */
static __always_inline int note_peer(struct bpf_sock_addr *ctx, bool v6_hook, bool is_send) {
  if (ctx->protocol != IPPROTO_UDP)
    return 1;
  struct nl_peer_note n = {};
#ifdef NL_RAW_TP
  struct bpf_sock *sk = ctx->sk;
  if (!sk)
    return 1;
  n.sk_key = (__u64)(unsigned long)sk;
#else
  n.sk_key = bpf_get_socket_cookie(ctx);
#endif
  n.port = bpf_ntohs((__u16)ctx->user_port);
  n.is_send = is_send;
  n.valid = 1;
  if (v6_hook) {
    /* One by one: the verifier refuses a read through a pointer into the context. */
    *(__u32 *)&n.addr[0] = ctx->user_ip6[0];
    *(__u32 *)&n.addr[4] = ctx->user_ip6[1];
    *(__u32 *)&n.addr[8] = ctx->user_ip6[2];
    *(__u32 *)&n.addr[12] = ctx->user_ip6[3];
  } else if (ctx->family == NL_AF_INET6) {
    *(__u32 *)&n.addr[8] = bpf_htonl(0xffff);
    *(__u32 *)&n.addr[12] = ctx->user_ip4;
  } else {
    *(__u32 *)&n.addr[0] = ctx->user_ip4;
  }
  struct nl_peer_note *slot = thread_note(true);
  if (slot)
    *slot = n; /* the thread's note is rewritten in place: no allocation per datagram */
  return 1;
}

SEC("cgroup/sendmsg4")
int nl_udp_sendmsg4(struct bpf_sock_addr *ctx) { return note_peer(ctx, false, true); }

SEC("cgroup/sendmsg6")
int nl_udp_sendmsg6(struct bpf_sock_addr *ctx) { return note_peer(ctx, true, true); }

SEC("cgroup/recvmsg4")
int nl_udp_recvmsg4(struct bpf_sock_addr *ctx) { return note_peer(ctx, false, false); }

SEC("cgroup/recvmsg6")
int nl_udp_recvmsg6(struct bpf_sock_addr *ctx) { return note_peer(ctx, true, false); }

#ifdef NL_MODE_CORE
/* Brings the live TCP counters of every counted socket an application holds into its nl_active
 * entry. User space runs it before it reads the map. It walks the open files of every process:
 * the one walk that reaches sockets in every network namespace at once (the TCP iterator sees
 * only the namespace of the process that starts it, and this kernel refuses iterators over
 * socket storage). A socket's pointer from a file is untrusted: its fields are read with
 * bpf_probe_read_kernel at CO-RE offsets. A socket two processes share is refreshed twice, to
 * the same values. */
static __always_inline void snap_tcp_probe(struct nl_tcp_snap *s, const struct sock *sk) {
  const struct tcp_sock *tp = (const void *)sk;
  s->acked = BPF_CORE_READ(tp, bytes_acked);
  s->received = BPF_CORE_READ(tp, bytes_received);
  s->sock_bits = BPF_CORE_READ(sk, __sk_common.skc_flags);
  s->mstamp = BPF_CORE_READ(tp, tcp_mstamp);
  s->segs_out = BPF_CORE_READ(tp, segs_out);
  s->segs_in = BPF_CORE_READ(tp, segs_in);
  s->srtt_us = BPF_CORE_READ(tp, srtt_us);
  s->mdev_us = BPF_CORE_READ(tp, mdev_us);
  s->total_retrans = BPF_CORE_READ(tp, total_retrans);
  s->snd_una = BPF_CORE_READ(tp, snd_una);
  s->write_seq = BPF_CORE_READ(tp, write_seq);
}

SEC("iter/task_file")
int nl_refresh_tcp(struct bpf_iter__task_file *ctx) {
  struct file *file = ctx->file;
  if (!file)
    return 0;
  struct socket *sock = bpf_sock_from_file(file);
  if (!sock)
    return 0;
  const struct sock *sk = sock->sk;
  if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
    return 0;
  __u64 key = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
  if (key == 0)
    return 0; /* never counted: the tracer asks for the cookie of every socket it counts */
  struct nl_conn *c = bpf_map_lookup_elem(&nl_active, &key);
  if (!c || c->protocol != IPPROTO_TCP)
    return 0; /* closed meanwhile: its record carries the final counters */
  struct nl_tcp_snap s;
  snap_tcp_probe(&s, sk);
  apply_tcp(c, &s);
  /* An accepted socket that has not sent or received yet has no owner (its open completed in
   * softirq): the process holding it is the one its first send or receive would name. */
  struct task_struct *task = ctx->task;
  if (c->pid == 0 && task) {
    c->pid = BPF_CORE_READ(task, tgid);
    bpf_probe_read_kernel_str(c->comm, sizeof(c->comm), task->comm);
    /* Until it talks: a server that forks may hand it to a child, which then owns it. */
    c->flags |= NL_FLAG_OWNER_HELD;
  }
  c->last_ns = s.mstamp ? s.mstamp * 1000 : c->last_ns;
  __u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
  if (state != TCP_CLOSE) /* a close on its way carries its own */
    c->tcp_state = state;
  return 0;
}
#endif
