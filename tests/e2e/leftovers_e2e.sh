#!/usr/bin/env bash
# End to end, kernel leftovers: SIGTERM at points through start-up (the conntrack dump, the
# netns scan and TC attach, loading BPF, guessing offsets, just after ready) exits cleanly;
# SIGKILL at the same points leaves none of that agent's programs, maps or netlink sockets once
# the kernel has reaped it, except its TC classifiers (a filter holds its program: only the next
# start can remove them); and a second agent started after a SIGKILL removes those, runs and,
# when it stops, leaves nothing either. Nothing is pinned under the BPF filesystem at any time.
# Needs root.
set -uo pipefail
NETLENS=${1:?usage: leftovers_e2e.sh path/to/netlens}
WORK=$(mktemp -d /tmp/netlens-leftovers.XXXXXX)
SOCK="$WORK/run/netlens.sock"
# shellcheck source=e2e_support.sh
source "$(dirname "${BASH_SOURCE[0]}")/e2e_support.sh"
trap 'e2e_cleanup KILL' EXIT
printf '[agent]\napi_socket = "%s"\n' "$SOCK" > "$WORK/netlens.toml"

# What a running agent holds in the kernel, from its own descriptors: program ids, map ids,
# netlink socket inodes.
held() {
  local pid=$1
  {
    grep -h '^prog_id:' /proc/"$pid"/fdinfo/* 2>/dev/null | awk '{print "prog " $2}'
    grep -h '^map_id:' /proc/"$pid"/fdinfo/* 2>/dev/null | awk '{print "map " $2}'
    for fd in /proc/"$pid"/fd/*; do
      l=$(readlink "$fd" 2>/dev/null) || continue
      [[ $l =~ ^socket:\[([0-9]+)\]$ ]] || continue
      awk -v ino="${BASH_REMATCH[1]}" 'NR > 1 && $NF == ino { print "netlink " ino }' /proc/net/netlink
    done
  } | sort -u
}

# Those of the given objects still in the kernel.
still_there() {
  local kind id
  while read -r kind id; do
    case $kind in
    prog) bpftool prog show id "$id" > /dev/null 2>&1 && echo "prog $id" ;;
    map) bpftool map show id "$id" > /dev/null 2>&1 && echo "map $id" ;;
    netlink) awk -v ino="$id" 'NR > 1 && $NF == ino { found = 1 } END { exit !found }' \
      /proc/net/netlink && echo "netlink $id" ;;
    esac
  done <<< "$1"
}

# Waits (freeing BPF objects goes through RCU) until none of them is left; prints the rest.
left_after() {
  local rest=""
  for _ in $(seq 1 60); do
    rest=$(still_there "$1")
    [[ -z $rest ]] && return 0
    sleep 0.05
  done
  echo "$rest"
}

# Whether the main thread of pid blocks SIGTERM (signal 15: bit 14 of SigBlk).
term_blocked() {
  local mask
  mask=$(awk '/^SigBlk:/ { print $2 }' /proc/"$1"/status 2>/dev/null) || return 1
  [[ -n $mask ]] && (((16#$mask >> 14) & 1))
}

# The TC classifier programs loaded now (by anyone named like netlens's) and their maps: what a
# SIGKILLed agent leaves attached until the next start sweeps it.
tc_objects() {
  bpftool prog show --json 2>/dev/null |
    jq -r '.[] | select((.name // "") | startswith("nl_tc_")) | "prog \(.id)", (.map_ids // [] | .[] | "map \(.)")' |
    sort -u
}
without_tc() { grep -vxF -f <(tc_objects; echo "-") <<< "$1" || true; }

pinned() { find /sys/fs/bpf -name '*nl*' 2>/dev/null | grep -i netlens; }

# Starts an agent and keeps a copy of what it holds until signal $1 after $2 seconds.
run_and_signal() {
  local sig=$1 delay=$2 snap="" rc
  spawn_agent "$WORK/agent.log" "$NETLENS" run -c "$WORK/netlens.toml"
  local end=$((SECONDS + 10))
  # Snapshot what it holds as often as possible up to the signal.
  local t0
  t0=$(date +%s%N)
  while (( ($(date +%s%N) - t0) / 1000000 < ${delay%.*} )); do
    local now
    now=$(held "$AGENT_PID")
    [[ -n $now ]] && snap=$(printf '%s\n%s\n' "$snap" "$now" | sed '/^$/d' | sort -u)
    kill -0 "$AGENT_PID" 2>/dev/null || break
    (( SECONDS < end )) || break
  done
  now=$(held "$AGENT_PID")
  [[ -n $now ]] && snap=$(printf '%s\n%s\n' "$snap" "$now" | sed '/^$/d' | sort -u)
  # A SIGTERM before main blocks it (the loader, a sanitizer runtime starting up) ends the
  # process by the default action with nothing loaded yet; start-up proper begins after that.
  if [[ $sig == TERM ]]; then
    while kill -0 "$AGENT_PID" 2>/dev/null && ((SECONDS < end)) && ! term_blocked "$AGENT_PID"; do
      sleep 0.002
    done
  fi
  stop_agent "$sig"; rc=$?
  echo "$rc" > "$WORK/rc"
  printf '%s\n' "$snap" > "$WORK/snap"
}

for delay in 0 15 30 45 60 100 400; do
  run_and_signal TERM "$delay"
  rc=$(cat "$WORK/rc")
  rest=$(left_after "$(cat "$WORK/snap")")
  if [[ $rc -eq 0 && -z $rest ]]; then
    pass "SIGTERM after ${delay} ms: exit 0, nothing left ($(wc -l < "$WORK/snap") objects held)"
  else
    fail "SIGTERM after ${delay} ms: rc=$rc, left: $rest"; tail -5 "$WORK/agent.log"
  fi
done

for delay in 0 15 30 45 60 100 400; do
  run_and_signal KILL "$delay"
  rest=$(without_tc "$(left_after "$(cat "$WORK/snap")")")
  [[ -z $rest ]] && pass "SIGKILL after ${delay} ms: nothing left ($(wc -l < "$WORK/snap") objects held)" ||
    fail "SIGKILL after ${delay} ms: left: $rest"
done

# The same while guessing offsets and loading the prebuilt tracer (tracer.mode = "prebuilt",
# no cached offsets, so each start guesses: its own BPF programs and loopback sockets).
cp "$WORK/netlens.toml" "$WORK/default.toml"
printf '[agent]\napi_socket = "%s"\n[tracer]\nmode = "prebuilt"\ncache_dir = "%s"\n' \
  "$SOCK" "$WORK/nocache" > "$WORK/netlens.toml"
for sig in TERM KILL; do
  for delay in 10 30 50 80; do
    rm -rf "$WORK/nocache"
    run_and_signal "$sig" "$delay"
    rc=$(cat "$WORK/rc")
    rest=$(left_after "$(cat "$WORK/snap")")
    [[ $sig == KILL ]] && rest=$(without_tc "$rest")
    if [[ -z $rest && ($sig == KILL || $rc -eq 0) ]]; then
      pass "prebuilt: SIG$sig after ${delay} ms: nothing left ($(wc -l < "$WORK/snap") objects held)"
    else
      fail "prebuilt: SIG$sig after ${delay} ms: rc=$rc, left: $rest"; tail -5 "$WORK/agent.log"
    fi
  done
done
cp "$WORK/default.toml" "$WORK/netlens.toml"

# Starts the agent, waits until it is ready with its classifiers attached (at most 30 s: a fixed
# delay is not enough under ASan on a loaded machine), counts the TC programs it holds into
# $held, and SIGKILLs it.
kill_once_attached() {
  spawn_agent "$WORK/agent.log" "$NETLENS" run -c "$WORK/netlens.toml"
  for _ in $(seq 1 3000); do
    [[ -n $(tc_objects) ]] && grep -q "netlens ready" "$WORK/agent.log" && break
    kill -0 "$AGENT_PID" 2>/dev/null || break
    sleep 0.01
  done
  held=$(tc_objects | grep -c '^prog')
  stop_agent KILL
}

# With TCX (the default on this kernel) a SIGKILLed agent's classifiers go with it: its links
# were its file descriptors. (The kernel frees the programs a moment after the process.)
kill_once_attached
for _ in $(seq 1 100); do [[ -z $(tc_objects) ]] && break; sleep 0.05; done
((held > 0)) && [[ -z $(tc_objects) ]] &&
  pass "TCX: a SIGKILLed agent leaves no TC classifier ($held programs held, none left)" ||
  fail "TCX: after SIGKILL (held $held): left $(tc_objects | paste -sd' ')"

# Classic TC filters (a kernel without TCX, or tc_tcx = false) outlive a SIGKILL. After the last
# SIGKILL (its socket file is still there): a new agent starts, removes the classifiers the
# killed ones left, serves, stops cleanly, and leaves nothing.
printf '[netns]\ntc_tcx = false\ntc_create_clsact = true\n' >> "$WORK/netlens.toml"
# The kill waits until the classifiers are attached: the sweep below needs something to sweep.
kill_once_attached
left_by_kill=$(tc_objects | grep -c '^prog')
((left_by_kill > 0)) && pass "a SIGKILLed agent leaves its TC classifiers attached ($left_by_kill programs)" ||
  fail "no TC classifier left by a SIGKILL: the sweep below would prove nothing"
run_and_signal TERM 1500
rc=$(cat "$WORK/rc")
grep -q "netlens ready" "$WORK/agent.log" && pass "an agent starts after a SIGKILLed one" ||
  fail "no start after SIGKILL: $(tail -5 "$WORK/agent.log")"
rest=$(left_after "$(cat "$WORK/snap")")
[[ $rc -eq 0 && -z $rest ]] && pass "and leaves nothing when it stops" || fail "rc=$rc, left: $rest"
grep -q '^prog' "$WORK/snap" && grep -q '^netlink' "$WORK/snap" ||
  fail "the snapshot saw no programs or no netlink sockets: the check would prove nothing"
for _ in $(seq 1 60); do [[ -z $(tc_objects) ]] && break; sleep 0.05; done
[[ -z $(tc_objects) ]] && pass "no TC classifier program is left after the next start and stop" ||
  fail "TC classifier objects left: $(tc_objects | paste -sd' ')"
[[ -z $(pinned) ]] && pass "nothing pinned under /sys/fs/bpf" || fail "pinned: $(pinned)"

echo "leftovers e2e: $failures failure(s)"
exit $((failures > 0))
