#!/usr/bin/env python3
"""Failed TCP connects are records of their own: refused (no listener, v4 and v6), timed out (a
drop rule in a namespace the test builds), and given up by the application (closed while the
SYN waits). Each is reported once, with the source port the client's own getsockname() saw
and its reason in "failure", counted in /metrics, and shown in the table as FAILED:<reason>.

usage: failed_connect_e2e.py path/to/netlens
"""
import errno
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

from e2e_support import (add_veth_namespace, check, conclude, free_tcp_port,
                         remove_veth_namespace, start_agent, stop_agent, wait_for, write_config)

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-failed-")
CFG, API = write_config(WORK)
NS = "nlfail%d" % os.getpid()
HOST_VETH = "nlfh%d" % (os.getpid() % 100000)
HOST_ADDR, NS_ADDR = "10.238.1.1", "10.238.1.2"
DROPPED_PORT = 7499


def build():
    add_veth_namespace(NS, HOST_VETH, HOST_ADDR, "f0", NS_ADDR)
    # Every SYN to DROPPED_PORT vanishes: the connect times out.
    subprocess.run(["ip", "netns", "exec", NS, "nft", "-f", "-"], check=True, text=True,
                   input="table inet nltest {\n chain in {\n  type filter hook input priority 0;\n"
                         "  tcp dport %d drop\n }\n}\n" % DROPPED_PORT)


def start_connect(family, addr, port, syn_count=None):
    """A non-blocking connect; the socket and the source port it was given."""
    s = socket.socket(family, socket.SOCK_STREAM)
    if syn_count is not None:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syn_count)
    s.setblocking(False)
    err = s.connect_ex((addr, port))
    port_seen = s.getsockname()[1]
    return s, port_seen, err


def finish(s, timeout):
    """Waits for the connect's outcome: the socket's error (0: connected)."""
    select.select([], [s], [], timeout)
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def connections(*args):
    r = subprocess.run([NETLENS, "connections", "--socket", API, "--client", "failtest", *args],
                       capture_output=True, text=True)
    return r


def main():
    log = os.path.join(WORK, "agent.log")
    agent = None
    expected = {}  # source port -> failure
    try:
        build()
        agent = start_agent(NETLENS, CFG, log)
        # Two clients, registered before the connects: a client is handed what closed after its
        # first call.
        connections("--json")
        subprocess.run([NETLENS, "connections", "--socket", API, "--client", "table"],
                       capture_output=True)

        # Refused: nothing listens there; the kernel answers the SYN with a reset.
        for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s, port, _ = start_connect(family, addr, free_tcp_port())
            err = finish(s, 5)
            s.close()
            check(err == errno.ECONNREFUSED, "%s: the client sees ECONNREFUSED" % addr, err)
            expected[port] = "refused"
        # Given up: the SYN is dropped, the application closes the socket first.
        s, port, _ = start_connect(socket.AF_INET, NS_ADDR, DROPPED_PORT)
        time.sleep(0.2)
        s.close()
        expected[port] = "aborted"
        # Timed out: one SYN retransmission (TCP_SYNCNT 1), then the kernel gives up (~3 s).
        s, port, _ = start_connect(socket.AF_INET, NS_ADDR, DROPPED_PORT, syn_count=1)
        t0 = time.monotonic()
        err = 0
        while time.monotonic() - t0 < 15:
            err = finish(s, 1)
            if err:
                break
        s.close()
        check(err == errno.ETIMEDOUT, "the client sees ETIMEDOUT", err)
        expected[port] = "timeout"

        got = {}

        def seen():
            r = connections("--json", "--state", "failed")
            if r.returncode != 0:
                return False
            for c in json.loads(r.stdout)["connections"]:
                got.setdefault(c["sport"], []).append(c)
            return all(p in got for p in expected)
        wait_for(seen, 10, 0.3)
        for port, failure in sorted(expected.items()):
            recs = got.get(port, [])
            check(len(recs) == 1 and recs[0]["failure"] == failure and recs[0]["failed"] and
                  recs[0]["type"] == "tcp",
                  "one record with the client's own source port %d and failure %s" %
                  (port, failure), recs)
        check(0 not in got, "no failed record with source port 0", got.get(0))
        again = connections("--json", "--state", "failed")
        repeated = [c for c in json.loads(again.stdout)["connections"] if c["sport"] in expected]
        check(not repeated, "each failed connect is handed to a client once", repeated)

        metrics = subprocess.run(["curl", "-sf", "--unix-socket", API,
                                  "http://localhost/metrics"], capture_output=True, text=True)
        values = {}
        for line in metrics.stdout.splitlines():
            if line.startswith("netlens_tracer_connect_failures_"):
                name, value = line.rsplit(" ", 1)
                values[name.split("{")[0]] = float(value)
        for reason, n in (("refused", 2), ("timeout", 1), ("aborted", 1)):
            name = "netlens_tracer_connect_failures_%s_total" % reason
            # >=: the host may fail connects of its own meanwhile
            check(values.get(name, 0) >= n, "/metrics %s >= %d" % (name, n), values)

        # The table, for the second client.
        tcp = subprocess.run([NETLENS, "connections", "--socket", API, "--client", "table",
                              "--state", "failed"], capture_output=True, text=True)
        for port, failure in expected.items():
            rows = [l for l in tcp.stdout.splitlines() if ":%d " % port in l]
            check(rows and "FAILED:" + failure in rows[0],
                  "the table shows FAILED:%s for port %d" % (failure, port), tcp.stdout)
        code = stop_agent(agent)
        agent = None
        check(code == 0, "the agent stops in order", code)
    finally:
        if agent is not None:
            stop_agent(agent)
        remove_veth_namespace(NS, HOST_VETH)
    return conclude(log, WORK)


if __name__ == "__main__":
    sys.exit(main())
