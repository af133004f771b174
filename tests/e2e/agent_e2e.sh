#!/usr/bin/env bash
# End to end: the real binary, started as an operator would, queried over its API, then
# stopped with SIGTERM. Checks the shutdown order in the log and that nothing of netlens is
# left in the kernel. Also the bad-input paths of `netlens run`. Needs root.
set -uo pipefail
NETLENS=${1:?usage: agent_e2e.sh path/to/netlens}
WORK=$(mktemp -d /tmp/netlens-e2e.XXXXXX)
SOCK="$WORK/run/netlens.sock"
# shellcheck source=e2e_support.sh
source "$(dirname "${BASH_SOURCE[0]}")/e2e_support.sh"
trap e2e_cleanup EXIT

cat > "$WORK/netlens.toml" <<TOML
[agent]
api_socket = "$SOCK"
log_level = "info"
TOML

loaded_ids() { # the program ids the agent says it loaded (other agents may run on this host)
  grep -oE "program ids [0-9,]+" "$1" | tail -1 | awk '{print $3}' | tr ',' ' '
}

still_loaded() { # those of the given program ids still in the kernel, with their maps
  local id
  for id in "$@"; do
    bpftool prog show id "$id" 2>/dev/null | head -1
  done
}

# --- 1. start, trace real traffic, query it --------------------------------------------------
if ! start_agent 5 "$WORK/agent.log" "$NETLENS" run -c "$WORK/netlens.toml"; then
  fail "agent did not become ready"; cat "$WORK/agent.log"; exit 1
fi
pass "agent ready: $(grep -o 'ready in .*' "$WORK/agent.log")"

loopback_connection 4000 777 "$WORK/expect.json"
sleep 0.3
"$NETLENS" connections --json --socket "$SOCK" --client e2e > "$WORK/conns.json" ||
  fail "netlens connections --json failed"
python3 - "$WORK/conns.json" "$WORK/expect.json" <<'PY' && pass "connection seen with exact bytes" || fail "connection missing or wrong"
import json, sys
body = json.load(open(sys.argv[1])); exp = json.load(open(sys.argv[2]))
conns = [c for c in body["connections"] if c["type"] == "tcp" and c["sport"] == exp["cport"] and c["dport"] == exp["sport"]]
assert len(conns) == 1, conns
c = conns[0]
assert c["closed"] and c["bytes_sent"] == 4000 and c["bytes_recv"] == 777, c
assert c["direction"] == "outgoing" and c["family"] == "v4" and c["comm"] == "python3", c
assert c["last"]["bytes_sent"] == 4000 and c["nat"] is None, c
assert "map_capacity" in body["telemetry"], body["telemetry"]
PY
"$NETLENS" connections --socket "$SOCK" --client e2e-table > "$WORK/table.txt" ||
  fail "netlens connections (table) failed"
head -1 "$WORK/table.txt" | grep -q "Proto" && pass "table output" || fail "table output has no header"
curl -sf --unix-socket "$SOCK" http://netlens/healthz | grep -q ok || fail "healthz not ok"
curl -sf --unix-socket "$SOCK" http://netlens/stats | python3 -c '
import json,sys; s=json.load(sys.stdin)
assert s["records_lost"] == 0 and s["records_malformed"] == 0, s
for a in ["supervisor","conntrack","tracer","perf_consumer","compact_ticker","api"]:
    assert a in s["actors"] and "messages_handled" in s["actors"][a] and "restarts" in s["actors"][a], a
' && pass "/stats has the records and per-actor figures" || fail "/stats incomplete"

# --- 2. a second agent on the same socket is refused; the first keeps running --------------
"$NETLENS" run -c "$WORK/netlens.toml" > "$WORK/second.log" 2>&1
rc=$?
if [[ $rc -ne 0 ]] && grep -q "already running" "$WORK/second.log" && kill -0 "$AGENT_PID"; then
  curl -sf --unix-socket "$SOCK" http://netlens/healthz > /dev/null && pass "second agent refused, first unharmed" ||
    fail "first agent stopped answering after the second one was refused"
else
  fail "second agent not refused (rc=$rc)"; cat "$WORK/second.log"
fi

# --- 3. SIGTERM: ordered shutdown, nothing left in the kernel ---------------------------------
# The maps our programs use, read while they are loaded.
map_ids=$(for id in $(loaded_ids "$WORK/agent.log"); do
  bpftool prog show id "$id" --json 2>/dev/null |
    python3 -c 'import json,sys; print(" ".join(str(m) for m in json.load(sys.stdin).get("map_ids", [])))'
done | tr ' ' '\n' | sort -u | tr '\n' ' ')
[[ -n "$map_ids" ]] || fail "could not read the agent's map ids"
stop_agent; rc=$?
[[ $rc -eq 0 ]] && pass "exit code 0" || fail "exit code $rc after SIGTERM"
order=$(grep -oE "shutdown phase (stop|purge|exit)" "$WORK/agent.log" | awk '{print $3}' | tr '\n' ' ')
[[ "$order" == "stop purge exit " ]] && pass "shutdown phases in order: $order" ||
  fail "shutdown phases out of order: '$order'"
ids=$(loaded_ids "$WORK/agent.log")
[[ -n "$ids" ]] || fail "the agent did not log its program ids"
left=""
for _ in $(seq 1 100); do left=$(still_loaded $ids); [[ -z "$left" ]] && break; sleep 0.05; done
[[ -z "$left" ]] && pass "none of the agent's programs ($ids) left, nor their links" ||
  fail "left in the kernel: $left"
# Links hold their program: a leaked link would have kept a program above.
left_maps=""
for _ in $(seq 1 100); do
  left_maps=$(for m in $map_ids; do bpftool map show id "$m" 2>/dev/null | head -1; done)
  [[ -z "$left_maps" ]] && break; sleep 0.05
done
[[ -z "$left_maps" ]] && pass "none of the agent's maps ($map_ids) left" || fail "maps left: $left_maps"
[[ ! -e "$SOCK" ]] && pass "API socket removed" || fail "API socket left behind"

# --- 4. bad input -----------------------------------------------------------------------------
"$NETLENS" run --no-such-flag > "$WORK/bad.log" 2>&1; rc=$?
[[ $rc -eq 2 ]] && grep -q "no-such-flag" "$WORK/bad.log" && pass "unknown flag: exit 2" ||
  fail "unknown flag gave rc=$rc: $(cat "$WORK/bad.log")"
printf '[tracer]\nmax_tracked_connections = "lots"\n' > "$WORK/bad.toml"
"$NETLENS" run -c "$WORK/bad.toml" > "$WORK/bad.log" 2>&1; rc=$?
[[ $rc -eq 2 ]] && grep -q "bad.toml:2:1: tracer.max_tracked_connections" "$WORK/bad.log" &&
  pass "invalid config: exit 2 naming file:line and key" || fail "invalid config gave rc=$rc: $(cat "$WORK/bad.log")"
"$NETLENS" check-config "$WORK/bad.toml" > /dev/null 2>&1; [[ $? -eq 2 ]] || fail "check-config accepted a bad file"
"$NETLENS" check-config "$WORK/netlens.toml" > /dev/null 2>&1 || fail "check-config refused a good file"

# Conntrack unusable (no CAP_NET_ADMIN): degraded by default, visible in /stats; a start-up
# failure naming the cause when conntrack.required = true.
if command -v setpriv > /dev/null; then
  start_agent 15 "$WORK/nocap.log" \
    setpriv --bounding-set=-net_admin "$NETLENS" run -c "$WORK/netlens.toml"
  curl -sf --unix-socket "$SOCK" http://netlens/stats | python3 -c '
import json,sys; c=json.load(sys.stdin)["conntrack"]
assert c["degraded"] and c["state"] == "degraded" and "CAP_NET_ADMIN" in c["reason"], c
' && pass "no CAP_NET_ADMIN: conntrack degraded, reason in /stats" ||
    fail "degraded conntrack not reported: $(cat "$WORK/nocap.log")"
  grep -q "conntrack: degraded" "$WORK/nocap.log" || fail "degraded conntrack not logged"
  stop_agent; rc=$?
  [[ $rc -eq 0 ]] || fail "degraded agent exit code $rc"
  printf '[agent]\napi_socket = "%s"\n[conntrack]\nrequired = true\n' "$SOCK" > "$WORK/required.toml"
  setpriv --bounding-set=-net_admin "$NETLENS" run -c "$WORK/required.toml" > "$WORK/required.log" 2>&1
  rc=$?
  [[ $rc -eq 3 ]] && grep -q "conntrack is required.*CAP_NET_ADMIN" "$WORK/required.log" &&
    pass "required conntrack without CAP_NET_ADMIN: exit 3 naming the cause" ||
    fail "required conntrack gave rc=$rc: $(cat "$WORK/required.log")"
fi

if command -v setpriv > /dev/null; then
  chmod 755 "$WORK"
  setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
    "$NETLENS" run -c "$WORK/netlens.toml" > "$WORK/nonroot.log" 2>&1; rc=$?
  if [[ $rc -eq 3 ]] && grep -q "permission denied" "$WORK/nonroot.log"; then
    pass "not root: exit 3 naming the missing privilege"
  else
    fail "not root gave rc=$rc: $(cat "$WORK/nonroot.log")"
  fi
  [[ -z "$(loaded_ids "$WORK/nonroot.log")" ]] || fail "a failed start loaded programs"
fi

# --- 5. API access: root, or the one configured uid; everybody else refused -----------------
if command -v setpriv > /dev/null; then
  printf '[agent]\napi_socket = "%s"\napi_allowed_uid = 65534\n' "$WORK/acl/netlens.sock" > "$WORK/acl.toml"
  chmod 755 "$WORK"
  start_agent 15 "$WORK/acl.log" "$NETLENS" run -c "$WORK/acl.toml"
  as_user() { setpriv --reuid="$1" --regid="$1" --clear-groups --inh-caps=-all "${@:2}"; }
  as_user 65534 "$NETLENS" connections --json --socket "$WORK/acl/netlens.sock" --client acl > "$WORK/acl.json" 2>&1 &&
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))["connections"]' "$WORK/acl.json" &&
    pass "the configured uid (65534) is served" || fail "configured uid refused: $(cat "$WORK/acl.json")"
  if as_user 65533 "$NETLENS" connections --socket "$WORK/acl/netlens.sock" > "$WORK/acl2.txt" 2>&1; then
    fail "uid 65533 was served"
  else
    pass "another uid (65533) is refused: $(head -c 100 "$WORK/acl2.txt")"
  fi
  # File modes aside: a process of another uid that can pass them (CAP_DAC_OVERRIDE) still
  # meets the SO_PEERCRED check.
  code=$(setpriv --reuid=65533 --regid=65533 --clear-groups --inh-caps=+dac_override \
    --ambient-caps=+dac_override curl -s -o /dev/null -w '%{http_code}' \
    --unix-socket "$WORK/acl/netlens.sock" http://netlens/healthz 2>&1)
  [[ $code == 403 ]] && pass "a peer past the file modes is refused by its uid (403)" ||
    fail "peer uid check answered '$code'"
  curl -sf --unix-socket "$WORK/acl/netlens.sock" http://netlens/stats |
    python3 -c 'import json,sys; assert json.load(sys.stdin)["actors"]["api"]["counters"]["peers_refused"] >= 1' &&
    pass "root is served; the refusal is counted" || fail "root refused or refusal not counted"
  stop_agent
fi

echo "e2e: $failures failure(s)"
exit $((failures > 0))
