#!/usr/bin/env python3
"""A TCP connection whose close was missed is reconciled in a container's network namespace too,
not only in the agent's. The test makes a namespace with a process in it, then plants two
entries in the agent's active map as a missed close would leave them there: TCP in FIN_WAIT1,
quiet for a minute, owned by that process. One names a socket that is gone (a cookie taken from
a socket the test closed), the other a socket that lives (a listener). The expiry tick must
report the first closed with "close_reconciled", checked against that namespace's own socket
table, and leave the second alone.

usage: reconcile_netns_e2e.py path/to/netlens
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

from e2e_support import check, conclude, start_agent, stop_agent, wait_for, write_config

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-reconcile-")
CFG, API = write_config(WORK, '[tracer]\nmode = "core"\n[compact_ticker]\ninterval_ms = 200\n')
NS = "nlrec%d" % os.getpid()
SO_COOKIE = 57

# bpf/netlens_records.h, struct nl_conn (NL_RECORD_VERSION 4), little-endian.
NL_CONN = struct.Struct("<16s16s11Q2I5I3H6B16s")
assert NL_CONN.size == 176

# Runs in the namespace: a listener that lives, and the cookie of a socket that is gone.
HOLDER = r'''
import socket, sys, time
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen()
gone = socket.socket()
gone.bind(("127.0.0.1", 0))
dead = int.from_bytes(gone.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
gone.close()
live = int.from_bytes(l.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
print(live, dead, flush=True)
time.sleep(120)
'''


def agent_map_id(agent_pid, name):
    out = subprocess.run(["bpftool", "map", "show", "--json"], capture_output=True, text=True,
                         check=True).stdout
    for m in json.loads(out):
        if m.get("name") == name and any(p.get("pid") == agent_pid for p in m.get("pids", [])):
            return m["id"]
    # bpftool without pid information: the agent's fds tell
    fdinfo = "/proc/%d/fdinfo" % agent_pid
    ids = set()
    for fd in os.listdir(fdinfo):
        try:
            for line in open(os.path.join(fdinfo, fd)):
                if line.startswith("map_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            pass
    for m in json.loads(out):
        if m.get("name") == name and m["id"] in ids:
            return m["id"]
    return None


def plant(map_id, cookie, netns, pid, sport):
    now = time.monotonic_ns()
    value = NL_CONN.pack(socket.inet_aton("127.0.0.1") + bytes(12),
                         socket.inet_aton("127.0.0.1") + bytes(12),
                         cookie, cookie, 0, now - 61 * 10**9, now - 60 * 10**9,
                         1000, 2000, 10, 12, 0, 0, 0, 0,
                         netns, pid, 0, 0, 0,
                         sport, 4242, socket.AF_INET,
                         6, 1, 4, 0, 0, 0,  # TCP, outgoing, FIN_WAIT1
                         b"planted".ljust(16, b"\0"))
    hexes = lambda b: [("%02x" % x) for x in b]
    subprocess.run(["bpftool", "map", "update", "id", str(map_id), "key", "hex",
                    *hexes(struct.pack("<Q", cookie)), "value", "hex", *hexes(value), "noexist"],
                   check=True)


def main():
    log = os.path.join(WORK, "agent.log")
    agent = holder = None
    try:
        subprocess.run(["ip", "netns", "add", NS], check=True)
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        holder = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", HOLDER],
                                  stdout=subprocess.PIPE, text=True)
        live, dead = (int(x) for x in holder.stdout.readline().split())
        ino = os.stat("/run/netns/" + NS).st_ino
        agent = start_agent(NETLENS, CFG, log)
        ask = [NETLENS, "connections", "--socket", API, "--client", "rec", "--json",
               "--proto", "tcp"]
        subprocess.run(ask, capture_output=True, check=True)
        map_id = agent_map_id(agent.pid, "nl_active")
        check(map_id is not None, "the agent's active map is found")
        plant(map_id, dead, ino, holder.pid, 40001)
        plant(map_id, live, ino, holder.pid, 40002)
        seen = {}

        def reconciled():
            r = subprocess.run(ask, capture_output=True, text=True)
            for c in json.loads(r.stdout)["connections"] if r.returncode == 0 else []:
                if c["netns"] == ino and c["sport"] in (40001, 40002):
                    seen.setdefault(c["sport"], []).append(c)
            return any(c["closed"] for c in seen.get(40001, []))
        wait_for(reconciled, 10, 0.3)
        gone = [c for c in seen.get(40001, []) if c["closed"]]
        check(len(gone) == 1 and gone[0]["close_reconciled"] and gone[0]["bytes_sent"] == 1000,
              "the entry of the socket that is gone is reported closed, reconciled", seen)
        time.sleep(1)  # five more ticks
        reconciled()
        kept = seen.get(40002, [])
        check(kept and not any(c["closed"] for c in kept),
              "the entry of the socket that lives is left alone", kept)
        stats = json.loads(subprocess.run(["curl", "-sf", "--unix-socket", API,
                                           "http://localhost/stats"], capture_output=True,
                                          text=True).stdout)
        counters = dict(stats["actors"]["tracer"]["counters"])
        check(counters.get("tcp_reconciled", 0) >= 1 and
              counters.get("tcp_reconcile_failures", 1) == 0,
              "/stats: tcp_reconciled counts it, no namespace went unchecked", counters)
        code = stop_agent(agent)
        agent = None
        check(code == 0, "the agent stops in order", code)
    finally:
        if agent is not None:
            stop_agent(agent)
        if holder is not None:
            holder.kill()
            holder.wait()
        subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
    return conclude(log, WORK)


if __name__ == "__main__":
    sys.exit(main())
