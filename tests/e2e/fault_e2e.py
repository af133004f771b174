#!/usr/bin/env python3
"""End to end, crash and restart: the test build of the agent (build/netlens-fault) has a fault
switch (GET /fault?actor=NAME&how=throw|exit). For each actor: the supervisor restarts it,
the API keeps answering meanwhile, the restarted actor re-acquires what it owns (the tracer
loads new programs and the old ones leave the kernel; closed connections flow again), and
the agent's open descriptors come back to where they were (nothing leaked). Past the restart
budget the agent shuts down in order and exits 1 naming the actor. The release binary
refuses the switch. Loopback traffic only.
"""
import collections
import functools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import e2e_support
from e2e_support import api_get, end_started, prog_ids, run_test, start_agent, stop_agent, wait_for

FAULT_BIN = os.path.abspath(sys.argv[1])
RELEASE_BIN = os.path.abspath(sys.argv[2])
WORK = tempfile.mkdtemp(prefix="netlens-fault-")
SOCK = os.path.join(WORK, "run", "netlens.sock")
CONSOLE_SOCK = os.path.join(WORK, "run", "console.sock")
CONSOLE_CFG = '[console]\nsocket = "%s"\n' % CONSOLE_SOCK
figures = []
# Its failures print their detail whole, after a space, as they always have.
check = functools.partial(e2e_support.check, sep=" ", keep=None)


def http(path, timeout=5):
    code, _, body = api_get(SOCK, path, timeout)
    return code, body


def start(binary, name, extra=""):
    cfg = os.path.join(WORK, name + ".toml")
    with open(cfg, "w") as f:
        f.write('[agent]\napi_socket = "%s"\n%s' % (SOCK, extra))
    log_path = os.path.join(WORK, name + ".log")
    return start_agent(binary, cfg, log_path, timeout=15), log_path


def fd_kinds(pid):
    """What the process holds open, counted by kind: "socket", "anon_inode:bpf-link", a path."""
    kinds = collections.Counter()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue  # closed while we looked
        kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds


def extra_fds(pid, baseline):
    """Descriptors held now beyond baseline, by kind ({} when none)."""
    return dict(fd_kinds(pid) - baseline)


def actor(name):
    code, body = http("/stats")
    return json.loads(body)["actors"][name] if code == 200 else None


def program_ids(log_path):
    found = re.findall(r"program ids ([0-9,]+)", open(log_path).read())
    return [found[-1].split(",")] if found else [[]]


def prog_loaded(pid):
    return subprocess.run(["bpftool", "prog", "show", "id", pid], capture_output=True).returncode == 0


def restart_ms(log_path, name):
    """From the crash to "restarted" in the log, for the last restart of name: the figure
    includes the supervisor's backoff (250 ms for a first restart)."""
    stamp = r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:(\d\d\.\d+))"
    crash = done = None
    for line in open(log_path):
        m = re.match(stamp, line)
        if not m:
            continue
        t = float(m.group(2)) + 60 * int(line[14:16])
        if "supervisor: %s crashed" % name in line:
            crash, done = t, None
        elif "supervisor: %s restarted" % name in line:
            done = t
    return (done - crash) * 1000 if crash is not None and done is not None else None


def closed_connection_seen():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    c = socket.create_connection(ls.getsockname())
    s, _ = ls.accept()
    port = c.getsockname()[1]
    c.close()
    s.close()
    ls.close()
    for _ in range(30):
        code, body = http("/connections?client_id=fault-e2e")
        if code == 200 and any(x["sport"] == port and x["closed"]
                               for x in json.loads(body)["connections"]):
            return True
        time.sleep(0.1)
    return False


def console_answers():
    """A console session: the greeting, then "actors", each answer ending with "ok"."""
    for _ in range(30):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.settimeout(3)
                c.connect(CONSOLE_SOCK)
                got = b""
                answers = 0
                sent = False
                while answers < 2:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                    answers = got.count(b"\x1eok\n")
                    if answers == 1 and not sent:
                        c.sendall(b"actors\n")
                        sent = True
                if answers == 2 and b"console" in got:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


class poller:
    """Asks /connections every 50 ms; counts answers and requests that got none."""

    def __init__(self):
        self.answered = self.unanswered = 0
        self.running = True
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while self.running:
            code, _ = http("/connections?client_id=poller", timeout=3)
            if code in (200, 503):
                self.answered += 1
            else:
                self.unanswered += 1
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.thread.join()


def main():
    agent, log = start(FAULT_BIN, "fault", CONSOLE_CFG)
    pid = agent.pid
    closed_connection_seen()  # every lazily opened descriptor is open now
    time.sleep(0.3)
    baseline = fd_kinds(pid)
    plan = [("conntrack", "throw"), ("tracer", "exit"), ("perf_consumer", "throw"),
            ("compact_ticker", "exit"), ("api", "throw"), ("tracer", "throw"),
            ("offset_guesser", "throw"), ("offset_guesser", "exit"), ("netns", "throw"),
            ("netns", "exit"), ("console", "throw"), ("console", "exit")]
    for name, how in plan:
        before = actor(name)["restarts"]
        old_ids = program_ids(log)[0] if name == "tracer" else []
        p = poller()
        code, body = http("/fault?actor=%s&how=%s" % (name, how))
        check(code == 200, "%s: fault '%s' injected" % (name, how), (code, body))
        restarted = None
        for _ in range(100):
            a = actor(name)
            # The offset guesser has guessed nothing yet on a kernel the CO-RE tracer runs on.
            if a and a["restarts"] == before + 1 and a["state"] in ("running", "degraded",
                                                                     "idle", "guessed"):
                restarted = a
                break
            time.sleep(0.1)
        time.sleep(0.3)
        p.stop()
        check(restarted is not None, "%s: restarted by the supervisor" % name, actor(name))
        took = restart_ms(log, name)
        print("   %s: crash to restarted %.1f ms (backoff included)" % (name, took or -1),
              flush=True)
        figures.append("%s %s: %.1f ms" % (name, how, took or -1))
        if name == "api":
            check(p.answered > 0, "api: answering again after its restart", vars(p))
        else:
            check(p.unanswered == 0 and p.answered > 0,
                  "%s: the API answered every request during the restart (%d)"
                  % (name, p.answered), (p.answered, p.unanswered))
        if name == "console":
            # The restarted instance serves its socket again.
            check(console_answers(), "console: a session is served again after the restart")
        if name == "netns":
            # The restarted instance holds its namespaces, devices and classifiers again, and
            # the crashed one's classifier programs have left the kernel.
            c = restarted["counters"] if restarted else {}
            check(c.get("open_handles", 0) >= 1 and c.get("namespaces_watched", 0) >= 1,
                  "netns: handles and device watchers re-acquired", c)
            tc_progs = lambda: json.loads(subprocess.run(
                ["bpftool", "prog", "show", "--json"], capture_output=True, text=True).stdout
                or "[]")
            ours = [p for p in tc_progs() if p.get("name", "").startswith("nl_tc_")
                    and p["id"] in prog_ids(pid)]
            for _ in range(40):
                stale = [p["id"] for p in tc_progs() if p.get("name", "").startswith("nl_tc_")
                         and p["id"] not in prog_ids(pid)]
                if not stale:
                    break
                time.sleep(0.05)
            check(len(ours) == 2 and not stale,
                  "netns: one pair of classifier programs, the crashed instance's gone",
                  (ours, stale))
        if name == "tracer":
            new_ids = program_ids(log)[0]
            check(new_ids != old_ids and all(prog_loaded(i) for i in new_ids),
                  "tracer: loaded new programs", (old_ids, new_ids))
            gone = [i for i in old_ids if prog_loaded(i)]
            for _ in range(40):
                if not gone:
                    break
                time.sleep(0.05)
                gone = [i for i in old_ids if prog_loaded(i)]
            check(not gone, "tracer: the crashed instance's programs left the kernel", gone)
        check(closed_connection_seen(), "%s: closed connections flow again" % name)
        # The restarted actor holds what the crashed one held, no more: every descriptor the
        # crashed instance held is closed once its state is gone, and anything a session or
        # scan opens for a moment is closed again. Polled, with its kinds named when it fails.
        back = wait_for(lambda: not extra_fds(pid, baseline), 5)
        check(back, "%s: open descriptors back to the %d before"
              % (name, sum(baseline.values())), extra_fds(pid, baseline))

    # Past the budget (3 in 60 s): ordered shutdown, exit 1, the actor named.
    for _ in range(4):
        http("/fault?actor=compact_ticker&how=exit")
        time.sleep(0.6)
        if agent.poll() is not None:
            break
    try:
        rc = agent.wait(timeout=20)
    except subprocess.TimeoutExpired:
        agent.kill()
        rc = None
    text = open(log).read()
    check(rc == 1, "past the restart budget the agent exits 1", rc)
    check("compact_ticker exceeded its restart budget" in text and
          "shutdown phase purge" in text, "the log names the actor and the shutdown ran in order",
          text[-1500:])

    # The release binary has no switch.
    agent, log = start(RELEASE_BIN, "release", CONSOLE_CFG)
    code, body = http("/fault?actor=tracer&how=throw")
    check(code == 400 and "not built into this binary" in body,
          "the release binary refuses the fault switch", (code, body))
    check(actor("tracer")["restarts"] == 0, "and nothing restarted")
    check(stop_agent(agent, timeout=20) == 0, "release agent exits 0")


def fault_teardown():
    end_started(agent_timeout=20)
    subprocess.run(["rm", "-rf", WORK])


if __name__ == "__main__":
    run_test(main, "fault e2e", teardown=fault_teardown,
        after=lambda: print("restart times (crash to restarted, incl. backoff): " +
                            "; ".join(figures)))
