#!/usr/bin/env bash
# bench/charts-plan.sh — speed of chart releases (issue 14): render + expand for many tenants,
# and plan / apply / no-change re-plan of the full chart set against a real kube-apiserver.
#
#   bench/charts-plan.sh [TENANTS=100]
#
# The chart set: gpu-operator v26.7.0, network-operator v26.4.1, k8s-nim-operator v3.1.2,
# kai-scheduler v0.13.0, kyverno 3.9.0, from ../shared/fixtures/charts (charts.repository),
# charts.wait: false (no controllers run). Needs the renderer (scripts/build-renderer.sh).
#
# 1. Offline, TENANTS tenants: `fleetform graph` (load, compile, fetch, render, expand, graph;
#    capabilities as declared, no cluster) with an empty render cache (cold: a fresh
#    FLEETFORM_CACHE holding only bin/), then again (warm).
# 2. Live, ONE tenant (every tenant of a test fleet points at the same apiserver, so 100 of
#    them would share the cluster-scoped objects: CRDs, ClusterRoles, webhooks): on a private
#    kube-apiserver + etcd (tests/peers/kube.sh; own ports 29444 / 21792-21793, fresh etcd):
#    plan cold, plan warm, apply, no-change re-plan x ROUNDS, and the floor: one LIST per kind
#    of the objects the fleet applies (all namespaces, one keep-alive connection). Requests are
#    the apiserver's own apiserver_request_total deltas (load-independent).
# FLEETFORM_BIN=path measures that binary instead of building the release one.
# Timings are process wall times on whatever machine runs this: say what else ran.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
tenants=${1:-100}
rounds=${CHARTS_BENCH_ROUNDS:-5}
charts=$(cd "$repo/../shared/fixtures/charts" && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
home_cache=${FLEETFORM_CACHE:-$HOME/.cache/fleetform}
renderer=$home_cache/bin/fleetform-chart-renderer
[[ -x $renderer ]] || { echo "no renderer at $renderer: run scripts/build-renderer.sh" >&2; exit 1; }
export FLEETFORM_PEERS_DIR=${BENCH_PEERS_DIR:-$repo/target/bench-peers-charts}
export KUBE_PEER_PORT=${BENCH_KUBE_PORT:-29444} KUBE_PEER_ETCD_PORT=${BENCH_ETCD_PORT:-21792}
source "$repo/scripts/shared-dir.sh"
export KUBE_PEER_CRDS=$(shared_fixture crds)/keda/keda.sh_scaledobjects.yaml
work=$(mktemp -d)
cleanup() { tests/peers/kube.sh stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# FLEETFORM_BIN: a fleetform binary to measure instead of building the release one.
ff=${FLEETFORM_BIN:-}
if [[ -z $ff ]]; then
  cargo build --release -q -p fleetform
  ff=$target/release/fleetform
fi

# A fleet of N tenant-managed tenants (own CIDRs), all with the full chart set.
fleet() { # dir n kubeconfig
  mkdir -p "$1"; cp "$3" "$1/admin.kubeconfig"
  {
    cat <<Y
apiVersion: fleetform.dev/v1alpha1
kind: Fleet
metadata: {name: charts-bench}
spec:
  charts: {repository: $charts, wait: false}
  operators:
    gpuOperator:
      version: v26.7.0
      driver: {version: "580.95.05", kernelModuleType: open}
      migStrategy: mixed
    networkOperator: {version: v26.4.1}
    nimOperator: {version: v3.1.2}
  schedulers:
    kai: {version: v0.13.0}
  policies:
    kyverno: {version: "3.9.0"}
  managementCluster:
    kubeconfig: {file: admin.kubeconfig}
Y
    for ((i = 0; i < $2; i++)); do
      cat <<Y
---
apiVersion: fleetform.dev/v1alpha1
kind: Tenant
metadata: {name: bench-t$i}
spec:
  flavor: tenant-managed
  kubernetes:
    version: "1.34"
    kubeconfig: {file: admin.kubeconfig}
    podCidr: 10.$((i + 1)).0.0/16
    serviceCidr: 172.$((16 + i / 16)).$(((i % 16) * 16)).0/20
  nodeOs: {byo: true}
Y
    done
  } >"$1/fleet.yaml"
}
fresh_cache() { local c; c=$(mktemp -d -p "$work"); mkdir "$c/bin"; cp "$renderer" "$c/bin/"; echo "$c"; }
now() { date +%s.%N; }
secs() { printf '%.3f' "$(echo "$2 - $1" | bc -l)"; }

# --- 1. offline render + expand, TENANTS tenants
touch "$work/none.kubeconfig"
fleet "$work/offline" "$tenants" "$work/none.kubeconfig"
cache=$(fresh_cache)
for run in cold warm; do
  t0=$(now)
  FLEETFORM_CACHE=$cache /usr/bin/time -f '%e %U %S %M' -o "$work/time" \
    "$ff" graph --fleet "$work/offline" >"$work/graph.txt"
  t1=$(now)
  read -r _ user sys rss <"$work/time"
  echo "offline_graph_${run}_s=$(secs "$t0" "$t1") tenants=$tenants releases=$((tenants * 5)) resources=$(grep -c '^kube:' "$work/graph.txt") renders_cached=$(ls "$cache/renders" | wc -l) cpu_user_s=$user cpu_sys_s=$sys max_rss_kib=$rss"
done

# --- 2. live, one tenant, private apiserver
tests/peers/kube.sh install >/dev/null
tests/peers/kube.sh stop >/dev/null 2>&1 || true
rm -rf "$FLEETFORM_PEERS_DIR/kube"
tests/peers/kube.sh start >/dev/null
kc=$FLEETFORM_PEERS_DIR/kube/admin.kubeconfig
server=$(sed -n 's/^ *server: *//p' "$kc" | head -1)
token=$(sed -n 's/^ *token: *//p' "$kc" | head -1)
ca=$(sed -n 's/^ *certificate-authority: *//p' "$kc" | head -1)
fleet "$work/live" 1 "$kc"
requests() { # apiserver_request_total by verb and resource, as JSON
  curl -sS --cacert "$ca" -H "Authorization: Bearer $token" "$server/metrics" | python3 -c '
import sys, json, re, collections
c = collections.Counter()
for l in sys.stdin:
    if not l.startswith("apiserver_request_total{"): continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", l.split("}")[0]))
    if not labels.get("resource"): continue  # /metrics, /healthz, discovery
    c[labels["verb"] + " " + labels["resource"]] += int(float(l.split()[-1]))
print(json.dumps(c))'
}
delta() { # before.json after.json -> "N requests (VERB resource x n, ...)"
  python3 - "$1" "$2" <<'PY'
import json, sys, collections
a, b = (collections.Counter(json.load(open(p))) for p in sys.argv[1:3])
d = {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0) > 0}
by_verb = collections.Counter()
for k, v in d.items(): by_verb[k.split()[0]] += v
print(sum(d.values()), "requests:", ", ".join(f"{v} {n}" for v, n in sorted(by_verb.items())))
PY
}
live() { # label args... : one timed fleetform run on the live fleet, with its requests
  local label=$1; shift
  requests >"$work/r0"
  local t0 t1 rc=0; t0=$(now)
  FLEETFORM_CACHE=$cache_live "$ff" "$@" --fleet "$work/live/" --state "$work/state" >"$work/$label.out" 2>"$work/$label.err" || rc=$?
  t1=$(now)
  requests >"$work/r1"
  echo "live_${label}_s=$(secs "$t0" "$t1") exit=$rc $(delta "$work/r0" "$work/r1")"
  if ((rc == 1)); then grep -iE -A3 "fail|error|caused" "$work/$label.err" | grep -v "^\[.*\] done" | tail -n 40 | sed "s/^/  $label: /"; fi
}
cache_live=$(fresh_cache)
live plan_cold plan --format json
cp "$work/plan_cold.out" "$work/plan.json"
live plan_warm plan
live apply apply
for ((r = 1; r <= rounds; r++)); do
  live "replan_$r" plan
  # The floor: one LIST per kind of the objects fleetform manages, all namespaces.
  python3 - "$work/plan.json" "$server" "$token" "$ca" <<'PY'
import json, sys, ssl, time, http.client, urllib.parse
plan, server, token, ca = sys.argv[1:5]
kinds = sorted({(c["spec"]["object"]["apiVersion"], c["spec"]["object"]["kind"])
                for c in json.load(open(plan))["changes"] if c["id"].startswith("kube:")
                and isinstance(c.get("spec"), dict) and "object" in c["spec"]})
u = urllib.parse.urlparse(server)
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ssl.create_default_context(cafile=ca))
h = {"Authorization": "Bearer " + token, "Accept": "application/json"}
def get(path):
    conn.request("GET", path, headers=h); r = conn.getresponse(); body = r.read(); return r.status, body
paths = []
for av, kind in kinds:
    base = "/api/" + av if "/" not in av else "/apis/" + av
    _, body = get(base)
    res = [x for x in json.loads(body)["resources"] if x["kind"] == kind and "/" not in x["name"]]
    paths.append(base + "/" + res[0]["name"])
t0 = time.monotonic(); bodies = []
for p in paths:
    s, body = get(p); assert s == 200, (p, s); bodies.append(body)
t = time.monotonic() - t0  # requests and bodies read; decoding is not timed
items = sum(len(json.loads(b)["items"]) for b in bodies)
print(f"floor_s={t:.3f} lists={len(paths)} items={items} bytes={sum(map(len, bodies))}")
PY
done
echo "replan_exit_expected=0 (no changes); load_average=$(cut -d' ' -f1-3 /proc/loadavg) cores=$(nproc)"
