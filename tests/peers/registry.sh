#!/usr/bin/env bash
# OCI registry peers for the ngc provider's tests (providers/ngc/tests).
#
#   tests/peers/registry.sh install   # apt packages (idempotent)
#   tests/peers/registry.sh start     # two registries + a token issuer on 127.0.0.1
#   tests/peers/registry.sh stop      # kills exactly the PIDs `start` recorded
#
# start runs, each with fresh storage:
#   1. a registry with htpasswd (bcrypt) basic auth and one test user;
#   2. a registry with token auth (as nvcr.io does it) behind fleetform's test-only token
#      issuer (providers/ngc/examples/fleetform-test-token-issuer.rs): `$oauthtoken` + an API
#      key per tenant; each key may pull only its tenant's repositories (tenants.json).
# and writes ${FLEETFORM_PEERS_DIR}/registry.env (URLs, usernames, password/API-key FILE paths).
# Ports are picked free at start time. Nothing here is a real secret: every key is generated.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="${FLEETFORM_PEERS_DIR:-$REPO/target/peers}"
DIR="$PEERS_DIR/registry"
ENV_FILE="$PEERS_DIR/registry.env"
PACKAGES=(docker-registry apache2-utils openssl)

log() { echo "registry.sh: $*" >&2; }

install() {
    if command -v docker-registry >/dev/null && command -v htpasswd >/dev/null && command -v openssl >/dev/null; then
        log "already installed"
        return
    fi
    # Another apt-get may hold the lock on a shared machine: wait for it rather than fail.
    local apt=(apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${PACKAGES[@]}")
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}"; then
        apt-get -o DPkg::Lock::Timeout=300 update
        DEBIAN_FRONTEND=noninteractive "${apt[@]}"
    fi
}

# A free TCP port on 127.0.0.1 (asked of the kernel; a tiny race remains, start checks readiness).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url expected-status...
    local url=$1; shift
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
        for want in "$@"; do [[ "$code" == "$want" ]] && return 0; done
        sleep 0.1
    done
    log "timed out waiting for $url (last status $code)"
    return 1
}

random_key() { openssl rand -hex 24; }

# A PID that still runs (a zombie left for a parent that never reaps it does not count).
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

start() {
    command -v docker-registry >/dev/null || { log "docker-registry missing: run '$0 install'"; exit 1; }
    if [[ -f "$DIR/pids" ]]; then
        local alive=0
        while read -r pid; do
            [[ -n "$pid" ]] && alive "$pid" && alive=1
        done <"$DIR/pids"
        if [[ $alive == 1 ]]; then
            log "already started (pids in $DIR/pids); run '$0 stop' first"
            exit 1
        fi
        log "stale pid file (none of its processes runs): starting afresh"
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR/basic/storage" "$DIR/token/storage" "$DIR/secrets"
    chmod 700 "$DIR/secrets"

    # The token issuer is a Rust example of the ngc crate; build it before starting anything.
    (cd "$REPO" && cargo build -q -p fleetform-ngc --example fleetform-test-token-issuer)
    local target_dir
    target_dir="${CARGO_TARGET_DIR:-$REPO/target}"
    local issuer_bin="$target_dir/debug/examples/fleetform-test-token-issuer"

    # --- credentials (generated per start; files only, never printed) ---
    local basic_user=fleetform-test basic_pass acme_key globex_key admin_key
    basic_pass=$(random_key); acme_key=$(random_key); globex_key=$(random_key); admin_key=$(random_key)
    printf '%s\n' "$basic_pass" >"$DIR/secrets/basic-password"
    printf '%s\n' "$acme_key" >"$DIR/secrets/acme-api-key"
    printf '%s\n' "$globex_key" >"$DIR/secrets/globex-api-key"
    printf '%s\n' "$admin_key" >"$DIR/secrets/admin-api-key"
    htpasswd -B -b -c "$DIR/basic/htpasswd" "$basic_user" "$basic_pass" 2>/dev/null

    # key -> tenant and the repository prefixes it may pull (and push, for the test's own pushes).
    # Anonymous requests (no credentials) get a token with no access at all.
    cat >"$DIR/token/tenants.json" <<EOF
{
  "$acme_key":   {"tenant": "acme",   "pull": ["acme/"],   "push": []},
  "$globex_key": {"tenant": "globex", "pull": ["globex/"], "push": []},
  "$admin_key":  {"tenant": "admin",  "pull": [""],        "push": [""]}
}
EOF
    chmod 600 "$DIR/token/tenants.json"

    # --- token signing key and self-signed cert (rootcertbundle) ---
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=fleetform-test-token-issuer" \
        -keyout "$DIR/token/signing-key.pem" -out "$DIR/token/signing-cert.pem" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$DIR/token/signing-key.pem" -outform DER -out "$DIR/token/signing-key.der"
    openssl x509 -in "$DIR/token/signing-cert.pem" -outform DER -out "$DIR/token/signing-cert.der"

    local basic_port token_port issuer_port
    basic_port=$(free_port); token_port=$(free_port); issuer_port=$(free_port)
    local service=fleetform-test-registry issuer=fleetform-test-token-issuer

    cat >"$DIR/basic/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $DIR/basic/storage}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$basic_port
  secret: test-only-secret-basic
auth:
  htpasswd: {realm: basic-realm, path: $DIR/basic/htpasswd}
EOF
    cat >"$DIR/token/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $DIR/token/storage}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$token_port
  secret: test-only-secret-token
auth:
  token:
    realm: http://127.0.0.1:$issuer_port/token
    service: $service
    issuer: $issuer
    rootcertbundle: $DIR/token/signing-cert.pem
EOF

    : >"$DIR/pids.tmp"
    docker-registry serve "$DIR/basic/config.yml" >"$DIR/basic/log" 2>&1 &
    echo $! >>"$DIR/pids.tmp"
    docker-registry serve "$DIR/token/config.yml" >"$DIR/token/log" 2>&1 &
    echo $! >>"$DIR/pids.tmp"
    "$issuer_bin" --listen "127.0.0.1:$issuer_port" --issuer "$issuer" --service "$service" \
        --key-der "$DIR/token/signing-key.der" --cert-der "$DIR/token/signing-cert.der" \
        --tenants "$DIR/token/tenants.json" >"$DIR/token/issuer.log" 2>&1 &
    echo $! >>"$DIR/pids.tmp"
    mv "$DIR/pids.tmp" "$DIR/pids"

    wait_http "http://127.0.0.1:$basic_port/v2/" 401 || { stop; exit 1; }
    wait_http "http://127.0.0.1:$token_port/v2/" 401 || { stop; exit 1; }
    wait_http "http://127.0.0.1:$issuer_port/healthz" 200 || { stop; exit 1; }

    cat >"$ENV_FILE" <<EOF
# written by tests/peers/registry.sh start; test-only credentials, regenerated on each start
export FLEETFORM_REGISTRY_BASIC_URL=http://127.0.0.1:$basic_port
export FLEETFORM_REGISTRY_BASIC_USERNAME=$basic_user
export FLEETFORM_REGISTRY_BASIC_PASSWORD_FILE=$DIR/secrets/basic-password
export FLEETFORM_REGISTRY_TOKEN_URL=http://127.0.0.1:$token_port
export FLEETFORM_REGISTRY_TOKEN_REALM=http://127.0.0.1:$issuer_port/token
export FLEETFORM_REGISTRY_TOKEN_SERVICE=$service
export FLEETFORM_REGISTRY_TOKEN_USERNAME='\$oauthtoken'
export FLEETFORM_REGISTRY_TOKEN_ACME_KEY_FILE=$DIR/secrets/acme-api-key
export FLEETFORM_REGISTRY_TOKEN_GLOBEX_KEY_FILE=$DIR/secrets/globex-api-key
export FLEETFORM_REGISTRY_TOKEN_ADMIN_KEY_FILE=$DIR/secrets/admin-api-key
EOF
    log "started: basic on :$basic_port, token on :$token_port, issuer on :$issuer_port; env in $ENV_FILE"
}

stop() {
    if [[ -f "$DIR/pids" || -f "$DIR/pids.tmp" ]]; then
        local f
        for f in "$DIR/pids" "$DIR/pids.tmp"; do
            [[ -f "$f" ]] || continue
            local pids=()
            while read -r pid; do
                [[ -n "$pid" ]] || continue
                kill "$pid" 2>/dev/null || true
                pids+=("$pid")
            done <"$f"
            # Wait (bounded) until they are gone, so an immediate start can reuse nothing stale.
            for _ in $(seq 1 50); do
                local any=0
                for pid in "${pids[@]}"; do alive "$pid" && any=1; done
                [[ $any == 0 ]] && break
                sleep 0.1
            done
            rm -f "$f"
        done
        log "stopped"
    else
        log "not running"
    fi
    rm -f "$ENV_FILE"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
