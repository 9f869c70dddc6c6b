#!/usr/bin/env bash
# fleetform's main job, end to end, on the local sandbox (the README's first command):
# build, bring the sandbox up, put the fleet in a local git repository, then
# validate, plan, apply, re-plan (zero changes), drift after out-of-band edits,
# a pull-request plan in Markdown, merge and reconcile by `fleetform serve` on a
# push webhook, and the dependency graph.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
sb=$repo/.sandbox
t_start=$SECONDS
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# Runs a fleetform command and checks its exit status (0 clean, 2 changes, 1 error).
expect() {
  local want=$1; shift
  set +e; "$@"; local got=$?; set -e
  if [[ $got != "$want" ]]; then echo "demo: expected exit $want from '$*', got $got" >&2; exit 1; fi
}

step "Building fleetform (the first build compiles every dependency: ~10 min on 2 cores)"
t0=$SECONDS
cargo build -q -p fleetform
ff=$repo/target/debug/fleetform
scripts/build-renderer.sh
echo "built in $((SECONDS - t0)) s"

step "Bringing the sandbox up: kube-apiserver, Redfish emulators, OCI registry, all on 127.0.0.1"
scripts/sandbox.sh up
source "$sb/sandbox.env"
rm -rf "$sb/state" "$sb/repo" "$sb/git-cache"
export FLEETFORM_CACHE_DIR=$sb/git-cache

step "Making a local git repository from the sandbox fleet"
mkdir -p "$sb/repo"
cp "$sb"/fleet/*.yaml "$sb/repo/"
git -C "$sb/repo" init -q -b main
git -C "$sb/repo" -c user.name=demo -c user.email=demo@example.invalid add -A
git -C "$sb/repo" -c user.name=demo -c user.email=demo@example.invalid commit -qm "fleet: initial sandbox fleet"
src=(--repo "$sb/repo" --ref main)

step "validate: the manifest is checked (schema and semantic rules) before anything is planned"
expect 0 "$ff" validate "$sb/repo"

step "plan: what apply would do, in dependency waves (exit 2 = changes present)"
expect 2 "$ff" plan "${src[@]}"

step "apply: BMC settings, management-cluster objects, tenant operators, node MIG labels, NIMs"
expect 0 "$ff" apply "${src[@]}" --health-timeout 120

token_t=$(awk '/token:/{print $2; exit}' "$sb/secrets/tenant.kubeconfig")
step "plan again: zero changes right after an apply (exit 0)"
expect 0 "$ff" plan "${src[@]}"

step "Two clusters: the operator stack is in the tenant's API server, and nothing tenant-side in the management cluster"
mgmt_token=$(awk '/token:/{print $2; exit}' "$sb/secrets/kubeconfig")
count() { # server ca token path
  curl -sf --cacert "$2" -H "Authorization: Bearer $3" "$1$4" | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("items",[])))' 2>/dev/null || echo 0
}
in_tenant=$(count "$SANDBOX_KUBE_SERVER" "$SANDBOX_KUBE_CA" "$token_t" /apis/apps/v1/namespaces/gpu-operator/deployments)
in_mgmt=$(count "$SANDBOX_MGMT_KUBE_SERVER" "$SANDBOX_MGMT_KUBE_CA" "$mgmt_token" /apis/apps/v1/namespaces/gpu-operator/deployments)
echo "GPU Operator deployments: $in_tenant in the tenant cluster, $in_mgmt in the management cluster"
[[ $in_tenant -gt 0 && $in_mgmt -eq 0 ]] || { echo "demo: the operator stack is not (only) in the tenant cluster" >&2; exit 1; }

step "Out-of-band changes: a BIOS attribute on a BMC, and the GPU Operator's driver version by 'kubectl-edit'"
bmc_auth="fleetform:$(cat "$sb/secrets/bmc-password")"
# sushy answers /Systems/<name> with a redirect to the UUID; resolve it once.
system=$(curl -sf -u "$bmc_auth" -o /dev/null -w '%{redirect_url}' "$SANDBOX_SUSHY_LIBVIRT_URL/redfish/v1/Systems/gpu-node-0")
system=${system:-$SANDBOX_SUSHY_LIBVIRT_URL/redfish/v1/Systems/gpu-node-0}
curl -sf -u "$bmc_auth" -X PATCH -H 'Content-Type: application/json' \
  "${system%/}/BIOS/Settings" -d '{"Attributes":{"ProcTurboMode":"Disabled"}}' >/dev/null
echo "BMC of r01-n01: ProcTurboMode is now $(curl -sf -u "$bmc_auth" "${system%/}/BIOS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attributes"]["ProcTurboMode"])')"
token=$(awk '/token:/{print $2; exit}' "$sb/secrets/tenant.kubeconfig")
curl -sf --cacert "$SANDBOX_KUBE_CA" -H "Authorization: Bearer $token" -H 'Content-Type: application/apply-patch+yaml' -X PATCH \
  "$SANDBOX_KUBE_SERVER/apis/nvidia.com/v1/clusterpolicies/cluster-policy?fieldManager=kubectl-edit&force=true" \
  -d '{"apiVersion":"nvidia.com/v1","kind":"ClusterPolicy","metadata":{"name":"cluster-policy"},"spec":{"driver":{"version":"550.54.15"}}}' >/dev/null

step "drift: both changes are found, with who made the Kubernetes one (exit 2)"
expect 2 "$ff" drift "${src[@]}" > "$sb/drift.txt"
cat "$sb/drift.txt"
for found in 'redfish:host/r01-n01/bios' 'ClusterPolicy/cluster-policy' 'changed by kubectl-edit'; do
  grep -q "$found" "$sb/drift.txt" || { echo "demo: drift did not report $found" >&2; exit 1; }
done

step "drift --remediate: put them back through the normal plan/apply path (the BIOS change cordons r01-n01's Node while the host reboots)"
expect 2 "$ff" drift "${src[@]}" --remediate
expect 0 "$ff" drift "${src[@]}"

step "A pull request: the GPU Operator v26.3.3 -> v26.7.0 and two NIM replicas; the PR comment in Markdown"
git -C "$sb/repo" checkout -q -b more-replicas
sed -i 's/^  replicas: 1$/  replicas: 2/' "$sb/repo/tenants.yaml"
sed -i 's/^      version: v26.3.3$/      version: v26.7.0/' "$sb/repo/fleet.yaml"
git -C "$sb/repo" -c user.name=demo -c user.email=demo@example.invalid commit -qam "gpu-operator v26.7.0; nim: two llama-8b replicas"
# The command the CI examples run (examples/ci/pr-plan.sh), on this repository.
FLEETFORM_BIN=$ff FLEETFORM_REPO=$sb/repo examples/ci/pr-plan.sh main more-replicas "$sb/pr-comment.md"
cat "$sb/pr-comment.md"
grep -q "changes 2 manifest file(s)" "$sb/pr-comment.md" || { echo "demo: the PR comment does not say what the PR changes" >&2; exit 1; }
for want in 'gpu-operator v26.7.0' 'gpuclusters.nvidia.com' 'new images'; do
  grep -q "$want" "$sb/pr-comment.md" || { echo "demo: the PR comment does not show the GPU Operator upgrade ($want)" >&2; exit 1; }
done

step "Merging it: fleetform serve applies the new head as soon as the push webhook arrives"
head -c 24 /dev/urandom | base64 > "$sb/secrets/webhook-secret"
cat > "$sb/serve.yaml" <<YAML
apiVersion: fleetform.dev/v1alpha1
kind: ServeConfig
fleet: sandbox
source: {url: $sb/repo, ref: {branch: main}}
pollInterval: 1h                 # long on purpose: only the webhook can make it quick
webhook: {provider: github, secret: {file: secrets/webhook-secret}}
drift: {interval: 1h}
listen: 127.0.0.1:19090
stateDir: $sb/state
cacheDir: $sb/git-cache
secretsDir: $sb
YAML
"$ff" serve --config "$sb/serve.yaml" > "$sb/serve.log" 2>&1 &
serve_pid=$!
serve_url=http://127.0.0.1:19090
# Waits up to $1 seconds for a Python condition on the /status JSON (s).
wait_status() {
  local limit=$1 cond=$2
  for _ in $(seq $((limit * 2))); do
    if curl -sf "$serve_url/status" 2>/dev/null | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($cond) else 1)" 2>/dev/null; then return 0; fi
    if ! kill -0 "$serve_pid" 2>/dev/null; then echo "demo: fleetform serve exited; see $sb/serve.log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "demo: timed out waiting for serve: $cond" >&2; cat "$sb/serve.log" >&2; exit 1
}
wait_status 60 "s['lastResult'] == 'up-to-date'"
echo "serve is up and main is already applied: $(curl -sf "$serve_url/status")"
git -C "$sb/repo" checkout -q main
git -C "$sb/repo" merge -q --ff-only more-replicas
new_head=$(git -C "$sb/repo" rev-parse HEAD)
body="{\"ref\":\"refs/heads/main\",\"after\":\"$new_head\"}"
forged=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "not-the-secret" | awk '{print $NF}')
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$serve_url/hooks/git" -H 'X-GitHub-Event: push' \
  -H "X-Hub-Signature-256: sha256=$forged" -H 'Content-Type: application/json' -d "$body")
echo "a push webhook with a forged signature: HTTP $code (refused, nothing happens)"
[[ $code == 401 ]] || { echo "demo: expected 401 for a forged webhook" >&2; exit 1; }
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$(cat "$sb/secrets/webhook-secret")" | awk '{print $NF}')
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$serve_url/hooks/git" -H 'X-GitHub-Event: push' \
  -H "X-Hub-Signature-256: sha256=$sig" -H 'Content-Type: application/json' -d "$body")
echo "the same push, signed with the webhook secret: HTTP $code (reconcile queued)"
[[ $code == 202 ]] || { echo "demo: expected 202 for an authentic webhook" >&2; exit 1; }
t0=$SECONDS
wait_status 240 "s['lastAppliedRevision'] == '$new_head'"
echo "serve applied $new_head $((SECONDS - t0)) s after the webhook"
curl -sf "$serve_url/metrics" | grep -E '^fleetform_(last_applied_revision|resources|errors_total)' || true
kill -TERM "$serve_pid"
wait "$serve_pid" || { echo "demo: fleetform serve did not exit cleanly on SIGTERM; see $sb/serve.log" >&2; exit 1; }
echo "serve stopped cleanly on SIGTERM"
expect 0 "$ff" plan "${src[@]}"

step "The dependency graph, drawn with graphviz"
"$ff" graph "${src[@]}" --format dot > "$sb/graph.dot"
if command -v dot >/dev/null; then dot -Tsvg "$sb/graph.dot" -o "$sb/graph.svg"; echo "graph: $sb/graph.svg"; else echo "graph (DOT): $sb/graph.dot (install graphviz to draw it)"; fi

step "Done in $((SECONDS - t_start)) s"
cat <<MSG
Where to look next:
  .sandbox/state/state.json   the inventory and last applied revision
  .sandbox/pr-comment.md      the pull-request comment
  .sandbox/graph.svg          the dependency graph
  .sandbox/serve.yaml, serve.log   the serve config and its log
  docs/manifest.md            the manifest reference; docs/providers/*.md for each provider
  scripts/sandbox.sh down     stops the sandbox
MSG
