#!/usr/bin/env python3
"""End to end, NAT: the whole agent runs inside a network namespace this test builds (A),
joined by a veth pair to a second one (B). nftables rules in A translate some flows:

  DNAT over loopback   A: 127.0.0.1:18081/tcp -> 127.0.0.1:19091, 127.0.0.1:18082/udp -> :19094
  DNAT over the veth   A: 10.231.0.2:18083/tcp -> 10.231.0.2:19095
  SNAT over the veth   A -> 10.231.0.2:19092 leaves as 10.231.0.11
  SNAT over loopback   A -> 127.0.0.1:19097 leaves as 127.0.0.2
  masquerade (veth)    A from 10.231.0.12 -> 10.231.0.2:19093 leaves as 10.231.0.1
  masquerade (lo)      A from 127.0.0.3 -> 127.0.0.1:19098 leaves as 127.0.0.1
  untranslated         A -> 10.231.0.2:19095

Checks each connection's `nat` (closed and active, TCP and UDP, both ends), an entry made
before the agent started (found through the dump), `conntrack -F` mid-run, a flood at many
times the rate limit (sampling reported, memory bounded), and the ordered shutdown. Only the
namespaces and addresses made here carry traffic; everything is removed at the end.
"""
import functools
import os
import subprocess
import sys
import tempfile
import time

import e2e_support
from e2e_support import (add_namespace, api_json, conntrack_entries, end_started, in_ns,
                         query_connections, remove_namespace, run_test, sh, start, start_agent,
                         stop_agent, wait_for)

NETLENS = os.path.abspath(sys.argv[1])
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nat_peer.py")
TAG = str(os.getpid())
NS_A, NS_B = "nltest-nat-a-" + TAG, "nltest-nat-b-" + TAG
VETH_A, VETH_B = "nlnata" + TAG[-6:], "nlnatb" + TAG[-6:]
WORK = tempfile.mkdtemp(prefix="netlens-nat-")
SOCK = os.path.join(WORK, "run", "netlens.sock")
# Its failures print their detail whole, after a space, as they always have.
check = functools.partial(e2e_support.check, sep=" ", keep=None)


def peer(ns, *args):
    return int(sh(*in_ns(ns, "python3", PEER, *args)).split()[0])


def build_topology():
    for ns in (NS_A, NS_B):
        add_namespace(ns)
    sh("ip", "link", "add", VETH_A, "netns", NS_A, "type", "veth", "peer", "name", VETH_B,
       "netns", NS_B)
    for addr in ("10.231.0.1/24", "10.231.0.11/24", "10.231.0.12/24"):
        sh("ip", "-n", NS_A, "addr", "add", addr, "dev", VETH_A)
    sh("ip", "-n", NS_B, "addr", "add", "10.231.0.2/24", "dev", VETH_B)
    sh("ip", "-n", NS_A, "link", "set", VETH_A, "up")
    sh("ip", "-n", NS_B, "link", "set", VETH_B, "up")
    rules = """
table ip nltest {
  chain out {
    type nat hook output priority -100;
    ip daddr 127.0.0.1 tcp dport 18081 dnat to 127.0.0.1:19091
    ip daddr 127.0.0.1 udp dport 18082 dnat to 127.0.0.1:19094
    ip daddr 10.231.0.2 tcp dport 18083 dnat to 10.231.0.2:19095
  }
  chain post {
    type nat hook postrouting priority 100;
    ip daddr 10.231.0.2 tcp dport 19092 snat to 10.231.0.11
    ip saddr 10.231.0.12 ip daddr 10.231.0.2 tcp dport 19093 masquerade
    ip daddr 127.0.0.1 tcp dport 19097 snat to 127.0.0.2
    ip saddr 127.0.0.3 ip daddr 127.0.0.1 tcp dport 19098 masquerade
  }
}
"""
    sh(*in_ns(NS_A, "nft", "-f", "-"), input=rules)


def teardown():
    end_started()
    for ns in (NS_A, NS_B):
        remove_namespace(ns)
    subprocess.run(["rm", "-rf", WORK])


def write_config(name, extra=""):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write('[agent]\napi_socket = "%s"\n\n[compact_ticker]\ncompact_interval_ms = 500\n'
                '\n[conntrack]\nresync_interval_s = 1\n%s\n' % (SOCK, extra))
    return path


def start_agent_in_a(config, log_name):
    """The agent in A; returns it and its log's path."""
    path = os.path.join(WORK, log_name)
    return start_agent(NETLENS, config, path, timeout=10, ns=NS_A), path


def connections(client="nat-e2e"):
    return query_connections(NETLENS, SOCK, client)["connections"]


def stats():
    return api_json(SOCK, "/stats")


def find(conns, proto, sport=None, dport=None, saddr=None, closed=None):
    hits = [c for c in conns if c["type"] == proto and (sport is None or c["sport"] == sport)
            and (dport is None or c["dport"] == dport) and (saddr is None or c["saddr"] == saddr)
            and (closed is None or c["closed"] == closed)]
    return hits


def nat(saddr, sport, daddr, dport):
    return {"saddr": saddr, "sport": sport, "daddr": daddr, "dport": dport}


def kernel_reply(proto, sport, dport):
    """The reply direction of the conntrack entry in A with this original sport/dport, as
    the conntrack tool reports it: the ground truth `nat` must equal."""
    for _, r in conntrack_entries(NS_A, "-p", proto, "--sport", str(sport), "--dport",
                                  str(dport)):
        if "src" in r:
            return nat(r["src"], int(r["sport"]), r["dst"], int(r["dport"]))
    return None


def main():
    build_topology()
    # Servers: the DNAT targets in A, the far ends in B.
    srv_a = start(NS_A, "python3", PEER, "serve",
                  "127.0.0.1:19091,127.0.0.1:19097,127.0.0.1:19098", "127.0.0.1:19094")
    srv_b = start(NS_B, "python3", PEER, "serve",
                  "10.231.0.2:19092,10.231.0.2:19093,10.231.0.2:19095", "")
    for s in (srv_a, srv_b):
        assert s.stdout.readline().strip() == "ready"

    # Made before the agent exists: only the initial dump can tell the agent about it.
    held = start(NS_A, "python3", PEER, "hold", "127.0.0.1", "18081")
    held_port = int(held.stdout.readline())

    agent, log = start_agent_in_a(write_config("netlens.toml"), "agent.log")
    # The tracer learns of a connection older than itself at its first send or receive.
    held.stdin.write("x\n")
    held.stdin.flush()
    assert held.stdout.readline().strip() == "sent"
    time.sleep(0.2)
    st = stats()
    check(st["conntrack"]["state"] == "running" and not st["conntrack"]["degraded"],
          "conntrack running inside the test namespace", st.get("conntrack"))

    conns = connections()
    c = find(conns, "tcp", sport=held_port, dport=18081)
    check(len(c) == 1 and c[0]["nat"] == nat("127.0.0.1", 19091, "127.0.0.1", held_port),
          "connection made before the agent started carries its DNAT (from the dump)", c)
    s = find(conns, "tcp", sport=19091, dport=held_port)
    check(len(s) == 1 and s[0]["nat"] == nat("127.0.0.1", held_port, "127.0.0.1", 18081),
          "its server end, looked up by the reply tuple, carries the original tuple", s)

    dnat_port = peer(NS_A, "connect", "127.0.0.1", "18081")
    udp_port = peer(NS_A, "udp", "127.0.0.1", "18082")
    snat_port = peer(NS_A, "connect", "10.231.0.2", "19092")
    masq_port = peer(NS_A, "connect", "10.231.0.2", "19093", "10.231.0.12")
    plain_port = peer(NS_A, "connect", "10.231.0.2", "19095")
    vdnat_port = peer(NS_A, "connect", "10.231.0.2", "18083")
    losnat_port = peer(NS_A, "connect", "127.0.0.1", "19097")
    lomasq_port = peer(NS_A, "connect", "127.0.0.1", "19098", "127.0.0.3")
    held_snat = start(NS_A, "python3", PEER, "hold", "10.231.0.2", "19092")
    held_snat_port = int(held_snat.stdout.readline())
    held_at = time.monotonic()

    def all_closed():
        cs = connections("nat-e2e-wait")
        want = [(dnat_port, 18081, "tcp"), (udp_port, 18082, "udp"), (snat_port, 19092, "tcp"),
                (masq_port, 19093, "tcp"), (plain_port, 19095, "tcp"),
                (vdnat_port, 18083, "tcp"), (losnat_port, 19097, "tcp"),
                (lomasq_port, 19098, "tcp")]
        ok = all(find(cs, p, sport=s, dport=d, closed=True) for s, d, p in want)
        return cs if ok else None

    # The same client sees each closed connection exactly once; a second client collects
    # until all have arrived, the first then reads them in one answer.
    wait_for(all_closed, 5, step=0.1)
    conns = connections()
    c = find(conns, "tcp", sport=dnat_port, dport=18081, closed=True)
    check(len(c) == 1 and c[0]["nat"] == nat("127.0.0.1", 19091, "127.0.0.1", dnat_port),
          "closed DNAT'd TCP connection over loopback carries its translation", c)
    s = find(conns, "tcp", sport=19091, dport=dnat_port, closed=True)
    check(len(s) == 1 and s[0]["nat"] == nat("127.0.0.1", dnat_port, "127.0.0.1", 18081),
          "and its server end the original tuple", s)
    u = find(conns, "udp", sport=udp_port, dport=18082, closed=True)
    check(len(u) == 1 and u[0]["nat"] == nat("127.0.0.1", 19094, "127.0.0.1", udp_port),
          "closed DNAT'd UDP flow carries its translation", u)
    c = find(conns, "tcp", sport=snat_port, dport=19092, closed=True)
    check(len(c) == 1 and c[0]["nat"] is not None and
          c[0]["nat"]["saddr"] == "10.231.0.2" and c[0]["nat"]["sport"] == 19092 and
          c[0]["nat"]["daddr"] == "10.231.0.11",
          "SNAT over the veth: reply goes to the translated source 10.231.0.11", c)
    far = find(conns, "tcp", sport=19092, saddr="10.231.0.2", closed=True)
    check(len(far) >= 1 and all(f["nat"] is None and f["daddr"] == "10.231.0.11" for f in far),
          "the far end in B sees the translated address, and no nat (B is not served)", far)
    c = find(conns, "tcp", sport=masq_port, dport=19093, closed=True)
    check(len(c) == 1 and c[0]["saddr"] == "10.231.0.12" and c[0]["nat"] is not None and
          c[0]["nat"]["daddr"] == "10.231.0.1" and c[0]["nat"]["sport"] == 19093,
          "masquerade: reply goes to the interface address 10.231.0.1", c)
    c = find(conns, "tcp", sport=vdnat_port, dport=18083, closed=True)
    check(len(c) == 1 and c[0]["nat"] == nat("10.231.0.2", 19095, "10.231.0.1", vdnat_port),
          "DNAT over the veth carries its translation", c)
    c = find(conns, "tcp", sport=losnat_port, dport=19097, closed=True)
    check(len(c) == 1 and c[0]["nat"] is not None and c[0]["nat"]["daddr"] == "127.0.0.2" and
          c[0]["nat"]["saddr"] == "127.0.0.1" and c[0]["nat"]["sport"] == 19097,
          "SNAT over loopback: reply goes to the translated source 127.0.0.2", c)
    if c and c[0]["nat"]:
        s = find(conns, "tcp", sport=19097, dport=c[0]["nat"]["dport"], saddr="127.0.0.1",
                 closed=True)
        check(len(s) == 1 and s[0]["daddr"] == "127.0.0.2" and
              s[0]["nat"] == nat("127.0.0.1", losnat_port, "127.0.0.1", 19097),
              "and its server end, which sees 127.0.0.2, the original tuple", s)
    c = find(conns, "tcp", sport=lomasq_port, dport=19098, closed=True)
    # Masquerade on lo takes an address of the host's choosing (not 127.x, which has host
    # scope): whatever it chose, nat must be exactly what conntrack holds.
    truth = kernel_reply("tcp", lomasq_port, 19098)
    check(len(c) == 1 and c[0]["saddr"] == "127.0.0.3" and truth is not None and
          truth["daddr"] != "127.0.0.3" and c[0]["nat"] == truth,
          "masquerade over loopback carries the translation conntrack holds", (c, truth))
    for port, dport, what in ((snat_port, 19092, "SNAT"), (masq_port, 19093, "masquerade"),
                              (vdnat_port, 18083, "DNAT over the veth")):
        got = find(conns, "tcp", sport=port, dport=dport, closed=True)
        truth = kernel_reply("tcp", port, dport)
        check(len(got) == 1 and truth is not None and got[0]["nat"] == truth,
              "%s: nat equals conntrack's own reply tuple" % what, (got, truth))
    c = find(conns, "tcp", sport=plain_port, dport=19095, closed=True)
    check(len(c) == 1 and c[0]["nat"] is None, "untranslated connection has nat null", c)
    c = find(conns, "tcp", sport=held_snat_port, dport=19092, closed=False)
    held_ok = len(c) == 1 and c[0]["nat"] is not None and c[0]["nat"]["daddr"] == "10.231.0.11"
    # It failed once in CI without a cause found (issue 20): on a failure, say what conntrack
    # holds for it, the agent's conntrack counters, and how long after the connect it was asked.
    why = c
    if not held_ok:
        why = {"answer": c, "asked_after_s": round(time.monotonic() - held_at, 3),
               "conntrack_reply": kernel_reply("tcp", held_snat_port, 19092),
               "conntrack_counters": stats()["actors"]["conntrack"]["counters"]}
    check(held_ok, "active SNAT'd connection carries its translation", why)
    again = connections()
    check(not find(again, "tcp", sport=dnat_port, dport=18081, closed=True),
          "a closed connection is handed to a client once")

    ct = stats()["actors"]["conntrack"]["counters"]
    check(ct["entries"] >= 1 and ct["lookups_hit"] >= 1 and ct["enobufs"] == 0,
          "/stats shows the cache and its lookups", ct)

    # A table flush: destroy events empty the cache of what netlens saw created; the entry
    # made before it subscribed sends no event (nf_conntrack_events = 2) and goes at the next
    # re-dump (resync_interval_s = 1 here). Nothing stale stays.
    sh(*in_ns(NS_A, "conntrack", "-F"), check=False)
    flushed = wait_for(lambda: stats()["actors"]["conntrack"]["counters"]["entries"] == 0, 5,
                       step=0.1)
    check(flushed, "conntrack -F leaves no stale entry",
          stats()["actors"]["conntrack"]["counters"])
    # Held open a moment: a connection that closes within a millisecond or two of its start
    # can be claimed before its NEW event reaches the cache (see the conntrack notes).
    after = start(NS_A, "python3", PEER, "hold", "127.0.0.1", "18081")
    after_port = int(after.stdout.readline())
    time.sleep(0.2)
    after.stdin.close()
    after.wait()
    got = wait_for(lambda: find(connections("nat-e2e-flush"), "tcp", sport=after_port,
                                dport=18081, closed=True), 3, step=0.1)
    check(bool(got) and got[0]["nat"] == nat("127.0.0.1", 19091, "127.0.0.1", after_port),
          "translations keep arriving after the flush", got)

    held.stdin.close()
    held_snat.stdin.close()
    rc = stop_agent(agent, timeout=20)
    text = open(log).read()
    check(rc == 0, "agent exits 0 on SIGTERM", rc)
    check("conntrack: cache purged" in text and
          text.find("shutdown phase stop") < text.find("conntrack: cache purged"),
          "conntrack purges (and closes its sockets) in the purge phase", text[-2000:])

    # A flood of new NAT'd flows at many times the rate limit: sampled, bounded.
    flood = write_config("flood.toml", "rate_limit = 200\nmax_entries = 1024")
    agent, log = start_agent_in_a(flood, "flood.log")
    flooders = [start(NS_A, "python3", PEER, "flood", "127.0.0.1", "18082", "4", "2000")
                for _ in range(2)]
    time.sleep(2.5)  # read while the flood runs: the sampling figure is about the last window
    st = stats()["actors"]["conntrack"]["counters"]
    rss_kb = int([l for l in open("/proc/%d/status" % agent.pid).read().splitlines()
                  if l.startswith("VmRSS")][0].split()[1])
    sent = sum(int(f.stdout.readline() or 0) for f in flooders)
    for f in flooders:
        f.wait()
    print("flood: %d flows sent, conntrack %s, agent RSS %d kB" % (sent, st, rss_kb))
    check(sent > 10 * 200 * 4, "the flood ran at ten times the rate limit or more", sent)
    check(st["sampled_out"] > 0 and st["sampling_percent"] < 100,
          "sampling reported above the rate limit", st)
    check(st["entries"] <= 1024 and st["enobufs"] == 0, "cache stays within max_entries", st)
    # A sanitizer build's shadow memory and freed-block quarantine say nothing of ours.
    if not os.environ.get("NETLENS_SANITIZER"):
        check(rss_kb < 100 * 1024, "agent RSS bounded under the flood", rss_kb)
    check(stop_agent(agent, timeout=20) == 0, "agent exits 0 after the flood")


if __name__ == "__main__":
    run_test(main, "nat e2e", teardown=teardown)
