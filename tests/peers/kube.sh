#!/usr/bin/env bash
# tests/peers/kube.sh — a real Kubernetes control plane (kube-apiserver + etcd) on 127.0.0.1 for
# fleetform's kube provider tests, the sandbox and benchmarks. No kubelet, no controller manager,
# no scheduler: objects are stored and validated (OpenAPI, CRD schemas, CEL, RBAC, SSA) but
# nothing reconciles them.
#
# Usage:
#   tests/peers/kube.sh install [--with-kubectl]   build the binaries (cached; ~5 min the first time)
#   tests/peers/kube.sh start                      start etcd + kube-apiserver, load the CRDs
#   tests/peers/kube.sh stop                       stop exactly the processes `start` started
#   tests/peers/kube.sh status                     print whether it runs and where
#   tests/peers/kube.sh apiserver-stop             stop kube-apiserver only (etcd keeps the data)
#   tests/peers/kube.sh apiserver-start            start it again on the same state, wait for /readyz
#                                                  (the last two: outage tests of the apply path)
#
# Environment (all optional):
#   FLEETFORM_CACHE      binaries go to $FLEETFORM_CACHE/bin   (default ~/.cache/fleetform)
#   FLEETFORM_PEERS_DIR  state dir; this peer uses $FLEETFORM_PEERS_DIR/kube/ and writes
#                        $FLEETFORM_PEERS_DIR/kube.env          (default <repo>/target/peers)
#   KUBE_PEER_PORT       apiserver secure port                  (default 26443)
#   KUBE_PEER_ETCD_PORT  etcd client port; peer port is +1      (default 23790)
#   KUBE_PEER_CRDS       space-separated CRD files to load      (default: every ../shared/fixtures/crds/*/*.yaml;
#                        the shared directory is $FLEETFORM_SHARED_DIR or <repo>/../shared)
#
# What `start` leaves behind (under $FLEETFORM_PEERS_DIR/kube/):
#   pki/            CA (ca.crt), serving cert (127.0.0.1, localhost), service-account key pair
#   tokens.csv      static tokens: admin (system:masters) and tenants acme, globex (no RBAC at all)
#   admin.kubeconfig, tenant-acme.kubeconfig   kubeconfigs (token auth, CA pinned)
#   etcd.pid, kube-apiserver.pid, *.log, etcd-data/
# and $FLEETFORM_PEERS_DIR/kube.env with `export` lines:
#   FLEETFORM_TEST_KUBECONFIG          admin kubeconfig (cluster-admin)
#   FLEETFORM_TEST_KUBE_SERVER         https://127.0.0.1:<port>
#   FLEETFORM_TEST_KUBE_CA             CA certificate path
#   FLEETFORM_TEST_KUBE_TENANT_KUBECONFIG   kubeconfig of user "tenant-acme" (no RBAC grants)
#   FLEETFORM_TEST_KUBE_TENANT_TOKENS  file with name=token lines for tenant-acme, tenant-globex
# Tokens are random per start and never printed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shared_fixture: the upstream CRDs live in ../shared beside the checkout (or $FLEETFORM_SHARED_DIR).
source "$repo/scripts/shared-dir.sh"
cache=${FLEETFORM_CACHE:-$HOME/.cache/fleetform}
bin=$cache/bin
peers=${FLEETFORM_PEERS_DIR:-$repo/target/peers}
dir=$peers/kube
port=${KUBE_PEER_PORT:-26443}
etcd_port=${KUBE_PEER_ETCD_PORT:-23790}
etcd_peer_port=$((etcd_port + 1))
testenv=$repo/tests/kube-testenv

say() { printf 'kube: %s\n' "$*"; }
die() { printf 'kube: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------- install
build_one() { # name package
  local name=$1 pkg=$2
  if [[ -x $bin/$name && $bin/$name -nt $testenv/go.mod ]]; then
    say "$name: cached at $bin/$name"
    return
  fi
  command -v go >/dev/null || die "go is not installed (needed to build $name)"
  say "$name: building $pkg (first build takes minutes)"
  local t0=$SECONDS
  (cd "$testenv" && CGO_ENABLED=0 go build -trimpath -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  say "$name: built in $((SECONDS - t0)) s"
}

install() {
  local with_kubectl=0
  for a in "$@"; do
    case $a in
      --with-kubectl) with_kubectl=1 ;;
      *) die "install: unknown option $a" ;;
    esac
  done
  mkdir -p "$bin"
  command -v openssl >/dev/null || die "openssl is needed (apt-get install -y openssl)"
  command -v curl >/dev/null || die "curl is needed (apt-get install -y curl)"
  build_one etcd ./cmd/etcd
  build_one kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
  if [[ $with_kubectl == 1 ]]; then
    build_one kubectl k8s.io/kubernetes/cmd/kubectl
  fi
  say "install: done"
}

# ------------------------------------------------------------------------------------------ start
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

gen_pki() {
  local p=$dir/pki
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=fleetform-test-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$p/serving.key" -out "$p/serving.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' >"$p/ext.cnf"
  openssl x509 -req -in "$p/serving.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
    -days 30 -extfile "$p/ext.cnf" -out "$p/serving.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  chmod 600 "$p"/*.key
}

rand_token() { openssl rand -hex 24; }

write_kubeconfig() { # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fleetform-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $dir/pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: fleetform-test
  context: {cluster: fleetform-test, user: $2}
current-context: fleetform-test
EOF
  chmod 600 "$1"
}

wait_for() { # name seconds command...   (name = process whose pid file and log are in $dir)
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$dir/$what.pid"; then
      tail -n 20 "$dir/$what.log" >&2 || true
      die "$what exited during start (log: $dir/$what.log)"
    fi
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  say "$what ready after $((SECONDS - t_start)) s"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

api() { # method path [curl args...]
  local m=$1 path=$2; shift 2
  curl -fsS --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $admin_token" -X "$m" \
    "https://127.0.0.1:$port$path" "$@"
}

crd_files() {
  if [[ -n ${KUBE_PEER_CRDS:-} ]]; then
    printf '%s\n' $KUBE_PEER_CRDS
  else
    local crds
    crds=$(shared_fixture crds) || die "no CRDs to load"
    find "$crds" -name '*.yaml' | sort
  fi
}

load_crds() {
  local f name names=() files
  files=$(crd_files) || exit 1
  while read -r f; do
    [[ -f $f ]] || die "CRD file $f not found"
    name=$(awk '/^metadata:/{m=1;next} m && /^  name:/{print $2; exit}' "$f")
    [[ -n $name ]] || die "no metadata.name in $f"
    # Server-side apply of the YAML as is (the apiserver accepts YAML for apply patches).
    api PATCH "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$name?fieldManager=kube-peer&force=true" \
      -H 'Content-Type: application/apply-patch+yaml' --data-binary "@$f" -o /dev/null \
      || die "loading CRD $f failed"
    names+=("$name")
  done <<<"$files"
  say "applied ${#names[@]} CRDs"
  local n deadline=$((SECONDS + 30))
  for n in "${names[@]}"; do
    until api GET "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$n" 2>/dev/null \
      | tr -d ' \n' | grep -q '"type":"Established","status":"True"'; do
      ((SECONDS < deadline)) || die "CRD $n not Established within 30 s"
      sleep 0.2
    done
  done
  say "all ${#names[@]} CRDs Established after $((SECONDS - t_start)) s"
}

run_apiserver() { # starts kube-apiserver on the state in $dir (etcd running), waits for /readyz
  "$bin/kube-apiserver" \
    --bind-address=127.0.0.1 --secure-port="$port" \
    --advertise-address=127.0.0.1 \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --tls-cert-file="$dir/pki/serving.crt" --tls-private-key-file="$dir/pki/serving.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --authorization-mode=RBAC \
    --token-auth-file="$dir/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --profiling="${KUBE_PEER_PROFILING:-false}" \
    --v=1 \
    >>"$dir/kube-apiserver.log" 2>&1 &
  echo $! >"$dir/kube-apiserver.pid"
  wait_for kube-apiserver 60 api GET /readyz \
    || die "kube-apiserver not ready in 60 s (see $dir/kube-apiserver.log)"
}

start() {
  t_start=$SECONDS
  [[ -x $bin/kube-apiserver && -x $bin/etcd ]] || die "binaries missing in $bin: run $0 install"
  if alive "$dir/kube-apiserver.pid" || alive "$dir/etcd.pid"; then
    die "already running (pids in $dir); run $0 stop first"
  fi
  local p
  for p in "$port" "$etcd_port" "$etcd_peer_port"; do
    port_free "$p" || die "port 127.0.0.1:$p is in use (set KUBE_PEER_PORT / KUBE_PEER_ETCD_PORT)"
  done
  rm -rf "$dir"
  mkdir -p "$dir"
  # A failed start leaves nothing running.
  started=0
  trap '[[ $started == 1 ]] || stop >/dev/null 2>&1' EXIT
  gen_pki
  admin_token=$(rand_token)
  local acme globex
  acme=$(rand_token)
  globex=$(rand_token)
  umask 077
  {
    echo "$admin_token,admin,admin-uid,system:masters"
    echo "$acme,tenant-acme,tenant-acme-uid,tenants"
    echo "$globex,tenant-globex,tenant-globex-uid,tenants"
  } >"$dir/tokens.csv"
  printf 'tenant-acme=%s\ntenant-globex=%s\n' "$acme" "$globex" >"$dir/tenant-tokens"
  umask 022

  "$bin/etcd" --name default --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "default=http://127.0.0.1:$etcd_peer_port" \
    --listen-metrics-urls "" --log-level warn --quota-backend-bytes 2147483648 \
    >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  wait_for etcd 20 curl -fsS "http://127.0.0.1:$etcd_port/health" \
    || die "etcd did not become healthy in 20 s (see $dir/etcd.log)"

  run_apiserver

  write_kubeconfig "$dir/admin.kubeconfig" admin "$admin_token"
  write_kubeconfig "$dir/tenant-acme.kubeconfig" tenant-acme "$acme"
  load_crds

  mkdir -p "$peers"
  cat >"$peers/kube.env" <<EOF
export FLEETFORM_TEST_KUBECONFIG=$dir/admin.kubeconfig
export FLEETFORM_TEST_KUBE_SERVER=https://127.0.0.1:$port
export FLEETFORM_TEST_KUBE_CA=$dir/pki/ca.crt
export FLEETFORM_TEST_KUBE_TENANT_KUBECONFIG=$dir/tenant-acme.kubeconfig
export FLEETFORM_TEST_KUBE_TENANT_TOKENS=$dir/tenant-tokens
EOF
  started=1
  say "started in $((SECONDS - t_start)) s: https://127.0.0.1:$port; env in $peers/kube.env"
}

# ------------------------------------------------------------------------------------------- stop
stop_one() { # name
  local pidf=$dir/$1.pid pid
  [[ -f $pidf ]] || return 0
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped $1 (pid $pid)"
  fi
  rm -f "$pidf"
}

stop() {
  stop_one kube-apiserver
  stop_one etcd
  rm -f "$peers/kube.env"
}

apiserver_start() {
  t_start=$SECONDS
  alive "$dir/etcd.pid" || die "etcd is not running (pids in $dir): run $0 start"
  alive "$dir/kube-apiserver.pid" && die "kube-apiserver already runs (pid $(cat "$dir/kube-apiserver.pid"))"
  admin_token=$(head -n1 "$dir/tokens.csv" | cut -d, -f1)
  run_apiserver
}

status() {
  if alive "$dir/kube-apiserver.pid"; then
    say "running: https://127.0.0.1:$port (pid $(cat "$dir/kube-apiserver.pid")), env $peers/kube.env"
  else
    say "not running"
    return 1
  fi
}

case ${1:-} in
  install) shift; install "$@" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  apiserver-stop) stop_one kube-apiserver ;;
  apiserver-start) apiserver_start ;;
  *) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
