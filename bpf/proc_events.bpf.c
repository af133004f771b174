// SPDX-License-Identifier: GPL-2.0
/* Process exec and exit events for the netns actor, which must find a new process (and so its
 * network namespace) soon after it starts. Raw tracepoints, not tp_btf: they need neither BTF
 * nor CO-RE, so this object loads wherever the prebuilt tracer does (raw_tp too). Nothing is
 * read from kernel structs or from the tracepoint's arguments; only helpers are used, so the
 * object carries no CO-RE relocation. vmlinux.h is included for its type names only.
 * Not classic (perf event) tracepoints: releasing one of those waits for tracepoint grace
 * periods (20-45 ms each here), which the agent's shutdown paid twice; a raw tracepoint link
 * is released at once (docs/kernel-notes.md). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "netlens_proc.h"

char LICENSE[] SEC("license") = "GPL";

/* What one record takes in the ring buffer: 8 bytes of header, rounded up to 8. */
#define NL_PROC_RING_BYTES ((sizeof(struct nl_proc_record) + 8 + 7) & ~7ul)
/* Queued bytes (whole records) that make up a batch; set before load. */
const volatile __u64 wakeup_bytes = 64 * NL_PROC_RING_BYTES;

/* Sized by the loader (a power of two, a multiple of the page size). */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} nl_proc_ring SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct nl_proc_counters);
} nl_proc_counters SEC(".maps");

static __always_inline void emit(__u8 kind, __u32 tgid) {
  /* Reserve never waits: a full buffer costs one record, counted, not a stalled exec. */
  struct nl_proc_record* r = bpf_ringbuf_reserve(&nl_proc_ring, sizeof(*r), 0);
  if (!r) {
    __u32 zero = 0;
    struct nl_proc_counters* c = bpf_map_lookup_elem(&nl_proc_counters, &zero);
    if (c)
      c->lost++; /* per-CPU slot: no other CPU writes it */
    return;
  }
  r->ktime_ns = bpf_ktime_get_ns();
  r->tgid = tgid;
  r->kind = kind;
  r->pad[0] = r->pad[1] = r->pad[2] = 0;
  /* A wakeup is an irq_work self-IPI, a VM exit on a virtual machine: with the reader caught
   * up, the ring's default would send one per record, ~20 us of the exec or exit it follows.
   * Only the record that completes a batch wakes the reader; it reads the rest on its timer. */
  __u64 queued = bpf_ringbuf_query(&nl_proc_ring, BPF_RB_AVAIL_DATA);
  bool completes_batch = queued >= wakeup_bytes && queued < wakeup_bytes + NL_PROC_RING_BYTES;
  bpf_ringbuf_submit(r, completes_batch ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Runs in the new program's context after the point of no return of exec: the tgid is the
 * process's (a non-leader thread that execs has already taken over the leader's pid). */
SEC("raw_tp/sched_process_exec")
int nl_proc_exec(void* ctx) {
  emit(NL_PROC_EXEC, (__u32)(bpf_get_current_pid_tgid() >> 32));
  return 0;
}

/* Fires for every exiting thread; only the thread-group leader's exit (pid == tgid) is sent.
 * That is the right cut for a per-process consumer: the leader's pid is the process's id, the
 * other threads' exits are noise to it, and in the common case (exit_group, or the last thread
 * returning from main) the leader goes last or with the others. What it misses:
 * - a leader that leaves alone (pthread_exit or SYS_exit from main) while other threads run on:
 *   the exit is sent then, the process lives on as those threads, and the last thread's exit
 *   sends nothing;
 * - a non-leader thread that execs: de_thread kills the old leader first, so an exit for that
 *   tgid is followed by an exec for the same tgid (the consumer must let the later exec win;
 *   the ring buffer keeps the order in which records were reserved, and ktime_ns agrees). */
SEC("raw_tp/sched_process_exit")
int nl_proc_exit(void* ctx) {
  __u64 id = bpf_get_current_pid_tgid();
  __u32 tgid = (__u32)(id >> 32);
  __u32 pid = (__u32)id;
  if (pid != tgid)
    return 0;
  emit(NL_PROC_EXIT, tgid);
  return 0;
}
