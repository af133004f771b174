#!/usr/bin/env bash
# The layers of docs/architecture.md, read from the #include lines: an actor's folder includes
# no other actor's folder (actors/common is shared); messages/, flow/, bpf/ and config/ include
# nothing from actors/ or apps/; flow/ includes nothing from messages/. Each breach is printed
# as FILE:LINE: the include, and the check fails.
set -uo pipefail
root=${1:-$(dirname "$0")/../..}
cd "$root" || exit 2
bad=0
while IFS= read -r hit; do
  file=${hit%%:*}
  own=$(cut -d/ -f2 <<<"$file")
  inc=$(sed -E 's/.*#include "actors\/([a-z_]+)\/.*/\1/' <<<"$hit")
  if [[ $inc != "$own" && $inc != common ]]; then
    echo "$hit: actors/$own reaches into actors/$inc" >&2
    bad=1
  fi
done < <(grep -rn --include='*.cpp' --include='*.hpp' '#include "actors/' actors)
while IFS= read -r hit; do
  echo "$hit: a lower layer includes actors/ or apps/" >&2
  bad=1
done < <(grep -rn --include='*.cpp' --include='*.hpp' --include='*.h' --include='*.c' \
  -E '#include "(actors|apps)/' messages flow bpf config)
while IFS= read -r hit; do
  echo "$hit: flow/ is below messages/" >&2
  bad=1
done < <(grep -rn --include='*.cpp' --include='*.hpp' '#include "messages/' flow)
[[ $bad == 0 ]] && echo "layering: no include crosses a layer or another actor's folder"
exit $bad
