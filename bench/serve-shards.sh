#!/usr/bin/env bash
# bench/serve-shards.sh — reconcile throughput (tenants per minute) of `serve` with 1 and 3
# replicas sharding the generated fleet's tenants, and takeover after a replica dies.
#
#   bench/serve-shards.sh [TENANTS=120] [RUNS=3]
#
# Uses the kube-apiserver peer named by $FLEETFORM_TEST_KUBECONFIG (tests/peers/kube.sh start;
# source target/peers/kube.env). The daemons run in one test process on in-memory providers
# (the generated fleet's hosts and clusters do not exist); the shard Leases and every shard's
# state are in the apiserver. Numbers depend on the machine: say what else ran.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export BENCH_TENANTS=${1:-120}
runs=${2:-3}
: "${FLEETFORM_TEST_KUBECONFIG:?source target/peers/kube.env first (tests/peers/kube.sh start)}"
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
cargo test -q -p fleetform-state-kube --test serve_shards --no-run
for run in $(seq "$runs"); do
  echo "# run $run"
  cargo test -q -p fleetform-state-kube --test serve_shards -- --ignored --nocapture throughput 2>&1 \
    | grep -E '^replicas='
  cargo test -q -p fleetform-state-kube --test serve_shards -- --nocapture sixty 2>&1 \
    | grep -E 'tenants per replica|replica 2 dropped'
done
echo "load_average=$(cut -d' ' -f1-3 /proc/loadavg) cores=$(nproc)"
