#!/usr/bin/env bash
# The bash completion the build writes (build/doc/netlens.bash-completion) against the program's
# own --help: every subcommand and every option --help lists is offered, the choices --help shows
# ({tcp,udp}, ...) are offered after their option, file names after -c/--config and for
# check-config's FILE, and nothing is offered that --help does not list.
#
#   completion_check.sh BUILD/netlens BUILD/doc/netlens.bash-completion
set -uo pipefail
NETLENS=${1:?usage: completion_check.sh path/to/netlens path/to/completion}
COMPLETION=${2:?}
# shellcheck source=/dev/null
source "$COMPLETION" || { echo "FAIL: cannot source $COMPLETION"; exit 1; }
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# complete WORD... : what _netlens offers for the last word of `netlens WORD...`.
complete_line() {
  COMP_WORDS=(netlens "$@")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _netlens
  printf '%s\n' "${COMPREPLY[@]}" | sort -u
}

# options_of HELP_TEXT: the flags --help lists, one per line.
options_of() {
  sed -n '/^Options:/,/^$/p' <<< "$1" | grep -oE '^  -[^ ]+' | tr ',' '\n' | sed 's/^ *//' |
    grep -E '^-' | sort -u
}

main_help=$("$NETLENS" --help)
subs=$(sed -n '/^Subcommands:/,/^$/p' <<< "$main_help" | awk 'NR > 1 && NF {print $1}' | sort)
[[ -n $subs ]] || fail "no subcommands in netlens --help"
offered=$(complete_line "")
[[ $offered == "$subs" ]] && echo "ok: the subcommands offered are --help's: $(echo $subs)" ||
  fail "subcommands: offered [$(echo $offered)], --help lists [$(echo $subs)]"
[[ $(complete_line conn) == connections ]] && echo "ok: conn<TAB> completes connections" ||
  fail "conn<TAB>: $(complete_line conn)"

global=$(options_of "$main_help")
offered=$(complete_line -)
[[ $offered == "$global" ]] && echo "ok: before a subcommand, the program's options: $(echo $global)" ||
  fail "global options: offered [$(echo $offered)], --help lists [$(echo $global)]"

for sub in $subs; do
  help=$("$NETLENS" "$sub" --help)
  want=$(printf '%s\n%s\n' "$(options_of "$help")" "$(grep -vx -- '-h\|--help' <<< "$global")" |
    grep . | sort -u)
  offered=$(complete_line "$sub" -)
  if [[ $offered == "$want" ]]; then
    echo "ok: netlens $sub -<TAB> offers exactly its options and the program's: $(echo $offered)"
  else
    fail "netlens $sub -<TAB>: offered [$(echo $offered)], --help lists [$(echo $want)]"
  fi
  # Each option whose --help shows a choice list {a,b} completes to exactly those choices.
  while read -r opt choices; do
    [[ -n $opt ]] || continue
    want=$(tr ',' '\n' <<< "$choices" | sort -u)
    offered=$(complete_line "$sub" "$opt" "")
    [[ $offered == "$want" ]] && echo "ok: netlens $sub $opt <TAB> offers $(echo $want)" ||
      fail "netlens $sub $opt <TAB>: offered [$(echo $offered)], --help shows [$(echo $want)]"
  done < <(grep -oE -- '--[a-z-]+ [A-Z]+:\{[^}]*\}' <<< "$help" | sed -E 's/ [A-Z]+:\{(.*)\}/ \1/')
done

# A choice of the program's own option after a subcommand, and partial words.
[[ $(complete_line connections --log-level de) == debug ]] && echo "ok: --log-level de<TAB> after a subcommand" ||
  fail "--log-level de<TAB>: $(complete_line connections --log-level de)"
[[ $(complete_line connections --sort r) == "$(printf 'retransmits\nrtt')" ]] && echo "ok: --sort r<TAB>" ||
  fail "--sort r<TAB>: $(complete_line connections --sort r)"
# File names where a file is expected.
dir=$(mktemp -d /tmp/netlens-completion.XXXXXX)
trap 'rm -rf "$dir"' EXIT
touch "$dir/agent.toml"
for line in "run -c" "run --config" "console -c" "check-config"; do
  # shellcheck disable=SC2086
  offered=$(complete_line $line "$dir/ag")
  [[ $offered == "$dir/agent.toml" ]] && echo "ok: netlens $line FILE<TAB> completes file names" ||
    fail "netlens $line FILE<TAB>: offered [$offered]"
done
# After --watch (an optional value) the options still come.
[[ $(complete_line connections --watch --by) == --bytes ]] && echo "ok: --watch --by<TAB> completes --bytes" ||
  fail "--watch --by<TAB>: $(complete_line connections --watch --by)"
exit $((failures > 0))
