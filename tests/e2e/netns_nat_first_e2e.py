#!/usr/bin/env python3
"""End to end, NAT from the first connection of a namespace made after the agent started
(issue 20, item 4). The agent runs in the host's namespace. Each round makes a new namespace
and sets it up from the host, as a CNI plugin does (nothing is exec'd inside it): lo up, a
DNAT rule in the namespace's own output chain

    127.0.0.1:18181/tcp -> 127.0.0.1:19191   (the listener is in the same namespace)

and the listener. Then the namespace's first process (bash, exec'd in it) makes N short TCP
connections to 127.0.0.1:18181 at once (the first closed at once, the next two after 5 ms,
of the rest every other one at once and the others after 20 ms), while another client polls the agent every 5 ms: the first connections
close, and are claimed, while the agent is still finding the namespace and starting its
conntrack consumer (without the fix, half the rounds lose the first ones' NAT). Every connection, client end and server end, must carry its translation, equal to
the reply tuple `conntrack -L` shows in that namespace (and to what the rule says); none may
be handed to a client twice. Then the namespace goes and the next round starts.

    netns_nat_first_e2e.py NETLENS [ROUNDS]   (ROUNDS defaults to 20, 5 in a sanitizer suite)

Only loopback inside the namespaces made here carries traffic; the namespaces (and with them
their nft tables) are removed on every path, and the agent is stopped.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_support  # noqa: E402
from e2e_support import (add_namespace, api_json, check, conntrack_entries,  # noqa: E402
                         end_started, failures, in_ns, ns_inode, query_connections, sh,
                         start_agent, stop_agent, wait_for, write_config)

NETLENS = os.path.abspath(sys.argv[1])
# 20 rounds prove it in the plain suite; a sanitizer suite looks for memory and thread errors
# in the same paths, which 5 rounds exercise (CI's time is bounded).
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else (5 if os.environ.get("NETLENS_SANITIZER")
                                                     else 20)
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nat_peer.py")
TAG = str(os.getpid())
NS_PREFIX = "nltest-natfirst-" + TAG + "-"
VPORT, TPORT = 18181, 19191  # the virtual service and the DNAT target
CONNECTIONS = 60
# How long each connection lives. The very first closes at once, before the agent can have
# found the namespace: its claim waits for the first dump. The second and third are held 5 ms,
# to close while the consumer starts. Of the rest, every other one closes at once too: claimed
# a few milliseconds after its start, it can beat its NEW event to the cache (see nat_peer.py
# connect), and its claim waits for the consumer's sync; the others are held 20 ms.
HOLD_MS, FIRST_HOLD_MS = 20, 5
WORK = tempfile.mkdtemp(prefix="netlens-natfirst-")
CLIENT = "natfirst-e2e"
namespaces = []
helpers = []


RULES = """
table ip nltest_natfirst {
  chain out {
    type nat hook output priority -100;
    ip daddr 127.0.0.1 tcp dport %d dnat to 127.0.0.1:%d
  }
}
""" % (VPORT, TPORT)
# The namespace's first process: N connections at once, each held a moment, then closed. bash's
# /dev/tcp connects a millisecond after the exec (python would start for tens of them).
CLIENT_SCRIPT = ("for i in {1..%d}; do h=%.3f; (( i %% 2 == 0 )) && h=0; (( i <= 3 )) && h=%.3f; "
                 "(( i == 1 )) && h=0; "
                 "exec 3<>/dev/tcp/127.0.0.1/%d || exit 1; "
                 "read -t $h -u 3 x; echo -n x >&3; exec 3>&-; done"
                 % (CONNECTIONS, HOLD_MS / 1000.0, FIRST_HOLD_MS / 1000.0, VPORT))


def make_namespace(ns):
    """The namespace with lo up, its DNAT rule and the listener, set up from the host as a
    CNI plugin does (nothing exec'd inside it); returns the listener's process."""
    add_namespace(ns)
    namespaces.append(ns)
    helper = subprocess.Popen(["python3", PEER, "setup", "/run/netns/" + ns,
                               "127.0.0.1:%d" % TPORT, str(CONNECTIONS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    helpers.append(helper)
    helper.stdin.write(RULES)
    helper.stdin.close()
    if helper.stdout.readline().strip() != "ready":
        raise RuntimeError("the namespace's set-up helper failed")
    return helper


def remove_namespace(ns):
    e2e_support.remove_namespace(ns)
    if ns in namespaces:
        namespaces.remove(ns)


def teardown():
    end_started()
    for h in helpers:
        if h.poll() is None:
            h.kill()
            h.wait()
    for ns in list(namespaces):
        remove_namespace(ns)
    subprocess.run(["rm", "-rf", WORK])


def connections(sock, client=CLIENT):
    return query_connections(NETLENS, sock, client)["connections"]


def stats(sock):
    return api_json(sock, "/stats")


class poller:
    """Asks for connections (as another client) all along while the burst runs, as a fleet
    pipeline polling the agent does: closed records are then claimed as they arrive, not all
    at the end."""

    def __init__(self, sock):
        self.sock, self.done = sock, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        # Straight over the socket: a command per poll would poll ten times less often.
        request = ("GET /connections?client_id=%s-poller HTTP/1.1\r\nHost: netlens\r\n"
                   "Connection: close\r\n\r\n" % CLIENT).encode()
        while not self.done.is_set():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(self.sock)
                    s.sendall(request)
                    while s.recv(65536):
                        pass
            except OSError:
                pass
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def conntrack_replies(ns):
    """sport -> the reply tuple conntrack holds in ns for 127.0.0.1:sport -> :VPORT."""
    got = {}
    for original, r in conntrack_entries(ns, "-p", "tcp", "--dport", str(VPORT)):
        if "sport" in original and "src" in r:
            got[int(original["sport"])] = {"saddr": r["src"], "sport": int(r["sport"]),
                                           "daddr": r["dst"], "dport": int(r["dport"])}
    return got


def one_round(sock, r):
    ns = NS_PREFIX + str(r)
    t0 = time.monotonic()
    helper = make_namespace(ns)
    inode = ns_inode(ns)
    # The first connections are made (and closed) while the agent is still finding the
    # namespace and starting its conntrack consumer.
    with poller(sock):
        sh(*in_ns(ns, "bash", "--norc", "-c", CLIENT_SCRIPT))
        ports = json.loads(helper.stdout.readline())
    helper.wait()
    want_client = {p: {"saddr": "127.0.0.1", "sport": TPORT, "daddr": "127.0.0.1", "dport": p}
                   for p in ports}
    want_server = {p: {"saddr": "127.0.0.1", "sport": p, "daddr": "127.0.0.1", "dport": VPORT}
                   for p in ports}
    seen_client, seen_server, twice = {}, {}, []

    def collect():
        for c in connections(sock):
            if c["type"] != "tcp" or not c["closed"] or c["netns"] != inode:
                continue
            if c["dport"] == VPORT and c["sport"] in want_client:
                (twice if c["sport"] in seen_client else []).append(c)
                seen_client[c["sport"]] = c
            elif c["sport"] == TPORT and c["dport"] in want_server:
                (twice if c["dport"] in seen_server else []).append(c)
                seen_server[c["dport"]] = c
        return len(seen_client) == len(ports) and len(seen_server) == len(ports)

    complete = wait_for(collect, 10, step=0.1)
    truth = conntrack_replies(ns)
    bad = []
    for i, p in enumerate(ports):
        c, s = seen_client.get(p), seen_server.get(p)
        if (c is None or c["nat"] != want_client[p] or truth.get(p) != want_client[p] or
                s is None or s["nat"] != want_server[p]):
            bad.append({"connection": i, "port": p, "client_nat": c and c["nat"],
                        "server_nat": s and s["nat"], "conntrack": truth.get(p)})
    ok = check(complete and not bad and not twice,
               "round %d: all %d connections (client and server ends) of a new namespace "
               "carry their DNAT, as conntrack -L shows it, once each" % (r, len(ports)),
               {"complete": complete, "clients": len(seen_client), "servers": len(seen_server),
                "bad": bad, "twice": twice})
    if not ok:  # what the agent saw of it: was the namespace found, joined, dumped in time?
        actors = stats(sock)["actors"]
        print("conntrack: %s\nnetns: %s" % (json.dumps(actors["conntrack"]["counters"]),
                                            json.dumps(actors["netns"]["counters"])), flush=True)
    remove_namespace(ns)
    print("round %d: %.2f s, %d records%s" % (r, time.monotonic() - t0, 2 * len(ports),
                                              "" if ok else " FAILED"), flush=True)
    return ok


def main():
    config, sock = write_config(
        WORK, "[netns]\nidle_flush_s = 2\n[compact_ticker]\ncompact_interval_ms = 500\n")
    log = os.path.join(WORK, "agent.log")
    agent = start_agent(NETLENS, config, log)
    connections(sock)  # the client's cursor starts after what is buffered already
    t0 = time.monotonic()
    passed = sum(one_round(sock, r) for r in range(ROUNDS))
    print("%d of %d rounds passed in %.1f s" % (passed, ROUNDS, time.monotonic() - t0))
    ct = stats(sock)["actors"]["conntrack"]["counters"]
    print("conntrack counters: %s" % json.dumps(ct, sort_keys=True), flush=True)
    check(ct.get("namespaces_joined", 0) >= ROUNDS, "conntrack joined every new namespace", ct)
    check(ct.get("claims_wait_timeouts", -1) == 0 and ct.get("claims_pending", -1) == 0,
          "no claim waited in vain for a namespace's first dump or a sync, none is left waiting",
          ct)
    check(ct.get("claims_synced", 0) > 0, "claims that missed waited for a consumer's sync", ct)
    check(stop_agent(agent) == 0, "agent exits 0 on SIGTERM")


def on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    try:
        main()
    except BaseException as e:  # a broken step (or a signal) is a failure, never a pass
        failures.append(str(e))
        print("FAIL: %r" % e, flush=True)
    finally:
        teardown()
    print("netns nat first e2e: %d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)
