#!/usr/bin/env python3
"""End to end, IPFIX export against two real collectors from Debian, nfcapd (nfdump 1.7.1) and
nfacctd (pmacct 1.7.7), and tshark 4.0 as an independent decoder of the wire.

  NS_A  10.232.0.1 fd00:232::1 --veth-- 10.232.0.2 fd00:232::2  NS_B
        agent, clients, nfcapd, nfacctd, dumpcap      servers (tcp :19190 v4+v6, :19191, udp :19192)
        nft: 10.232.0.2:18190/tcp dnat to :19191

The agent runs in A (nsenter --net only, so cgroup2 stays mounted) and exports over UDP to both
collectors on A's loopback; dumpcap records the export. The workload crosses the veth, where
the classifiers count, so the records carry octetDeltaCount/packetDeltaCount (IE 1/2), the only
byte columns nfdump and pmacct read. Truths: the applications' own byte counts (exact payload,
IE 401, which only tshark and our decoder read), the agent's /connections device counts (IE 1/2
summed over a socket's records), nft's translation (post-NAT fields). Then: nfcapd down and up,
SIGTERM with a connection open (flowEndReason 4), /metrics through promtool, and a second agent
exporting over TCP to a small collector of ours (Debian's two take UDP only).

Collectors (see ipfix_probe.py for the evidence): Debian may start its own nfcapd/nfacctd from
init scripts when the packages are installed; ours listen in the test's own namespace on ports
of its own, so they never meet. Only the namespaces made here carry traffic; everything made is
removed at the end, also on failure.

`export_e2e.py --peer MODE ...` runs one of the test's processes inside a namespace (see peer_*).
"""
import collections
import functools
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import e2e_support  # noqa: E402
import ipfix_probe as ipfix  # noqa: E402
from e2e_support import (add_namespace, api_text, end_started, in_ns, kill_group,  # noqa: E402
                         ns_inode, remove_namespace, run_test, sh, start, start_agent, stop_agent,
                         stop_process, wait_for)

SELF = os.path.abspath(__file__)
TAG = str(os.getpid())
T6 = TAG[-6:]
NS_A, NS_B = "nltest-exp-a-" + TAG, "nltest-exp-b-" + TAG
VETH_A, VETH_B = "nlxa" + T6, "nlxb" + T6
A4, B4, A6, B6 = "10.232.0.1", "10.232.0.2", "fd00:232::1", "fd00:232::2"
SRV_TCP, SRV_DNAT, SRV_UDP, VPORT = 19190, 19191, 19192, 18190
# UDP clients bind UDP_CLIENT_PORT_BASE + their op id (ids stay below 1000).
UDP_CLIENT_PORT_BASE = 40000
# Inside A only: no other collector can be on these.
NFCAPD_PORT, NFACCTD_PORT, TCP_COLLECTOR_PORT = 29995, 29996, 29997
DOMAIN = 7
ACTIVE_TIMEOUT_S = 2
WORKLOAD = lambda a: a.startswith("10.232.0.") or a.startswith("fd00:232::")  # noqa: E731

namespaces = []
WORK = None
SOCK = None
# Its failures print the first 3,000 characters of their detail, as they always have.
check = functools.partial(e2e_support.check, sep=" ", keep=3000)


# ---- plumbing ------------------------------------------------------------------------------

def build_topology():
    for ns in (NS_A, NS_B):
        add_namespace(ns)
        namespaces.append(ns)
    sh("ip", "link", "add", VETH_A, "netns", NS_A, "type", "veth", "peer", "name", VETH_B,
       "netns", NS_B)
    for ns, dev, a4, a6 in ((NS_A, VETH_A, A4, A6), (NS_B, VETH_B, B4, B6)):
        sh("ip", "-n", ns, "addr", "add", a4 + "/24", "dev", dev)
        sh("ip", "-n", ns, "addr", "add", a6 + "/64", "dev", dev, "nodad")
        sh("ip", "-n", ns, "link", "set", dev, "up")
    sh(*in_ns(NS_A, "nft", "-f", "-"), input="""
table ip nltest {
  chain out {
    type nat hook output priority -100;
    ip daddr %s tcp dport %d dnat to %s:%d
  }
}
""" % (B4, VPORT, B4, SRV_DNAT))


def teardown():
    end_started()
    for ns in namespaces:
        remove_namespace(ns)
    if WORK and not os.environ.get("NETLENS_E2E_KEEP"):
        subprocess.run(["rm", "-rf", WORK])
    elif WORK:
        print("kept", WORK)


# ---- collectors and capture ----------------------------------------------------------------

class Nfcapd:
    def __init__(self, flowdir):
        self.flowdir = flowdir
        os.makedirs(flowdir, exist_ok=True)
        self.log = flowdir + ".log"
        self.p = start(NS_A, *ipfix.nfcapd_argv(flowdir, NFCAPD_PORT),
                       stdout=open(self.log, "w"))
        if not wait_for(lambda: "Startup" in open(self.log).read() or self.p.poll() is not None,
                        10, 0.05) or self.p.poll() is not None:
            raise RuntimeError("nfcapd did not start:\n" + open(self.log).read())

    def stop(self):
        return stop_process(self.p)  # SIGTERM closes and renames the current file

    def records(self):
        return nfdump_raw(self.flowdir)


def nfdump_raw(flowdir):
    """nfdump -o raw: the one output of 1.7.1 that shows every field it decoded, flowEndReason
    and flowDirection among them (json lacks the reason; %ter in fmt: prints wrong
    milliseconds). One dict per record."""
    if not any(f.startswith("nfcapd.") and "current" not in f for f in os.listdir(flowdir)):
        return []
    out = sh("nfdump", "-R", flowdir, "-o", "raw", check=False)
    recs, cur = [], None
    for line in out.splitlines():
        if line.startswith("Flow Record"):
            cur = {}
            recs.append(cur)
        elif cur is not None and "=" in line:
            k, v = line.split("=", 1)
            cur[k.strip()] = v.strip()
    res = []
    for r in recs:
        try:
            res.append({"src": r["src addr"], "dst": r["dst addr"], "sport": int(r["src port"]),
                        "dport": int(r["dst port"]), "proto": int(r["proto"].split()[0]),
                        "octets": int(r["in bytes"]), "packets": int(r["in packets"]),
                        "dir": int(r.get("direction", "-1")),
                        "reason": int(r.get("end reason", "0x0").split()[0], 16),
                        "start": int(r["first"].split()[0]), "end": int(r["last"].split()[0]),
                        "xsa": r.get("src xlt ip"), "xda": r.get("dst xlt ip"),
                        "xsp": int(r["src xlt port"]) if "src xlt port" in r else None,
                        "xdp": int(r["dst xlt port"]) if "dst xlt port" in r else None})
        except (KeyError, ValueError) as e:
            res.append({"unparsed": r, "error": str(e)})
    return res


class Nfacctd:
    def __init__(self):
        self.out = os.path.join(WORK, "nfacctd.json")
        self.log = os.path.join(WORK, "nfacctd.log")
        conf = ipfix.nfacctd_config(os.path.join(WORK, "nfacctd.conf"), NFACCTD_PORT, self.out,
                                    os.path.join(WORK, "nfacctd.pid"))
        # Its own process group: the print plugin is a child of the core, and the core takes
        # ten seconds or more to go on SIGTERM; the group is killed at the end.
        self.p = start(NS_A, "nfacctd", "-f", conf, stdout=open(self.log, "w"), group=True)
        if not wait_for(lambda: "waiting for NetFlow/IPFIX data" in open(self.log).read(), 10,
                        0.05):
            raise RuntimeError("nfacctd did not start:\n" + open(self.log).read())

    def records(self):
        return ipfix.nfacctd_records(self.out)

    def stop(self):
        kill_group(self.p.pid)
        self.p.wait()


class Capture:
    """dumpcap on A's loopback, both collectors' ports. Started before the agent, so every
    template is in the file before its data."""

    def __init__(self):
        self.path = os.path.join(WORK, "export.pcapng")
        self.err = os.path.join(WORK, "dumpcap.log")
        self.p = start(NS_A, "dumpcap", "-q", "-i", "lo", "-f", "udp port %d or udp port %d"
                       % (NFCAPD_PORT, NFACCTD_PORT), "-w", self.path,
                       stdout=open(self.err, "w"))
        if not wait_for(lambda: os.path.exists(self.path) and os.path.getsize(self.path) > 0,
                        10, 0.05):
            raise RuntimeError("dumpcap did not start: " + open(self.err).read())

    def stop(self):
        return stop_process(self.p)

    def decode_args(self):
        return ["-d", "udp.port==%d,cflow" % NFCAPD_PORT, "-d", "udp.port==%d,cflow" % NFACCTD_PORT]

    def problems(self):
        """Malformed packets and expert infos of severity error, as tshark -V prints them."""
        out = sh("tshark", "-r", self.path, *self.decode_args(), "-V", check=False)
        return [l.strip() for l in out.splitlines()
                if "Malformed" in l or "Expert Info (Error" in l]

    def records(self):
        """Per collector port: the records tshark decodes, each with our own decoder's view of
        the same record (enterprise elements, which tshark shows as bytes only) under "own",
        and the session's message list from our decoder (sequence numbers)."""
        out = sh("tshark", "-r", self.path, *self.decode_args(), "-T", "json",
                 "--no-duplicate-keys", "-e", "frame.number", "-e", "frame.time_epoch",
                 "-e", "udp.dstport", "-e", "udp.payload", check=False)
        frames = json.loads(out or "[]")
        own = {NFCAPD_PORT: ipfix.Decoder(), NFACCTD_PORT: ipfix.Decoder()}
        byframe = {}
        for f in frames:
            lay = f["_source"]["layers"]
            port = int(first(lay["udp.dstport"]))
            d = own[port]
            before = len(d.records)
            d.feed_message(bytes.fromhex(first(lay["udp.payload"]).replace(":", "")))
            byframe[int(first(lay["frame.number"]))] = (port, float(first(lay["frame.time_epoch"])),
                                                        d.records[before:])
        # tshark's own field decoding, record by record.
        tree = json.loads(sh("tshark", "-r", self.path, *self.decode_args(), "-T", "json",
                             "--no-duplicate-keys", "-J", "frame cflow", check=False) or "[]")
        res = {NFCAPD_PORT: [], NFACCTD_PORT: []}
        mismatches = []
        for f in tree:
            lay = f["_source"]["layers"]
            num = int(lay["frame"]["frame.number"])
            port, t, mine = byframe.get(num, (None, 0, []))
            if port is None:
                continue
            flows = [v for k, v in walk_flows(lay.get("cflow", {}))]
            if len(flows) != len(mine):
                mismatches.append((num, len(flows), len(mine)))
                continue
            for tf, (_, tid, rec) in zip(flows, mine):
                r = shark_record(tf)
                r.update(frame=num, time=t, tid=tid, own=rec)
                res[port].append(r)
        return res, own, mismatches


def first(v):
    return v[0] if isinstance(v, list) else v


def walk_flows(node):
    """("Flow N", fields) in order from tshark's json tree of one cflow layer."""
    for k, v in node.items():
        if k.startswith("Set ") and isinstance(v, dict):
            for k2, v2 in v.items():
                if k2.startswith("Flow ") and isinstance(v2, dict):
                    yield k2, v2


def shark_record(f):
    g = lambda k, d=None: f.get(k, d)  # noqa: E731
    num = lambda k: int(g(k)) if g(k) is not None else None  # noqa: E731
    times = g("cflow.timedelta_tree", {})
    return {
        "src": g("cflow.srcaddr") or g("cflow.srcaddrv6"),
        "dst": g("cflow.dstaddr") or g("cflow.dstaddrv6"),
        "sport": num("cflow.srcport"), "dport": num("cflow.dstport"),
        "proto": num("cflow.protocol"), "dir": num("cflow.direction"),
        "reason": num("cflow.flow_end_reason"),
        "payload": num("cflow.transport_octet_delta_count"),
        "octets": num("cflow.octets"), "packets": num("cflow.packets"),
        "xsa": g("cflow.post_natsource_ipv4_address") or g("cflow.post_nat_source_ipv6_address"),
        "xda": g("cflow.post_natdestination_ipv4_address") or
        g("cflow.post_nat_destination_ipv6_address"),
        "xsp": num("cflow.post_naptsource_transport_port"),
        "xdp": num("cflow.post_naptdestination_transport_port"),
        "has_times": "cflow.abstimestart" in times,
    }


# ---- the agent -----------------------------------------------------------------------------

def write_config(name, collectors, transport):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write("""[agent]
api_socket = "%s"

[netns]
tc_include = ["nlx"]

[export]
max_queued_records = 65536

[export.ipfix]
collectors = [%s]
transport = "%s"
observation_domain_id = %d
active_timeout_s = %d
flush_interval_ms = 200
template_refresh_s = 5
mtu = 1400

[export.metrics]
enabled = true
labels = ["protocol", "direction"]
""" % (SOCK, ", ".join('"%s"' % c for c in collectors), transport, DOMAIN, ACTIVE_TIMEOUT_S))
    return path


def start_agent_in_a(config, log_name):
    path = os.path.join(WORK, log_name)
    return start_agent(NETLENS, config, path, timeout=20, ns=NS_A), path


def api(path):
    return api_text(SOCK, path)


def exporter_counters():
    try:
        return json.loads(api("/stats"))["actors"]["exporter"]["counters"]
    except (RuntimeError, KeyError, ValueError) as e:
        return {"unavailable": str(e)}


class ConnectionWatch:
    """Polls /connections with a client id of its own, keeping the last view of every socket
    of the workload (a closed one is handed to a client once: kept here for good)."""

    def __init__(self):
        self.seen = {}
        self.stop_ = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def poll(self):
        try:
            cs = json.loads(api("/connections?client_id=export-e2e"))["connections"]
        except (RuntimeError, ValueError):
            return
        for c in cs:
            if WORKLOAD(c["saddr"]):
                self.seen[(c["type"], c["saddr"], c["sport"], c["daddr"], c["dport"])] = c

    def _run(self):
        while not self.stop_.is_set():
            self.poll()
            self.stop_.wait(0.25)

    def stop(self):
        self.stop_.set()
        self.t.join()
        self.poll()


def vm_hwm_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return -1


# ---- the workload --------------------------------------------------------------------------

def tcp_op(rng, i, host, port, dnat_to=None):
    return {"id": i, "kind": "tcp", "host": host, "port": port, "send": rng.randint(1, 200000),
            "reply": rng.randint(0, 200000), "dnat_to": dnat_to}


def udp_op(rng, i, host, port):
    k = rng.randint(1, 8)
    return {"id": i, "kind": "udp", "host": host, "port": port,
            "sizes": [rng.randint(2, 1400) for _ in range(k)],
            "replies": [rng.randint(1, 1400) for _ in range(k)]}


def run_client(ops, timeout=90):
    """Runs ops in a client process in A; returns {id: result}."""
    p = start(NS_A, "python3", SELF, "--peer", "client", json.dumps(ops))
    out, _ = p.communicate(timeout=timeout)
    res = {}
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            res[r["id"]] = r
    if p.returncode != 0 or len(res) != len(ops):
        raise RuntimeError("client failed (rc %s, %d of %d results): %s"
                           % (p.returncode, len(res), len(ops), out[-2000:]))
    return res


def server_retrans_path():
    return os.path.join(WORK, "server-retrans.jsonl")


def server_retrans():
    """(client address, client port) -> payload bytes the server's socket retransmitted."""
    out = {}
    if os.path.exists(server_retrans_path()):
        for line in open(server_retrans_path()):
            r = json.loads(line)
            out[tuple(r["peer"])] = r["retrans"]
    return out


def socket_truths(ops, results):
    """One entry per traced socket of the workload: (proto, local, lport, peer, pport) and what
    each direction must total. TCP: the client's socket and the server's accepted one; UDP: the
    client's connected socket (the server's is one unconnected socket for every peer)."""
    out = []
    srv = server_retrans()
    for op in ops:
        r = results[op["id"]]
        proto = 6 if op["kind"] in ("tcp", "long") else 17
        la, lp, pa, pp = r["laddr"], r["lport"], r["raddr"], r["rport"]
        out.append({"op": op, "side": "client", "proto": proto, "local": (la, lp),
                    "peer": (pa, pp), "sent": r["sent"], "recv": r["recv"], "pid": r["pid"],
                    "dgrams_sent": len(op.get("sizes", [])), "dgrams_recv":
                    len(op.get("replies", [])), "ns": NS_A,
                    "retrans_sent": r["retrans"] if proto == 6 else 0,
                    "retrans_recv": srv.get((la, lp)) if proto == 6 else 0})
        if proto == 6:
            real = op.get("dnat_to") or pp
            out.append({"op": op, "side": "server", "proto": 6, "local": (pa, real),
                        "peer": (la, lp), "sent": r["recv"], "recv": r["sent"], "pid": None,
                        "ns": NS_B, "retrans_sent": srv.get((la, lp)),
                        "retrans_recv": r["retrans"]})
    return out


def records_of(recs, truth, direction):
    (la, lp), (pa, pp) = truth["local"], truth["peer"]
    if direction == 1:
        key = (la, lp, pa, pp)
    else:
        key = (pa, pp, la, lp)
    return [r for r in recs if (r["src"], r["sport"], r["dst"], r["dport"]) == key and
            r["proto"] == truth["proto"] and r["dir"] == direction]


def pen(r, ie):
    return r["own"].get((ipfix.PEN, ie))


# ---- checks --------------------------------------------------------------------------------

def check_records(name, recs, truths, conns, window):
    """The capture's records of one collector session against every socket's truth."""
    bad_payload, bad_device, bad_bounds, bad_reason, dups, missing = [], [], [], [], [], []
    bad_pen, bad_time, bad_pkts = [], [], []
    t0, t1 = window
    for t in truths:
        conn = conns.get(("tcp" if t["proto"] == 6 else "udp", t["local"][0], t["local"][1],
                          t["peer"][0], t["peer"][1]))
        for direction, want in ((1, t["sent"]), (0, t["recv"])):
            rs = sorted(records_of(recs, t, direction), key=lambda r: (r["time"], r["frame"]))
            if want and not rs:
                missing.append((t["side"], t["local"], t["peer"], direction, want))
                continue
            got = sum(r["payload"] or 0 for r in rs)
            if got != want:
                bad_payload.append((t["side"], t["local"], t["peer"], direction, want, got,
                                    len(rs)))
            keys = [(r["src"], r["sport"], r["dst"], r["dport"], r["dir"],
                     r["own"].get(ipfix.FLOW_END_MS)) for r in rs]
            if len(set(keys)) != len(keys):
                dups.append(keys)
            if rs and (rs[-1]["reason"] != 3 or any(r["reason"] != 2 for r in rs[:-1])):
                bad_reason.append((t["side"], t["local"], direction, [r["reason"] for r in rs]))
            for r in rs:
                s, e = r["own"].get(ipfix.FLOW_START_MS, 0), r["own"].get(ipfix.FLOW_END_MS, 0)
                if not (t0 - 1000 <= s <= e <= t1 + 1000):
                    bad_time.append((t["local"], direction, s, e, t0, t1))
            # The enterprise elements: pid (client side, our process), netns, initiator, the
            # running payload total.
            ns_ino = ns_inode(t["ns"])
            want_init = 1 if t["side"] == "client" else 2
            for r in rs:
                if (pen(r, ipfix.E_NETNS) != ns_ino or pen(r, ipfix.E_INITIATOR) != want_init or
                        (t["pid"] and pen(r, ipfix.E_PID) != t["pid"])):
                    bad_pen.append((t["side"], t["local"], direction, pen(r, ipfix.E_PID),
                                    pen(r, ipfix.E_NETNS), ns_ino, pen(r, ipfix.E_INITIATOR)))
                    break
            if rs and pen(rs[-1], ipfix.E_PAYLOAD_OCTETS_TOTAL) not in (None, want):
                bad_pen.append((t["side"], t["local"], direction, "payload total",
                                pen(rs[-1], ipfix.E_PAYLOAD_OCTETS_TOTAL), want))
            # Datagrams: the socket's packet delta (IE 402, or netlens's own element 11).
            if t["proto"] == 17 and rs:
                n = sum(r["own"].get(ipfix.TRANSPORT_PACKETS, r["own"].get((ipfix.PEN, ipfix.E_PACKETS_DELTA), 0))
                        for r in rs)
                k = t["dgrams_sent"] if direction == 1 else t["dgrams_recv"]
                if n != k:
                    bad_pkts.append((t["local"], direction, k, n))
            # IP level (IE 1/2) against the agent's own device counts, and plausible against
            # the payload: every packet carries at least its IP and transport headers.
            octets = sum(r["octets"] or 0 for r in rs)
            packets = sum(r["packets"] or 0 for r in rs)
            dev = (conn or {}).get("device") or {}
            want_o = dev.get("bytes_out" if direction == 1 else "bytes_in")
            want_p = dev.get("packets_out" if direction == 1 else "packets_in")
            if conn is not None and (octets, packets) != (want_o, want_p):
                bad_device.append((t["side"], t["local"], t["peer"], direction,
                                   (octets, packets), (want_o, want_p)))
            # Retransmitted segments cross the devices again: their payload is in the IP
            # counts once more (the sender's tcpi_bytes_retrans says how much).
            v6 = ":" in t["local"][0]
            lo, hi = ((48, 48) if v6 else (28, 28)) if t["proto"] == 17 else \
                ((60, 100) if v6 else (40, 80))
            again = t.get("retrans_sent" if direction == 1 else "retrans_recv")
            if want and (again is None or
                         not (want + lo * packets <= octets <= want + again + hi * packets)):
                bad_bounds.append((t["side"], t["local"], direction, want, octets, packets,
                                   "retransmitted", again))
    n = len(truths)
    check(not missing, "%s: a record for every direction of the %d sockets that moved data"
          % (name, n), missing)
    check(not bad_payload, "%s: transportOctetDeltaCount (IE 401, from tshark) summed per "
          "socket and direction = the application's own byte count, exactly" % name, bad_payload)
    check(not dups, "%s: no record twice (src, sport, dst, dport, direction, flowEnd)" % name,
          dups[:5])
    check(not bad_reason, "%s: flowEndReason 2 (active timeout) for all but a direction's last "
          "record, 3 (end of flow) for the last" % name, bad_reason[:10])
    check(not bad_time, "%s: flowStart <= flowEnd, both within the test's run" % name,
          bad_time[:5])
    check(not bad_device, "%s: octetDeltaCount/packetDeltaCount (IE 1/2) summed per socket and "
          "direction = /connections device counts (bytes/packets out for sent, in for received)"
          % name, bad_device[:10])
    check(not bad_bounds, "%s: IP bytes = payload + headers (TCP v4 40..80, v6 60..100 bytes a "
          "packet, plus what the sender retransmitted (its tcp_info); UDP 28 / 48 exactly)"
          % name, bad_bounds[:10])
    check(not bad_pkts, "%s: UDP: datagram count per direction (IE 402 or netlens's element 11) "
          "= datagrams the application sent/received" % name, bad_pkts[:10])
    check(not bad_pen, "%s: enterprise elements: pid, netns inode, initiator (1 client, 2 "
          "server), running payload total of the last record" % name, bad_pen[:10])


def check_nat(recs, truths):
    bad = []
    for t in truths:
        if not t["op"].get("dnat_to"):
            continue
        (la, lp), (pa, pp) = t["local"], t["peer"]
        for direction in (1, 0):
            for r in records_of(recs, t, direction):
                if t["side"] == "client":
                    # The reply tuple nft made (B4:19191 -> A4:lport): the received record's
                    # post-NAT fields as is, the sent record's reversed.
                    want = ((la, lp, B4, SRV_DNAT) if direction == 1 else (B4, SRV_DNAT, la, lp))
                    got = (r["xsa"], r["xsp"], r["xda"], r["xdp"])
                    if got != want:
                        bad.append((t["side"], t["local"], direction, got, want))
                elif r["xdp"] not in (None, 0) and (r["xsa"], r["xsp"], r["xda"], r["xdp"]) != (
                        r["src"], r["sport"], r["dst"], r["dport"]):
                    bad.append((t["side"], t["local"], direction, "server end in B has no NAT",
                                r))
    n = sum(1 for t in truths if t["op"].get("dnat_to") and t["side"] == "client")
    check(n > 0 and not bad, "DNAT'd connections (%d): post-NAT address and port fields (IE "
          "225-228) = nft's translation to %s:%d; their server ends carry none" % (n, B4, SRV_DNAT),
          bad[:10])
    plain = [r for t in truths if not t["op"].get("dnat_to") and t["side"] == "client"
             for d in (1, 0) for r in records_of(recs, t, d)]
    odd = [r for r in plain if r["xdp"] not in (None, 0) and
           (r["xsa"], r["xsp"], r["xda"], r["xdp"]) != (r["src"], r["sport"], r["dst"], r["dport"])]
    check(not odd, "untranslated connections carry no post-NAT fields (or equal ones)", odd[:5])


def check_sequence(name, decoder):
    """RFC 7011: each message's sequence number = data records sent before it in the session."""
    gaps = []
    expect = None
    for (_, _, _, seq, domain, n) in decoder.messages:
        if domain != DOMAIN:
            gaps.append(("domain", domain))
        if expect is not None and seq != expect:
            gaps.append((expect, seq))
        expect = (seq + n) & 0xFFFFFFFF
    return gaps


def check_nfacctd(acct, wire):
    """What nfacctd decoded = what was on the wire to it. Its aggregates are keyed by both
    endpoints, ports, protocol and both timestamps (pmacct 1.7.7 has no flowDirection
    primitive: a client's sent record and its server's received one, same tuple and times,
    fall into one aggregate), so the capture is summed the same way."""
    akey = lambda src, dst, sp, dp, pr, s, e: (src, dst, sp, dp, pr, s, e)  # noqa: E731
    want = collections.Counter()
    for r in wire:
        k = akey(r["src"], r["dst"], r["sport"], r["dport"], r["proto"],
                 r["own"].get(ipfix.FLOW_START_MS), r["own"].get(ipfix.FLOW_END_MS))
        want[k + ("bytes",)] += r["octets"] or 0
        want[k + ("packets",)] += r["packets"] or 0
    got = collections.Counter()
    proto_num = {"tcp": 6, "udp": 17}
    for r in acct:
        if not WORKLOAD(r.get("ip_src", "")):
            continue
        k = akey(r["ip_src"], r["ip_dst"], r["port_src"], r["port_dst"],
                 proto_num.get(r["ip_proto"], r["ip_proto"]),
                 round(float(r["timestamp_start"]) * 1000), round(float(r["timestamp_end"]) * 1000))
        got[k + ("bytes",)] += r.get("bytes", 0)
        got[k + ("packets",)] += r.get("packets", 0)
    want = +want
    got = +got
    check(bool(want) and got == want, "nfacctd's aggregates (bytes, packets from IE 1/2) = the "
          "records on the wire to it, summed by its key (%d keys)" % len(want),
          (list((want - got).items())[:5], list((got - want).items())[:5]))
    check(all(r.get("export_proto_sysid") == DOMAIN for r in acct if WORKLOAD(r.get("ip_src", ""))),
          "nfacctd: observation domain id %d" % DOMAIN)


def multiset(recs, keyf):
    return collections.Counter(keyf(r) for r in recs)


# ---- the phases ----------------------------------------------------------------------------

def main():
    global WORK, SOCK
    seed = int(os.environ.get("NETLENS_E2E_SEED", random.randrange(1 << 30)))
    print("export e2e: seed %d (NETLENS_E2E_SEED=%d to repeat)" % (seed, seed), flush=True)
    rng = random.Random(seed)
    WORK = tempfile.mkdtemp(prefix="netlens-export-")
    SOCK = os.path.join(WORK, "run", "netlens.sock")
    build_topology()
    server = start(NS_B, "python3", SELF, "--peer", "serve", server_retrans_path())
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("servers did not start")
    capture = Capture()
    nfcapd = Nfcapd(os.path.join(WORK, "nfcapd-1"))
    nfacctd = Nfacctd()
    udp = write_config("udp.toml", ["127.0.0.1:%d" % NFCAPD_PORT, "127.0.0.1:%d" % NFACCTD_PORT],
                       "udp")
    agent, agent_log = start_agent_in_a(udp, "agent-udp.log")
    t_begin = int(time.time() * 1000)
    watch = ConnectionWatch()

    # Phase 1: the bulk workload and one long connection, concurrently.
    ops = [tcp_op(rng, i, B4, SRV_TCP) for i in range(40)]
    ops += [tcp_op(rng, 100 + i, B6, SRV_TCP) for i in range(20)]
    ops += [udp_op(rng, 200 + i, B4, SRV_UDP) for i in range(20)]
    ops += [tcp_op(rng, 300 + i, B4, VPORT, dnat_to=SRV_DNAT) for i in range(10)]
    rng.shuffle(ops)
    long_op = {"id": 900, "kind": "long", "host": B4, "port": SRV_TCP, "seconds": 7.0,
               "chunks": [rng.randint(1, 30000) for _ in range(20)], "reply": rng.randint(1, 5000)}
    results = {}
    long_thread = threading.Thread(target=lambda: results.update(run_client([long_op])))
    long_thread.start()
    results.update(run_client(ops))
    long_thread.join()
    phase1 = socket_truths(ops + [long_op], results)
    long_truths = [t for t in phase1 if t["op"]["id"] == 900]

    # Every phase-1 socket's records reach nfacctd (shown within print_refresh_time); nfcapd
    # had the same messages at the same moment, and rotates its file every 2 s.
    def all_in(recs):
        have = {(r.get("ip_src"), r.get("port_src")) for r in recs}
        return all(t["local"] in have for t in phase1)
    check(bool(wait_for(lambda: all_in(nfacctd.records()), 20, 0.5)),
          "nfacctd shows records of every socket of phase 1")
    have_nfdump = wait_for(lambda: (lambda rs: all(any((r.get("src"), r.get("sport")) ==
                                                       t["local"] for r in rs) for t in phase1))(
        nfcapd.records()), 15, 0.5)
    check(bool(have_nfdump), "nfdump shows records of every socket of phase 1 (nfcapd -t 2)")
    print("exporter before the outage:", exporter_counters(), flush=True)

    # Phase 2: nfcapd down for 3 s while connections run, then up again on the same port.
    before = exporter_counters()
    t_outage = time.time()
    nfcapd.stop()
    outage_ops = [tcp_op(rng, 400 + i, B4, SRV_TCP) for i in range(5)] + \
                 [udp_op(rng, 450 + i, B4, SRV_UDP) for i in range(3)]
    results.update(run_client(outage_ops))
    time.sleep(max(0.0, 3.0 - (time.time() - t_outage)))  # the outage is meant to last 3 s
    during = exporter_counters()
    t_restart = time.time()  # nothing sent before can reach the new nfcapd
    nfcapd2 = Nfcapd(os.path.join(WORK, "nfcapd-2"))
    post_ops = [tcp_op(rng, 500 + i, B4, SRV_TCP) for i in range(5)] + \
               [tcp_op(rng, 520 + i, B6, SRV_TCP) for i in range(3)] + \
               [udp_op(rng, 550 + i, B4, SRV_UDP) for i in range(3)]
    results.update(run_client(post_ops))
    post = socket_truths(post_ops, results)
    print("exporter during the outage:", during, flush=True)
    grew = {k: (before.get(k), during[k]) for k in during
            if re.search(r"drop|error|fail", k) and isinstance(during[k], int) and
            during[k] > (before.get(k) or 0)}
    check(bool(grew), "exporter counters show the outage (drops or errors grew)",
          {k: v for k, v in during.items() if k.startswith("collector") or "drop" in k})
    print("  grew during the outage:", grew)
    # Templates again (template_refresh_s = 5, or sooner after a send error), then data:
    # nfcapd-2 decodes the records of connections made after its restart.
    def decoded(truths):
        rs = nfcapd2.records()
        return all(any((r.get("src"), r.get("sport")) == t["local"] and r.get("octets", 0) > 0
                       for r in rs) for t in truths if t["side"] == "client")
    ended = time.time() - t_restart
    first = wait_for(lambda: decoded(post), 8, 0.5)
    # The first batch after the restart must arrive: the agent takes the collector's refusal
    # off its socket and sends its templates again in front of the next data.
    check(bool(first), "the batch ended %.1f s after nfcapd's restart is in nfdump "
          "(templates resent in front of it)" % ended)
    after = exporter_counters()
    print("exporter after the outage:", after, flush=True)

    # /metrics: the traffic families, and promtool's word on the page.
    metrics = api("/metrics")
    sent = [l for l in metrics.splitlines() if l.startswith("netlens_traffic_sent_bytes_total")]
    check(bool(sent), "/metrics has netlens_traffic_sent_bytes_total samples", metrics[-1500:])
    print("  " + "\n  ".join(sent[:8]))
    pc = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True,
                        text=True)
    check(pc.returncode == 0, "promtool check metrics passes on /metrics", pc.stdout + pc.stderr)
    total_tcp_sent = sum(float(l.rsplit(" ", 1)[1]) for l in sent if 'protocol="tcp"' in l)
    app_tcp = sum(t["sent"] for t in phase1 + post if t["proto"] == 6)
    check(total_tcp_sent >= app_tcp, "netlens_traffic_sent_bytes_total{protocol=\"tcp\"} covers "
          "the workload's TCP payload (%d)" % app_tcp, total_tcp_sent)

    # Phase 3: SIGTERM with one connection open: it leaves as flowEndReason 4.
    hold = start(NS_A, "python3", SELF, "--peer", "hold", B4, str(SRV_TCP))
    hold_info = json.loads(hold.stdout.readline())
    hold.stdin.write("777\n")
    hold.stdin.flush()
    check(hold.stdout.readline().strip() == "sent", "held connection moved its data")
    watch.stop()
    hwm = vm_hwm_kb(agent.pid)
    rc = stop_agent(agent, timeout=30)
    t_end = int(time.time() * 1000)
    check(rc == 0, "agent exits 0 on SIGTERM", rc)
    print("agent VmHWM: %d kB" % hwm)
    hold.stdin.close()
    hold.wait(timeout=10)
    time.sleep(2.5)  # nfacctd prints every second; what it has now is all there will be
    acct = nfacctd.records()
    nfacctd.stop()
    nfcapd2.stop()
    capture.stop()
    all_truths = phase1 + socket_truths(outage_ops, results) + post

    # The wire, by tshark and by our decoder.
    probs = capture.problems()
    check(not probs, "tshark: no malformed packet, no expert info of severity error", probs[:10])
    by_port, own, mism = capture.records()
    check(not mism and not own[NFACCTD_PORT].errors and not own[NFCAPD_PORT].errors,
          "tshark and our decoder see the same records in every frame, and ours no error",
          (mism[:5], own[NFACCTD_PORT].errors[:5]))
    acct_recs = [r for r in by_port[NFACCTD_PORT] if WORKLOAD(r["src"] or "")]
    cap_recs = [r for r in by_port[NFCAPD_PORT] if WORKLOAD(r["src"] or "")]
    print("captured: %d records to nfacctd, %d to nfcapd (workload only)"
          % (len(acct_recs), len(cap_recs)))
    gaps = check_sequence("nfacctd", own[NFACCTD_PORT])
    check(not gaps, "sequence numbers to nfacctd: each = the data records before it, no loss",
          gaps[:10])
    print("  sequence to nfcapd across its outage:", check_sequence("nfcapd", own[NFCAPD_PORT])[:5])

    conns = watch.seen
    print("/connections: %d workload sockets seen" % len(conns))
    check(all(c.get("device") for c in conns.values() if c.get("closed")),
          "/connections: every closed workload socket has device counts", [
              k for k, c in conns.items() if c.get("closed") and not c.get("device")][:5])
    # The nfacctd session never went down: every truth holds there, over the whole run.
    check_records("to nfacctd", acct_recs, all_truths, conns, (t_begin, t_end))
    check_nat(acct_recs, all_truths)

    lr = sorted(records_of(acct_recs, [t for t in long_truths if t["side"] == "client"][0], 1),
                key=lambda r: r["time"])
    check(len(lr) >= 3 and [r["reason"] for r in lr] == [2] * (len(lr) - 1) + [3],
          "long connection (7 s, active timeout %d s): several records, reasons 2..2 then 3"
          % ACTIVE_TIMEOUT_S, [(r["reason"], r["payload"]) for r in lr])

    # Shutdown: the held connection's end is reported as forced (4), to both collectors.
    ht = {"local": (hold_info["laddr"], hold_info["lport"]), "peer": (B4, SRV_TCP), "proto": 6}
    hr = records_of(acct_recs, ht, 1)
    check(bool(hr) and hr[-1]["reason"] == 4 and sum(r["payload"] or 0 for r in hr) == 9 + 777,
          "connection open at SIGTERM: its last record has flowEndReason 4 (forced end), its "
          "786 bytes (header and 777) all reported", [(r["reason"], r["payload"]) for r in hr])

    check_nfacctd(acct, acct_recs)

    # nfdump: nfcapd-1 (until its stop) and nfcapd-2 (after its restart, once templates came)
    # decode exactly the records sent to them while up, fields as the wire has them.
    nkey = lambda r: (r["src"], r["sport"], r["dst"], r["dport"], r["proto"], r["dir"],  # noqa
                      r["reason"], r["octets"] or 0, r["packets"] or 0)
    wire1 = [r for r in cap_recs if r["time"] < t_outage]
    n1 = [r for r in nfcapd.records() if WORKLOAD(r.get("src", ""))]
    check(multiset(n1, nkey) == multiset(wire1, nkey),
          "nfdump (nfcapd before the outage) = the wire to it: addresses, ports, protocol, "
          "direction, end reason, IE 1/2 (%d records)" % len(wire1),
          (list((multiset(wire1, nkey) - multiset(n1, nkey)).items())[:5],
           list((multiset(n1, nkey) - multiset(wire1, nkey)).items())[:5]))
    check(any(":" in r["src"] for r in n1), "nfdump decodes the IPv6 records")
    n2 = [r for r in nfcapd2.records() if WORKLOAD(r.get("src", ""))]
    wire2 = multiset([r for r in cap_recs if r["time"] >= t_restart], nkey)
    extra = multiset(n2, nkey) - wire2
    check(bool(n2) and not extra, "nfdump (nfcapd after the restart): every record it shows was "
          "on the wire after the restart (%d)" % len(n2), list(extra.items())[:5])
    n2h = [r for r in n2 if (r["src"], r["sport"]) == ht["local"] and r["dir"] == 1]
    check(bool(n2h) and n2h[-1]["reason"] == 4, "nfdump shows end reason 4 for the connection "
          "open at SIGTERM", n2h)
    nat_n1 = [r for r in n1 if r["dport"] == VPORT and r["dir"] == 1]
    check(bool(nat_n1) and all(r["xdp"] == SRV_DNAT and r["xda"] == B4 for r in nat_n1),
          "nfdump shows the DNAT'd connections' post-NAT destination %s:%d" % (B4, SRV_DNAT),
          nat_n1[:3])

    tcp_transport_phase(rng)


def tcp_transport_phase(rng):
    """export.ipfix.transport = "tcp": nfcapd 1.7.1 and nfacctd 1.7.7 take IPFIX over UDP only,
    so a small collector of ours (ipfix_probe.TcpCollector) takes the session. Templates
    first in every session, the session dropped by the collector and made again by the agent
    (templates again), payload totals exact."""
    coll = start(NS_A, "python3", SELF, "--peer", "tcp-collector", str(TCP_COLLECTOR_PORT))
    if coll.stdout.readline().strip() != "ready":
        raise RuntimeError("tcp collector did not start")
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(coll.stdout.readline, "")),
                              daemon=True)
    reader.start()
    tcp = write_config("tcp.toml", ["127.0.0.1:%d" % TCP_COLLECTOR_PORT], "tcp")
    agent, _ = start_agent_in_a(tcp, "agent-tcp.log")

    def recs():
        out = []
        for l in list(lines):
            m = json.loads(l)
            if "record" in m:
                r = {int(k) if k.isdigit() else (ipfix.PEN, int(k.split(":")[1])): v
                     for k, v in m["record"].items()}
                out.append((m["session"], r))
        return out

    def have(truths):
        rs = recs()
        return all(any(r.get(ipfix.SRC_PORT) == t["local"][1] and
                       r.get(ipfix.SRC_V4, r.get(ipfix.SRC_V6)) == t["local"][0] for _, r in rs)
                   for t in truths)

    ops1 = [tcp_op(rng, 600 + i, B4, SRV_TCP) for i in range(4)] + \
           [tcp_op(rng, 620 + i, B6, SRV_TCP) for i in range(2)] + [udp_op(rng, 650, B4, SRV_UDP)]
    res = run_client(ops1)
    t1 = socket_truths(ops1, res)
    check(bool(wait_for(lambda: have(t1), 15, 0.3)), "TCP transport: records of every socket")
    coll.stdin.write("drop\n")  # the collector ends the session: the agent connects again
    coll.stdin.flush()
    time.sleep(0.5)
    ops2 = [tcp_op(rng, 700 + i, B4, SRV_TCP) for i in range(3)]
    res.update(run_client(ops2))
    t2 = socket_truths(ops2, res)
    check(bool(wait_for(lambda: have(t2), 30, 0.3)),
          "TCP transport: after the collector dropped the session, records arrive in a new one")
    stop_agent(agent, timeout=30)
    time.sleep(0.5)
    coll.stdin.close()
    coll.wait(timeout=10)
    reader.join(timeout=5)
    errors = [json.loads(l) for l in lines if '"error"' in l]
    sessions = {json.loads(l)["session"] for l in lines if '"session"' in l}
    check(not errors, "TCP transport: every session's stream parses, templates before data "
          "(%d sessions)" % len(sessions), errors[:5])
    check(len(sessions) >= 2, "TCP transport: a second session after the drop", sessions)
    bad = []
    flat = [r for _, r in recs()]
    for t in t1 + t2:
        for direction, want in ((1, t["sent"]), (0, t["recv"])):
            (la, lp), (pa, pp) = t["local"], t["peer"]
            src, sp, dst, dp = (la, lp, pa, pp) if direction == 1 else (pa, pp, la, lp)
            got = sum(r.get(ipfix.TRANSPORT_OCTETS, 0) for r in flat
                      if r.get(ipfix.SRC_V4, r.get(ipfix.SRC_V6)) == src and
                      r.get(ipfix.SRC_PORT) == sp and r.get(ipfix.DST_PORT) == dp and
                      r.get(ipfix.DST_V4, r.get(ipfix.DST_V6)) == dst and
                      r.get(ipfix.FLOW_DIRECTION) == direction)
            if got != want:
                bad.append((t["side"], t["local"], direction, want, got))
    check(not bad, "TCP transport: payload per socket and direction exact, across the drop",
          bad[:10])


# ---- the peers (run inside a namespace) ----------------------------------------------------

def read_n(s, n):
    got = 0
    while got < n:
        data = s.recv(min(65536, n - got))
        if not data:
            raise RuntimeError("peer closed after %d of %d bytes" % (got, n))
        got += len(data)
    return got


def bytes_retrans(s):
    """The kernel's own count of payload bytes this TCP socket sent again (struct tcp_info's
    tcpi_bytes_retrans, at offset 208 since Linux 4.19): retransmitted segments cross the
    devices again, so they are in the IP counts but not in the application's byte count.
    Read once the peer has acknowledged everything (tcpi_unacked, offset 24, is 0): sendall()
    returns with data still in flight, and a retransmission after the read (an RTO on a loaded
    host) would cross the devices without being in the count."""
    for _ in range(2000):
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        if len(info) < 28 or struct.unpack_from("=I", info, 24)[0] == 0:
            break
        time.sleep(0.005)
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < 216:
        raise RuntimeError("tcp_info of %d bytes has no tcpi_bytes_retrans" % len(info))
    return struct.unpack_from("=Q", info, 208)[0]


def peer_serve(retrans_path):
    """TCP: a 9-byte header (mode, reply length); mode 0 reads to EOF, mode 1 echoes every
    chunk until EOF; then the reply, then close, appending a line with the peer's address and
    the bytes this end retransmitted to retrans_path. UDP: each datagram's first two bytes say
    how long the answer is."""
    retrans_lock = threading.Lock()

    def tcp_conn(s):
        try:
            hdr = b""
            while len(hdr) < 9:
                d = s.recv(9 - len(hdr))
                if not d:
                    return
                hdr += d
            mode, reply = struct.unpack("!BQ", hdr)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                if mode == 1:
                    s.sendall(d)
            s.sendall(b"r" * reply)
        except OSError:
            pass
        finally:
            try:  # what this end sent again, for the client's truth (see bytes_retrans)
                line = json.dumps({"peer": list(s.getpeername()[:2]), "retrans": bytes_retrans(s)})
                with retrans_lock, open(retrans_path, "a") as f:
                    f.write(line + "\n")
            except OSError:
                pass
            s.close()

    def tcp_loop(ls):
        while True:
            s, _ = ls.accept()
            threading.Thread(target=tcp_conn, args=(s,), daemon=True).start()

    def udp_loop(us):
        while True:
            d, peer = us.recvfrom(65536)
            us.sendto(b"u" * struct.unpack("!H", d[:2])[0], peer)

    for fam, host, port in ((socket.AF_INET, B4, SRV_TCP), (socket.AF_INET6, B6, SRV_TCP),
                            (socket.AF_INET, B4, SRV_DNAT)):
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, port))
        ls.listen(512)
        threading.Thread(target=tcp_loop, args=(ls,), daemon=True).start()
    for fam, host in ((socket.AF_INET, B4), (socket.AF_INET6, B6)):
        us = socket.socket(fam, socket.SOCK_DGRAM)
        us.bind((host, SRV_UDP))
        threading.Thread(target=udp_loop, args=(us,), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()


def one_op(op):
    fam = socket.AF_INET6 if ":" in op["host"] else socket.AF_INET
    if op["kind"] == "udp":
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(5)
        # A port of its own for the whole run: a closed UDP socket's ephemeral port may be
        # handed to a later one (seen in CI: two sockets 57138 -> B4:19192), and two sockets
        # with one 4-tuple cannot be told apart in the records. TCP clients close first, so
        # TIME_WAIT keeps their 4-tuples from being reused within the run.
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", UDP_CLIENT_PORT_BASE + op["id"]))
        s.connect((op["host"], op["port"]))
        names = s.getsockname()[:2] + s.getpeername()[:2]
        time.sleep(0.05)  # a flow that lives a moment (see nat_peer.py)
        sent = recv = 0
        for size, reply in zip(op["sizes"], op["replies"]):
            s.send(struct.pack("!H", reply) + b"d" * (size - 2))
            sent += size
            recv += len(s.recv(65536))
    else:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect((op["host"], op["port"]))
        names = s.getsockname()[:2] + s.getpeername()[:2]
        time.sleep(0.05)
        if op["kind"] == "long":
            s.sendall(struct.pack("!BQ", 1, op["reply"]))
            sent, recv = 9, 0
            pause = op["seconds"] / len(op["chunks"])
            for n in op["chunks"]:
                s.sendall(b"l" * n)
                sent += n
                recv += read_n(s, n)
                time.sleep(pause)
        else:
            s.sendall(struct.pack("!BQ", 0, op["reply"]) + b"t" * op["send"])
            sent, recv = 9 + op["send"], 0
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(65536)
            if not d:
                break
            recv += len(d)
    la, lp, ra, rp = names
    retrans = bytes_retrans(s) if op["kind"] != "udp" else 0
    s.close()
    return {"id": op["id"], "laddr": la, "lport": lp, "raddr": ra, "rport": rp, "sent": sent,
            "recv": recv, "pid": os.getpid(), "retrans": retrans}


def peer_client(spec):
    from concurrent.futures import ThreadPoolExecutor
    ops = json.loads(spec)
    with ThreadPoolExecutor(max_workers=12) as ex:
        for r in ex.map(one_op, ops):
            print(json.dumps(r), flush=True)


def peer_hold(host, port):
    s = socket.create_connection((host, port))
    s.sendall(struct.pack("!BQ", 1, 0))
    la, lp = s.getsockname()[:2]
    print(json.dumps({"laddr": la, "lport": lp, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        n = int(line)
        s.sendall(b"h" * n)
        read_n(s, n)
        print("sent", flush=True)
    s.close()


def peer_tcp_collector(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(8)
    lock = threading.Lock()
    conns = []

    def emit(m):
        with lock:
            print(json.dumps(m), flush=True)

    def session(i, s):
        d = ipfix.Decoder()
        buf, seen = b"", 0
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buf = d.feed_stream(buf + data)
            for e in d.errors:
                emit({"session": i, "error": e})
            d.errors.clear()
            for _, _, rec in d.records[seen:]:
                emit({"session": i, "record": {("%d:%d" % k if isinstance(k, tuple) else
                                                 str(k)): v for k, v in rec.items()}})
            seen = len(d.records)
        s.close()

    def accept():
        i = 0
        while True:
            s, _ = ls.accept()
            with lock:
                conns.append(s)
            threading.Thread(target=session, args=(i, s), daemon=True).start()
            i += 1

    threading.Thread(target=accept, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "drop":
            with lock:
                for s in conns:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                conns.clear()
    time.sleep(0.2)


def peer_main(mode, args):
    if mode == "serve":
        peer_serve(args[0])
    elif mode == "client":
        peer_client(args[0])
    elif mode == "hold":
        peer_hold(args[0], int(args[1]))
    elif mode == "tcp-collector":
        peer_tcp_collector(int(args[0]))
    else:
        sys.exit("unknown peer mode " + mode)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--peer":
        peer_main(sys.argv[2], sys.argv[3:])
        sys.exit(0)
    NETLENS = os.path.abspath(sys.argv[1])
    run_test(main, "export e2e", teardown=teardown, timed=True, show_traceback=True)
