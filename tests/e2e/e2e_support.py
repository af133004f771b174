"""What the e2e scripts share: a check that records failures, a poll with a deadline, and the
agent started from a config file and stopped in order, a free port. (The older scripts still carry their
own copies; new ones import this.)"""
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
