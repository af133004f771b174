"""What the e2e scripts share: a check that records failures, a poll with a deadline, and the
agent started from a config file and stopped in order, a free port. (The older scripts still carry their
own copies; new ones import this.)"""
import os
import shutil
import signal
import socket
import subprocess
import time

failures = []


def check(ok, what, detail=""):
    print(("ok: " if ok else "FAIL: ") + what + ("" if ok else " -- " + str(detail)[-3000:]),
          flush=True)
    if not ok:
        failures.append(what)
    return ok


def free_tcp_port():
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, step=0.05):
    """pred's first true value within timeout seconds, else its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


def start_agent(netlens, config, log, timeout=30):
    """`netlens run -c config`, its output in log; returns once it logged "netlens ready"."""
    agent = subprocess.Popen([netlens, "run", "-c", config], stdout=open(log, "w"),
                             stderr=subprocess.STDOUT)
    if not wait_for(lambda: "netlens ready" in open(log).read() or agent.poll() is not None,
                    timeout) or agent.poll() is not None:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        raise RuntimeError("agent did not start:\n" + open(log).read()[-3000:])
    return agent


def stop_agent(agent, timeout=30):
    """SIGTERM, then SIGKILL past timeout; the exit code (None if it had to be killed)."""
    if agent.poll() is not None:
        return agent.returncode
    agent.send_signal(signal.SIGTERM)
    try:
        return agent.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
        return None


def write_config(work, extra=""):
    """A config in work that keeps the agent's sockets there (work/api.sock, work/console.sock),
    plus extra TOML; returns (config path, API socket path)."""
    path, api = os.path.join(work, "netlens.toml"), os.path.join(work, "api.sock")
    with open(path, "w") as f:
        f.write('[agent]\napi_socket = "%s"\n[console]\nsocket = "%s"\n%s'
                % (api, os.path.join(work, "console.sock"), extra))
    return path, api


def add_veth_namespace(ns, host_dev, host_addr, ns_dev, ns_addr):
    """A network namespace joined to the host by a veth pair, both ends up with their /24
    addresses, and the namespace's lo up. remove_veth_namespace undoes it."""
    def sh(*cmd):
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host_dev, "type", "veth", "peer", "name", ns_dev, "netns", ns)
    sh("ip", "addr", "add", host_addr + "/24", "dev", host_dev)
    sh("ip", "link", "set", host_dev, "up")
    sh("ip", "-n", ns, "addr", "add", ns_addr + "/24", "dev", ns_dev)
    sh("ip", "-n", ns, "link", "set", ns_dev, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def remove_veth_namespace(ns, host_dev):
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", host_dev], capture_output=True)


def conclude(log, work):
    """A test's last step: the agent's log tail when something failed, the work folder
    removed, the count printed; returns the exit code."""
    if failures and log and os.path.exists(log):
        print(open(log).read()[-3000:])
    shutil.rmtree(work, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0
