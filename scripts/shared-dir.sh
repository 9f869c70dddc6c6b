# scripts/shared-dir.sh — sourced by scripts that read the upstream data (real CRDs, recorded
# BMC trees). That data is kept once, in `shared` beside the checkout, never copied into the
# repository. The same rule as the Rust helper `fleetform_contract::testing::shared_dir`:
# $FLEETFORM_SHARED_DIR, else <repo>/../shared.
#
# Usage: repo=...; source "$repo/scripts/shared-dir.sh"; crds=$(shared_fixture crds)

shared_dir() {
  local dir=${FLEETFORM_SHARED_DIR:-$repo/../shared}
  if [[ ! -d $dir ]]; then
    echo "the shared data directory $dir is missing: check out \`shared\` beside the repository, or set FLEETFORM_SHARED_DIR" >&2
    return 1
  fi
  (cd "$dir" && pwd)
}

shared_fixture() { # name (crds, redfish)
  local dir
  dir=$(shared_dir) || return 1
  if [[ ! -d $dir/fixtures/$1 ]]; then
    echo "$dir/fixtures/$1 is missing from the shared data directory" >&2
    return 1
  fi
  printf '%s\n' "$dir/fixtures/$1"
}
