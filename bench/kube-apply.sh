#!/usr/bin/env bash
# bench/kube-apply.sh — fleetform vs `kubectl apply --server-side` on the same kube-apiserver.
#
#   bench/kube-apply.sh [OBJECTS=2000]
#
# Starts a private kube-apiserver + etcd (tests/peers/kube.sh; own state dir and ports, so it
# never touches a test peer), builds kubectl from the same Kubernetes modules (cached) and the
# release example providers/kube/examples/kube_apply_bench.rs, then, one after the other:
#   1. kubectl apply --server-side of OBJECTS objects (+ their namespace) from one file;
#   2. fleetform: plan + apply of the same objects in another namespace through the engine and
#      the real kube provider; then a no-change re-plan, a drift run, and the floor: one LIST
#      per kind (4 kinds) of those objects.
# Prints every figure and the ratios. Numbers depend on the machine: say what else ran.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
n=${1:-2000}
export FLEETFORM_PEERS_DIR=${BENCH_PEERS_DIR:-$repo/target/bench-peers}
export KUBE_PEER_PORT=${BENCH_KUBE_PORT:-29443} KUBE_PEER_ETCD_PORT=${BENCH_ETCD_PORT:-21790}
# The objects are core kinds; one small CRD keeps the peer's start short.
source "$repo/scripts/shared-dir.sh"
export KUBE_PEER_CRDS=$(shared_fixture crds)/keda/keda.sh_scaledobjects.yaml
target=${CARGO_TARGET_DIR:-$repo/target}
kubectl=${FLEETFORM_CACHE:-$HOME/.cache/fleetform}/bin/kubectl
work=$(mktemp -d)

cleanup() { tests/peers/kube.sh stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

tests/peers/kube.sh install --with-kubectl >/dev/null
cargo build --release -q -p fleetform-kube --example kube_apply_bench
bench=$target/release/examples/kube_apply_bench
tests/peers/kube.sh stop >/dev/null 2>&1 || true
# A fresh etcd every run: objects left by an earlier run would turn creates into no-ops, and
# a larger store slows every write.
rm -rf "$FLEETFORM_PEERS_DIR/kube"
tests/peers/kube.sh start >/dev/null
kc=$FLEETFORM_PEERS_DIR/kube/admin.kubeconfig

"$bench" "$kc" bench-kubectl "$n" "$work/objects.yaml"
echo "kubectl_version=$("$kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | head -1)"
"$bench" "$kc" bench-kubectl "$n" --requests | sed 's/^/kubectl_requests_before=/'
t0=$(date +%s.%N)
"$kubectl" --kubeconfig "$kc" apply --server-side --field-manager=kubectl-bench -f "$work/objects.yaml" >/dev/null
t1=$(date +%s.%N)
"$bench" "$kc" bench-kubectl "$n" --requests | sed 's/^/kubectl_requests_after_apply=/'
t1b=$(date +%s.%N)
"$kubectl" --kubeconfig "$kc" apply --server-side --field-manager=kubectl-bench -f "$work/objects.yaml" >/dev/null
t2=$(date +%s.%N)
"$bench" "$kc" bench-kubectl "$n" --requests | sed 's/^/kubectl_requests_after_reapply=/'
kubectl_s=$(echo "$t1 - $t0" | bc -l)
printf 'kubectl_apply_s=%.3f\nkubectl_reapply_s=%.3f\n' "$kubectl_s" "$(echo "$t2 - $t1b" | bc -l)"

"$bench" "$kc" bench-fleetform "$n" | tee "$work/fleetform.txt"
get() { sed -n "s/^$1=\([^ ]*\).*/\1/p" "$work/fleetform.txt"; }
printf 'ratio_kubectl_over_fleetform_apply=%.2f (target >= 3)\n' "$(echo "$kubectl_s / $(get fleetform_apply_s)" | bc -l)"
printf 'replan_over_floor=%.1f drift_over_floor=%.1f (target: < 2 s and <= 2x the floor)\n' \
  "$(echo "$(get replan_s) / $(get list_floor_s)" | bc -l)" "$(echo "$(get drift_s) / $(get list_floor_s)" | bc -l)"
echo "load_average=$(cut -d' ' -f1-3 /proc/loadavg) cores=$(nproc)"
