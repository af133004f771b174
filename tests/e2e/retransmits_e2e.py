#!/usr/bin/env python3
"""Retransmissions are exact: in a namespace the test creates, an nft rule drops a random ~8% of
TCP packets on their way out; TCP connections carry data both ways through it. The sum of the
"retransmits" the agent reports over the namespace's connections equals the namespace's own
TcpRetransSegs delta (nstat), which counts every retransmitted segment, SYN-ACKs included.

usage: retransmits_e2e.py path/to/netlens
"""
import json
import os
import subprocess
import sys
import tempfile

from e2e_support import (check, conclude, ns_inode, ns_run, remove_namespace, start_agent,
                         stop_agent, wait_for, write_config)

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-rtx-")
CFG, API = write_config(WORK)
NS = "nlrtx%d" % os.getpid()
CONNS = 20
BYTES = 96 * 1024
# What a failure shows of each answer's view of a connection.
SEEN = ("direction", "bytes_sent", "bytes_recv", "packets_sent", "packets_recv", "retransmits",
        "tcp_state", "closed", "preexisting", "close_reconciled", "start_time_ns")

# Each connection: the client sends BYTES, the server answers BYTES, both close.
TRAFFIC = r'''
import socket, sys, threading
n, size = int(sys.argv[1]), int(sys.argv[2])
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(64)
port = l.getsockname()[1]
def serve():
    for _ in range(n):
        s, _ = l.accept()
        got = 0
        while got < size:
            got += len(s.recv(65536))
        s.sendall(b"s" * size)
        s.close()
t = threading.Thread(target=serve)
t.start()
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"c" * size)
    got = 0
    while got < size:
        d = c.recv(65536)
        if not d:
            break
        got += len(d)
    c.close()
t.join()
l.close()
'''


def retrans_segs():
    r = ns_run(NS, "nstat", "-az", "TcpRetransSegs", capture_output=True, text=True,
               check=True)
    for line in r.stdout.splitlines():
        if line.startswith("TcpRetransSegs"):
            return int(line.split()[1])
    return 0


def tcp_sockets_busy():
    """Sockets of the namespace still exchanging segments (anything but listen/time-wait)."""
    r = ns_run(NS, "ss", "-tanH", "exclude", "time-wait", "exclude", "listening",
               capture_output=True, text=True)
    return [l for l in r.stdout.splitlines() if l.strip()]


def main():
    log = os.path.join(WORK, "agent.log")
    agent = None
    try:
        subprocess.run(["ip", "netns", "add", NS], check=True)
        ns_run(NS, "ip", "link", "set", "lo", "mtu", "1500", "up", check=True)
        ns_run(NS, "nft", "-f", "-", check=True, text=True,
               input="table inet nlrtx {\n chain out {\n  type filter hook output priority 0;\n"
                     "  meta l4proto tcp numgen random mod 100 < 8 drop\n }\n}\n")
        agent = start_agent(NETLENS, CFG, log)
        ino = ns_inode(NS)
        ask = [NETLENS, "connections", "--socket", API, "--client", "rtx", "--json",
               "--proto", "tcp"]
        subprocess.run(ask, capture_output=True, check=True)
        before = retrans_segs()
        r = ns_run(NS, sys.executable, "-c", TRAFFIC, str(CONNS), str(BYTES),
                   capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, "the traffic ran", r.stderr)
        # Orphaned sockets may still be retransmitting their FIN after the script ended.
        check(wait_for(lambda: not tcp_sockets_busy(), 60, 0.2),
              "the namespace's connections are done", tcp_sockets_busy())
        delta = retrans_segs() - before
        flows = {}

        def all_closed():
            out = subprocess.run(ask, capture_output=True, text=True)
            if out.returncode != 0:
                return False
            for c in json.loads(out.stdout)["connections"]:
                if c["netns"] != ino:
                    continue
                # By socket (cookie), not by ports: on loopback a new connection may reuse
                # the port pair of one in TIME_WAIT (tcp_tw_reuse).
                f = flows.setdefault((c["sport"], c["dport"], c["cookie"]),
                                     {"retransmits": 0, "closed": 0, "bytes_sent": 0, "seen": []})
                f["seen"].append({k: c[k] for k in SEEN})
                # The counters are a connection's totals: its closed record has the final
                # ones (an active view before it would add them twice).
                if c["closed"]:
                    f["retransmits"] += c["retransmits"]
                    f["bytes_sent"] += c["bytes_sent"]
                    f["closed"] += 1
            return len(flows) == 2 * CONNS and all(f["closed"] for f in flows.values())
        check(wait_for(all_closed, 20, 0.3), "every connection of the namespace closed, both ends",
              flows)
        total = sum(f["retransmits"] for f in flows.values())
        check(delta > 0, "the drop rule made TCP retransmit (TcpRetransSegs +%d)" % delta)
        check(total == delta, "the retransmits reported sum to the namespace's TcpRetransSegs "
              "delta (%d reported, %d by nstat)" % (total, delta), flows)
        check(all(f["bytes_sent"] == BYTES for f in flows.values()),
              "every end sent exactly %d bytes, retransmissions not counted twice" % BYTES,
              [(k, f) for k, f in flows.items() if f["bytes_sent"] != BYTES])
        code = stop_agent(agent)
        agent = None
        check(code == 0, "the agent stops in order", code)
    finally:
        if agent is not None:
            stop_agent(agent)
        remove_namespace(NS)
    return conclude(log, WORK)


if __name__ == "__main__":
    sys.exit(main())
