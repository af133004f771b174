#!/usr/bin/env python3
"""End to end, the signals an operator sends and the console slots idle connections take:

- console.first_command_timeout_ms: connections that never send a line fill every session
  slot; a command is refused while they hold them, then answered once their deadline cut them
  (each was told why);
- SIGHUP with a changed valid file: agent.log_level, console.max_sessions and the IPFIX
  collector change at once (the console's `config` shows them, a third session is refused,
  the new collector gets templates then data and the old one nothing more), the ticker's
  interval and the conntrack rate limit are the actors' own at once, the metrics listener moves
  to its new port (the old one closes); a key that needs a restart keeps its running value and
  is named in the log and in /stats;
- SIGHUP moving the metrics listener to a port another program holds: refused in the log, the
  listener stays where it was and /stats says where;
- SIGHUP with a broken file: refused with its file:line:key message, the agent keeps running
  on the configuration it had, /stats counts the failure;
- SIGQUIT runs the ordered shutdown (stop -> purge -> exit, exit code 0) and leaves no netlens
  program in the kernel.

Collectors are UDP sockets of the test's own on 127.0.0.1; traffic is loopback TCP it opens.

usage: reload_e2e.py path/to/netlens
"""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from e2e_support import check, conclude, failures, free_tcp_port, start_agent, stop_agent, wait_for

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-reload-")
RUN = os.path.join(WORK, "run")
API = os.path.join(RUN, "api.sock")
CONSOLE = os.path.join(RUN, "console.sock")
CFG = os.path.join(WORK, "netlens.toml")
LOG = os.path.join(WORK, "agent.log")
FIRST_LINE_MS = 1000
def write_config(log_level, max_sessions, udp_idle, collector_port, tick_ms=1000,
                 rate_limit=-1, metrics_port=0):
    with open(CFG, "w") as f:
        f.write('[agent]\napi_socket = "%s"\nlog_level = "%s"\n'
                '[tracer]\nudp_idle_timeout_s = %d\n'
                '[console]\nsocket = "%s"\nmax_sessions = %d\nfirst_command_timeout_ms = %d\n'
                '[export.ipfix]\ncollectors = ["127.0.0.1:%d"]\nflush_interval_ms = 100\n'
                '[compact_ticker]\ninterval_ms = %d\n[conntrack]\nrate_limit = %d\n'
                '[metrics]\nport = %d\n'
                % (API, log_level, udp_idle, CONSOLE, max_sessions, FIRST_LINE_MS,
                   collector_port, tick_ms, rate_limit, metrics_port))


def log_text():
    return open(LOG).read()


def api_json(path):
    out = subprocess.run(["curl", "-sf", "--unix-socket", API, "http://localhost" + path],
                         capture_output=True, text=True, timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 else None


def supervisor_stats():
    stats = api_json("/stats") or {}
    return (stats.get("actors") or {}).get("supervisor")


def healthy():
    return subprocess.run(["curl", "-sf", "--unix-socket", API, "http://localhost/healthz"],
                          capture_output=True, timeout=10).returncode == 0


def console_e(command):
    return subprocess.run([NETLENS, "console", "--socket", CONSOLE, "-e", command],
                          capture_output=True, text=True, timeout=20)


def collector(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    return s


def drain(sock):
    """The datagrams waiting on sock, each as the list of its IPFIX set ids."""
    got = []
    while True:
        try:
            d = sock.recv(65536)
        except BlockingIOError:
            return got
        sets, at = [], 16
        while at + 4 <= len(d):
            sid, length = struct.unpack_from("!HH", d, at)
            sets.append(sid)
            if length < 4:
                break
            at += length
        got.append(sets)


def some_traffic(n=5):
    """n loopback TCP connections, each carrying a few bytes both ways, then closed."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    for _ in range(n):
        c = socket.create_connection(ls.getsockname())
        s, _ = ls.accept()
        c.sendall(b"ping")
        s.recv(16)
        s.sendall(b"pong")
        c.recv(16)
        c.close()
        s.close()
    ls.close()


def data_arrives(sock, timeout=5.0):
    """Datagrams with a data set (id >= 256) arrive on sock while traffic runs."""
    seen = []

    def poll():
        some_traffic()
        seen.extend(drain(sock))
        return any(any(sid >= 256 for sid in sets) for sets in seen)
    return wait_for(poll, timeout, 0.2), seen


def silent_sessions(n):
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(CONSOLE)
        s.settimeout(5)
        out.append(s)
    return out


def read_all(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.decode(errors="replace")


def metrics_on(port):
    """The HTTP status of GET /metrics on 127.0.0.1:port, 0 when nothing listens there."""
    try:
        c = socket.create_connection(("127.0.0.1", port), 2)
    except OSError:
        return 0
    try:
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = c.recv(64)
    finally:
        c.close()
    m = re.match(rb"HTTP/1\.1 (\d+)", head)
    return int(m.group(1)) if m else -1


def nl_programs():
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if re.search(r"name nl_", line)]


def main():
    os.makedirs(RUN, exist_ok=True)
    first, second = collector(), collector()
    p1, p2 = first.getsockname()[1], second.getsockname()[1]
    m1, m2 = free_tcp_port(), free_tcp_port()
    write_config("info", 8, 120, p1, metrics_port=m1)
    agent = None
    try:
        agent = start_agent(NETLENS, CFG, LOG)
        ok, seen = data_arrives(first)
        check(ok, "IPFIX data reaches the first collector", seen[-5:])
        check(metrics_on(m1) == 200, "/metrics is served on the first metrics port")

        # Idle connections hold every console slot only until their first-line deadline.
        held = silent_sessions(8)
        time.sleep(0.2)
        refused = console_e("actors")
        check(refused.returncode != 0 and "8 console sessions are open already" in
              refused.stdout + refused.stderr,
              "a 9th session is refused while 8 silent connections hold the slots",
              refused.stdout + refused.stderr)
        cut = [read_all(s, FIRST_LINE_MS / 1000 + 5) for s in held]
        check(all("no command within %d ms (console.first_command_timeout_ms)" % FIRST_LINE_MS
                  in c for c in cut),
              "each silent connection is told why and closed at its deadline", cut[:2])
        for s in held:
            s.close()
        served = console_e("actors")
        check(served.returncode == 0 and "tracer" in served.stdout,
              "`console -e actors` is answered once the silent ones are gone",
              served.stdout + served.stderr)

        # SIGHUP with a changed, valid file.
        drain(first)
        write_config("debug", 2, 30, p2, tick_ms=400, rate_limit=250, metrics_port=m2)
        agent.send_signal(signal.SIGHUP)
        applied = wait_for(lambda: re.search(r"reload: .*: applied: (.*)", log_text()), 10)
        check(bool(applied) and applied.group(1).strip() ==
              "agent.log_level, compact_ticker.interval_ms, conntrack.rate_limit, "
              "console.max_sessions, metrics.port, export.ipfix.collectors",
              "SIGHUP applies the live keys and names them",
              applied.group(0) if applied else log_text()[-2000:])
        # The actors run with the new interval and rate limit (their own figures, not the file).
        def actor_counters(name):
            return dict(((api_json("/stats") or {}).get("actors") or {}).get(name, {})
                        .get("counters") or {})
        check(wait_for(lambda: actor_counters("compact_ticker").get("interval_ms") == 400, 5),
              "the ticker runs at the new interval", actor_counters("compact_ticker"))
        limited = wait_for(lambda: actor_counters("conntrack").get("rate_limit_per_s") == 250, 5)
        check(limited, "the conntrack consumer samples to the new rate limit",
              actor_counters("conntrack"))
        moved = wait_for(lambda: metrics_on(m2) == 200 and metrics_on(m1) == 0, 5)
        check(moved, "the metrics listener moved: the new port serves, the old one is closed",
              (metrics_on(m1), metrics_on(m2)))
        ticks = actor_counters("compact_ticker").get("ticks", 0)
        time.sleep(2.0)
        more = actor_counters("compact_ticker").get("ticks", 0) - ticks
        # 5 at 400 ms (3 if the tick waiting at the reload came at the old 1000 ms); 2 at 1000.
        check(3 <= more <= 6, "the ticker ticks every 400 ms now (%d ticks in 2 s)" % more, more)
        check(re.search(r"warn.*reload: these keys keep their running values until netlens "
                        r"restarts: tracer.udp_idle_timeout_s", log_text()) is not None,
              "the key that needs a restart is named in the log", log_text()[-2000:])
        config = console_e("config").stdout
        check('log_level = "debug"' in config and re.search(r"^max_sessions = 2$", config, re.M)
              and re.search(r"^udp_idle_timeout_s = 120 # default$", config, re.M)
              and ("collectors = [\"127.0.0.1:%d\"]" % p2) in config,
              "`console -e config` shows the new live values and the running one that waits",
              config)
        sup = wait_for(lambda: (lambda s: s if s and dict(s.get("info") or {}).get(
            "config_needs_restart") else None)(supervisor_stats()), 10) or {}
        info = dict(sup.get("info") or {})
        counters = dict(sup.get("counters") or {})
        check(info.get("config_needs_restart") == "tracer.udp_idle_timeout_s"
              and counters.get("config_reloads") == 1,
              "/stats: one reload, and the key that waits for a restart", sup)
        ok, seen = data_arrives(second)
        check(ok and seen and 2 in seen[0],
              "the new collector gets templates first, then data", seen[:3])
        time.sleep(0.5)
        drain(first)
        some_traffic()
        time.sleep(1.0)
        check(drain(first) == [], "the old collector gets nothing more")
        a, b = silent_sessions(2)
        for s in (a, b):
            s.sendall(b"\n")
        time.sleep(0.3)
        third = console_e("actors")
        check(third.returncode != 0 and "2 console sessions are open already" in
              third.stdout + third.stderr, "console.max_sessions = 2 is in force",
              third.stdout + third.stderr)
        a.close()
        b.close()

        # A port another program holds: the move is refused, the listener stays where it was.
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        write_config("debug", 2, 30, p2, tick_ms=400, rate_limit=250,
                     metrics_port=taken.getsockname()[1])
        agent.send_signal(signal.SIGHUP)
        stuck = wait_for(lambda: re.search(r"error.*reload: cannot move the metrics listener: "
                                           r"metrics port .*Address already in use; it stays "
                                           r"on 127.0.0.1:%d" % m2, log_text()), 10)
        check(bool(stuck), "a metrics port in use is refused by name, in the log",
              log_text()[-1500:])
        api = ((api_json("/stats") or {}).get("actors") or {}).get("api") or {}
        check(metrics_on(m2) == 200 and dict(api.get("info") or {}).get("metrics_listen") ==
              "127.0.0.1:%d" % m2 and dict(api.get("counters") or {}).get(
                  "metrics_move_failures") == 1,
              "the listener stays on its port, and /stats says where it is", api)
        taken.close()

        # SIGHUP with a broken file: refused, nothing changes.
        with open(CFG, "a") as f:
            f.write("[console]\nmax_sessions = 0\n")
        agent.send_signal(signal.SIGHUP)
        refused = wait_for(lambda: re.search(
            r"reload refused, the running configuration stays: (.*)", log_text()), 10)
        check(bool(refused) and refused.group(1).startswith(CFG + ":")
              and "console" in refused.group(1),
              "a broken file is refused with its file:line:key message",
              refused.group(0) if refused else log_text()[-2000:])
        check(agent.poll() is None and healthy(), "the agent keeps running")
        config = console_e("config").stdout
        check(re.search(r"^max_sessions = 2$", config, re.M) is not None,
              "the running configuration stays", config)
        sup = supervisor_stats() or {}
        check(dict(sup.get("counters") or {}).get("config_reload_failures") == 1,
              "/stats counts the refused reload", sup)

        # SIGQUIT: the ordered shutdown.
        agent.send_signal(signal.SIGQUIT)
        try:
            rc = agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            rc = None
        text = log_text()
        check(rc == 0 and "received SIGQUIT, shutting down" in text
              and "shutdown: stop -> purge -> exit" in text,
              "SIGQUIT runs the ordered shutdown and exits 0", (rc, text[-1500:]))
        # The kernel frees a released program after an RCU grace period, not by the time the
        # process has exited (raw tracepoints release without waiting for one): poll.
        check(wait_for(lambda: nl_programs() == [], 5), "no netlens program left in the kernel",
              nl_programs())
    finally:
        if agent:
            stop_agent(agent)
        first.close()
        second.close()
    return conclude(LOG, WORK)


if __name__ == "__main__":
    sys.exit(main())
