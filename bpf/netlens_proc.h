/* Process exec/exit records sent by proc_events.bpf.c through its ring buffer, shared by the
 * kernel programs and their loader (proc_events.cpp). Plain C, fixed-width types, no implicit
 * padding. */
#ifndef NETLENS_PROC_H
#define NETLENS_PROC_H

#ifdef __BPF__
/* vmlinux.h already defines __u8.. __u64 */
#else
#include <linux/types.h>
#endif

enum nl_proc_kind { NL_PROC_EXEC = 1, NL_PROC_EXIT = 2 };

/* One exec of a process, or the exit of a thread-group leader. */
struct nl_proc_record {
  __u64 ktime_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
  __u32 tgid;     /* the process id as user space knows it */
  __u8 kind;      /* enum nl_proc_kind */
  __u8 pad[3];    /* zero */
};

/* What the programs report about themselves (one per-CPU array slot). */
struct nl_proc_counters {
  __u64 lost; /* records dropped because the ring buffer was full */
};

#endif
