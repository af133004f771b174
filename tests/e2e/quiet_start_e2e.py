#!/usr/bin/env python3
"""A healthy host's agent logs nothing at warning level or above: started on a host with
devices and network namespaces (a veth from the host into one namespace, a veth pair between
two, one device with a clsact qdisc and another tool's filter already on it), it finds the
namespaces, attaches its classifiers, traces a connection between the namespaces, serves
/connections and shuts down in order, and its log, from start to exit, holds no line at
warning, error or critical level (libbpf's own messages included).

usage: quiet_start_e2e.py path/to/netlens
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from e2e_support import (api_get, check, conclude, ns_run, remove_namespace, sh, start_agent,
                         stop_agent, write_config)

NETLENS = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix="netlens-quiet-")
NS_A, NS_B = "nlq_a%d" % os.getpid(), "nlq_b%d" % os.getpid()
HOST_VETH = "nlqh%d" % (os.getpid() % 100000)


def build():
    sh("ip", "netns", "add", NS_A)
    sh("ip", "netns", "add", NS_B)
    sh("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", "up0", "netns", NS_A)
    sh("ip", "addr", "add", "10.231.1.1/24", "dev", HOST_VETH)
    sh("ip", "link", "set", HOST_VETH, "up")
    sh("ip", "-n", NS_A, "addr", "add", "10.231.1.2/24", "dev", "up0")
    sh("ip", "-n", NS_A, "link", "add", "ab0", "type", "veth", "peer", "name", "ba0", "netns",
       NS_B)
    sh("ip", "-n", NS_A, "addr", "add", "10.231.2.1/24", "dev", "ab0")
    sh("ip", "-n", NS_B, "addr", "add", "10.231.2.2/24", "dev", "ba0")
    for ns, dev in ((NS_A, "up0"), (NS_A, "ab0"), (NS_A, "lo"), (NS_B, "ba0"), (NS_B, "lo")):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    # Another tool's classifier on a device netlens will attach to as well (u32: the kernel
    # here has no matchall or action modules), after netlens's in priority order.
    sh("tc", "-n", NS_B, "qdisc", "add", "dev", "ba0", "clsact")
    sh("tc", "-n", NS_B, "filter", "add", "dev", "ba0", "ingress", "pref", "49000", "protocol",
       "all", "u32", "match", "u32", "0", "0", "classid", "1:1")


def teardown():
    for ns in (NS_A, NS_B):
        remove_namespace(ns)
    subprocess.run(["ip", "link", "del", HOST_VETH], capture_output=True)


def main():
    log = os.path.join(WORK, "agent.log")
    cfg, api = write_config(WORK)
    agent = None
    try:
        build()
        agent = start_agent(NETLENS, cfg, log)
        time.sleep(2)  # the namespaces are found and their devices get classifiers
        server = subprocess.Popen(["ip", "netns", "exec", NS_B, "python3", "-c",
                                   "import socket; s = socket.socket(); "
                                   "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                                   "s.bind(('10.231.2.2', 7100)); s.listen(1); "
                                   "c, _ = s.accept(); c.sendall(c.recv(100)); c.close()"])
        time.sleep(0.3)
        ns_run(NS_A, "python3", "-c",
               "import socket; c = socket.create_connection(('10.231.2.2', 7100), 5); "
               "c.sendall(b'quiet'); c.recv(100); c.close()", check=True, timeout=10)
        server.wait(timeout=10)
        code, _, conns = api_get(api, "/connections")
        check(code == 200 and "10.231.2.2" in conns,
              "the connection between the namespaces is traced", conns[-1000:])
        tc = subprocess.run(["tc", "-n", NS_B, "filter", "show", "dev", "ba0", "ingress"],
                            capture_output=True, text=True).stdout
        code, _, stats = api_get(api, "/stats")
        netns = json.loads(stats)["actors"]["netns"] if code == 200 else {}
        # TCX links (this kernel has TCX) do not show in `tc filter show`; the other tool's
        # filter stays where it was, and the classifiers are on all five devices.
        check("u32" in tc and netns.get("info", {}).get("tc_attach_mode") == "tcx" and
              netns.get("counters", {}).get("tc_attached_devices", 0) >= 5,
              "netlens's classifiers (TCX) are on every device, beside the other tool's filter",
              (tc, netns))
        rc = stop_agent(agent)
        check(rc == 0, "the agent exits 0 after the ordered shutdown", rc)
        text = open(log).read()
        loud = [line for line in text.splitlines()
                if re.match(r"^\S+ (warning|error|critical) ", line)]
        check(not loud, "no line at warning level or above, from start to exit", loud[:20])
        tc = subprocess.run(["tc", "-n", NS_B, "filter", "show", "dev", "ba0", "ingress"],
                            capture_output=True, text=True).stdout
        check("u32" in tc and "nl_" not in tc,
              "after the stop the other tool's filter is still there, netlens's is gone", tc)
    finally:
        if agent:
            stop_agent(agent)
        teardown()
    return conclude(log, WORK)


if __name__ == "__main__":
    sys.exit(main())
