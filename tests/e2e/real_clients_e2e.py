#!/usr/bin/env python3
"""Real clients nobody here wrote, in a network namespace the test creates, and the agent's
numbers against what they say themselves:
- kdig (Knot's dig) against a DNS server that answers every client from one unconnected UDP
  socket: one flow per client on the server's socket, each with the client's own port; the
  server's bytes per client are its own counts, each kdig's received bytes what kdig printed;
- the same server bound to 0.0.0.0 with no NAT, asked at two addresses: its per-peer flows and
  kdig's carry the local address the kernel told the server (IP_PKTINFO);
- the same server bound to 0.0.0.0 behind a DNAT in the namespace's own output chain, asked
  by kdig and by a client that uses sendto() from one unbound socket: each per-peer flow of the
  two wildcard sockets carries its translation and its real local address, as `conntrack -L`
  shows them;
- curl against a local HTTP server: bytes sent equal curl's size_request + size_upload, bytes
  received size_header + size_download.

usage: real_clients_e2e.py path/to/netlens
"""
import json
import os
import re
import subprocess
import sys
import tempfile

from e2e_support import (add_namespace, check, conclude, conntrack_entries, ns_inode, ns_run,
                         query_connections, remove_namespace, sh, start_agent, stop_agent,
                         wait_for, write_config)

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-real-")
CFG, API = write_config(WORK)
NS = "nlreal%d" % os.getpid()
QUERIES = 6
HTTP_GETS = 3

# The DNAT of the third part: a virtual DNS address on a network of the namespace's own, sent to
# the server's real port on the namespace's own address.
LOCAL_ADDR, VIRTUAL_ADDR, SERVER_PORT = "10.99.0.1", "10.99.0.53", 5353
NAT_RULES = """
table ip nlreal_dnat {
  chain out {
    type nat hook output priority -100;
    ip daddr %s udp dport 53 dnat to %s:%d
  }
}
""" % (VIRTUAL_ADDR, LOCAL_ADDR, SERVER_PORT)
SENDTO_QUERIES = 2

# One socket, recvmsg/sendto: what every small DNS server does. Answers N A queries with
# 10.1.2.3, then writes what it received from and sent to each peer (its own counts), the
# peer's address and the local address the kernel says (IP_PKTINFO) its queries reached, and
# exits. usage: N ready-file stats-file bind-address port
DNS_SERVER = r'''
import json, socket, struct, sys
IP_PKTINFO = 8
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
s.bind((sys.argv[4], int(sys.argv[5])))
open(sys.argv[2], "w").write("ready")
peers = {}
for _ in range(int(sys.argv[1])):
    q, anc, _, peer = s.recvmsg(4096, 64)
    local = [socket.inet_ntoa(d[8:12]) for lvl, typ, d in anc
             if lvl == socket.IPPROTO_IP and typ == IP_PKTINFO]
    end = 12
    while q[end] != 0:
        end += 1 + q[end]
    question = q[12:end + 5]
    answer = (q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question +
              struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([10, 1, 2, 3]))
    sent = s.sendto(answer, peer)
    p = peers.setdefault(str(peer[1]), {"recv": 0, "sent": 0, "datagrams": 0, "order": len(peers),
                                        "peer": peer[0], "local": local[0] if local else None})
    p["recv"] += len(q)
    p["sent"] += sent
    p["datagrams"] += 1
s.close()
json.dump({"pid": __import__("os").getpid(), "peers": peers}, open(sys.argv[3], "w"))
'''


class flows:
    """What one API client was handed, summed per flow (answers carry deltas)."""

    def __init__(self):
        self.by_key = {}
        query_connections(NETLENS, API, "real")

    def poll(self):
        try:
            answer = query_connections(NETLENS, API, "real")
        except RuntimeError:  # the command failed: nothing new this time
            return
        ino = ns_inode(NS)
        for c in answer["connections"]:
            if c["netns"] != ino:
                continue
            key = (c["type"], c["sport"], c["dport"])
            f = self.by_key.setdefault(key, {"bytes_sent": 0, "bytes_recv": 0,
                                             "packets_sent": 0, "packets_recv": 0,
                                             "closed": 0})
            for k in ("bytes_sent", "bytes_recv", "packets_sent", "packets_recv"):
                f[k] += c[k]
            f["closed"] += 1 if c["closed"] else 0
            f["pid"], f["direction"], f["comm"] = c["pid"], c["direction"], c["comm"]
            if c["closed"]:  # the record that reaches the pipelines: its NAT and addresses
                f["nat"], f["saddr"], f["daddr"] = c["nat"], c["saddr"], c["daddr"]

    def closed(self, keys):
        self.poll()
        return all(self.by_key.get(k, {}).get("closed") for k in keys)


def serve_dns(name, answers, bind, port, ask):
    """Runs DNS_SERVER in the namespace on bind:port for `answers` queries and ask() once it is
    up; returns what the server wrote once it exited (its pid and its counts per peer) and what
    ask() returned."""
    stats = os.path.join(WORK, name + ".json")
    ready = os.path.join(WORK, name + ".ready")
    server = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", DNS_SERVER,
                               str(answers), ready, stats, bind, str(port)])
    try:
        check(wait_for(lambda: os.path.exists(ready), 10),
              "the DNS server on %s:%d is up" % (bind, port))
        asked = ask()
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return json.load(open(stats)), asked


def kdig(target, port, name):
    """One A query of name from kdig in the namespace (UDP, no retry)."""
    return ns_run(NS, "kdig", "@" + target, "-p", str(port), "+notcp", "+retry=0", "+time=3",
                  name, "A", capture_output=True, text=True)


def dns(seen):
    def ask():
        received = []
        for i in range(QUERIES):
            r = kdig("127.0.0.1", 53, "q%d.netlens.test" % i)
            m = re.search(r";; Received (\d+) B", r.stdout)
            check(r.returncode == 0 and m and "10.1.2.3" in r.stdout,
                  "kdig %d got its answer" % i, r.stdout + r.stderr)
            received.append(int(m.group(1)) if m else -1)
        return received

    truth, received = serve_dns("dns", QUERIES, "127.0.0.1", 53, ask)
    peers = truth["peers"]
    check(len(peers) == QUERIES, "each kdig came from a port of its own", peers)
    keys = [("udp", 53, int(p)) for p in peers] + [("udp", int(p), 53) for p in peers]
    wait_for(lambda: seen.closed(keys), 15, 0.3)
    for i, (port, p) in enumerate(sorted(peers.items(), key=lambda kv: int(kv[0]))):
        srv = seen.by_key.get(("udp", 53, int(port)))
        check(srv is not None and srv["closed"] == 1 and srv["bytes_recv"] == p["recv"] and
              srv["bytes_sent"] == p["sent"] and srv["packets_recv"] == p["datagrams"] and
              srv["packets_sent"] == p["datagrams"] and srv["direction"] == "incoming" and
              srv["pid"] == truth["pid"],
              "the server's flow with client port %s: its own counts %s" % (port, p), srv)
        cli = seen.by_key.get(("udp", int(port), 53))
        check(cli is not None and cli["closed"] == 1 and cli["bytes_sent"] == p["recv"] and
              cli["bytes_recv"] == p["sent"] and cli["direction"] == "outgoing" and
              cli["comm"] == "kdig",
              "kdig's flow from port %s: sent what the server got, received what it answered"
              % port, cli)
    check(sorted(received) == sorted(p["sent"] for p in peers.values()),
          "the bytes kdig says it received are the server's answers", (received, peers))
    check(("udp", 53, 0) not in seen.by_key, "no flow of the server's socket without a peer",
          seen.by_key.get(("udp", 53, 0)))


# A client that asks from one unbound UDP socket with sendto()/recvfrom(), never connect():
# prints its port and the bytes it sent and received.
SENDTO_CLIENT = r'''
import json, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
sent = received = 0
for i in range(int(sys.argv[2])):
    name = b"".join(bytes([len(p)]) + p for p in (b"s%d" % i, b"netlens", b"test")) + b"\0"
    q = struct.pack(">HHHHHH", 0x4e00 + i, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
    sent += s.sendto(q, (sys.argv[1], 53))
    answer, peer = s.recvfrom(4096)
    received += len(answer)
print(json.dumps({"port": s.getsockname()[1], "sent": sent, "received": received,
                  "peer": peer[0]}))
'''


def dns_behind_dnat(seen):
    """A DNS server on 0.0.0.0 reached through a DNAT of a virtual address: the per-peer flows
    of its socket, and of a client's unbound socket, do not know their local address; netfilter
    does. Each closed flow must carry conntrack's translation and that address."""
    # A network for the addresses: a veth pair with both ends in the namespace (this kernel
    # has no dummy devices). It goes with the namespace.
    sh("ip", "-n", NS, "link", "add", "nlreal0", "type", "veth", "peer", "name", "nlreal1")
    sh("ip", "-n", NS, "addr", "add", LOCAL_ADDR + "/24", "dev", "nlreal0")
    sh("ip", "-n", NS, "link", "set", "nlreal0", "up")
    sh("ip", "-n", NS, "link", "set", "nlreal1", "up")
    sh("ip", "netns", "exec", NS, "nft", "-f", "-", input=NAT_RULES)

    def ask():
        for i in range(QUERIES):
            r = kdig(VIRTUAL_ADDR, 53, "n%d.netlens.test" % i)
            check(r.returncode == 0 and "10.1.2.3" in r.stdout,
                  "kdig %d got its answer through the DNAT" % i, r.stdout + r.stderr)
        r = ns_run(NS, sys.executable, "-c", SENDTO_CLIENT, VIRTUAL_ADDR, str(SENDTO_QUERIES),
                   capture_output=True, text=True)
        check(r.returncode == 0, "the sendto() client got its answers", r.stderr)
        sender = json.loads(r.stdout) if r.returncode == 0 else {"port": -1}
        check(sender.get("peer") == VIRTUAL_ADDR,
              "the answers came back from the virtual address", sender)
        return sender

    truth, sender = serve_dns("dns-dnat", QUERIES + SENDTO_QUERIES, "0.0.0.0", SERVER_PORT, ask)
    peers = truth["peers"]
    check(len(peers) == QUERIES + 1, "each client came from a port of its own", peers)
    # What netfilter says of each client port: its original and reply directions.
    entries = {}
    for original, reply in conntrack_entries(NS, "-p", "udp", "--orig-dst", VIRTUAL_ADDR):
        entries[int(original["sport"])] = (original, reply)
    check(set(entries) == set(int(p) for p in peers),
          "conntrack -L holds one translated entry per client port", (entries, peers))
    keys = [("udp", SERVER_PORT, int(p)) for p in peers] + [("udp", int(p), 53) for p in peers]
    wait_for(lambda: seen.closed(keys), 15, 0.3)
    for port, p in sorted(peers.items(), key=lambda kv: int(kv[0])):
        original, reply = entries.get(int(port), ({}, {}))
        srv = seen.by_key.get(("udp", SERVER_PORT, int(port)))
        want_nat = {"saddr": original.get("src"), "sport": int(original.get("sport", -1)),
                    "daddr": original.get("dst"), "dport": int(original.get("dport", -1))}
        check(srv is not None and srv["closed"] == 1 and srv["bytes_recv"] == p["recv"] and
              srv["bytes_sent"] == p["sent"] and srv["packets_recv"] == p["datagrams"] and
              srv.get("nat") == want_nat and srv.get("saddr") == reply.get("src"),
              "the wildcard server's flow with client port %s: its own counts, conntrack's "
              "original direction as its translation and the reply's source (%s) as its local "
              "address" % (port, reply.get("src")), (srv, original, reply, p))
        cli = seen.by_key.get(("udp", int(port), 53))
        want_nat = {"saddr": reply.get("src"), "sport": int(reply.get("sport", -1)),
                    "daddr": reply.get("dst"), "dport": int(reply.get("dport", -1))}
        who = "the sendto() client" if int(port) == sender["port"] else "kdig"
        check(cli is not None and cli["closed"] == 1 and cli["bytes_sent"] == p["recv"] and
              cli["bytes_recv"] == p["sent"] and cli.get("nat") == want_nat and
              cli.get("saddr") == original.get("src") and cli.get("daddr") == VIRTUAL_ADDR,
              "%s's flow from port %s: the server's counts, conntrack's reply direction as its "
              "translation and %s as its local address" % (who, port, original.get("src")),
              (cli, original, reply, p))
    check(int(sender["port"]) in set(int(x) for x in peers) and
          peers[str(sender["port"])]["datagrams"] == SENDTO_QUERIES,
          "the sendto() client's %d queries are one peer of the server" % SENDTO_QUERIES,
          (sender, peers))
    check(("udp", SERVER_PORT, 0) not in seen.by_key,
          "no flow of the wildcard server's socket without a peer",
          seen.by_key.get(("udp", SERVER_PORT, 0)))


def dns_wildcard(seen):
    """The server bound to 0.0.0.0 with no NAT, asked at two of the namespace's addresses: no
    conntrack entry says its flows' local address; the namespace's sk_lookup program does. Each
    closed flow of the server must carry the address the kernel told the server (IP_PKTINFO),
    but for the first query: it came while the port had seen one address, which the program
    keeps per port, and once the port sees a second only each later peer's is known (the
    first's flow keeps 0.0.0.0, never a wrong address). Each kdig flow (an unbound socket too,
    whose port only ever sees one address) carries the address the server saw it come from."""
    port = SERVER_PORT + 1
    targets = [LOCAL_ADDR if i % 2 == 0 else "127.0.0.1" for i in range(QUERIES)]

    def ask():
        for i, target in enumerate(targets):
            r = kdig(target, port, "w%d.netlens.test" % i)
            check(r.returncode == 0 and "10.1.2.3" in r.stdout,
                  "kdig %d got its answer from %s" % (i, target), r.stdout + r.stderr)

    peers = serve_dns("dns-wild", QUERIES, "0.0.0.0", port, ask)[0]["peers"]
    check(sorted(p["local"] for p in peers.values()) == sorted(targets),
          "the server was told each query's local address", peers)
    keys = [("udp", port, int(p)) for p in peers] + [("udp", int(p), port) for p in peers]
    wait_for(lambda: seen.closed(keys), 15, 0.3)
    first = min(peers.values(), key=lambda p: p["order"])
    for cport, p in sorted(peers.items(), key=lambda kv: int(kv[0])):
        srv = seen.by_key.get(("udp", port, int(cport)))
        allowed = [p["local"], "0.0.0.0"] if p is first else [p["local"]]
        check(srv is not None and srv["closed"] == 1 and srv["bytes_recv"] == p["recv"] and
              srv["bytes_sent"] == p["sent"] and srv.get("saddr") in allowed and
              srv.get("nat") is None,
              "the wildcard server's flow with client port %s: its own counts, and %s, the "
              "local address the kernel told it%s" %
              (cport, p["local"], " (or the wildcard: the port's first)" if p is first else ""),
              (srv, p))
        cli = seen.by_key.get(("udp", int(cport), port))
        check(cli is not None and cli["closed"] == 1 and cli["bytes_sent"] == p["recv"] and
              cli["bytes_recv"] == p["sent"] and cli.get("saddr") == p["peer"] and
              cli.get("daddr") == p["local"],
              "kdig's flow from port %s: from %s, the address the server saw, to %s"
              % (cport, p["peer"], p["local"]), (cli, p))


def http(seen):
    root = os.path.join(WORK, "www")
    os.makedirs(root)
    with open(os.path.join(root, "blob"), "wb") as f:
        f.write(os.urandom(123457))
    server = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "http.server",
                               "--bind", "127.0.0.1", "--directory", root, "8080"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        up = wait_for(lambda: ns_run(NS, "curl", "-sf", "-o", "/dev/null",
                                     "http://127.0.0.1:8080/").returncode == 0, 10, 0.2)
        check(up, "the HTTP server is up")
        seen.poll()  # the probe above is not one of the connections checked
        gets = []
        for i in range(HTTP_GETS):
            r = ns_run(NS, "curl", "-s", "-o", "/dev/null", "-H", "X-Run: %d" % i, "-w",
                       "%{size_request} %{size_upload} %{size_header} %{size_download} "
                       "%{local_port}", "http://127.0.0.1:8080/blob",
                       capture_output=True, text=True)
            check(r.returncode == 0, "curl %d" % i, r.stderr)
            gets.append([int(x) for x in r.stdout.split()])
        keys = [("tcp", g[4], 8080) for g in gets]
        wait_for(lambda: seen.closed(keys), 15, 0.3)
        for req, upload, header, download, port in gets:
            f = seen.by_key.get(("tcp", port, 8080))
            check(f is not None and f["closed"] == 1 and
                  f["bytes_sent"] == req + upload and f["bytes_recv"] == header + download and
                  f["comm"] == "curl" and f["direction"] == "outgoing",
                  "curl from port %d: sent %d + %d, received %d + %d" %
                  (port, req, upload, header, download), f)
    finally:
        server.terminate()
        server.wait()


def main():
    log = os.path.join(WORK, "agent.log")
    agent = None
    try:
        add_namespace(NS)
        agent = start_agent(NETLENS, CFG, log)
        seen = flows()
        dns(seen)
        dns_behind_dnat(seen)
        dns_wildcard(seen)
        http(seen)
        code = stop_agent(agent)
        agent = None
        check(code == 0, "the agent stops in order", code)
    finally:
        if agent is not None:
            stop_agent(agent)
        remove_namespace(NS)
    return conclude(log, WORK)


if __name__ == "__main__":
    sys.exit(main())
