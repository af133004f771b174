#!/usr/bin/env python3
"""/connections comes in pages (4,096 connections each) so the agent never holds a whole answer,
and the pages add up to exactly the answer: 3,000 loopback TCP connections (6,000 traced
sockets, so two pages and more), each carrying its own byte count. Checked against what the
application sent and read:
- every socket is listed exactly once, with the bytes it sent or read;
- the answer took more than one page (telemetry answer_pages);
- a second call's deltas ("last") are exactly what moved in between, on every connection;
- sort=bytes&top=N over pages is the N largest by the application's own counts;
- a reader that hangs up after the first chunk leaves the agent serving the next client.

usage: paged_answer_e2e.py path/to/netlens
"""
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile

from e2e_support import check, failures, start_agent, stop_agent, wait_for, write_config

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-paged-")
CFG, API = write_config(WORK)
CONNS = 3000
PAGE = 4096  # the tracer's page size (actors/tracer/tracer_actor.cpp, k_page_size)


def get(path):
    r = subprocess.run(["curl", "-sf", "--max-time", "60", "--unix-socket", API,
                        "http://x" + path], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def read_exactly(s, n):
    got = 0
    while got < n:
        chunk = s.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (4 * CONNS + 256, 4 * CONNS + 256))
    agent = start_agent(NETLENS, CFG, os.path.join(WORK, "agent.log"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    clients, servers, sent = [], [], []
    try:
        for i in range(CONNS):
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = listener.accept()
            n = 7 * (i + 1)
            c.sendall(b"x" * n)
            if read_exactly(s, n) != n:
                check(False, "the server read connection %d's %d bytes" % (i, n))
            clients.append(c)
            servers.append(s)
            sent.append(n)
        # Every byte read by the server before the agent is asked (live TCP counts are acked).
        ports = [c.getsockname()[1] for c in clients]
        truth = {p: n for p, n in zip(ports, sent)}

        before = get("/stats")
        pages_before = before["actors"]["tracer"]["counters"].get("answer_pages", 0)
        first = get("/connections?client_id=paged")
        check(first is not None, "/connections answered")
        conns = first["connections"]
        ours_c = [c for c in conns if c["dport"] == port and c["sport"] in truth]
        ours_s = [c for c in conns if c["sport"] == port and c["dport"] in truth]
        keys = [(c["saddr"], c["sport"], c["daddr"], c["dport"]) for c in conns]
        check(len(keys) == len(set(keys)), "no connection listed twice across pages",
              len(keys) - len(set(keys)))
        check(len(ours_c) == CONNS and len(ours_s) == CONNS,
              "all %d client and %d server sockets listed" % (CONNS, CONNS),
              (len(ours_c), len(ours_s)))
        wrong = [(c["sport"], c["bytes_sent"], truth[c["sport"]]) for c in ours_c
                 if c["bytes_sent"] != truth[c["sport"]]]
        wrong += [(c["dport"], c["bytes_recv"], truth[c["dport"]]) for c in ours_s
                  if c["bytes_recv"] != truth[c["dport"]]]
        check(not wrong, "each socket's bytes are what the application sent and read", wrong[:5])
        check(first["telemetry"].get("map_entries", 0) >= 2 * CONNS,
              "map_entries counts every entry read over the pages", first["telemetry"])
        after = get("/stats")
        pages = after["actors"]["tracer"]["counters"].get("answer_pages", 0) - pages_before
        need = (2 * CONNS + PAGE - 1) // PAGE
        check(pages >= need, "the answer took %d pages (>= %d)" % (pages, need), pages)

        # What moves between two calls is the second call's delta, on every connection.
        extra = {}
        for i, (c, s) in enumerate(zip(clients, servers)):
            if i % 3 == 0:
                n = 3 * (i + 1)
                c.sendall(b"y" * n)
                read_exactly(s, n)
                extra[ports[i]] = n
        second = get("/connections?client_id=paged")
        deltas = {c["sport"]: c["last"]["bytes_sent"] for c in second["connections"]
                  if c["dport"] == port and c["sport"] in truth}
        wrong = [(p, deltas.get(p), extra.get(p, 0)) for p in ports
                 if deltas.get(p) != extra.get(p, 0)]
        check(not wrong and len(deltas) == CONNS,
              "the second call's deltas are exactly what was sent in between", wrong[:5])

        # An ordered, limited query over pages: the largest by the application's counts.
        totals = sorted((truth[p] + extra.get(p, 0) for p in ports), reverse=True)
        top = get("/connections?client_id=sorted&sort=bytes&top=6")
        got = [c["bytes_sent"] + c["bytes_recv"] for c in top["connections"]]
        # Each connection has two ends with the same total: the six largest are three pairs.
        want = sorted(totals[:3] * 2, reverse=True)
        check(got == want, "sort=bytes&top=6 is the six largest ends", (got, want))

        # A reader that hangs up after its first chunk: the next client is still answered.
        u = socket.socket(socket.AF_UNIX)
        u.connect(API)
        u.sendall(b"GET /connections?client_id=quitter HTTP/1.1\r\nHost: x\r\n\r\n")
        u.recv(4096)
        u.close()
        again = get("/connections?client_id=after")
        check(again is not None and len([c for c in again["connections"]
                                         if c["dport"] == port]) == CONNS,
              "after a reader hung up mid-answer the next answer is whole")
        health = get("/stats")
        check(health["actors"]["tracer"]["state"] == "running", "the tracer still runs",
              health["actors"]["tracer"])
    finally:
        for sock in clients + servers:
            sock.close()
        listener.close()
        rc = stop_agent(agent)
        check(rc == 0, "the agent stopped cleanly", rc)
    shutil.rmtree(WORK, ignore_errors=True)
    if failures:
        print("FAILED: %d checks" % len(failures))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
