// SPDX-License-Identifier: GPL-2.0
/* The floor under the tracer's cost (bench/tracer_floor): programs on the tracer's own attach
 * points (inet_sock_set_state twice, as the tracer has its nested twin; sock_send_length;
 * sock_recv_length; tcp_destroy_sock; cgroup sock_release) that do as little as a tracer can.
 *   level 0: every program returns at once: what the kernel charges to run a program there.
 *   level 1: one small entry per TCP socket in a hash map keyed by the cookie: inserted when
 *            the connection opens, looked up on every event, deleted at close; nothing leaves
 *            the kernel. The least a tracer that keeps per-connection state in a map pays.
 *   level 2: the map entry inserted at open and deleted at close, no lookup in between: what
 *            the insert and delete alone cost.
 *   level 3: the same entry in socket-local storage (BPF_MAP_TYPE_SK_STORAGE) instead of the
 *            hash map: created at open, fetched on every event, deleted at close.
 * Never part of the agent. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 level = 0;

struct fl_conn {
  __u64 events;
  __u32 state;
  __u32 pad;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, __u64);
  __type(value, struct fl_conn);
} fl_active SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct fl_conn);
} fl_sk SEC(".maps");

static __always_inline bool opens(int oldstate, int newstate) {
  return newstate == TCP_SYN_SENT || (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_RECV);
}

static __always_inline int on_state_sk(struct sock *sk, int oldstate, int newstate) {
  struct fl_conn *c = bpf_sk_storage_get(&fl_sk, sk, 0,
                                         opens(oldstate, newstate) ? BPF_SK_STORAGE_GET_F_CREATE : 0);
  if (!c)
    return 0;
  c->events++;
  c->state = newstate;
  if (newstate == TCP_CLOSE)
    bpf_sk_storage_delete(&fl_sk, sk);
  return 0;
}

static __always_inline int on_state(struct sock *sk, int oldstate, int newstate) {
  if (newstate == TCP_LISTEN || oldstate == TCP_LISTEN || sk->sk_protocol != IPPROTO_TCP)
    return 0;
  if (level == 3)
    return on_state_sk(sk, oldstate, newstate);
  __u64 key = bpf_get_socket_cookie((void *)sk);
  if (opens(oldstate, newstate)) {
    struct fl_conn fresh = {.events = 1, .state = newstate};
    bpf_map_update_elem(&fl_active, &key, &fresh, BPF_NOEXIST);
    return 0;
  }
  if (level == 2) {
    if (newstate == TCP_CLOSE)
      bpf_map_delete_elem(&fl_active, &key);
    return 0;
  }
  struct fl_conn *c = bpf_map_lookup_elem(&fl_active, &key);
  if (!c)
    return 0;
  c->events++;
  c->state = newstate;
  if (newstate == TCP_CLOSE)
    bpf_map_delete_elem(&fl_active, &key);
  return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(fl_state, struct sock *sk, int oldstate, int newstate) {
  if (level == 0)
    return 0;
  return on_state(sk, oldstate, newstate);
}

/* The twin: the tracer's runs on every state change and returns at once but for the nested
 * case, so here it always returns at once. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(fl_state_twin, const struct sock *sk, int oldstate, int newstate) { return 0; }

static __always_inline int on_io(struct sock *sk, int ret) {
  if (level == 0 || level == 2 || ret <= 0 || sk->sk_protocol != IPPROTO_TCP)
    return 0;
  if (level == 3) {
    struct fl_conn *c = bpf_sk_storage_get(&fl_sk, sk, 0, 0);
    if (c)
      c->events++;
    return 0;
  }
  __u64 key = bpf_get_socket_cookie((void *)sk);
  struct fl_conn *c = bpf_map_lookup_elem(&fl_active, &key);
  if (c)
    c->events++;
  return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(fl_send, struct sock *sk, int ret, int flags) { return on_io(sk, ret); }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(fl_recv, struct sock *sk, int ret, int flags) { return on_io(sk, ret); }

/* The tracer looks its entry up when a TCP socket is destroyed (a close it missed): here it
 * returns at once. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(fl_destroy, struct sock *sk) { return 0; }

SEC("cgroup/sock_release")
int fl_release(struct bpf_sock *sk) { return 1; }

/* The UDP peer hooks (sendto, recvfrom on unconnected sockets): here they return at once. */
SEC("cgroup/sendmsg4")
int fl_sendmsg4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/recvmsg4")
int fl_recvmsg4(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/sendmsg6")
int fl_sendmsg6(struct bpf_sock_addr *ctx) { return 1; }

SEC("cgroup/recvmsg6")
int fl_recvmsg6(struct bpf_sock_addr *ctx) { return 1; }

/* The socket lookup (the agent's local-address program, attached in the floor's namespace):
 * passes at once. */
SEC("sk_lookup")
int fl_sk_lookup(struct bpf_sk_lookup *ctx) { return 1; }
