#!/usr/bin/env python3
"""End to end, Prometheus metrics: the real agent with its own config, sockets and a free port.

GET /metrics on the API socket and on the TCP metrics port, each page checked by
`promtool check metrics` (any complaint fails); the figures are live (counters move after
loopback traffic) and every figure /stats shows is on the page; the TCP port serves nothing
but /metrics; with metrics.port = 0 the agent has no listening TCP socket at all; the port binds
loopback unless another address is configured (0.0.0.0 is tried inside a private network
namespace, so nothing is exposed); a port already taken stops the start with exit 3 naming it.
Every metric family on the page is named in docs/operations.md.

A crash of the api actor (test build's fault switch) ends with the port bound again, once.

usage: metrics_e2e.py path/to/netlens path/to/docs/operations.md [path/to/netlens-fault]
"""
import functools
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import e2e_support
from e2e_support import (add_namespace, api_get, curl, end_started, failures, free_tcp_port,
                         in_ns, remove_namespace, start_agent, stop_agent)

NETLENS = os.path.abspath(sys.argv[1])
OPERATIONS_DOC = os.path.abspath(sys.argv[2])
# The test build with the fault switch (build/netlens-fault), for the api restart scenario.
FAULT_BIN = os.path.abspath(sys.argv[3]) if len(sys.argv) > 3 else None
WORK = tempfile.mkdtemp(prefix="netlens-metrics-")
NETNS = "nlmetrics%d" % os.getpid()
CONTENT_TYPE = "text/plain; version=0.0.4"
# Its failures print their detail whole, after a space, as they always have.
check = functools.partial(e2e_support.check, sep=" ", keep=None)


def write_config(name, port, address=None):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "netlens.toml")
    with open(path, "w") as f:
        f.write('[agent]\napi_socket = "%s/run/api.sock"\n' % d)
        f.write('[console]\nsocket = "%s/run/console.sock"\n' % d)
        f.write('[tracer]\ncache_dir = "%s/cache"\n' % WORK)
        f.write("[metrics]\nport = %d\n" % port)
        if address is not None:
            f.write('address = "%s"\n' % address)
    return path, os.path.join(d, "run", "api.sock")


def start(cfg, ns=None, binary=None):
    """The agent (NETLENS unless binary) with config cfg, in network namespace ns if given;
    returns it and its log's path."""
    log_path = cfg + ".log"
    return start_agent(binary or NETLENS, cfg, log_path, timeout=30, ns=ns), log_path


def get_tcp(host, port, path, prefix=()):
    h = "[%s]" % host if ":" in host else host
    return curl(["http://%s:%d%s" % (h, port, path)], prefix=prefix)


def promtool_clean(text, what):
    """promtool must accept the page without a single remark (an empty page passes promtool, so
    it must not be empty either)."""
    if not check("# TYPE " in text, what + ": page has metric families", text[:200]):
        return
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
          what + ": promtool check metrics has no complaint",
          "rc=%d %s%s" % (r.returncode, r.stdout, r.stderr))


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$')


def samples(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def families(text):
    return re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)


def agent_listeners(pid):
    """TCP sockets the agent process listens on, as (address, port): its socket inodes matched
    against the LISTEN (0A) rows of its network namespace's tcp tables."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        try:
            rows = open("/proc/%d/net/%s" % (pid, table)).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in inodes:
                continue
            hexaddr, hexport = cols[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addr = ipaddress.IPv6Address(raw) if v6 else ipaddress.IPv4Address(raw)
            found.append((str(addr), int(hexport, 16)))
    return sorted(found)


def loopback_traffic(n):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(n)
    for _ in range(n):
        c = socket.create_connection(ls.getsockname())
        s, _ = ls.accept()
        c.sendall(b"x" * 1000)
        got = 0
        while got < 1000:
            got += len(s.recv(65536))
        c.close()
        s.close()
    ls.close()


def scenario_loopback_port():
    port = free_tcp_port()
    cfg, sock = write_config("loopback", port)
    p, log = start(cfg)
    try:
        code, ctype, unix_page = api_get(sock, "/metrics")
        check(code == 200 and ctype.startswith(CONTENT_TYPE),
              "GET /metrics on the API socket: 200 " + CONTENT_TYPE, (code, ctype))
        promtool_clean(unix_page, "API socket page")
        code, ctype, tcp_page = get_tcp("127.0.0.1", port, "/metrics")
        check(code == 200 and ctype.startswith(CONTENT_TYPE),
              "GET /metrics on TCP 127.0.0.1:%d: 200 %s" % (port, CONTENT_TYPE), (code, ctype))
        promtool_clean(tcp_page, "TCP port page")

        for path in ("/connections", "/connections?client_id=x", "/stats", "/healthz", "/"):
            code, _, body = get_tcp("127.0.0.1", port, path)
            check(code == 404 and "connections\"" not in body,
                  "TCP port refuses %s (404)" % path, (code, body[:100]))
        check(agent_listeners(p.pid) == [("127.0.0.1", port)],
              "the agent listens on TCP 127.0.0.1:%d only" % port, agent_listeners(p.pid))

        # Live figures: loopback connections move the closed-connection counters.
        before = samples(api_get(sock, "/metrics")[2])
        n = 25
        loopback_traffic(n)
        after = {}
        for _ in range(40):
            time.sleep(0.1)
            after = samples(get_tcp("127.0.0.1", port, "/metrics")[2])
            key = 'netlens_perf_consumer_records_received_total{actor="perf_consumer"}'
            if after.get(key, 0) - before.get(key, 0) >= n:
                break
        for key in ('netlens_perf_consumer_records_received_total{actor="perf_consumer"}',
                    'netlens_tracer_closed_received_total{actor="tracer"}'):
            check(key in before and after.get(key, 0) - before[key] >= n,
                  "%s moved by at least %d after %d loopback connections" % (key, n, n),
                  (before.get(key), after.get(key)))
        # The unix server counts a request before answering it: each scrape sees itself.
        key = 'netlens_api_requests_total{actor="api"}'
        for _ in range(3):
            api_get(sock, "/healthz")
        again = samples(api_get(sock, "/metrics")[2])
        check(again.get(key, 0) - before.get(key, 0) == 4,
              key + " counts the API socket requests (3 + this scrape)",
              (before.get(key), again.get(key)))
        key = 'netlens_api_metrics_port_requests_total{actor="api"}'
        check(after.get(key, 0) >= 6, key + " counts the TCP port requests", after.get(key))
        key = 'netlens_tracer_map_capacity{actor="tracer"}'
        check(after.get(key) == 65536, key + " is the configured map size", after.get(key))
        for a in ("supervisor", "conntrack", "tracer", "perf_consumer", "compact_ticker", "api"):
            check(after.get('netlens_actor_up{actor="%s"}' % a) == 1, "actor %s is up" % a)
            check(after.get('netlens_actor_messages_handled_total{actor="%s"}' % a, 0) > 0,
                  "actor %s has handled messages" % a)

        # Every figure of every actor in /stats has its sample on the page.
        code, _, body = api_get(sock, "/stats")
        stats = json.loads(body)["actors"]
        page = api_get(sock, "/metrics")[2]
        per_actor = {}
        for key in samples(page):
            m = re.search(r'\{actor="([^"]*)"\}$', key)
            if m and key.startswith("netlens_%s_" % m.group(1)):
                per_actor[m.group(1)] = per_actor.get(m.group(1), 0) + 1
        for a, s in stats.items():
            check(per_actor.get(a, 0) == len(s["counters"]),
                  "all %d figures of %s in /stats are on the page" % (len(s["counters"]), a),
                  per_actor.get(a, 0))

        # The operator's reference names every family, so the two cannot drift apart.
        doc = open(OPERATIONS_DOC).read()
        missing = [n for n, _ in families(page) if "`%s`" % n not in doc]
        check(not missing, "docs/operations.md names every metric family", missing)
    finally:
        rc = stop_agent(p)
    check(rc == 0, "SIGTERM: exit 0", rc)
    with socket.socket() as s:
        check(s.connect_ex(("127.0.0.1", port)) != 0, "the metrics port is closed after exit")


def scenario_no_port():
    cfg, sock = write_config("noport", 0)
    p, log = start(cfg)
    try:
        check(agent_listeners(p.pid) == [], "metrics.port = 0: the agent listens on no TCP port",
              agent_listeners(p.pid))
        code, _, page = api_get(sock, "/metrics")
        check(code == 200 and "netlens_actor_up" in page, "metrics.port = 0: /metrics on the socket")
        check("/metrics on TCP" not in open(log).read(), "metrics.port = 0: no TCP listener logged")
    finally:
        check(stop_agent(p) == 0, "metrics.port = 0: exit 0")


def scenario_port_taken():
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg, sock = write_config("taken", port)
        log_path = cfg + ".log"
        r = subprocess.run([NETLENS, "run", "-c", cfg], stdout=open(log_path, "w"),
                           stderr=subprocess.STDOUT, timeout=60)
        log = open(log_path).read()
        check(r.returncode == 3, "metrics port taken: the agent exits 3", r.returncode)
        check(re.search(r"api failed to start: .*metrics port .*: cannot bind 127\.0\.0\.1:%d: "
                        r"Address already in use" % port, log) is not None,
              "metrics port taken: the error names the port and the cause", log[-600:])
        check(not os.path.exists(sock), "metrics port taken: no API socket left behind")


def scenario_ipv6_loopback():
    try:
        port = free_tcp_port("::1", socket.AF_INET6)
    except OSError as e:
        print("skip: no IPv6 loopback here (%s)" % e)
        return
    cfg, _ = write_config("ipv6", port, "::1")
    p, _ = start(cfg)
    try:
        check(agent_listeners(p.pid) == [("::1", port)], "address ::1: listens on [::1] only",
              agent_listeners(p.pid))
        code, _, page = get_tcp("::1", port, "/metrics")
        check(code == 200 and "netlens_actor_up" in page, "address ::1: /metrics answers")
    finally:
        check(stop_agent(p) == 0, "address ::1: exit 0")


def scenario_configured_any_address():
    """0.0.0.0 only because the config says so, and in a namespace of our own with nothing but
    loopback in it, so the test never opens a port to the network."""
    add_namespace(NETNS)
    port = 19000 + os.getpid() % 1000  # a namespace of our own: no one else has ports here
    cfg, _ = write_config("any", port, "0.0.0.0")
    p, log = start(cfg, ns=NETNS)
    try:
        check(agent_listeners(p.pid) == [("0.0.0.0", port)],
              "address 0.0.0.0 (configured): listens on 0.0.0.0", agent_listeners(p.pid))
        check("not loopback: reachable from the network" in open(log).read(),
              "address 0.0.0.0: the log warns it is reachable from the network")
        code, _, page = get_tcp("127.0.0.1", port, "/metrics", in_ns(NETNS))
        check(code == 200 and "netlens_actor_up" in page, "address 0.0.0.0: /metrics answers")
    finally:
        check(stop_agent(p) == 0, "address 0.0.0.0: exit 0")


def scenario_api_restart(fault_bin):
    """The test build's fault switch crashes the api actor: the restarted actor binds the
    metrics port again (the old listener was closed with the old actor, not leaked)."""
    port = free_tcp_port()
    cfg, sock = write_config("restart", port)
    p, log = start(cfg, binary=fault_bin)
    try:
        for n, how in enumerate(("throw", "exit"), 1):
            code, _, body = api_get(sock, "/fault?actor=api&how=" + how)
            check(code == 200, "api fault (%s) injected" % how, (code, body))
            page = {}
            for _ in range(100):
                time.sleep(0.05)
                code, _, text = get_tcp("127.0.0.1", port, "/metrics")
                page = samples(text) if code == 200 else {}
                if page.get('netlens_actor_restarts_total{actor="api"}') == n:
                    break
            check(page.get('netlens_actor_restarts_total{actor="api"}') == n,
                  "after api %s: the metrics port answers again, restart %d counted" % (how, n),
                  page.get('netlens_actor_restarts_total{actor="api"}'))
            check(agent_listeners(p.pid) == [("127.0.0.1", port)],
                  "after api %s: one metrics listener, no leftover" % how, agent_listeners(p.pid))
    finally:
        check(stop_agent(p) == 0, "api restarts: exit 0")


def main():
    if subprocess.run(["which", "promtool"], capture_output=True).returncode != 0:
        print("FAIL: promtool not found (Debian package prometheus; scripts/setup installs it)")
        return 1
    try:
        scenario_loopback_port()
        scenario_no_port()
        scenario_port_taken()
        scenario_ipv6_loopback()
        scenario_configured_any_address()
        if FAULT_BIN:
            scenario_api_restart(FAULT_BIN)
    finally:
        end_started()
        remove_namespace(NETNS)
        subprocess.run(["rm", "-rf", WORK])
    print("e2e metrics: %d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
