#!/usr/bin/env python3
"""End to end, `netlens connections` as an operator uses it: every filter (--proto, --pid,
--comm, --container, --port, --state open|closed|failed), every order (--sort bytes, rtt,
retransmits, start) with --top, human-readable sizes and exact ones (--bytes), --watch through
a pseudo-terminal, and bad input refused with the parameter named; the same filters as query
parameters of /connections. The truth is a workload of the test's own on loopback: its process
id, its command name (set with prctl), its ports and the bytes it sent.

usage: connections_cli_e2e.py path/to/netlens
"""
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

from e2e_support import check, conclude, start_agent, stop_agent

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-conns-")
API = os.path.join(WORK, "api.sock")
COMM = "nlconnstest"
BIG = 200000
WORKLOAD = r'''
import ctypes, json, socket, sys, threading, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME: threads inherit it
big = int(sys.argv[2])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(16)
port = ls.getsockname()[1]
held = []
def serve():
    while True:
        s, _ = ls.accept()
        held.append(s)
        threading.Thread(target=drain, args=(s,), daemon=True).start()
def drain(s):  # reads until the peer closes, then closes too
    while s.recv(65536):
        pass
    s.close()
threading.Thread(target=serve, daemon=True).start()
big_c = socket.create_connection(("127.0.0.1", port)); big_c.sendall(b"b" * big)
small_c = socket.create_connection(("127.0.0.1", port)); small_c.sendall(b"s" * 10)
gone = socket.create_connection(("127.0.0.1", port)); gone.sendall(b"g" * 5); gone.close()
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); dead = probe.getsockname()[1]; probe.close()
try:
    socket.create_connection(("127.0.0.1", dead), 2)
except OSError:
    pass
us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); us.bind(("127.0.0.1", 0))
uc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); uc.connect(us.getsockname())
for _ in range(3):
    uc.send(b"u" * 100); us.recv(100)
time.sleep(0.5)
print(json.dumps({"pid": __import__("os").getpid(), "port": port, "dead": dead,
                  "udp": us.getsockname()[1]}), flush=True)
sys.stdin.read()
'''


def run(*args, timeout=20):
    return subprocess.run([NETLENS, "connections", "--socket", API, *args], capture_output=True,
                          text=True, timeout=timeout)


client_no = [0]


def query(*args):
    """The agent's JSON for these filters, as a client that has seen nothing yet."""
    client_no[0] += 1
    out = run("--json", "--client", "e2e%d" % client_no[0], *args)
    if out.returncode != 0:
        raise RuntimeError("netlens connections %s: %s" % (args, out.stderr))
    return json.loads(out.stdout)["connections"]


def ports(c):
    return {c["sport"], c["dport"]}


def descending(conns, key):
    vals = [key(c) for c in conns]
    return vals == sorted(vals, reverse=True)


def watch_frames(args, seconds):
    """`netlens connections --watch ...` on a pseudo-terminal for `seconds`, then Ctrl-C."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(NETLENS, [NETLENS, "connections", "--socket", API, *args])
    out = b""
    deadline = time.time() + seconds
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    os.kill(pid, signal.SIGINT)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return out.decode(errors="replace"), status


def main():
    cfg = os.path.join(WORK, "netlens.toml")
    log = os.path.join(WORK, "agent.log")
    with open(cfg, "w") as f:
        f.write('[agent]\napi_socket = "%s"\n[console]\nsocket = "%s/console.sock"\n'
                % (API, WORK))
    agent = work = None
    try:
        agent = start_agent(NETLENS, cfg, log)
        # Closed connections go to each client once and leave the buffer when every client
        # known has had them: the clients this test asks as are known before anything closes.
        for n in range(1, 40):
            run("--json", "--client", "e2e%d" % n)
        for name in ("table1", "table2", "table3"):
            run("--json", "--client", name)
        work = subprocess.Popen([sys.executable, "-c", WORKLOAD, COMM, str(BIG)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        info = json.loads(work.stdout.readline())
        time.sleep(0.3)
        P, DEAD, UDP = info["port"], info["dead"], info["udp"]

        mine = query("--pid", str(info["pid"]))
        check(len(mine) >= 9 and all(c["pid"] == info["pid"] for c in mine),
              "--pid: the workload's own connections, and only those",
              [(c["pid"], c["comm"], c["sport"], c["dport"]) for c in mine])
        named = query("--comm", COMM)
        check(named and all(c["comm"] == COMM for c in named)
              and {(c["sport"], c["dport"]) for c in named} ==
              {(c["sport"], c["dport"]) for c in mine},
              "--comm: the same connections, by command name", len(named))
        tcp = query("--proto", "tcp", "--pid", str(info["pid"]))
        udp = query("--proto", "udp", "--pid", str(info["pid"]))
        check(tcp and all(c["type"] == "tcp" for c in tcp) and udp
              and all(c["type"] == "udp" for c in udp)
              and any(UDP in ports(c) for c in udp) and len(tcp) + len(udp) == len(mine),
              "--proto tcp / udp split them", (len(tcp), len(udp), len(mine)))
        on_port = query("--port", str(P))
        check(len(on_port) == 6 and all(P in ports(c) for c in on_port),
              "--port: both ends of the three connections to the server's port",
              [(c["sport"], c["dport"], c["closed"]) for c in on_port])
        opened = query("--state", "open", "--port", str(P))
        closed = query("--state", "closed", "--port", str(P))
        check(len(opened) == 4 and not any(c["closed"] for c in opened)
              and len(closed) == 2 and all(c["closed"] for c in closed),
              "--state open / closed", ([c["closed"] for c in opened],
                                        [c["closed"] for c in closed]))
        failed = query("--state", "failed", "--pid", str(info["pid"]))
        check(len(failed) == 1 and failed[0]["dport"] == DEAD and failed[0]["failed"],
              "--state failed: the refused connect, and only it",
              [(c["sport"], c["dport"], c["tcp_state"]) for c in failed])
        check(query("--container", "0123456789ab") == [],
              "--container: no connection of a container this host does not run")

        by_bytes = query("--port", str(P), "--sort", "bytes")
        check(descending(by_bytes, lambda c: c["bytes_sent"] + c["bytes_recv"])
              and by_bytes[0]["bytes_sent"] + by_bytes[0]["bytes_recv"] == BIG,
              "--sort bytes: the 200,000-byte connection first, then descending",
              [c["bytes_sent"] + c["bytes_recv"] for c in by_bytes])
        # (The sending end's live count may lag: TCP's sent bytes are what was acknowledged at
        # its last send; only the receiving end is sure to show all 200,000 while open.)
        top = query("--port", str(P), "--sort", "bytes", "--top", "2")
        check([(c["sport"], c["dport"]) for c in top] ==
              [(c["sport"], c["dport"]) for c in by_bytes[:2]],
              "--top 2 after --sort bytes: the first two of that order",
              ([c["bytes_sent"] + c["bytes_recv"] for c in top],
               [c["bytes_sent"] + c["bytes_recv"] for c in by_bytes]))
        for key, field in (("rtt", lambda c: c["rtt_us"]),
                           ("retransmits", lambda c: c["retransmits"]),
                           ("start", lambda c: c["start_time_ns"])):
            got = query("--pid", str(info["pid"]), "--sort", key)
            check(len(got) == len(mine) and descending(got, field),
                  "--sort %s: descending" % key, [field(c) for c in got])

        table = run("--port", str(P), "--sort", "bytes", "--client", "table1").stdout
        exact = run("--port", str(P), "--sort", "bytes", "--bytes", "--client", "table2").stdout
        human = "%.0fK" % (BIG / 1024)
        check(re.search(r"\s%s\s" % human, table) and not re.search(r"\s%d\s" % BIG, table),
              "the table shows sizes for people (%s)" % human, table)
        check(re.search(r"\s%d\s" % BIG, exact) is not None,
              "--bytes shows the exact count (%d)" % BIG, exact)
        check(re.search(r"FAILED:refused .*:%d" % DEAD, run("--state", "failed", "--client",
                                                     "table3").stdout) is not None,
              "the table marks the refused connect FAILED:refused")

        text, status = watch_frames(["--watch", "0.5", "--port", str(P)], 1.8)
        frames = text.split("\x1b[H\x1b[2J")[1:]
        check(len(frames) >= 3 and all("Every 0.5s: netlens connections" in f for f in frames)
              and all(re.search(r":%d\s" % P, f) for f in frames[:-1]),
              "--watch 0.5 redraws the table on a terminal every half second",
              (len(frames), text[-800:]))
        check(os.WIFSIGNALED(status) or os.WIFEXITED(status), "--watch ends on Ctrl-C")

        bad = run("--port", "70000")
        check(bad.returncode == 2 and "port: '70000' is not a port" in bad.stderr,
              "--port 70000 is refused with the parameter named, exit 2", bad.stderr)
        bad = run("--state", "listening")
        check(bad.returncode == 2 and "--state" in bad.stderr,
              "--state listening is refused by the CLI, exit 2", bad.stderr)
        curl = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--unix-socket", API,
                               "http://localhost/connections?sort=size"],
                              capture_output=True, text=True)
        check(curl.stdout.endswith("\n400") and "sort: 'size' is not" in curl.stdout,
              "/connections?sort=size: 400 naming the parameter", curl.stdout)
        curl = subprocess.run(["curl", "-sf", "--unix-socket", API,
                               "http://localhost/connections?client_id=curl1&proto=udp&port=%d"
                               % UDP], capture_output=True, text=True)
        got = json.loads(curl.stdout)["connections"] if curl.returncode == 0 else []
        check(got and all(c["type"] == "udp" and UDP in ports(c) for c in got),
              "the same filters as query parameters of /connections", curl.stdout[-500:])
    finally:
        if work:
            work.stdin.close()
            work.wait(timeout=10)
        if agent:
            stop_agent(agent)
    return conclude(log, WORK)


if __name__ == "__main__":
    sys.exit(main())
