// SPDX-License-Identifier: GPL-2.0
/* Process exec and exit events for the netns actor, which must find a new process (and so its
 * network namespace) soon after it starts. Classic tracepoints, not tp_btf: they need neither
 * BTF nor CO-RE, so this object loads wherever the prebuilt tracer does. Nothing is read from
 * kernel structs or from the tracepoint's context (whose layout differs between kernels: 6.x
 * added group_dead to sched_process_exit); only helpers are used, so the object carries no CO-RE
 * relocation. vmlinux.h is included for its type names only. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "netlens_proc.h"

char LICENSE[] SEC("license") = "GPL";

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
  bpf_ringbuf_submit(r, 0);
}

/* Runs in the new program's context after the point of no return of exec: the tgid is the
 * process's (a non-leader thread that execs has already taken over the leader's pid). */
SEC("tracepoint/sched/sched_process_exec")
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
SEC("tracepoint/sched/sched_process_exit")
int nl_proc_exit(void* ctx) {
  __u64 id = bpf_get_current_pid_tgid();
  __u32 tgid = (__u32)(id >> 32);
  __u32 pid = (__u32)id;
  if (pid != tgid)
    return 0;
  emit(NL_PROC_EXIT, tgid);
  return 0;
}
