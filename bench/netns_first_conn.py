#!/usr/bin/env python3
"""Time from a network namespace's creation to its first fully attributed connection in the
agent's /connections: the connection carries the new namespace's inode, the process's pid, and
device counts (which needs the namespace found through the exec event, its handle saved, its
devices listed over rtnetlink and a TC classifier attached to its loopback, all before the
packets were counted). Driven by bench/netns_first_conn, which starts the agent.

Each run: t0, then `unshare -n` starts a process in a brand-new namespace that brings lo up,
listens on loopback and opens a new connection every 20 ms; /connections is polled every 10 ms
until one of its connections is attributed. Prints every run and the median and max.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import time

SOCK = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
TIMEOUT_S = 10.0

CLIENT = r"""
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(512)
held = []
while True:
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    c.sendall(b"x" * 100); s.recv(100)
    held += [c, s]
    time.sleep(0.02)
"""


class unix_http(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("netlens", timeout=5)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def connections():
    c = unix_http(SOCK)
    c.request("GET", "/connections?client_id=netns-first-conn")
    body = c.getresponse().read()
    c.close()
    return json.loads(body)["connections"]


def one_run():
    own = os.stat("/proc/self/ns/net").st_ino
    t0 = time.monotonic()
    p = subprocess.Popen(["unshare", "-n", "--", "sh", "-c",
                          "ip link set lo up && exec python3 -c '%s'" % CLIENT.replace("'", '"')])
    try:
        inode = 0
        while time.monotonic() - t0 < TIMEOUT_S:
            try:
                ino = os.stat("/proc/%d/ns/net" % p.pid).st_ino
            except FileNotFoundError:
                ino = 0
            if ino and ino != own:
                inode = ino
                break
            time.sleep(0.001)
        if not inode:
            raise RuntimeError("the child never entered a namespace of its own")
        while time.monotonic() - t0 < TIMEOUT_S:
            for c in connections():
                if c["netns"] == inode and c["pid"] == p.pid and c.get("device"):
                    return (time.monotonic() - t0) * 1000.0
            time.sleep(0.01)
        raise RuntimeError("no attributed connection of namespace %d within %.0f s"
                           % (inode, TIMEOUT_S))
    finally:
        p.kill()
        p.wait()


def main():
    times = []
    for i in range(RUNS):
        ms = one_run()
        times.append(ms)
        print("run %d: %.1f ms" % (i + 1, ms), flush=True)
        time.sleep(0.2)
    times.sort()
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    print("namespace creation -> first attributed connection: median %.1f ms, max %.1f ms "
          "over %d runs" % (median, times[-1], len(times)))
    print("RESULT median_ms=%.1f max_ms=%.1f runs=%d" % (median, times[-1], len(times)))


if __name__ == "__main__":
    main()
