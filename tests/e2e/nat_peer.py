#!/usr/bin/env python3
"""Both ends of the NAT test's traffic, run inside a test namespace with nsenter.

serve TCP_PORTS UDP_PORTS   accept TCP (read to EOF, then close), echo UDP; prints "ready"
connect HOST PORT [SRC]     one TCP connection: send, shut down, read to EOF; prints local port
udp HOST PORT               one UDP exchange on a connected socket; prints local port
hold HOST PORT              connect, print local port; send a byte per stdin line; close at EOF
flood HOST PORT SECONDS RATE  short UDP flows (a new socket each) at about RATE/s; prints count
setup NETNS_PATH LISTEN N   run on the host: enters the namespace without an exec there (as a
                            CNI plugin does), loads the nftables rules read from stdin through
                            libnftables, serves TCP on LISTEN (host:port) and prints "ready";
                            after N connections have come and gone, prints their source ports
                            as one JSON list
"""
import ctypes
import json
import os
import socket
import sys
import threading
import time


def serve(tcp_ports, udp_ports):
    def tcp_loop(ls):
        while True:
            s, _ = ls.accept()
            threading.Thread(target=drain, args=(s,), daemon=True).start()

    def drain(s):
        try:
            while s.recv(65536):
                pass
        finally:
            s.close()

    def udp_loop(us):
        while True:
            data, peer = us.recvfrom(65536)
            us.sendto(data, peer)

    for port in tcp_ports:
        host, p = port.rsplit(":", 1)
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, int(p)))
        ls.listen(512)
        threading.Thread(target=tcp_loop, args=(ls,), daemon=True).start()
    for port in udp_ports:
        host, p = port.rsplit(":", 1)
        us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        us.bind((host, int(p)))
        threading.Thread(target=udp_loop, args=(us,), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin


def connect(host, port, src=None):
    c = socket.socket()
    if src:
        c.bind((src, 0))
    c.connect((host, port))
    print(c.getsockname()[1], flush=True)
    # Live a moment: a connection claimed within a millisecond or two of its start can beat
    # its conntrack NEW event to the cache (a known race; slower sanitizer builds hit it).
    time.sleep(0.05)
    c.sendall(b"n" * 1000)
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    c.close()


def udp(host, port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((host, port))
    u.settimeout(2)
    time.sleep(0.05)  # as in connect()
    u.send(b"ping")
    u.recv(100)
    print(u.getsockname()[1], flush=True)
    u.close()


def hold(host, port):
    c = socket.create_connection((host, port))
    print(c.getsockname()[1], flush=True)
    for _ in sys.stdin:
        c.sendall(b"h")
        print("sent", flush=True)
    c.close()


def flood(host, port, seconds, rate):
    # Paced: enough to be many times the agent's rate limit, far from filling the namespace's
    # conntrack table.
    start = time.monotonic()
    end = start + seconds
    n = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if n > (now - start) * rate:
            time.sleep(0.001)
            continue
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x", (host, port))
        u.close()
        n += 1
    print(n, flush=True)


def setup(netns_path, listen, n):
    # Nothing is exec'd inside the namespace: the agent first hears of it when the test's
    # client is, as with a container whose network a CNI plugin set up.
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        sys.exit("setns: " + os.strerror(ctypes.get_errno()))
    os.close(fd)
    nft = ctypes.CDLL("libnftables.so.1")
    nft.nft_ctx_new.restype = ctypes.c_void_p
    nft.nft_ctx_new.argtypes = [ctypes.c_uint32]
    nft.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    nft.nft_ctx_free.argtypes = [ctypes.c_void_p]
    ctx = nft.nft_ctx_new(0)
    rc = nft.nft_run_cmd_from_buffer(ctx, sys.stdin.read().encode())
    nft.nft_ctx_free(ctx)
    if rc != 0:
        sys.exit("loading the nftables rules failed")
    host, port = listen.rsplit(":", 1)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(512)
    print("ready", flush=True)
    ports, threads = [], []

    def drain(s):
        try:
            while s.recv(65536):
                pass
        finally:
            s.close()

    ls.settimeout(30)
    for _ in range(n):
        s, peer = ls.accept()
        ports.append(peer[1])
        t = threading.Thread(target=drain, args=(s,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    print(json.dumps(ports), flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "serve":
        serve([p for p in args[0].split(",") if p], [p for p in args[1].split(",") if p])
    elif mode == "connect":
        connect(args[0], int(args[1]), args[2] if len(args) > 2 else None)
    elif mode == "udp":
        udp(args[0], int(args[1]))
    elif mode == "hold":
        hold(args[0], int(args[1]))
    elif mode == "flood":
        flood(args[0], int(args[1]), float(args[2]), float(args[3]))
    elif mode == "setup":
        setup(args[0], args[1], int(args[2]))
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
