#!/usr/bin/env python3
"""The Debian package as an SRE uses it: scripts/package builds it from the tested build tree,
lintian reports no error, apt installs it, the installed check-config, man pages and completion
work, the agent starts from the unit's own ExecStartPre/ExecStart lines and traces a connection,
an upgrade keeps an edited conffile, and `apt-get purge` leaves nothing of netlens on disk,
under /run or in the kernel.

  package_e2e.py BUILD/netlens SOURCE_DIR

Skipped (77) in the sanitizer suites: a package of a sanitizer build is not what anyone ships.
"""
import glob
import json
import os
import shlex
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import check, failures, wait_for, stop_agent  # noqa: E402

NETLENS, SRC = sys.argv[1], sys.argv[2]
BUILD = os.path.dirname(os.path.abspath(NETLENS))
UNIT = "/lib/systemd/system/netlens.service"
CONF = "/etc/netlens/netlens.toml"
API = "/run/netlens/netlens.sock"
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)


def installed():
    r = run(["dpkg-query", "-W", "-f=${Status}", "netlens"])
    return r.returncode == 0 and "installed" in r.stdout and "not-installed" not in r.stdout


def nl_kernel_objects():
    """Names of programs, maps and links of netlens (nl_ prefix) the kernel holds."""
    names = []
    for kind in ("prog", "map", "link"):
        r = run(["bpftool", "-j", kind, "show"])
        for obj in json.loads(r.stdout or "[]"):
            name = obj.get("name", "") or obj.get("prog_name", "")
            if name.startswith("nl_"):
                names.append("%s %s" % (kind, name))
    return names


def api_get(path):
    r = run(["curl", "-sS", "--max-time", "5", "--unix-socket", API, "http://localhost" + path])
    return r.stdout if r.returncode == 0 else None


def unit_command(key):
    for line in open(UNIT):
        if line.startswith(key + "="):
            return shlex.split(line.split("=", 1)[1])
    raise RuntimeError("%s has no %s line" % (UNIT, key))


def main():
    if os.environ.get("NETLENS_SANITIZER"):
        print("skip: the package is made of the release build, not a sanitizer build")
        return 77
    if installed():
        print("FAIL: a netlens package is already installed on this host; this test installs and "
              "purges its own and will not touch an operator's")
        return 1
    agent = None
    deb = None
    try:
        r = subprocess.run([os.path.join(SRC, "scripts/package"), "--no-build"],
                           capture_output=True, text=True, env=dict(ENV, BUILD_DIR=BUILD))
        debs = glob.glob(os.path.join(BUILD, "netlens_*.deb"))
        if not check(r.returncode == 0 and len(debs) == 1, "scripts/package builds one .deb",
                     r.stdout + r.stderr):
            return 1
        deb = debs[0]
        fields = run(["dpkg-deb", "-f", deb, "Package", "Version", "Depends", "Suggests"]).stdout
        print(fields)
        check("libbpf1" in fields and "libcaf-core" in fields,
              "Depends is computed from the binary's libraries (libbpf1, libcaf-core)", fields)
        check("clang" not in fields.split("Suggests:")[0],
              "clang is not a dependency (only a Suggests, for tracer.mode = runtime)", fields)

        r = run(["lintian", "--allow-root", deb])
        print(r.stdout + r.stderr)
        errors = [l for l in r.stdout.splitlines() if l.startswith("E:")]
        check(r.returncode in (0, 1) and not errors and "E:" not in r.stderr,
              "lintian reports no error", r.stdout + r.stderr)

        r = run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", deb])
        if not check(r.returncode == 0 and installed(), "apt-get install ./netlens_*.deb",
                     r.stdout + r.stderr):
            return 1
        listed = [p for p in run(["dpkg", "-L", "netlens"]).stdout.splitlines() if p.strip()]
        files = [p for p in listed if os.path.isfile(p)]
        for path in ("/usr/sbin/netlens", CONF, UNIT, "/usr/share/man/man8/netlens.8.gz",
                     "/usr/share/man/man5/netlens.toml.5.gz",
                     "/usr/share/bash-completion/completions/netlens",
                     "/usr/share/doc/netlens/copyright", "/usr/share/doc/netlens/operations.md"):
            check(path in files, "installed: " + path, listed)
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "netlens"]).stdout
        check(CONF in conffiles, CONF + " is a conffile", conffiles)
        check(os.path.islink("/etc/systemd/system/multi-user.target.wants/netlens.service"),
              "the unit is enabled on install (deb-systemd-helper)")

        r = run(["/usr/sbin/netlens", "check-config", CONF])
        check(r.returncode == 0 and "ok" in r.stdout, "netlens check-config " + CONF,
              r.stdout + r.stderr)
        r = run(["/usr/sbin/netlens", "version"])
        check(r.returncode == 0 and r.stdout.startswith("netlens "), "netlens version", r.stdout)

        for section, page in (("8", "netlens"), ("5", "netlens.toml")):
            r = run(["man", "-w", section, page])
            check(r.returncode == 0 and r.stdout.startswith("/usr/share/man/man%s/" % section),
                  "man -w %s %s finds the installed page" % (section, page), r.stdout + r.stderr)
            r = run(["man", "--warnings", "-l", r.stdout.strip()])
            check(r.returncode == 0 and len(r.stdout) > 1000 and not r.stderr.strip(),
                  "man renders %s(%s) without a warning" % (page, section), r.stderr)

        r = run(["bash", "-c", "source /usr/share/bash-completion/completions/netlens; "
                 "COMP_WORDS=(netlens conn); COMP_CWORD=1; _netlens; echo \"${COMPREPLY[*]}\""])
        check(r.stdout.strip() == "connections", "the installed completion completes a command",
              r.stdout + r.stderr)

        # The service as systemd would run it: ExecStartPre, then ExecStart, then SIGTERM (the
        # unit's KillSignal). systemd is not PID 1 here, so the test runs the lines itself; the
        # unit's RuntimeDirectory= is what systemd would create.
        pre = unit_command("ExecStartPre")
        r = run(pre)
        check(r.returncode == 0, "ExecStartPre: " + " ".join(pre), r.stdout + r.stderr)
        start = unit_command("ExecStart")
        log = "/tmp/netlens-package-e2e.log"
        os.makedirs("/run/netlens", mode=0o700, exist_ok=True)
        agent = subprocess.Popen(start, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        ready = wait_for(lambda: "netlens ready" in open(log).read() or agent.poll() is not None,
                         30)
        if not check(ready and agent.poll() is None, "ExecStart: %s starts the agent"
                     % " ".join(start), open(log).read()[-3000:]):
            return 1
        check(api_get("/healthz") is not None, "the installed agent answers on " + API)

        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        cli = socket.create_connection(("127.0.0.1", port))
        peer, _ = srv.accept()
        cli.sendall(b"x" * 1234)
        got = b""
        while len(got) < 1234:
            got += peer.recv(4096)
        # Closed, so the counts are the exact ones read at close.
        for s in (cli, peer, srv):
            s.close()

        def seen():
            r = run(["/usr/sbin/netlens", "connections", "--json", "--port", str(port)])
            try:
                conns = json.loads(r.stdout)
            except ValueError:
                return None
            conns = conns.get("connections", conns) if isinstance(conns, dict) else conns
            return [c for c in conns if c.get("bytes_sent") == 1234] or None
        check(wait_for(seen, 10, 0.2), "the installed agent reports the connection (1234 bytes "
              "sent) to `netlens connections --port`")

        code = stop_agent(agent)
        agent = None
        text = open(log).read()
        check(code == 0, "SIGTERM: the ordered shutdown, exit 0", text[-2000:])
        loud = [l for l in text.splitlines() if " warning " in l or " error " in l
                or " critical " in l]
        check(not loud, "no line at warning level or above from the packaged agent", loud)
        # The kernel frees a program, map or link a moment after the last fd closes (RCU).
        left = wait_for(lambda: not nl_kernel_objects(), 5) or nl_kernel_objects()
        check(left is True, "nothing of netlens left in the kernel after the stop", left)

        # An upgrade (here: the same package again) keeps an operator's edit of the conffile.
        with open(CONF, "a") as f:
            f.write("# edited by the operator\n")
        r = run(["dpkg", "-i", deb])
        check(r.returncode == 0, "dpkg -i again (an upgrade)", r.stdout + r.stderr)
        check("# edited by the operator" in open(CONF).read(),
              "the upgrade keeps the operator's edit of " + CONF)

        r = run(["apt-get", "purge", "-y", "-qq", "netlens"])
        check(r.returncode == 0 and not installed(), "apt-get purge netlens", r.stdout + r.stderr)
        left = [p for p in files if os.path.exists(p)]
        check(not left, "every file the package installed is gone", left)
        for path in ("/etc/netlens", "/var/cache/netlens", "/run/netlens",
                     "/etc/systemd/system/multi-user.target.wants/netlens.service",
                     "/var/lib/systemd/deb-systemd-helper-enabled/netlens.service.dsh-also",
                     "/var/lib/systemd/deb-systemd-helper-masked/netlens.service"):
            check(not os.path.lexists(path), "purged: %s is gone" % path)
        left = wait_for(lambda: not nl_kernel_objects(), 5) or nl_kernel_objects()
        check(left is True, "nothing of netlens in the kernel after the purge", left)
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        if installed():
            run(["apt-get", "purge", "-y", "-qq", "netlens"])
        if deb and os.path.exists(deb):
            os.remove(deb)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
