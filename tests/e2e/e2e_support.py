"""What the e2e scripts share: a check that records failures, a poll with a deadline, commands
run on the host or inside a network namespace, GETs on the agent's API socket, the agent started
from a config file and stopped in order, and what is left to end when a test stops early."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback

failures = []  # what check() found failed; a script adds its own broken steps here too
agents = []  # every agent spawn_agent started, oldest first
procs = []   # every process start() started
groups = []  # the process groups start(group=True) made


def check(ok, what, detail="", sep=" -- ", keep=-3000):
    """Prints "ok: what", or "FAIL: what" with detail after sep, cut to its last -keep characters
    (keep < 0), its first keep (keep > 0) or left whole (None); a failure goes on failures.
    Returns ok. A script that has always printed its detail another way binds sep and keep
    with functools.partial, so its output stays as it was."""
    if ok:
        print("ok: " + what, flush=True)
        return ok
    text = str(detail)
    if keep is not None:
        text = text[keep:] if keep < 0 else text[:keep]
    print("FAIL: " + what + sep + text, flush=True)
    failures.append(what)
    return ok


def free_tcp_port(host="127.0.0.1", family=socket.AF_INET):
    """A TCP port on host nobody listens on right now."""
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, step=0.05):
    """pred's first true value within timeout seconds, else its last value."""
    # The monotonic clock: a wall clock stepped by NTP must not cut a wait short or stretch it.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


# ---- commands, on the host or in a namespace ---------------------------------------------

def sh(*cmd, check=True, input=None):
    """cmd's standard output; with check, a non-zero exit raises, naming cmd and its stderr."""
    r = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


def in_ns(ns, *cmd):
    """cmd run in network namespace ns (the argv; with no cmd, the prefix alone)."""
    # nsenter changes only the network namespace; `ip netns exec` would also remount /sys,
    # hiding the cgroup2 mount the tracer attaches to.
    return ["nsenter", "--net=/run/netns/" + ns] + list(cmd)


def ns_run(ns, *cmd, **kw):
    """subprocess.run of cmd under `ip netns exec ns`: unlike in_ns, with the namespace's own
    /sys and /etc/netns/ns, as a process of a container sees them."""
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], **kw)


def start(ns, *cmd, stdout=subprocess.PIPE, group=False):
    """cmd started in network namespace ns (on the host when ns is None), its stdin a pipe,
    stderr with stdout, as text; in a process group of its own with group (kill_group ends it
    and its children). end_started() ends it if it still runs."""
    argv = in_ns(ns, *cmd) if ns else list(cmd)
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.STDOUT,
                         text=True, start_new_session=group)
    procs.append(p)
    if group:
        groups.append(p.pid)
    return p


def stop_process(p, timeout=10, sig=signal.SIGTERM):
    """sig, then SIGKILL past timeout; the exit code (None if it had to be killed)."""
    if p.poll() is not None:
        return p.returncode
    p.send_signal(sig)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def end_started(agent_timeout=None):
    """What a test leaves when it stops early: agents still running get SIGTERM and
    agent_timeout seconds to stop in order when agent_timeout is given; then everything
    spawn_agent and start() started that still runs is killed, and start()'s process groups."""
    if agent_timeout is not None:
        for a in agents:
            stop_process(a, agent_timeout)
    for p in agents + procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for g in groups:
        kill_group(g)


# ---- network namespaces ------------------------------------------------------------------

def ns_inode(ns):
    """The inode of network namespace ns: its id in the agent's answers (netns)."""
    return os.stat("/run/netns/" + ns).st_ino


def add_namespace(ns):
    """A network namespace with its lo up. remove_namespace undoes it."""
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def remove_namespace(ns):
    """Deletes ns; quietly when it is gone already."""
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def add_veth_namespace(ns, host_dev, host_addr, ns_dev, ns_addr):
    """A network namespace joined to the host by a veth pair, both ends up with their /24
    addresses, and the namespace's lo up. remove_veth_namespace undoes it."""
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host_dev, "type", "veth", "peer", "name", ns_dev, "netns", ns)
    sh("ip", "addr", "add", host_addr + "/24", "dev", host_dev)
    sh("ip", "link", "set", host_dev, "up")
    sh("ip", "-n", ns, "addr", "add", ns_addr + "/24", "dev", ns_dev)
    sh("ip", "-n", ns, "link", "set", ns_dev, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def remove_veth_namespace(ns, host_dev):
    remove_namespace(ns)
    subprocess.run(["ip", "link", "del", host_dev], capture_output=True)


def conntrack_entries(ns, *args):
    """[(original, reply)] of `conntrack -L args` in ns: each direction the tool's key=value
    fields (src, dst, sport, dport; the reply's also mark, use...) as strings."""
    out = sh(*in_ns(ns, "conntrack", "-L", *args), check=False)
    entries = []
    for line in out.splitlines():
        # A key seen again starts the next direction.
        sides, fields = [], {}
        for tok in line.split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                if k in fields:
                    sides.append(fields)
                    fields = {}
                fields[k] = v
        sides.append(fields)
        if len(sides) >= 2:
            entries.append((sides[0], sides[1]))
    return entries


def prog_ids(pid):
    """The BPF program ids process pid holds a descriptor of (from its fdinfo); none when it
    is gone."""
    ids = set()
    try:
        fds = os.listdir("/proc/%s/fdinfo" % pid)
    except OSError:
        return ids
    for fd in fds:
        try:
            with open("/proc/%s/fdinfo/%s" % (pid, fd)) as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            pass  # closed while we looked
    return ids


# ---- the agent ---------------------------------------------------------------------------

def write_config(work, extra=""):
    """A config in work that keeps the agent's sockets there (work/api.sock, work/console.sock),
    plus extra TOML; returns (config path, API socket path)."""
    path, api = os.path.join(work, "netlens.toml"), os.path.join(work, "api.sock")
    with open(path, "w") as f:
        f.write('[agent]\napi_socket = "%s"\n[console]\nsocket = "%s"\n%s'
                % (api, os.path.join(work, "console.sock"), extra))
    return path, api


def spawn_agent(netlens, config, log, ns=None, stdin=None):
    """`netlens run -c config` in network namespace ns (the host's when None), its output in
    log; returns at once (start_agent waits for it)."""
    argv = [netlens, "run", "-c", config]
    # nsenter execs the agent: the process's pid is the agent's.
    agent = subprocess.Popen(in_ns(ns, *argv) if ns else argv, stdin=stdin,
                             stdout=open(log, "w"), stderr=subprocess.STDOUT)
    agents.append(agent)
    return agent


def start_agent(netlens, config, log, timeout=30, ns=None, stdin=None):
    """spawn_agent, returning once the agent logged "netlens ready"; raises with the log's tail
    (the agent killed) when it exits or is not ready within timeout seconds."""
    agent = spawn_agent(netlens, config, log, ns, stdin)
    if not wait_for(lambda: "netlens ready" in open(log).read() or agent.poll() is not None,
                    timeout) or agent.poll() is not None:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        raise RuntimeError("agent did not start:\n" + open(log).read()[-3000:])
    return agent


def stop_agent(agent, timeout=30):
    """SIGTERM, then SIGKILL past timeout; the exit code (None if it had to be killed)."""
    return stop_process(agent, timeout)


def curl(args, timeout=10, prefix=()):
    """(status, content type, body) of one GET through curl, status 0 when nothing answered;
    prefix runs curl through something, e.g. in_ns(ns)."""
    r = subprocess.run(list(prefix) + ["curl", "-s", "-m", str(timeout), "-o", "-", "-w",
                                       "\n%{http_code} %{content_type}"] + list(args),
                       capture_output=True, text=True)
    body, _, tail = r.stdout.rpartition("\n")
    code, _, ctype = tail.partition(" ")
    return int(code or 0), ctype, body


def api_get(sock, path, timeout=10):
    """(status, content type, body) of GET path on the agent's API socket sock."""
    return curl(["--unix-socket", sock, "http://netlens" + path], timeout)


def api_text(sock, path):
    """The body of GET path on the API socket; raises unless the agent answered 2xx."""
    return sh("curl", "-sf", "--unix-socket", sock, "http://netlens" + path)


def api_json(sock, path="/stats"):
    return json.loads(api_text(sock, path))


def query_connections(netlens, sock, client):
    """`netlens connections --json` as API client `client`: the whole answer (connections,
    device_flows, telemetry); raises when the command fails."""
    return json.loads(sh(netlens, "connections", "--json", "--socket", sock, "--client", client))


def run_test(main, name, teardown=None, timed=False, show_traceback=False, after=None):
    """Runs a test's main to its end: an exception is a failure (a broken step is never a
    pass), teardown runs whatever happened, after (if any) prints its figures, then the count,
    "NAME: N failure(s)" (with the time taken when timed). Exits 1 on any failure."""
    started = time.monotonic()
    try:
        main()
    except Exception as e:
        if show_traceback:
            traceback.print_exc()
        failures.append(str(e))
        print("FAIL: %s" % e, flush=True)
    finally:
        if teardown:
            teardown()
    if after:
        after()
    took = " in %.1f s" % (time.monotonic() - started) if timed else ""
    print("%s: %d failure(s)%s" % (name, len(failures), took), flush=True)
    sys.exit(1 if failures else 0)


def conclude(log, work):
    """A test's last step: the agent's log tail when something failed, the work folder
    removed, the count printed; returns the exit code."""
    if failures and log and os.path.exists(log):
        print(open(log).read()[-3000:])
    shutil.rmtree(work, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0
