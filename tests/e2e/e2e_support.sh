# shellcheck shell=bash
# What the bash e2e scripts share: ok/FAIL lines and their count, the agent run in the
# background and stopped in order, the clean-up on exit, and one loopback connection whose bytes
# the agent must report exactly. Sourced by a script that sets WORK (its temporary folder).
# (bench/lib.sh has the benchmarks' own nl_start_agent/nl_stop_agent.)

failures=0
AGENT_PID="" # the agent spawn_agent started and no stop_agent has waited for yet

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# spawn_agent LOG COMMAND...: COMMAND (the agent, e.g. "$NETLENS" run -c FILE, perhaps behind
# setpriv) in the background, its output in LOG; AGENT_PID is its pid. Does not wait.
spawn_agent() {
  local log=$1
  shift
  "$@" > "$log" 2>&1 &
  AGENT_PID=$!
}

# wait_ready LOG SECONDS: 0 once LOG says "netlens ready"; 1 when the agent exited first or
# SECONDS went by.
wait_ready() {
  local log=$1 tries=$(($2 * 20)) i
  for ((i = 0; i < tries; i++)); do
    grep -q "netlens ready" "$log" && return 0
    kill -0 "$AGENT_PID" 2> /dev/null || return 1
    sleep 0.05
  done
  return 1
}

# start_agent SECONDS LOG COMMAND...: spawn_agent, then wait_ready: 0 when the agent is ready.
# Variables set before the call (NAME=value start_agent ...) reach the agent's environment.
start_agent() {
  local seconds=$1
  shift
  spawn_agent "$@"
  wait_ready "$1" "$seconds"
}

# stop_agent [SIGNAL]: SIGNAL (TERM by default) to the agent; returns its exit code once it
# has exited. (bash's own line about a signalled child is left out: the callers report the
# code.)
stop_agent() {
  local rc
  kill -"${1:-TERM}" "$AGENT_PID" 2> /dev/null
  wait "$AGENT_PID" 2> /dev/null
  rc=$?
  AGENT_PID=""
  return $rc
}

# e2e_cleanup [SIGNAL]: the EXIT trap. An agent still running gets SIGNAL (TERM by default) and
# is waited for; WORK is removed.
e2e_cleanup() {
  [[ -n $AGENT_PID ]] && stop_agent "${1:-TERM}"
  rm -rf "$WORK"
}

# loopback_connection SENT RECEIVED FILE: one TCP connection on 127.0.0.1 that carries SENT
# bytes from the client and RECEIVED back, both ends closed in order; FILE gets its ports as
# JSON ({"cport": client's, "sport": server's}) for a check of what the agent reports.
loopback_connection() {
  python3 - "$1" "$2" "$3" << 'PY'
import json, socket, sys
sent, received = int(sys.argv[1]), int(sys.argv[2])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen()
port = ls.getsockname()[1]
c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept()
c.sendall(b"a" * sent); got = 0
while got < sent: got += len(s.recv(65536))
s.sendall(b"b" * received); got = 0
while got < received: got += len(c.recv(65536))
c.shutdown(socket.SHUT_WR); s.recv(1); s.shutdown(socket.SHUT_WR); c.recv(1)
json.dump({"cport": c.getsockname()[1], "sport": port}, open(sys.argv[3], "w"))
c.close(); s.close()
PY
}
