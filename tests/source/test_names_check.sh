#!/usr/bin/env bash
# Every Catch2 test case must be one ctest entry that runs it. ctest takes a ';' in a discovered
# name as a list separator: the name is cut in two, neither half matches a test, Catch prints
# "No tests ran" and exits 0, and ctest reports Passed for a test that never ran. A test name
# with ';' (on the TEST_CASE line or the line after it) is printed as FILE:LINE and fails.
set -uo pipefail
root=${1:-$(dirname "$0")/../..}
cd "$root" || exit 2
hits=$(grep -rn -E 'TEST_CASE\("[^"]*;' tests; grep -rn -A1 -E 'TEST_CASE\($' tests | grep -E '^[^:]+-[0-9]+-\s*"[^"]*;')
if [[ -n $hits ]]; then
  printf '%s: a test name with ";" never runs under ctest\n' "$hits" >&2
  exit 1
fi
echo "test names: none has a ';'"
