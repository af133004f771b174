#!/usr/bin/env python3
"""The processes of the netns test, each run inside a test namespace with nsenter (or on the
host). Every mode stays alive until its stdin is closed, so the namespace it sits in keeps a
live process for exactly as long as the test wants.

serve HOST TCP_PORT UDP_PORT  TCP: every chunk read is sent back twice, close at EOF; UDP: every
                              datagram is sent back twice. Port 0: any. Prints "ready TCP UDP".
idle                          prints "ready"; holds the namespace until stdin closes
client JSON                   {"comm": NAME?, "cgroup": DIR?, "ops": [{"kind": "tcp"|"udp",
                              "host", "port", "n", "keep": bool?, "src": addr?}],
                              "reexec": bool?}: sets its comm, moves itself into DIR (with
                              reexec: moves, then execs itself again), runs the ops in order.
                              A tcp op sends n bytes and reads 2n back; unless keep, it then
                              shuts down, reads to EOF and closes. A udp op sends one datagram
                              of n bytes on a connected socket and reads the 2n back, then
                              closes. Prints one JSON line {"pid", "ports": [local port per
                              op]}; then each stdin line sends one byte more on every kept
                              connection (and reads the two back), printing "sent"; at EOF
                              the kept ones are closed.
"""
import ctypes
import json
import os
import socket
import sys
import threading
import time

PR_SET_NAME = 15


def serve(host, tcp_port, udp_port):
    def tcp_loop(ls):
        while True:
            s, _ = ls.accept()
            threading.Thread(target=doubler, args=(s,), daemon=True).start()

    def doubler(s):
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                s.sendall(data + data)
        except OSError:
            pass
        finally:
            s.close()

    def udp_loop(us):
        while True:
            data, peer = us.recvfrom(65536)
            us.sendto(data + data, peer)

    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, tcp_port))
    ls.listen(128)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.bind((host, udp_port))
    threading.Thread(target=tcp_loop, args=(ls,), daemon=True).start()
    threading.Thread(target=udp_loop, args=(us,), daemon=True).start()
    print("ready %d %d" % (ls.getsockname()[1], us.getsockname()[1]), flush=True)
    sys.stdin.read()


def read_exactly(s, n):
    got = 0
    while got < n:
        data = s.recv(min(65536, n - got))
        if not data:
            raise RuntimeError("peer closed after %d of %d bytes" % (got, n))
        got += len(data)


def client(spec):
    spec = json.loads(spec)
    if spec.pop("reexec", False):
        # Join the cgroup, then exec, as container runtimes do: the cgroup is already the
        # container's when the exec event comes.
        with open(os.path.join(spec.pop("cgroup"), "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), "client",
                                  json.dumps(spec)])
    if spec.get("comm"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NAME, ctypes.c_char_p(spec["comm"].encode()), 0, 0, 0) != 0:
            sys.exit("prctl: errno %d" % ctypes.get_errno())
    if spec.get("cgroup"):
        with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    ports, kept = [], []
    for op in spec["ops"]:
        n = op["n"]
        if op["kind"] == "tcp":
            c = socket.socket()
            if op.get("src"):
                c.bind((op["src"], 0))
            c.settimeout(5)
            c.connect((op["host"], op["port"]))
            ports.append(c.getsockname()[1])
            # Live a moment first: a connection claimed within a millisecond or two of its
            # start can beat its conntrack NEW event to the cache (see nat_peer.py).
            time.sleep(0.05)
            c.sendall(b"c" * n)
            read_exactly(c, 2 * n)
            if op.get("keep"):
                kept.append(c)
                continue
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
            c.close()
        else:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.connect((op["host"], op["port"]))
            ports.append(u.getsockname()[1])
            time.sleep(0.05)
            u.send(b"u" * n)
            data = u.recv(65536)
            if len(data) != 2 * n:
                raise RuntimeError("udp: %d bytes back, not %d" % (len(data), 2 * n))
            u.close()
    print(json.dumps({"pid": os.getpid(), "ports": ports}), flush=True)
    for _ in sys.stdin:
        for c in kept:
            c.sendall(b"k")
            read_exactly(c, 2)
        print("sent", flush=True)
    for c in kept:
        c.close()


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "serve":
        serve(args[0], int(args[1]), int(args[2]))
    elif mode == "idle":
        print("ready", flush=True)
        sys.stdin.read()
    elif mode == "client":
        client(args[0])
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
