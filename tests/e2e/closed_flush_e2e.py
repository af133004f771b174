#!/usr/bin/env python3
"""End to end: a connection closed before a connections request is in that request's answer,
exactly once across that client's requests, with the ring buffer and with the perf buffer.

The agent is configured so that nothing but the flush could deliver in time: the reader's
timer is 10 s and a batch is 64 records. K connections (K not a multiple of
any batch size) close on every CPU, each thread pinned to its own, and the client asks at
once. Traffic stays on loopback.
"""
import functools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import e2e_support
from e2e_support import api_json, query_connections, run_test, start_agent, stop_agent

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-flush-")
SOCK = os.path.join(WORK, "run", "netlens.sock")
check = functools.partial(e2e_support.check, sep=" ", keep=None)


def start(closed_buffer):
    cfg = os.path.join(WORK, closed_buffer + ".toml")
    with open(cfg, "w") as f:
        f.write('[agent]\napi_socket = "%s"\n\n[tracer]\nclosed_buffer = "%s"\n'
                'closed_batch_size = 64\nclosed_flush_interval_ms = 10000\n'
                % (SOCK, closed_buffer))
    return start_agent(NETLENS, cfg, os.path.join(WORK, closed_buffer + ".log"), timeout=10)


def connections(client):
    return query_connections(NETLENS, SOCK, client)["connections"]


def close_on_cpu(cpu, listener, count, ports):
    os.sched_setaffinity(0, {cpu})  # this thread only
    for _ in range(count):
        c = socket.create_connection(listener.getsockname())
        s, _ = listener.accept()
        c.sendall(b"q")
        s.recv(1)
        ports.append(c.getsockname()[1])
        c.close()
        s.close()


def run(closed_buffer, k_per_cpu):
    agent = start(closed_buffer)
    try:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        lport = listener.getsockname()[1]
        connections("flush")  # the client exists before the closes
        cpus = sorted(os.sched_getaffinity(0))
        ports = []
        threads = []
        for cpu in cpus:
            t = threading.Thread(target=close_on_cpu, args=(cpu, listener, k_per_cpu, ports))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        listener.close()
        # The socket's own TCP close (FIN handshake) completes in the kernel's softirq right
        # after close(); give that a moment, never the reader's 10 s timer.
        time.sleep(0.05)
        want = set(ports)
        first = connections("flush")
        got = [c["sport"] for c in first
               if c["closed"] and c["dport"] == lport and c["sport"] in want]
        check(set(got) == want,
              "%s: all %d connections closed on %d CPUs are in the next answer"
              % (closed_buffer, len(want), len(cpus)), sorted(want - set(got)))
        check(len(got) == len(set(got)), "%s: none twice in that answer" % closed_buffer)
        seen_again = []
        for _ in range(3):
            seen_again += [c["sport"] for c in connections("flush")
                           if c["closed"] and c["dport"] == lport]
        check(not seen_again, "%s: none again in the following answers" % closed_buffer,
              seen_again)
        st = api_json(SOCK, "/stats")
        pc = st["actors"]["perf_consumer"]["counters"]
        tr = st["actors"]["tracer"]["counters"]
        check(pc["flushes"] >= 5 and pc["flushes_asked"] >= 5 and tr["flush_errors"] == 0,
              "%s: each answer flushed the consumer first" % closed_buffer,
              (pc, tr["flush_errors"]))
        if closed_buffer == "perf":
            check(pc["pending_taken"] > 0,
                  "perf: records were taken from batches still filling", pc)
    finally:
        check(stop_agent(agent, timeout=20) == 0, "%s: agent exits 0" % closed_buffer)


def main():
    for closed_buffer in ("ring", "perf"):
        run(closed_buffer, 7)


if __name__ == "__main__":
    run_test(main, "flush e2e", teardown=lambda: subprocess.run(["rm", "-rf", WORK]))
