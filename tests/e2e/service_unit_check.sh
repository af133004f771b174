#!/usr/bin/env bash
# packaging/netlens.service: systemd-analyze verify accepts it (with ExecStart pointed at the
# binary under test, since verify insists the command exists), and its TimeoutStopSec leaves
# room for the three shutdown phase deadlines of config/netlens.toml. Skipped (77) where
# systemd's tools are not installed.
set -uo pipefail
NETLENS=${1:?usage: service_unit_check.sh path/to/netlens path/to/source}
SRC=${2:?}
UNIT="$SRC/packaging/netlens.service"
command -v systemd-analyze > /dev/null || { echo "skip: no systemd-analyze"; exit 77; }
WORK=$(mktemp -d /tmp/netlens-unit.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failures=0

sed "s|/usr/sbin/netlens|$NETLENS|g" "$UNIT" > "$WORK/netlens.service"
# Documentation= names man:netlens(8) and man:netlens.toml(5), which verify looks up with man(1):
# the pages this build wrote, in a man tree of their own.
DOCS=$(dirname "$NETLENS")/doc
mkdir -p "$WORK/man/man8" "$WORK/man/man5"
cp "$DOCS/netlens.8" "$WORK/man/man8/" && cp "$DOCS/netlens.toml.5" "$WORK/man/man5/" ||
  { echo "FAIL: no man pages in $DOCS"; exit 1; }
out=$(MANPATH="$WORK/man" systemd-analyze verify "$WORK/netlens.service" 2>&1); rc=$?
# Without systemd as PID 1, verify may add notes about the host's own units; only ours count.
ours=$(grep "netlens.service" <<< "$out")
if [[ $rc -eq 0 && -z "$ours" ]]; then
  echo "ok: systemd-analyze verify accepts netlens.service"
else
  echo "FAIL: systemd-analyze verify (rc=$rc): $out"; failures=$((failures + 1))
fi

stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "$UNIT")
phases_ms=$(awk -F' = ' '/^\[/{t=$0} t=="[supervisor]" && /^(stop|purge|exit)_timeout_ms = /{s+=$2} END{print s+0}' \
  "$SRC/config/netlens.toml")
# The phases run one after the other; a few seconds more for the process teardown.
if [[ -n "$stop_s" && $phases_ms -gt 0 && $((stop_s * 1000)) -ge $((phases_ms + 5000)) ]]; then
  echo "ok: TimeoutStopSec=${stop_s}s covers the shutdown deadlines (${phases_ms} ms) + 5 s"
else
  echo "FAIL: TimeoutStopSec='${stop_s}' does not cover the phase deadlines (${phases_ms} ms) + 5 s"
  failures=$((failures + 1))
fi
for key in KillSignal=SIGTERM RuntimeDirectory=netlens CacheDirectory=netlens Restart=on-failure; do
  grep -qx "$key" "$UNIT" && echo "ok: $key" || { echo "FAIL: $key missing"; failures=$((failures + 1)); }
done
exit $((failures > 0))
