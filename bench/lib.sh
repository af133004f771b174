# Shared by the benchmark scripts: start/stop one agent of our own (own config, own API socket,
# own log), read its /stats, find its BPF programs, restore sysctls, clean up on any exit.
# Source it; do not run it. Every script that sources it must be run as root.
# shellcheck shell=bash

NL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NETLENS_BIN=${NETLENS_BIN:-$NL_ROOT/build/netlens}
BENCH_BIN=${BENCH_BIN:-$NL_ROOT/build/bench}
NL_SOCK_DIR=/run/netlens-bench

NL_TMP=""
NL_AGENT_PID=""
NL_AGENT_LOG=""
NL_SOCK=""
NL_CLEANUP_PIDS=()    # helpers to SIGTERM on exit (ours only, by pid)
NL_RESTORE_SYSCTLS=() # "key=value" to write back on exit

nl_die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

nl_init() {
  [[ $EUID -eq 0 ]] || nl_die "must run as root (loads BPF programs)"
  [[ -x $NETLENS_BIN ]] || nl_die "no agent at $NETLENS_BIN: build first (cmake --build build)"
  "$NL_ROOT/scripts/mounts"
  NL_TMP=$(mktemp -d /tmp/netlens-bench.XXXXXX)
  mkdir -p "$NL_SOCK_DIR"
  NL_SOCK="$NL_SOCK_DIR/$(basename "$0")-$$.sock"
  trap nl_cleanup EXIT
  trap 'exit 130' INT TERM
}

nl_cleanup() {
  local pid kv
  for pid in "${NL_CLEANUP_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  [[ -n $NL_AGENT_PID ]] && nl_stop_agent >/dev/null 2>&1
  for kv in "${NL_RESTORE_SYSCTLS[@]}"; do
    sysctl -q -w "$kv" >/dev/null || echo "could not restore sysctl $kv" >&2
  done
  [[ -n $NL_SOCK ]] && rm -f "$NL_SOCK"
  [[ -n $NL_TMP && -d $NL_TMP ]] && rm -rf "$NL_TMP"
}

# nl_set_sysctl KEY VALUE: sets it now and puts the old value back on exit.
nl_set_sysctl() {
  local old
  old=$(sysctl -n "$1")
  NL_RESTORE_SYSCTLS+=("$1=$old")
  sysctl -q -w "$1=$2"
}

# nl_start_agent [TOML lines...]: starts build/netlens with our own API socket plus the given
# lines (e.g. "[tracer]" "closed_buffer = \"perf\""), waits for "netlens ready".
nl_start_agent() {
  local cfg="$NL_TMP/agent.toml" line i
  {
    echo "[agent]"
    echo "api_socket = \"$NL_SOCK\""
    for line in "$@"; do echo "$line"; done
  } >"$cfg"
  NL_AGENT_LOG="$NL_TMP/agent.$(date +%s%N).log"
  : >"$NL_AGENT_LOG"
  "$NETLENS_BIN" run -c "$cfg" >"$NL_AGENT_LOG" 2>&1 &
  NL_AGENT_PID=$!
  for ((i = 0; i < 300; i++)); do
    grep -q "netlens ready in" "$NL_AGENT_LOG" && return 0
    if ! kill -0 "$NL_AGENT_PID" 2>/dev/null; then
      cat "$NL_AGENT_LOG" >&2
      NL_AGENT_PID=""
      nl_die "agent exited during start-up"
    fi
    sleep 0.02
  done
  cat "$NL_AGENT_LOG" >&2
  nl_die "agent not ready after 6 s"
}

# nl_end PID SIGNAL WHAT [SECONDS]: sends SIGNAL, waits up to SECONDS (10), then SIGKILL (said
# on stderr), reaps it and returns its exit code. A helper that ignores its signal (a bpftrace
# once stayed attached for 47 minutes after SIGINT) must not hang the bench or stay in the
# kernel.
nl_end() {
  local pid=$1 sig=$2 what=$3 seconds=${4:-10} rc=0 i
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < seconds * 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.005
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$what $pid did not exit $seconds s after SIG$sig; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return $rc
}

# nl_stop_agent: SIGTERM, wait (up to 20 s, then SIGKILL), return its exit code.
nl_stop_agent() {
  local pid=$NL_AGENT_PID rc=0
  [[ -n $pid ]] || return 0
  nl_end "$pid" TERM agent 20 || rc=$?
  NL_AGENT_PID=""
  return $rc
}

# nl_start_floor LEVEL: starts bench_tracer_floor --level LEVEL (bench/tracer_floor.bpf.c:
# programs on the agent's attach points; level 0 returns at once) and waits until its programs
# are attached. NL_FLOOR_PID is its pid; nl_stop_floor stops it and fails if it failed.
NL_FLOOR_PID=""
nl_start_floor() {
  local log="$NL_TMP/floor.log" i
  : >"$log"
  "$BENCH_BIN/bench_tracer_floor" --level "$1" >"$log" 2>&1 &
  NL_FLOOR_PID=$!
  NL_CLEANUP_PIDS+=("$NL_FLOOR_PID")
  for ((i = 0; i < 500; i++)); do
    grep -q "^ready" "$log" && break
    kill -0 "$NL_FLOOR_PID" 2>/dev/null || { cat "$log" >&2; nl_die "bench_tracer_floor failed"; }
    sleep 0.02
  done
  grep -q "^ready" "$log" || nl_die "bench_tracer_floor not ready after 10 s"
  sleep 0.5
}

nl_stop_floor() {
  [[ -n $NL_FLOOR_PID ]] || return 0
  kill -TERM "$NL_FLOOR_PID"
  wait "$NL_FLOOR_PID" || nl_die "bench_tracer_floor exited with an error: $(cat "$NL_TMP/floor.log")"
  NL_FLOOR_PID=""
}

nl_stats() { curl -sf --max-time 30 --unix-socket "$NL_SOCK" http://x/stats; }

# nl_json_num JSON KEY: a top-level number, or the tracer counter of that name, else 0.
nl_json_num() {
  jq -r --arg k "$2" '(.[$k] // .actors.tracer.counters[$k] // 0)' <<<"$1"
}

# Program ids the agent holds, from its descriptors' fdinfo: exactly ours, even when other
# agents run beside it.
nl_agent_prog_ids() {
  local pid=$NL_AGENT_PID
  [[ -n $pid ]] || return 0
  { grep -h '^prog_id:' /proc/"$pid"/fdinfo/* 2>/dev/null || true; } | awk '{print $2}' | sort -un
}

# CPU seconds (user+system, all threads) the agent has used so far.
nl_cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' /proc/"$NL_AGENT_PID"/stat
}

# Context switches (voluntary + involuntary) summed over all threads of the agent.
nl_ctx_switches() {
  cat /proc/"$NL_AGENT_PID"/task/*/status 2>/dev/null |
    awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'
}

# Sum of recursion_misses over the agent's programs: invocations the kernel skipped because the
# same program was already running on that CPU (a skipped TCP_CLOSE leaves a stale entry).
nl_prog_misses() {
  local ids
  ids=$(nl_agent_prog_ids | paste -sd, -)
  [[ -n $ids ]] || { echo 0; return; }
  bpftool prog show --json | jq --argjson ids "[$ids]" \
    '[.[] | select(.id as $i | any($ids[]; . == $i)) | .recursion_misses // 0] | add // 0'
}

# netlens programs loaded by someone else (another agent or a test): they tax every event too.
nl_foreign_programs() {
  local ours
  ours=$(nl_agent_prog_ids 2>/dev/null | paste -sd, -)
  bpftool prog show --json 2>/dev/null |
    jq -r --arg ours ",$ours," '.[] | select((.name // "") | startswith("nl_"))
                               | (.id | tostring) as $id | select($ours | contains("," + $id + ",") | not)
                               | "\($id):\(.name)"' | paste -sd' ' -
}

# Prints the machine's load so a reader can judge the figures; warns about foreign programs.
nl_load_note() {
  local foreign
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min), $(nproc) CPUs"
  foreign=$(nl_foreign_programs)
  [[ -z $foreign ]] || echo "WARNING: netlens programs of another agent/test are loaded: $foreign"
}

# Warns when an actor of the agent was restarted or reports an error (a restarted tracer has
# a fresh map and fresh counters, which would make every other figure meaningless).
nl_health_note() {
  local stats=${1:-$(nl_stats)}
  jq -r '.actors | to_entries[] | select(.value.restarts > 0 or .value.last_error != "")
         | "WARNING: actor \(.key): \(.value.restarts) restart(s), state \(.value.state),"
           + " last error: \(.value.last_error)"' <<<"$stats" 2>/dev/null || true
}

# nl_result BENCH METRIC VALUE UNIT TARGET VERDICT: the line run_all collects.
nl_result() {
  local f out=RESULT
  for f in "$@"; do out+="|${f:--}"; done
  echo "$out"
}

# nl_verdict VALUE OP LIMIT -> PASS/FAIL (OP is >= or <=)
nl_verdict() { # a value that was not measured ("-", "nan") has no verdict
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
    if (v == "-" || v == "nan" || v == "") { print "-"; exit }
    ok = (op == ">=") ? (v >= l) : (v <= l); print ok ? "PASS" : "FAIL" }'
}

# nl_churn_field OUTPUT KEY: a key=value of bench_churn's RESULT line.
nl_churn_field() {
  grep '^RESULT' <<<"$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'
}

# median and max of numbers on stdin
nl_median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan";
  else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
nl_max() { sort -g | tail -1; }
