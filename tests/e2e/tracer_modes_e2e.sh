#!/usr/bin/env bash
# tracer.mode end to end: "auto" falls back core -> runtime -> prebuilt and says why in the log
# and /stats; no mode working is one error naming each mode's reason (exit 3); a forced mode
# that is unavailable is a clear error (exit 3); the runtime build is cached by kernel release
# and a corrupt cache entry is rebuilt. The test build's NETLENS_FAULT_TRACER_BUILDS makes a
# build fail as it would on a host without BTF or clang. Needs root.
set -uo pipefail
NETLENS=${1:?usage: tracer_modes_e2e.sh path/to/netlens path/to/netlens-fault}
NETLENS_FAULT=${2:?usage: tracer_modes_e2e.sh path/to/netlens path/to/netlens-fault}
WORK=$(mktemp -d /tmp/netlens-modes-e2e.XXXXXX)
SOCK="$WORK/api.sock"
# shellcheck source=e2e_support.sh
source "$(dirname "${BASH_SOURCE[0]}")/e2e_support.sh"
trap e2e_cleanup EXIT

write_config() { # $1 = tracer.mode
  cat > "$WORK/netlens.toml" <<TOML
[agent]
api_socket = "$SOCK"
[tracer]
mode = "$1"
cache_dir = "$WORK/cache"
[console]
socket = "$WORK/console.sock"
TOML
}

start_from_config() { # $1 = binary, $2 = log: 0 once that agent is ready; env passes through
  start_agent 10 "$2" "$1" run -c "$WORK/netlens.toml"
}

run_to_exit() { # $1 = binary, $2 = log: the agent's exit code when it does not start
  timeout 60 "$1" run -c "$WORK/netlens.toml" > "$2" 2>&1
}

stats_field() { # python expression over the /stats JSON `d`
  curl -s --unix-socket "$SOCK" http://netlens/stats |
    python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}

# One loopback TCP connection with known bytes, and the agent must report it exactly.
check_traffic() { # $1 = label
  loopback_connection 3000 555 "$WORK/expect.json"
  "$NETLENS" connections --json --socket "$SOCK" --client modes > "$WORK/conns.json" || {
    fail "$1: netlens connections failed"; return; }
  python3 - "$WORK/conns.json" "$WORK/expect.json" <<'PY' && pass "$1: exact bytes" || fail "$1: connection missing or wrong"
import json, sys
body = json.load(open(sys.argv[1])); exp = json.load(open(sys.argv[2]))
conns = [c for c in body["connections"] if c["type"] == "tcp" and c["sport"] == exp["cport"] and c["dport"] == exp["sport"]]
assert len(conns) == 1, conns
c = conns[0]
assert c["closed"] and c["bytes_sent"] == 3000 and c["bytes_recv"] == 555, c
assert c["direction"] == "outgoing" and c["comm"] == "python3", c
PY
}

# --- 1. auto falls back to prebuilt when core and runtime fail -----------------------------
write_config auto
if NETLENS_FAULT_TRACER_BUILDS=core,runtime start_from_config "$NETLENS_FAULT" "$WORK/auto.log"; then
  mode=$(stats_field 'd["tracer_mode"]')
  [[ $mode == prebuilt ]] && pass "auto fell back to prebuilt" || fail "auto used '$mode'"
  skipped=$(stats_field '",".join(sorted(k for k in d["actors"]["tracer"]["info"] if k.startswith("skipped_")))')
  [[ $skipped == skipped_core,skipped_runtime ]] && pass "/stats says which modes were skipped" ||
    fail "/stats skipped: '$skipped'"
  grep -q "tracer: skipped core: disabled by NETLENS_FAULT_TRACER_BUILDS" "$WORK/auto.log" &&
    grep -q "tracer: skipped runtime:" "$WORK/auto.log" && pass "the log says why each was skipped" ||
    fail "the log lacks the skipped reasons"
  check_traffic "auto -> prebuilt"
  stop_agent && pass "auto agent exits 0" || fail "auto agent exit code $?"
else
  fail "auto agent did not start"; cat "$WORK/auto.log"
fi

# --- 2. no mode works: one error with each mode's reason, exit 3 ---------------------------
NETLENS_FAULT_TRACER_BUILDS=core,runtime,prebuilt run_to_exit "$NETLENS_FAULT" "$WORK/none.log"
rc=$?
[[ $rc == 3 ]] && pass "no mode works: exit 3" || fail "no mode works: exit $rc"
grep -E "no tracer mode works; core: [^;]+; runtime: [^;]+; prebuilt: " "$WORK/none.log" >/dev/null &&
  pass "one error lists each mode's reason" || { fail "error does not list the modes"; tail -5 "$WORK/none.log"; }

# --- 3. a forced mode that is unavailable: clear error, exit 3 -----------------------------
write_config core
NETLENS_FAULT_TRACER_BUILDS=core run_to_exit "$NETLENS_FAULT" "$WORK/core.log"
rc=$?
[[ $rc == 3 ]] && grep -q 'tracer.mode = \\\?"core\\\?" is not available here; core: ' "$WORK/core.log" &&
  pass "forced core unavailable: exit 3, named" || { fail "forced core: exit $rc"; tail -3 "$WORK/core.log"; }
# The release binary, for real: runtime without a compiler in PATH.
write_config runtime
timeout 60 env PATH=/nonexistent "$NETLENS" run -c "$WORK/netlens.toml" > "$WORK/noclang.log" 2>&1
rc=$?
[[ $rc == 3 ]] && grep -q "runtime: no clang found" "$WORK/noclang.log" &&
  pass "forced runtime without clang: exit 3, named" || { fail "runtime without clang: exit $rc"; tail -3 "$WORK/noclang.log"; }

# --- 4. runtime: compiled once, then from the cache; a corrupt entry is rebuilt -------------
write_config runtime
for round in cold cached corrupt; do
  if [[ $round == corrupt ]]; then
    obj=$(ls "$WORK"/cache/tracer-*.bpf.o | head -1)
    printf 'garbage' | dd of="$obj" bs=1 seek=200 conv=notrunc status=none
  fi
  if start_from_config "$NETLENS" "$WORK/rt-$round.log"; then
    from_cache=$(stats_field 'd["actors"]["tracer"]["info"]["runtime_from_cache"]')
    mode=$(stats_field 'd["tracer_mode"]')
    case $round in
      cold) want=false ;; cached) want=true ;; corrupt) want=false ;;
    esac
    [[ $mode == runtime && $from_cache == "$want" ]] && pass "runtime $round: from cache $from_cache" ||
      fail "runtime $round: mode $mode, from cache $from_cache"
    [[ $round == corrupt ]] && { grep -q "was corrupt; rebuilt it" "$WORK/rt-$round.log" &&
      pass "corrupt cache entry detected and rebuilt" || fail "corrupt entry not reported"; }
    [[ $round == cached ]] && check_traffic "runtime from cache"
    stop_agent || fail "runtime $round: exit code $?"
  else
    fail "runtime $round: agent did not start"; tail -5 "$WORK/rt-$round.log"
  fi
done

echo "$failures failure(s)"
[[ $failures == 0 ]]
