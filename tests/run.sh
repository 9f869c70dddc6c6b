#!/usr/bin/env bash
# The test command (README): installs and starts every real peer on 127.0.0.1
# (kube-apiserver + etcd, sushy Redfish emulators, OCI registries, git servers),
# runs the whole workspace's tests with peers required, and stops the peers.
#
#   tests/run.sh            everything
#   tests/run.sh -p NAME    pass extra arguments to `cargo test`
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export FLEETFORM_PEERS_DIR=${FLEETFORM_PEERS_DIR:-$repo/target/peers}
mkdir -p "$FLEETFORM_PEERS_DIR"
peers=(kube sushy registry git)

stop_all() {
  for p in "${peers[@]}"; do "tests/peers/$p.sh" stop >/dev/null 2>&1 || true; done
}
trap stop_all EXIT

step() { printf '\n==> %s\n' "$*"; }

step "installing peers (cached after the first run)"
for p in "${peers[@]}"; do
  t0=$SECONDS
  "tests/peers/$p.sh" install
  echo "    $p installed in $((SECONDS - t0)) s"
done

step "building the chart renderer (Helm's engine, Go; cached)"
scripts/build-renderer.sh

step "building the workspace's tests"
cargo test --workspace --no-run

step "starting peers on 127.0.0.1"
for p in "${peers[@]}"; do
  "tests/peers/$p.sh" stop >/dev/null 2>&1 || true
  "tests/peers/$p.sh" start
done
for env in "$FLEETFORM_PEERS_DIR"/*.env; do
  # shellcheck disable=SC1090
  source "$env"
done
export FLEETFORM_REQUIRE_PEERS=1

step "running the tests"
cargo test --workspace "$@"

# The end-to-end test of the main job: the demo on the sandbox asserts every
# step's exit status (plan 2, apply 0, re-plan 0, drift 2, remediate, PR plan,
# merge + apply, re-plan 0). It uses the same peers, so the test peers stop first.
if [[ $# -eq 0 ]]; then
  stop_all
  step "end to end: scripts/demo.sh on the sandbox"
  scripts/demo.sh
  scripts/sandbox.sh down
fi
