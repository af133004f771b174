#!/usr/bin/env python3
"""End to end, network namespaces: the agent runs in the host namespace, as in production, and
follows namespaces this test builds around a router:

  C1 10.232.1.2 --- 10.232.1.1  R  10.232.2.1 --- 10.232.2.2 C2   (server :19090 tcp, :19091 udp)
                                R  10.232.4.1 --- 10.232.4.2 C2   (second pair, made after start)
  C3 10.232.3.2 --- 10.232.3.1  R                                 (namespace made after start)

R forwards and masquerades C1 -> C2; C1 DNATs 10.232.9.9:18080/tcp to C2's server in its own
output chain. Checks, against the agent's /connections and /stats and the kernel's own view
(conntrack, tc, bpftool, /proc): attribution of a container's connections (netns, pid, comm,
container id, exact bytes, nat, the classifiers' device counts), forwarded flows at R's
devices, a namespace and a device that appear after start, the flush of a deleted namespace,
and what SIGTERM and SIGKILL leave in the kernel (nothing; leftovers a later start removes).
Only the namespaces and addresses made here carry traffic (plus host loopback); everything is
removed at the end. The classifiers are limited to this test's devices (tc_include), and are
classic TC filters (tc_tcx = false, tc_create_clsact = true): the kernel tests and e2e_start_stall
cover TCX links.
"""
import functools
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import e2e_support
from e2e_support import (add_namespace, agents, api_json, conntrack_entries, end_started, in_ns,
                         ns_inode, prog_ids, query_connections, remove_namespace, run_test, sh,
                         start, start_agent, stop_agent, wait_for)

NETLENS = os.path.abspath(sys.argv[1])
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netns_peer.py")
TAG = str(os.getpid())
T6 = TAG[-6:]
NS_C1, NS_C2, NS_R, NS_C3 = ("nltest-ns%s-%s" % (n, TAG) for n in ("c1", "c2", "r", "c3"))
DEV_PREFIX = "nle"  # every device of this test, and the agent's tc_include
# (device in the container side, device in R) per link
L1 = ("nle1a" + T6, "nle1r" + T6)
L2 = ("nle2a" + T6, "nle2r" + T6)
L3 = ("nle3a" + T6, "nle3r" + T6)
L4 = ("nle4a" + T6, "nle4r" + T6)
C1_IP, C2_IP, C3_IP, C2B_IP = "10.232.1.2", "10.232.2.2", "10.232.3.2", "10.232.4.2"
R_C1_IP, R_C2_IP, R_C3_IP, R_C2B_IP = "10.232.1.1", "10.232.2.1", "10.232.3.1", "10.232.4.1"
VIP, VPORT = "10.232.9.9", 18080
SRV_TCP, SRV_UDP = 19090, 19091
CONTAINER_ID = hashlib.sha256(("nltest-" + TAG).encode()).hexdigest()
WORK = tempfile.mkdtemp(prefix="netlens-netns-")
SOCK = os.path.join(WORK, "run", "netlens.sock")
cgroup_dirs = []
namespaces = []
# Its failures print their detail whole, after a space, as they always have.
check = functools.partial(e2e_support.check, sep=" ", keep=None)


def cgroup2_mount():
    for line in open("/proc/mounts"):
        f = line.split()
        if len(f) >= 3 and f[2] == "cgroup2":
            return f[1]
    raise RuntimeError("no cgroup2 mount in /proc/mounts")


# ---- topology ---------------------------------------------------------------------------

def add_ns(ns):
    add_namespace(ns)
    namespaces.append(ns)


def add_link(ns_a, dev_a, ip_a, ns_r, dev_r, ip_r):
    sh("ip", "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_r,
       "netns", ns_r)
    sh("ip", "-n", ns_a, "addr", "add", ip_a + "/24", "dev", dev_a)
    sh("ip", "-n", ns_r, "addr", "add", ip_r + "/24", "dev", dev_r)
    sh("ip", "-n", ns_a, "link", "set", dev_a, "up")
    sh("ip", "-n", ns_r, "link", "set", dev_r, "up")


def build_topology():
    for ns in (NS_C1, NS_C2, NS_R):
        add_ns(ns)
    add_link(NS_C1, L1[0], C1_IP, NS_R, L1[1], R_C1_IP)
    add_link(NS_C2, L2[0], C2_IP, NS_R, L2[1], R_C2_IP)
    sh("ip", "-n", NS_C1, "route", "add", "default", "via", R_C1_IP)
    sh("ip", "-n", NS_C2, "route", "add", "default", "via", R_C2_IP)
    sh(*in_ns(NS_R, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
    sh(*in_ns(NS_R, "nft", "-f", "-"), input="""
table ip nltest {
  chain post {
    type nat hook postrouting priority 100;
    ip saddr 10.232.1.0/24 ip daddr 10.232.2.0/24 masquerade
  }
}
""")
    sh(*in_ns(NS_C1, "nft", "-f", "-"), input="""
table ip nltest {
  chain out {
    type nat hook output priority -100;
    ip daddr %s tcp dport %d dnat to %s:%d
  }
}
""" % (VIP, VPORT, C2_IP, SRV_TCP))


def make_container_cgroup():
    root = cgroup2_mount()
    slice_dir = os.path.join(root, "nltest-%s.slice" % TAG)
    scope = os.path.join(slice_dir, "docker-%s.scope" % CONTAINER_ID)
    os.mkdir(slice_dir)
    cgroup_dirs.insert(0, slice_dir)
    os.mkdir(scope)
    cgroup_dirs.insert(0, scope)
    return scope


def teardown():
    end_started(agent_timeout=15)
    for ns in namespaces:
        remove_namespace(ns)
    for d in cgroup_dirs:
        for _ in range(20):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # the killed processes leave the cgroup asynchronously
    subprocess.run(["rm", "-rf", WORK])


# ---- the agent ---------------------------------------------------------------------------

def write_config(name):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write('[agent]\napi_socket = "%s"\n\n[console]\nsocket = "%s"\n\n'
                '[compact_ticker]\ncompact_interval_ms = 500\n\n'
                '[conntrack]\nresync_interval_s = 1\n\n'
                '[netns]\nidle_flush_s = 2\ntc_include = ["%s"]\n'
                # Classic TC filters, the qdisc created: the path of kernels without TCX, and
                # the one that can leave filters behind (e2e_start_stall covers TCX).
                'tc_tcx = false\ntc_create_clsact = true\n'
                % (SOCK, os.path.join(WORK, "run", "console.sock"), DEV_PREFIX))
    return path


def launch_agent(config, log_name):
    """The agent in the host's namespace; returns it and its log's path."""
    path = os.path.join(WORK, log_name)
    return start_agent(NETLENS, config, path, timeout=20, stdin=subprocess.DEVNULL), path


_client_seq = [0]


def query():
    """The whole answer for a client never seen before: every closed connection still
    buffered and every active one, each with its full counters (not a delta)."""
    _client_seq[0] += 1
    return query_connections(NETLENS, SOCK, "netns-e2e-%d" % _client_seq[0])


def stats():
    return api_json(SOCK, "/stats")


def netns_counters():
    return stats()["actors"]["netns"]["counters"]


def ct_namespaces():
    return stats()["actors"]["conntrack"]["counters"]["namespaces"]


def find(conns, proto, saddr=None, sport=None, daddr=None, dport=None, closed=None):
    return [c for c in conns if c["type"] == proto and (saddr is None or c["saddr"] == saddr)
            and (sport is None or c["sport"] == sport) and (daddr is None or c["daddr"] == daddr)
            and (dport is None or c["dport"] == dport)
            and (closed is None or c["closed"] == closed)]


def kernel_reply(ns, proto, sport, dport):
    """The reply direction of the conntrack entry in ns with this original sport/dport, as
    the conntrack tool reports it: the ground truth `nat` must equal."""
    for _, r in conntrack_entries(ns, "-p", proto, "--sport", str(sport), "--dport",
                                  str(dport)):
        if "src" in r:
            return {"saddr": r["src"], "sport": int(r["sport"]), "daddr": r["dst"],
                    "dport": int(r["dport"])}
    return None


# ---- the kernel's view of the classifiers --------------------------------------------------

FILTER_RE = re.compile(r"pref (\d+) bpf .*?handle (0x[0-9a-f]+) .*?\bid (\d+) name (\S+)")


def tc_filters(ns, dev, hook):
    """[(name, prog id, pref, handle)] of the bpf filters at dev's hook ("ingress"/"egress")."""
    r = subprocess.run(in_ns(ns, "tc", "filter", "show", "dev", dev, hook), capture_output=True,
                       text=True)
    out = []
    for line in r.stdout.splitlines():
        m = FILTER_RE.search(line)
        if m:
            out.append((m.group(4), int(m.group(3)), int(m.group(1)), m.group(2)))
        elif "nl_tc_" in line:
            out.append((re.search(r"nl_tc_\w+", line).group(0), -1, -1, ""))
    return out


def ours(ns, dev, hook):
    """True when netlens's classifier (pref 3, handle 0x4e4c, nl_tc_<hook>) sits at the hook,
    with a program the running agent holds (not another run's)."""
    mine = set().union(*prog_ids_held([agents[-1].pid]).values()) if agents else set()
    return any(n == "nl_tc_" + hook and pref == 3 and h == "0x4e4c" and pid_ in mine
               for n, pid_, pref, h in tc_filters(ns, dev, hook))


def prog_ids_held(pids=None):
    """{pid: set of BPF program ids it holds an fd of}, for pids (default: every process)."""
    held = {}
    for pid in pids if pids is not None else [d for d in os.listdir("/proc") if d.isdigit()]:
        ids = prog_ids(pid)
        if ids:
            held[int(pid)] = ids
    return held


def foreign_prog_ids():
    """Program ids held by live processes other than this test's agents (another netlens run
    on the same host, which follows these namespaces too): not ours to judge."""
    mine = {p.pid for p in agents}
    return set().union(*[ids for pid, ids in prog_ids_held().items() if pid not in mine])


def bpftool_progs(name=None):
    cmd = ["bpftool", "prog", "show"] + (["name", name] if name else []) + ["-j"]
    out = sh(*cmd, check=False).strip()
    got = json.loads(out) if out else []
    return [got] if isinstance(got, dict) else got  # `name X` with one match: an object


def test_devices():
    """(ns, dev) for every device of the test namespaces that still exist, lo aside."""
    out = []
    for ns in (NS_C1, NS_C2, NS_R, NS_C3):
        if not os.path.exists("/run/netns/" + ns):
            continue
        for line in sh("ip", "-n", ns, "-o", "link", "show", check=False).splitlines():
            dev = line.split(":")[1].strip().split("@")[0]
            if dev != "lo":
                out.append((ns, dev))
    return out


def leftover_filters(foreign):
    """(ns, dev, hook, name, id) of every nl_tc_* filter on the test devices not belonging to
    a foreign live process."""
    left = []
    for ns, dev in test_devices():
        for hook in ("ingress", "egress"):
            for name, pid_, _, _ in tc_filters(ns, dev, hook):
                if name.startswith("nl_tc_") and pid_ not in foreign:
                    left.append((ns, dev, hook, name, pid_))
    return left


def nothing_left(what, mine_ids):
    foreign = foreign_prog_ids()
    left = wait_for(lambda: not leftover_filters(foreign), 2, 0.1) or leftover_filters(foreign)
    check(left is True, "%s: no nl_tc_* filter on any test device (every namespace)" % what,
          left)
    held = set().union(*prog_ids_held().values())

    def stray():
        return [(p["id"], p["name"]) for p in bpftool_progs()
                if p.get("name", "").startswith("nl_tc_") and
                (p["id"] in mine_ids or p["id"] not in held)]
    s = wait_for(lambda: not stray(), 2, 0.1) or stray()
    check(s is True, "%s: bpftool lists no nl_tc_* program (none of this agent's, no orphan)"
          % what, (s, "foreign (another live process's):", sorted(foreign)))


# ---- checks ------------------------------------------------------------------------------

def device_bounds(c, per_packet_lo, per_packet_hi):
    d = c.get("device")
    if not d:
        return False
    return (d["packets_out"] > 0 and d["packets_in"] > 0 and
            c["bytes_sent"] + per_packet_lo * d["packets_out"] <= d["bytes_out"] <=
            c["bytes_sent"] + per_packet_hi * d["packets_out"] and
            c["bytes_recv"] + per_packet_lo * d["packets_in"] <= d["bytes_in"] <=
            c["bytes_recv"] + per_packet_hi * d["packets_in"])


def read_json_line(p):
    line = p.stdout.readline()
    try:
        return json.loads(line)
    except ValueError:
        raise RuntimeError("client said %r%s" % (line, p.stdout.read() if p.poll() else ""))


def poke(p):
    p.stdin.write("x\n")
    p.stdin.flush()
    if p.stdout.readline().strip() != "sent":
        raise RuntimeError("client stopped answering")


def check_containers(c1_ino, r_ino, scope):
    comm = "nlc1-" + TAG[-5:]
    spec = {"comm": comm, "cgroup": scope, "ops": [
        {"kind": "tcp", "host": C2_IP, "port": SRV_TCP, "n": 3000, "keep": True},
        {"kind": "tcp", "host": VIP, "port": VPORT, "n": 2000},
        {"kind": "udp", "host": C2_IP, "port": SRV_UDP, "n": 300}]}
    client = start(NS_C1, "python3", PEER, "client", json.dumps(spec))
    got = read_json_line(client)
    pid, (plain_port, dnat_port, udp_port) = got["pid"], got["ports"]
    check(pid == client.pid, "client pid as the test sees it", (pid, client.pid))

    # The same, but joining the cgroup before its exec, as container runtimes do.
    comm_x = "nlc1x-" + TAG[-5:]
    client_x = start(NS_C1, "python3", PEER, "client", json.dumps(
        {"comm": comm_x, "cgroup": scope, "reexec": True,
         "ops": [{"kind": "tcp", "host": C2_IP, "port": SRV_TCP, "n": 700}]}))
    x_port = read_json_line(client_x)["ports"][0]

    host_srv = start(None, "python3", PEER, "serve", "127.0.0.1", "0", "0")
    host_port = int(host_srv.stdout.readline().split()[1])
    host_cl = start(None, "python3", PEER, "client", json.dumps(
        {"ops": [{"kind": "tcp", "host": "127.0.0.1", "port": host_port, "n": 500}]}))
    host_cl_port = read_json_line(host_cl)["ports"][0]

    def fwd(flows):
        ing = [f for f in flows if f["netns"] == r_ino and f["device"] == L1[1] and
               f["direction"] == "ingress" and f["saddr"] == C1_IP and f["daddr"] == C2_IP and
               f["sport"] == plain_port and f["dport"] == SRV_TCP and f["type"] == "tcp"]
        egr = [f for f in flows if f["netns"] == r_ino and f["device"] == L2[1] and
               f["direction"] == "egress" and f["saddr"] == R_C2_IP and f["daddr"] == C2_IP and
               f["dport"] == SRV_TCP and f["type"] == "tcp"]
        return ing, egr

    def plain_ok(c):
        return c[0]["device"] and c[0]["device"]["packets_in"] > 0

    def everything():
        a = query()
        cs = a["connections"]
        want = [find(cs, "tcp", C1_IP, plain_port, C2_IP, SRV_TCP, closed=False),
                find(cs, "tcp", C1_IP, dnat_port, VIP, VPORT, closed=True),
                find(cs, "udp", C1_IP, udp_port, C2_IP, SRV_UDP, closed=True),
                find(cs, "tcp", "127.0.0.1", host_cl_port, "127.0.0.1", host_port, closed=True),
                find(cs, "tcp", C1_IP, x_port, C2_IP, SRV_TCP, closed=True)]
        ing, egr = fwd(a["device_flows"])
        done = (all(len(w) == 1 for w in want) and plain_ok(want[0]) and want[1][0]["device"]
                and want[2][0]["device"])
        return a if done and ing and egr else None

    answer = wait_for(everything, 5, 0.1) or query()
    cs = answer["connections"]
    plain = find(cs, "tcp", C1_IP, plain_port, C2_IP, SRV_TCP, closed=False)
    dnat = find(cs, "tcp", C1_IP, dnat_port, VIP, VPORT, closed=True)
    udp = find(cs, "udp", C1_IP, udp_port, C2_IP, SRV_UDP, closed=True)
    for what, c, sent, recv in (("open TCP through R (masqueraded in R)", plain, 3000, 6000),
                                ("closed TCP to the DNAT address", dnat, 2000, 4000),
                                ("closed UDP exchange with C2", udp, 300, 600)):
        if not check(len(c) == 1, "C1 %s is in /connections once" % what, c):
            continue
        c = c[0]
        check(c["netns"] == c1_ino and c["pid"] == pid and c["comm"] == comm,
              "C1 %s: netns, pid, comm" % what,
              ((c["netns"], c["pid"], c["comm"]), (c1_ino, pid, comm)))
        # The client joins the container's cgroup after its exec: a process found in no
        # container is read again (the netns actor keeps only a container found at exec).
        check(c["container_id"] == CONTAINER_ID, "C1 %s: container_id from the cgroup the "
              "client moved itself into (after its exec)" % what, c["container_id"])
        check(c["bytes_sent"] == sent and c["bytes_recv"] == recv,
              "C1 %s: exact bytes_sent/bytes_recv" % what, c)
        if c["type"] == "tcp":
            # The DNAT'd one's packets carry the translated address on the wire: the join
            # takes the tuple past NAT too.
            check(device_bounds(c, 40, 80),
                  "C1 %s: device counts = payload + 40..80 header bytes per packet" % what, c)
        else:
            d = c["device"]
            check(d is not None and d["packets_out"] > 0 and d["packets_in"] > 0 and
                  d["bytes_out"] == c["bytes_sent"] + 28 * d["packets_out"] and
                  d["bytes_in"] == c["bytes_recv"] + 28 * d["packets_in"],
                  "C1 %s: device counts = payload + 28 bytes per packet, exactly" % what, c)
    if plain:
        check(plain[0]["nat"] is None, "the connection masqueraded only in R has nat null in C1",
              plain[0]["nat"])
    if udp:
        check(udp[0]["nat"] is None, "the UDP exchange (masqueraded only in R) has nat null",
              udp[0]["nat"])
    if dnat:
        truth = kernel_reply(NS_C1, "tcp", dnat_port, VPORT)
        check(truth is not None and truth["saddr"] == C2_IP and truth["sport"] == SRV_TCP and
              dnat[0]["nat"] == truth,
              "DNAT in C1's own output chain: nat is the reply tuple conntrack in C1 holds",
              (dnat[0]["nat"], truth))
    x = find(cs, "tcp", C1_IP, x_port, C2_IP, SRV_TCP, closed=True)
    check(len(x) == 1 and x[0]["container_id"] == CONTAINER_ID and x[0]["comm"] == comm_x and
          x[0]["pid"] == client_x.pid and x[0]["netns"] == c1_ino and
          x[0]["bytes_sent"] == 700 and x[0]["bytes_recv"] == 1400,
          "C1 client that joined the container cgroup before its exec: container_id, comm, "
          "pid, netns, bytes", x)
    h = find(cs, "tcp", "127.0.0.1", host_cl_port, "127.0.0.1", host_port, closed=True)
    host_ino = os.stat("/proc/self/ns/net").st_ino
    check(len(h) == 1 and h[0]["container_id"] == "" and h[0]["netns"] == host_ino and
          h[0]["pid"] == host_cl.pid,
          "a host process: container_id \"\", the host's netns, its pid", (h, host_ino))

    ing, egr = fwd(answer["device_flows"])
    check(len(ing) >= 1 and all(f["packets"] > 0 and f["bytes"] > 0 for f in ing),
          "device_flows: R's veth towards C1, ingress, C1 -> C2:%d (forwarded)" % SRV_TCP,
          [f for f in answer["device_flows"] if f["netns"] == r_ino])
    check(len(egr) >= 1 and all(f["packets"] > 0 for f in egr),
          "device_flows: R's veth towards C2, egress, from the masquerade address %s" % R_C2_IP,
          [f for f in answer["device_flows"] if f["netns"] == r_ino])
    owned = [f for f in answer["device_flows"] if f["netns"] == c1_ino and
             f["sport"] in (plain_port, dnat_port, udp_port)]
    # Including the DNAT'd one, whose packets carry the translated address.
    check(not owned, "a flow C1's traced connection owns is not among device_flows", owned)
    return client


def check_new_namespace(c2_ino):
    nc0, ct0 = netns_counters(), ct_namespaces()
    add_ns(NS_C3)
    add_link(NS_C3, L3[0], C3_IP, NS_R, L3[1], R_C3_IP)
    sh("ip", "-n", NS_C3, "route", "add", "default", "via", R_C3_IP)
    c3_ino = ns_inode(NS_C3)
    t0 = time.monotonic()
    spec = {"ops": [{"kind": "tcp", "host": C2_IP, "port": SRV_TCP, "n": 1000, "keep": True}]}
    client = start(NS_C3, "python3", PEER, "client", json.dumps(spec))
    port = read_json_line(client)["ports"][0]

    def seen():
        poke(client)  # traffic after the classifiers are attached
        c = find(query()["connections"], "tcp", C3_IP, port, C2_IP, SRV_TCP, closed=False)
        return c if c and c[0]["netns"] == c3_ino and c[0]["device"] else None
    c = wait_for(seen, 3.0 - (time.monotonic() - t0), 0.2)
    took = time.monotonic() - t0
    check(bool(c), "namespace made after start: its client's connection carries netns == C3 "
          "and device counts within 3 s (%.1f s)" % took,
          find(query()["connections"], "tcp", C3_IP, port))
    check(ours(NS_C3, L3[0], "ingress") and ours(NS_C3, L3[0], "egress"),
          "tc filter show dev %s (in C3) lists nl_tc_ingress / nl_tc_egress" % L3[0],
          (tc_filters(NS_C3, L3[0], "ingress"), tc_filters(NS_C3, L3[0], "egress")))
    nc1 = netns_counters()
    check(nc1["namespaces_found"] > nc0["namespaces_found"] and
          nc1["exec_events"] > nc0["exec_events"],
          "stats: namespaces_found and exec_events grew", (nc0, nc1))
    ct1 = wait_for(lambda: ct_namespaces() > ct0 and ct_namespaces(), 2, 0.1) or ct_namespaces()
    check(ct1 > ct0, "stats: conntrack consumers (actors.conntrack.counters.namespaces) grew",
          (ct0, ct1))
    return client, c3_ino


def check_new_device(r_ino):
    add_link(NS_C2, L4[0], C2B_IP, NS_R, L4[1], R_C2B_IP)
    t0 = time.monotonic()
    attached = wait_for(lambda: all(ours(ns, dev, hook) for ns, dev in
                                    ((NS_C2, L4[0]), (NS_R, L4[1]))
                                    for hook in ("ingress", "egress")), 3, 0.1)
    took = time.monotonic() - t0
    check(bool(attached), "device made after start (both ends of a new veth pair C2<->R): "
          "netlens's filter in both hooks within 3 s (%.1f s)" % took,
          [(dev, hook, tc_filters(ns, dev, hook)) for ns, dev in ((NS_C2, L4[0]), (NS_R, L4[1]))
           for hook in ("ingress", "egress")])
    spec = {"ops": [{"kind": "tcp", "host": C2B_IP, "port": SRV_TCP, "n": 1500, "keep": True}]}
    client = start(NS_R, "python3", PEER, "client", json.dumps(spec))
    port = read_json_line(client)["ports"][0]

    def seen():
        c = find(query()["connections"], "tcp", R_C2B_IP, port, C2B_IP, SRV_TCP, closed=False)
        return c if c and c[0]["device"] else None
    c = wait_for(seen, 3, 0.1)
    check(bool(c) and c[0]["netns"] == r_ino and device_bounds(c[0], 40, 80),
          "traffic over the new device is counted (R's connection over it: device = payload "
          "+ 40..80 bytes per packet)", c or find(query()["connections"], "tcp", R_C2B_IP, port))
    return client


def holds_ns(pid, link):
    try:
        fds = os.listdir("/proc/%s/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == link:
                return True
        except OSError:
            pass
    return False


def check_flush(agent, c3_client, c3_ino):
    link = "net:[%d]" % c3_ino

    def holds():
        return holds_ns(agent.pid, link)
    check(holds(), "the agent holds a handle on C3 (%s) while it lives" % link)
    released0 = netns_counters()["namespaces_released"]
    c3_client.stdin.close()
    c3_client.wait(timeout=5)
    sh("ip", "netns", "del", NS_C3)
    t0 = time.monotonic()
    gone = wait_for(lambda: not holds() and
                    netns_counters()["namespaces_released"] > released0, 8, 0.2)
    took = time.monotonic() - t0
    check(bool(gone), "C3 deleted, no process left: within 8 s the agent's fds no longer link "
          "to %s and namespaces_released grew (%.1f s)" % (link, took),
          (holds(), released0, netns_counters()))
    # Nothing else of the agent's (a netlink or conntrack socket made in C3) may keep it:
    # once freed, the kernel destroys the veth pair, whose peer in R then goes.
    freed = wait_for(lambda: L3[1] not in sh("ip", "-n", NS_R, "-o", "link", "show",
                                             check=False), 5, 0.2)
    others = [pid for pid in os.listdir("/proc") if pid.isdigit() and
              int(pid) != agent.pid and holds_ns(pid, link)]
    if not freed and others:
        print("skip: C3 is still held by other processes %s (another agent on this host?)"
              % others, flush=True)
    else:
        check(bool(freed), "C3 is really freed once let go: its veth's peer %s in R "
              "disappears" % L3[1])


def main():
    build_topology()
    c1_ino, c2_ino, r_ino = ns_inode(NS_C1), ns_inode(NS_C2), ns_inode(NS_R)
    scope = make_container_cgroup()
    # Before the agent: C2's server; a process in C1 and in R so the start-up scan finds them.
    srv = start(NS_C2, "python3", PEER, "serve", "0.0.0.0", str(SRV_TCP), str(SRV_UDP))
    assert srv.stdout.readline().startswith("ready")
    for ns in (NS_C1, NS_R):
        idle = start(ns, "python3", PEER, "idle")
        assert idle.stdout.readline().strip() == "ready"

    config = write_config("netlens.toml")
    agent, log = launch_agent(config, "agent.log")
    query()  # a client that reads once and never again keeps every closed connection buffered
    initial = [(NS_C1, L1[0]), (NS_R, L1[1]), (NS_C2, L2[0]), (NS_R, L2[1])]
    attached = wait_for(lambda: all(ours(ns, d, h) for ns, d in initial
                                    for h in ("ingress", "egress")), 5, 0.1)
    check(bool(attached), "at start: netlens's classifiers on every test device, both hooks",
          [(d, h, tc_filters(ns, d, h)) for ns, d in initial for h in ("ingress", "egress")])

    c1_client = check_containers(c1_ino, r_ino, scope)
    c3_client, c3_ino = check_new_namespace(c2_ino)
    r_client = check_new_device(r_ino)
    check_flush(agent, c3_client, c3_ino)

    # SIGTERM: the ordered shutdown, and nothing of ours left in the kernel.
    for c in (c1_client, r_client):
        c.stdin.close()
        c.wait(timeout=5)
    mine = set().union(*prog_ids_held([agent.pid]).values())
    rc = stop_agent(agent, timeout=20)
    text = open(log).read()
    check(rc == 0, "agent exits 0 on SIGTERM", rc)
    pos = [text.find("shutdown phase %s:" % ph) for ph in ("stop", "purge", "exit")]
    check(all(p >= 0 for p in pos) and pos == sorted(pos),
          "the log shows the stop, purge and exit phases in order", text[-2500:])
    nothing_left("after SIGTERM", mine)

    # SIGKILL: the classifiers stay behind; the next start removes them and attaches its own.
    devices = [(NS_C1, L1[0]), (NS_R, L1[1]), (NS_C2, L2[0]), (NS_R, L2[1]), (NS_C2, L4[0]),
               (NS_R, L4[1])]
    agent2, _ = launch_agent(config, "agent2.log")
    attached = wait_for(lambda: all(ours(ns, d, h) for ns, d in devices
                                    for h in ("ingress", "egress")), 5, 0.1)
    check(bool(attached), "second agent: classifiers on every test device",
          [(d, h, tc_filters(ns, d, h)) for ns, d in devices for h in ("ingress", "egress")])
    ids2 = set().union(*prog_ids_held([agent2.pid]).values())
    agent2.kill()
    agent2.wait()
    left = [f for f in leftover_filters(foreign_prog_ids()) if f[4] in ids2]
    check(len(left) == 2 * len(devices),
          "SIGKILL leaves the second agent's filters behind (%d of %d)" % (
              len(left), 2 * len(devices)), left)

    agent3, log3 = launch_agent(config, "agent3.log")
    removed = wait_for(lambda: netns_counters()["tc_leftovers_removed"] >= len(left) and
                       netns_counters()["tc_leftovers_removed"], 3, 0.1) or \
        netns_counters()["tc_leftovers_removed"]
    check(removed >= len(left), "third agent: tc_leftovers_removed (%s) >= the %d left"
          % (removed, len(left)), netns_counters())

    def only_third():
        ids3 = set().union(*prog_ids_held([agent3.pid]).values())
        names = {"ingress": {p["id"] for p in bpftool_progs("nl_tc_ingress")},
                 "egress": {p["id"] for p in bpftool_progs("nl_tc_egress")}}
        bad = []
        for ns, dev in devices:
            for hook in ("ingress", "egress"):
                fs = [f for f in tc_filters(ns, dev, hook) if f[0].startswith("nl_tc_")]
                if (len(fs) != 1 or fs[0][0] != "nl_tc_" + hook or fs[0][1] not in ids3 or
                        fs[0][1] not in names[hook]):
                    bad.append((dev, hook, fs))
        return bad
    bad = wait_for(lambda: not only_third(), 3, 0.1) or only_third()
    ids3 = set().union(*prog_ids_held([agent3.pid]).values())
    check(bad is True, "after the third start each test device carries only the third agent's "
          "programs (ids from its fds and bpftool prog show name nl_tc_*)",
          (bad, sorted(ids3)))
    stale = [p["id"] for p in bpftool_progs() if p["id"] in ids2 and
             p.get("name", "").startswith("nl_tc_")]
    check(not stale, "the killed agent's nl_tc_* programs are gone from bpftool", stale)
    rc = stop_agent(agent3, timeout=20)
    check(rc == 0, "third agent exits 0 on SIGTERM", rc)
    nothing_left("after the third agent's SIGTERM", ids3 | ids2)


if __name__ == "__main__":
    # ctest's timeout (or a ^C) still runs the teardown.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("FAIL: terminated"))
    run_test(main, "netns e2e", teardown=teardown, timed=True)
