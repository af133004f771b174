#!/usr/bin/env python3
"""A TCP connection whose close was missed is reconciled in a container's network namespace too,
not only in the agent's. The test plants pairs of entries in the agent's active map as a missed
close would leave them there (TCP in FIN_WAIT1, quiet for a minute): one names a socket that is
gone (a cookie taken from a socket the test closed), the other a socket that lives (a
listener). The expiry tick must report the first closed with "close_reconciled", checked
against that namespace's own socket table, and leave the second alone. Three namespaces, three
ways to reach them:
- a named one whose entries are owned by the process in it;
- a named one no process is in (its sockets were made there by a process that went back to
  its own namespace), entries without an owner: only its name reaches it;
- one with no name (as container runtimes make them), entries without an owner: reached
  through the descriptor the agent's netns actor holds on it, or the process in it.

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
NS_NAMED = "nlrecn%d" % os.getpid()
SO_COOKIE = 57

# bpf/netlens_records.h, struct nl_conn (NL_RECORD_VERSION 4), little-endian.
NL_CONN = struct.Struct("<16s16s11Q2I5I3H6B16s")
assert NL_CONN.size == 176

# A listener that lives and the cookie of a socket that is gone, made in the namespace the
# holder runs in, or (with a path argument) in that namespace, after which the holder goes
# back to its own: then no process is in the namespace, only its name and the listener hold it.
# Prints the two cookies.
HOLDER = r'''
import ctypes, os, socket, sys, time
cookie = lambda s: int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
libc = ctypes.CDLL(None, use_errno=True)
if len(sys.argv) > 1:
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(sys.argv[1], os.O_RDONLY)
    assert libc.setns(there, 0x40000000) == 0, os.strerror(ctypes.get_errno())
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen()
gone = socket.socket()
gone.bind(("127.0.0.1", 0))
out = [cookie(l), cookie(gone)]
gone.close()
if len(sys.argv) > 1:
    assert libc.setns(home, 0x40000000) == 0, os.strerror(ctypes.get_errno())
    os.close(home)
    os.close(there)
print(*out, flush=True)
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
    agent = holder = named = anon = None
    try:
        for ns in (NS, NS_NAMED):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        holder = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", HOLDER],
                                  stdout=subprocess.PIPE, text=True)
        live, dead = (int(x) for x in holder.stdout.readline().split())
        ino = os.stat("/run/netns/" + NS).st_ino
        # Its sockets made in it, but no process in it: only its name reaches it.
        named = subprocess.Popen([sys.executable, "-c", HOLDER, "/run/netns/" + NS_NAMED],
                                 stdout=subprocess.PIPE, text=True)
        live_b, dead_b = (int(x) for x in named.stdout.readline().split())
        named_ino = os.stat("/run/netns/" + NS_NAMED).st_ino
        # A namespace with no name, as a container runtime makes them: only its process holds it.
        anon = subprocess.Popen(["unshare", "--net", "sh", "-c",
                                 "ip link set lo up && exec %s -c '%s'" % (sys.executable, HOLDER)],
                                stdout=subprocess.PIPE, text=True)
        live_c, dead_c = (int(x) for x in anon.stdout.readline().split())
        anon_ino = os.stat("/proc/%d/ns/net" % anon.pid).st_ino
        check(len({ino, named_ino, anon_ino}) == 3, "three namespaces",
              (ino, named_ino, anon_ino))
        agent = start_agent(NETLENS, CFG, log)
        ask = [NETLENS, "connections", "--socket", API, "--client", "rec", "--json",
               "--proto", "tcp"]
        subprocess.run(ask, capture_output=True, check=True)
        map_id = agent_map_id(agent.pid, "nl_active")
        check(map_id is not None, "the agent's active map is found")
        # (gone, live) pairs: reached through the entries' own process; through the name
        # alone (no process of theirs: pid 0, an owner never learnt); an unnamed namespace none
        # of whose entries names a process (the agent's netns actor holds it, or a pass over
        # /proc finds the process in it).
        pairs = {"its entries' process": ((dead, 40001), (live, 40002), ino, holder.pid),
                 "its name": ((dead_b, 40003), (live_b, 40004), named_ino, 0),
                 "an unnamed namespace": ((dead_c, 40005), (live_c, 40006), anon_ino, 0)}
        for (gone_cookie, gone_port), (live_cookie, live_port), ns_ino, pid in pairs.values():
            plant(map_id, gone_cookie, ns_ino, pid, gone_port)
            plant(map_id, live_cookie, ns_ino, pid, live_port)
        seen = {}

        def reconciled():
            r = subprocess.run(ask, capture_output=True, text=True)
            for c in json.loads(r.stdout)["connections"] if r.returncode == 0 else []:
                if c["netns"] in (ino, named_ino, anon_ino) and 40001 <= c["sport"] <= 40006:
                    seen.setdefault(c["sport"], []).append(c)
            return all(any(c["closed"] for c in seen.get(p[0][1], [])) for p in pairs.values())
        wait_for(reconciled, 10, 0.3)
        for how, ((_, gone_port), _, ns_ino, _) in pairs.items():
            gone = [c for c in seen.get(gone_port, []) if c["closed"]]
            check(len(gone) == 1 and gone[0]["close_reconciled"] and
                  gone[0]["bytes_sent"] == 1000 and gone[0]["netns"] == ns_ino,
                  "reached through %s: the entry of the socket that is gone is reported closed, "
                  "reconciled" % how, seen.get(gone_port))
        time.sleep(1)  # five more ticks
        reconciled()
        for how, (_, (_, live_port), _, _) in pairs.items():
            kept = seen.get(live_port, [])
            check(kept and not any(c["closed"] for c in kept),
                  "reached through %s: the entry of the socket that lives is left alone" % how,
                  kept)
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
        for p in (holder, named, anon):
            if p is not None:
                p.kill()
                p.wait()
        for ns in (NS, NS_NAMED):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    return conclude(log, WORK)


if __name__ == "__main__":
    sys.exit(main())
