#!/usr/bin/env python3
"""Starting and stopping the agent never stalls the host's traffic. Connect loops run on lo and
across a veth pair into a namespace the test builds; the agent starts (classifiers on every
device, lo included), runs, and stops in order while they go on. Each connection (connect,
one byte each way, close) is timed by the client itself: none may take 200 ms or more (a SYN
dropped while a qdisc is created waits a 1 s retransmit), out of at least 2,000. The
classifiers attach as TCX links: no clsact qdisc appears on the test's devices, and /stats says
tc_attach_mode = tcx.

usage: start_stall_e2e.py path/to/netlens
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from e2e_support import (add_veth_namespace, check, failures, remove_veth_namespace,
                         start_agent, stop_agent, wait_for, write_config)

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-stall-")
NS = "nlstall%d" % os.getpid()
HOST_VETH = "nlsth%d" % (os.getpid() % 100000)
HOST_ADDR, NS_ADDR = "10.237.1.1", "10.237.1.2"
STALL_S = 0.2
SERVER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4096)
print("listening", flush=True)
def serve(c):
    try:
        c.sendall(c.recv(1))
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


class connect_loop(threading.Thread):
    """Connects to addr:port over and over; the duration of each connection, as it saw it."""

    def __init__(self, addr, port):
        super().__init__(daemon=True)
        self.addr, self.port = addr, port
        self.times, self.errors = [], []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                c = socket.create_connection((self.addr, self.port), timeout=5)
                c.sendall(b"x")
                c.recv(1)
                c.close()
                self.times.append(time.monotonic() - t0)
            except OSError as e:
                self.errors.append(str(e))
                time.sleep(0.01)


def main():
    cfg, api = write_config(WORK, "[netns]\ntc_exclude = []\n")
    log = os.path.join(WORK, "agent.log")
    servers, loops, agent = [], [], None
    try:
        add_veth_namespace(NS, HOST_VETH, HOST_ADDR, "c0", NS_ADDR)
        for where, addr in ((None, "127.0.0.1"), (NS, NS_ADDR)):
            port = 7300
            cmd = ([] if where is None else ["ip", "netns", "exec", where]) + [
                sys.executable, "-c", SERVER, addr, str(port)]
            srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            servers.append(srv)
            check(srv.stdout.readline().strip() == "listening", "server on %s:%d" % (addr, port))
            loops.append(connect_loop(addr, port))
        for loop in loops:
            loop.start()
        time.sleep(1.0)
        agent = start_agent(NETLENS, cfg, log)

        def netns_stats():
            r = subprocess.run(["curl", "-sf", "--unix-socket", api, "http://localhost/stats"],
                               capture_output=True, text=True)
            try:
                netns = json.loads(r.stdout)["actors"]["netns"]
            except (ValueError, KeyError):
                return None
            return netns if netns["counters"].get("tc_attached_devices", 0) >= 3 else None
        st = wait_for(netns_stats, 10, 0.2)
        check(st is not None, "the classifiers are on lo, the host's veth and the namespace's "
              "(tc_attached_devices >= 3)", st)
        if st:
            check(st.get("info", {}).get("tc_attach_mode") == "tcx",
                  "/stats: netns tc_attach_mode = tcx", st.get("info"))
        for args in (["dev", "lo"], ["dev", HOST_VETH], ["-n", NS, "dev", "c0"]):
            cmd = ["tc"] + (args[:2] if args[0] == "-n" else []) + ["qdisc", "show"] + args[-2:]
            out = subprocess.run(cmd, capture_output=True, text=True).stdout
            check("clsact" not in out, "no clsact qdisc created: %s" % " ".join(cmd), out)
        time.sleep(1.0)
        code = stop_agent(agent)
        agent = None
        check(code == 0, "the agent stops in order (exit 0)", open(log).read()[-2000:])
        time.sleep(0.5)
    finally:
        for loop in loops:
            loop.stop.set()
        for loop in loops:
            loop.join(timeout=10)
        if agent is not None:
            stop_agent(agent)
        for srv in servers:
            srv.kill()
            srv.wait()
        remove_veth_namespace(NS, HOST_VETH)
    total = sum(len(l.times) for l in loops)
    for loop in loops:
        slow = sorted(t for t in loop.times if t >= STALL_S)
        worst = max(loop.times) if loop.times else 0
        print("%s: %d connections, slowest %.1f ms, %d errors" %
              (loop.addr, len(loop.times), worst * 1000, len(loop.errors)))
        check(not slow, "no connection to %s took %d ms or more across the agent's start and "
              "stop" % (loop.addr, STALL_S * 1000), ["%.0f ms" % (t * 1000) for t in slow])
        check(not loop.errors, "no connection to %s failed" % loop.addr, loop.errors[:5])
    check(total >= 2000, "at least 2,000 connections timed (%d)" % total)
    shutil.rmtree(WORK, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
