#!/usr/bin/env bash
# Builds fleetform-chart-renderer, the small Go helper that renders Helm charts with Helm's own
# engine (Helm v4 SDK; providers/charts/renderer), into $FLEETFORM_CACHE/bin (default
# ~/.cache/fleetform/bin), where fleetform finds it. Cached: rebuilt only when its sources change.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$repo/providers/charts/renderer
bin=${FLEETFORM_CACHE:-$HOME/.cache/fleetform}/bin
out=$bin/fleetform-chart-renderer
mkdir -p "$bin"
stamp=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
if [[ -x $out && -f $out.stamp && $(cat "$out.stamp") == "$stamp" ]]; then
  echo "chart renderer: cached at $out"
  exit 0
fi
command -v go >/dev/null || { echo "chart renderer: go is not installed (needed to build it)" >&2; exit 1; }
echo "chart renderer: building (Helm v4 SDK; the first build takes a few minutes)"
(cd "$src" && go build -trimpath -o "$out.tmp" .)
mv "$out.tmp" "$out"
echo "$stamp" > "$out.stamp"
echo "chart renderer: built $out"
