#!/usr/bin/env bash
# fleetform's local sandbox: real peers on 127.0.0.1 standing in for a GPU cloud.
#
#   scripts/sandbox.sh up       install what is missing, start the peers, write .sandbox/
#   scripts/sandbox.sh status   what runs, and where
#   scripts/sandbox.sh down     stop everything `up` started
#
# `up` starts: two kube-apiservers + etcds built from Kubernetes' Go modules (the
# management cluster, and tenant acme's own cluster; operator CRDs loaded in both);
# sushy Redfish emulators (libvirt test driver with BIOS for r01-n01/02, fake
# driver for r01-n03/04); a local OCI registry standing in for NGC, with the
# NIM image the fleet uses pushed into it. Then it writes:
#   .sandbox/secrets/   BMC password, registry keys, kubeconfig (management) and
#                       tenant.kubeconfig (never committed)
#   .sandbox/fleet/     examples/sandbox with the peers' endpoints filled in
#   .sandbox/sandbox.env
# Nothing outside 127.0.0.1 is contacted. Idempotent: `up` twice restarts cleanly.
#
# No kubelet or operator runs here, so `up` also starts a small stand-in that
# marks ClusterPolicy and NIMService objects ready (status only), as the GPU and
# NIM operators would: fleetform's health gates wait for exactly that.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$repo/scripts/shared-dir.sh"
sb=$repo/.sandbox
export FLEETFORM_PEERS_DIR=$sb/peers
peers=(kube sushy registry)
say() { printf '[sandbox] %s\n' "$*"; }

standin() {
  # Plays the GPU and NIM operators' status writes (nothing else) every 2 s.
  local server=$1 token=$2 ca=$3
  while true; do
    curl -sf --cacert "$ca" -H "Authorization: Bearer $token" -H 'Content-Type: application/merge-patch+json' \
      -X PATCH "$server/apis/nvidia.com/v1/clusterpolicies/cluster-policy/status" \
      -d '{"status":{"state":"ready"}}' >/dev/null 2>&1 || true
    for nim in $(curl -sf --cacert "$ca" -H "Authorization: Bearer $token" "$server/apis/apps.nvidia.com/v1alpha1/nimservices" 2>/dev/null \
        | python3 -c 'import json,sys; [print(i["metadata"]["namespace"]+"/"+i["metadata"]["name"]) for i in json.load(sys.stdin).get("items",[])]' 2>/dev/null); do
      curl -sf --cacert "$ca" -H "Authorization: Bearer $token" -H 'Content-Type: application/merge-patch+json' \
        -X PATCH "$server/apis/apps.nvidia.com/v1alpha1/namespaces/${nim%/*}/nimservices/${nim#*/}/status" \
        -d '{"status":{"state":"Ready","conditions":[{"type":"Ready","status":"True","reason":"Ready","message":"sandbox stand-in","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}' >/dev/null 2>&1 || true
    done
    sleep 2
  done
}

push_image() {
  # Pushes a one-layer OCI image through the registry API (POST then PUT; no Docker needed).
  local url=$1 user=$2 pass=$3 repo=$4 tag=$5 tmp
  tmp=$(mktemp -d)
  printf 'fleetform sandbox layer for %s:%s\n' "$repo" "$tag" | gzip -n > "$tmp/layer"
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$tmp/config"
  for blob in layer config; do
    local digest loc
    digest=sha256:$(sha256sum "$tmp/$blob" | cut -d' ' -f1)
    loc=$(curl -sf -u "$user:$pass" -X POST -D - -o /dev/null "$url/v2/$repo/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case $loc in http*) ;; *) loc=$url$loc ;; esac
    case $loc in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
    curl -sf -u "$user:$pass" -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$tmp/$blob" "$loc" >/dev/null
    eval "${blob}_digest=$digest; ${blob}_size=$(stat -c %s "$tmp/$blob")"
  done
  cat > "$tmp/manifest" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config_digest","size":$config_size},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$layer_digest","size":$layer_size}]}
JSON
  curl -sf -u "$user:$pass" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$tmp/manifest" "$url/v2/$repo/manifests/$tag" >/dev/null
  rm -rf "$tmp"
}

# The tenant cluster is a second kube-apiserver + etcd of its own (state in .sandbox/tenant-peers),
# beside the management cluster's, so tenant kubeconfigs are really used.
tenant_kube() { # install|start|stop
  FLEETFORM_PEERS_DIR=$sb/tenant-peers \
    KUBE_PEER_PORT=$(( ${KUBE_PEER_PORT:-26443} + 1 )) KUBE_PEER_ETCD_PORT=$(( ${KUBE_PEER_ETCD_PORT:-23790} + 2 )) \
    "$repo/tests/peers/kube.sh" "$1"
}

down() {
  if [[ -f $sb/standin.pid ]]; then kill "$(cat "$sb/standin.pid")" 2>/dev/null || true; rm -f "$sb/standin.pid"; fi
  for p in "${peers[@]}"; do "$repo/tests/peers/$p.sh" stop >/dev/null 2>&1 || true; done
  tenant_kube stop >/dev/null 2>&1 || true
  say "stopped"
}

up() {
  mkdir -p "$sb/secrets" "$sb/peers"
  down >/dev/null
  for p in "${peers[@]}"; do
    t0=$SECONDS; say "installing $p (cached after the first run; the first kube build takes ~5 min)"
    "$repo/tests/peers/$p.sh" install
    say "  $p ready to start ($((SECONDS - t0)) s)"
  done
  for p in "${peers[@]}"; do say "starting $p"; "$repo/tests/peers/$p.sh" start; done
  say "starting the tenant cluster's own kube-apiserver"
  mkdir -p "$sb/tenant-peers"
  tenant_kube start
  local tkc tserver tca ttoken
  tkc=$(source "$sb/tenant-peers/kube.env"; echo "$FLEETFORM_TEST_KUBECONFIG")
  tserver=$(source "$sb/tenant-peers/kube.env"; echo "$FLEETFORM_TEST_KUBE_SERVER")
  tca=$(source "$sb/tenant-peers/kube.env"; echo "$FLEETFORM_TEST_KUBE_CA")
  ttoken=$(awk '/token:/{print $2; exit}' "$tkc")
  install -m 600 "$tkc" "$sb/secrets/tenant.kubeconfig"
  for env in "$FLEETFORM_PEERS_DIR"/*.env; do source "$env"; done

  install -m 600 "$SUSHY_PASSWORD_FILE" "$sb/secrets/bmc-password"
  install -m 600 "$FLEETFORM_REGISTRY_BASIC_PASSWORD_FILE" "$sb/secrets/ngc-api-key"
  install -m 600 "$FLEETFORM_REGISTRY_BASIC_PASSWORD_FILE" "$sb/secrets/acme-ngc-api-key"
  install -m 600 "$FLEETFORM_TEST_KUBECONFIG" "$sb/secrets/kubeconfig"
  local token server ca reg_host
  token=$(awk '/token:/{print $2; exit}' "$FLEETFORM_TEST_KUBECONFIG")
  server=$FLEETFORM_TEST_KUBE_SERVER ca=$FLEETFORM_TEST_KUBE_CA
  reg_host=${FLEETFORM_REGISTRY_BASIC_URL#*://}

  local charts
  charts=$(shared_fixture charts)
  rm -rf "$sb/fleet" && mkdir -p "$sb/fleet"
  for f in "$repo"/examples/sandbox/*.yaml; do
    sed -e "s|@REGISTRY_URL@|$FLEETFORM_REGISTRY_BASIC_URL|g" -e "s|@REGISTRY_HOST@|$reg_host|g" \
        -e "s|@REGISTRY_USER@|$FLEETFORM_REGISTRY_BASIC_USERNAME|g" -e "s|@SUSHY_FAKE_URL@|$SUSHY_FAKE_URL|g" \
        -e "s|@SUSHY_LIBVIRT_URL@|$SUSHY_LIBVIRT_URL|g" -e "s|@SUSHY_USERNAME@|$SUSHY_USERNAME|g" \
        -e "s|@CHARTS_DIR@|$charts|g" \
        -e 's|\.\./\.\./schemas|../../schemas|' "$f" > "$sb/fleet/$(basename "$f")"
  done

  say "registering the hosts' Nodes in the tenant cluster (as their kubelets would)"
  for n in r01-n01 r01-n02 r01-n03 r01-n04; do
    curl -sf --cacert "$tca" -H "Authorization: Bearer $ttoken" -H 'Content-Type: application/json' -X POST "$tserver/api/v1/nodes" \
      -d "{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"$n\",\"labels\":{\"kubernetes.io/hostname\":\"$n\"}}}" >/dev/null || true
  done
  say "pushing the NIM image into the local registry"
  push_image "$FLEETFORM_REGISTRY_BASIC_URL" "$FLEETFORM_REGISTRY_BASIC_USERNAME" "$(cat "$FLEETFORM_REGISTRY_BASIC_PASSWORD_FILE")" \
    nim/meta/llama-3.1-8b-instruct 1.8
  standin "$tserver" "$ttoken" "$tca" > "$sb/standin.log" 2>&1 &
  echo $! > "$sb/standin.pid"
  cat > "$sb/sandbox.env" <<ENV
export FLEETFORM_SECRETS_DIR=$sb
export FLEETFORM_STATE_DIR=$sb/state
export SANDBOX_KUBE_SERVER=$tserver
export SANDBOX_KUBE_CA=$tca
export SANDBOX_MGMT_KUBE_SERVER=$server
export SANDBOX_MGMT_KUBE_CA=$ca
export SANDBOX_SUSHY_LIBVIRT_URL=$SUSHY_LIBVIRT_URL
export SANDBOX_SUSHY_FAKE_URL=$SUSHY_FAKE_URL
ENV
  say "up: fleet in .sandbox/fleet, secrets in .sandbox/secrets, settings in .sandbox/sandbox.env"
}

status() {
  for p in "${peers[@]}"; do
    if [[ -f $FLEETFORM_PEERS_DIR/$p.env ]]; then say "$p: started ($(grep -m1 -oE 'https?://127[^ ]*' "$FLEETFORM_PEERS_DIR/$p.env" || echo env written))"; else say "$p: not started"; fi
  done
  if [[ -f $sb/standin.pid ]] && kill -0 "$(cat "$sb/standin.pid")" 2>/dev/null; then say "operator stand-in: running"; else say "operator stand-in: not running"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
