/* Record layouts shared by the kernel programs and user space: the one definition of every
 * byte that crosses the boundary. Plain C, fixed-width types, no padding left implicit. */
#ifndef NETLENS_RECORDS_H
#define NETLENS_RECORDS_H

#ifdef __BPF__
/* vmlinux.h already defines __u8.. __u64 */
#else
#include <linux/types.h>
#endif

#define NL_COMM_LEN 16
#define NL_RECORD_MAGIC 0x4e4c4352u /* "NLCR" */
#define NL_RECORD_VERSION 4
#define NL_BATCH_MAGIC 0x4e4c4342u /* "NLCB" */
#define NL_BATCH_MAX 64            /* records per batch at most (tracer.closed_batch_size) */
#define NL_BATCH_DEFAULT 4         /* tracer.closed_batch_size when the configuration is silent */

#define NL_SK_ERR_UNKNOWN 255

enum nl_direction { NL_DIR_NONE = 0, NL_DIR_OUTGOING = 1, NL_DIR_INCOMING = 2 };

enum nl_conn_flags {
  /* base_* hold the tcp_sock counters at establishment, so the final read is exact */
  NL_FLAG_TCP_BASE_KNOWN = 1 << 0,
  /* first seen after it was established (agent started later): counts start then */
  NL_FLAG_PREEXISTING = 1 << 1,
  /* the record closes the flow because it was idle, not because the socket closed */
  NL_FLAG_IDLE_EXPIRED = 1 << 2,
  /* its close was never seen; the kernel's socket table showed the socket gone */
  NL_FLAG_RECONCILED = 1 << 3,
  /* TCP: this end sent a FIN (it entered FIN_WAIT1 or LAST_ACK), which takes a sequence
   * number that bytes_acked counts. An abortive close (SO_LINGER 0, close with unread data)
   * shuts the socket for sending without one. */
  NL_FLAG_FIN_SENT = 1 << 4,
  /* UDP socket whose datagrams with a known peer (sendto/recvfrom on an unconnected socket)
   * are counted in flows of their own, one per peer (parent_sock_id names this entry): this
   * entry counts only the rest, datagrams whose peer the kernel did not say. With nothing of
   * its own it is no flow, and user space does not show it. */
  NL_FLAG_UDP_PEERS = 1 << 5,
  /* pid and comm name a process that held the socket's file when the map was read (CO-RE
   * refresh of a socket nobody had sent or received on yet), not one that did I/O: the first
   * send or receive names its own process instead (a forked server's child). */
  NL_FLAG_OWNER_HELD = 1 << 6,
};

/* One connection (a socket), keyed in the active map by sock_id. Addresses are in network
 * byte order, v4 in the first 4 bytes; ports in host byte order. */
struct nl_conn {
  __u8 saddr[16];
  __u8 daddr[16];
  /* The socket cookie (SO_COOKIE). The CO-RE tracer asks the kernel for it; the raw_tp tracers
   * (prebuilt, runtime) cannot, and read the one the socket has: 0 while none was assigned. */
  __u64 cookie;
  /* The active map's key, unique while the socket lives: the cookie (CO-RE), or the socket's
   * address scrambled with a per-load secret (raw_tp tracers; addresses never leave the kernel
   * in clear). User space identifies a connection by this, never by cookie. */
  __u64 sock_id;
  /* A UDP flow with one peer of an unconnected socket: the sock_id of the socket's own entry
   * (flagged NL_FLAG_UDP_PEERS), whose close ends this flow too. 0 for everything else. */
  __u64 parent_sock_id;
  __u64 start_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
  __u64 last_ns;
  __u64 bytes_sent;
  __u64 bytes_recv;
  __u64 packets_sent;
  __u64 packets_recv;
  __u64 base_acked;    /* tcp_sock.bytes_acked when counting began */
  __u64 base_received; /* tcp_sock.bytes_received when counting began */
  /* tcp_sock.segs_out and segs_in when counting began: 0 for a connection seen from its
   * opening (its packets are the socket's own counts), the counts at first sight for one
   * established before netlens started (its packets count from then on). */
  __u32 base_segs_out;
  __u32 base_segs_in;
  __u32 netns;         /* inode of the network namespace */
  __u32 pid;           /* tgid of the process that used the socket first */
  __u32 retransmits;
  __u32 srtt_us;
  __u32 rttvar_us;
  __u16 sport;
  __u16 dport;
  __u16 family;   /* AF_INET or AF_INET6 as the socket has it */
  __u8 protocol;  /* IPPROTO_TCP or IPPROTO_UDP */
  __u8 direction; /* enum nl_direction */
  __u8 tcp_state; /* TCP_* of the kernel, 0 for UDP */
  __u8 flags;     /* enum nl_conn_flags */
  /* TCP that closed before it was established: the socket's error then (ECONNREFUSED,
   * ETIMEDOUT, EHOSTUNREACH, ...; 0: the application closed it first). NL_SK_ERR_UNKNOWN where
   * the build cannot read it (prebuilt). 0 for everything else. */
  __u8 sk_err;
  /* Kernel-internal: TCP sends and receives that did the full work on this socket (saturates
   * at 255). The CO-RE tracer marks the socket for its fast path once it is clearly a
   * connection that keeps talking. Means nothing to user space. */
  __u8 io_events;
  char comm[NL_COMM_LEN];
};

/* What leaves the kernel when a connection closes, through the ring buffer or the perf
 * buffer. magic/version/size let user space reject anything it does not understand. */
struct nl_closed_record {
  __u32 magic;
  __u16 version;
  __u16 size;
  struct nl_conn conn;
};

/* Perf mode: each CPU fills one batch of closed connections (a per-CPU array slot) and sends
 * it as one perf record when closed_batch_size are in: one record and at most one wakeup per
 * batch. The id grows by one each time a batch leaves, so user space that took records from a
 * batch still filling (before a connections answer) knows them when the full batch arrives.
 * A perf record carries the header and count records; the map slot is the whole struct. */
struct nl_closed_batch {
  __u32 magic;
  __u16 version;
  __u16 count; /* records in conns */
  __u32 cpu;
  __u32 busy; /* a program on this CPU is filling it: one nested on top sends its own record */
  __u64 id;
  struct nl_conn conns[NL_BATCH_MAX];
};

/* Per-CPU counters the programs keep about themselves (array map, one slot). */
struct nl_tracer_counters {
  __u64 failed_inserts; /* active map full */
  __u64 closed_lost;    /* ring/perf output failed */
  __u64 closed_emitted;
  __u64 events;
  __u64 wakeups; /* closed-record outputs that wake the reader (one per batch) */
  /* UDP per peer: two peers of one socket whose keys hashed alike; the second one's datagrams
   * were counted in the socket's own entry instead (never seen in practice: 63-bit keys). */
  __u64 peer_key_clashes;
  /* TCP: entries whose close reached tcp_destroy_sock without the state change to CLOSE (under
   * packet loss some inet_sock_set_state events never fire; docs/kernel-notes.md) */
  __u64 closes_at_destroy;
  /* TCP: connects whose SYN_SENT -> ESTABLISHED was never seen, completed at their first send,
   * receive or close instead */
  __u64 opens_completed_late;
};

#endif
