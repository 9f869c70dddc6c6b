#!/usr/bin/env bash
# Redfish test peers: sushy-emulator (fake driver + libvirt test:///default driver).
#   tests/peers/sushy.sh install        idempotent; venvs under ${FLEETFORM_CACHE:-~/.cache/fleetform}
#   tests/peers/sushy.sh start          fake (6 systems) + libvirt + TLS fake; writes $FLEETFORM_PEERS_DIR/sushy.env
#   tests/peers/sushy.sh stop           kills exactly the PIDs `start` (and `start-fleet`) recorded
#   tests/peers/sushy.sh stop-fleet     kills only the `start-fleet` emulators
#   tests/peers/sushy.sh start-fleet --systems N [--port P] [--per-process K]
#                                       extra fake-driver emulators for benchmarks (127.0.0.x ports);
#                                       writes $FLEETFORM_PEERS_DIR/sushy-fleet.env; stopped by `stop`
set -euo pipefail

SUSHY_VERSION=2.2.0
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${FLEETFORM_CACHE:-$HOME/.cache/fleetform}"
PEERS_DIR="${FLEETFORM_PEERS_DIR:-$REPO/target/peers}"
DIR="$PEERS_DIR/sushy"
VENV="$CACHE/venv-sushy"
VENV_LV="$CACHE/venv-sushy-libvirt"
USER_NAME="fleetform"
FAKE_PORT="${SUSHY_FAKE_PORT:-18000}"
LIBVIRT_PORT="${SUSHY_LIBVIRT_PORT:-18001}"
TLS_PORT="${SUSHY_TLS_PORT:-18002}"

log() { echo "sushy.sh: $*" >&2; }

install() {
  local need_apt=()
  command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
  /usr/bin/python3 -c 'import libvirt' 2>/dev/null || need_apt+=(python3-libvirt)
  [ -x /usr/bin/openssl ] || need_apt+=(openssl)
  if [ ${#need_apt[@]} -gt 0 ]; then
    log "apt-get install ${need_apt[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    fi
  fi
  if ! "$VENV/bin/python" -c "import importlib.metadata as m,sys; sys.exit(m.version('sushy-tools')!='$SUSHY_VERSION')" 2>/dev/null; then
    log "creating $VENV (sushy-tools $SUSHY_VERSION)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "sushy-tools==$SUSHY_VERSION"
  fi
  if ! "$VENV_LV/bin/python" -c "import libvirt, importlib.metadata as m,sys; sys.exit(m.version('sushy-tools')!='$SUSHY_VERSION')" 2>/dev/null; then
    log "creating $VENV_LV (system site packages for python3-libvirt)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV_LV"
    "$VENV_LV/bin/pip" install -q --disable-pip-version-check "sushy-tools==$SUSHY_VERSION"
  fi
}

# --- helpers ---------------------------------------------------------------
wait_ready() { # url name pid [cacert]
  local url="$1" name="$2" pid="$3" ca="${4:-}" i
  for i in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up; log: $DIR/$name.log"; tail -20 "$DIR/$name.log" >&2 || true; return 1
    fi
    if curl -fsS -o /dev/null --max-time 2 ${ca:+--cacert "$ca"} "$url/redfish/v1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name not ready after 10 s; log: $DIR/$name.log"; return 1
}

launch() { # name venv config
  local name="$1" venv="$2" conf="$3"
  "$venv/bin/sushy-emulator" --config "$conf" >"$DIR/$name.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$DIR/$name.pid"
  echo "$pid"
}

# Python config for the fake driver. $1 port, $2 state dir, $3 count, $4 name prefix, $5 ip,
# $6 group number (makes UUIDs unique across processes), [$7 cert $8 key]
fake_conf() {
  cat <<PY
SUSHY_EMULATOR_LISTEN_IP = '$5'
SUSHY_EMULATOR_LISTEN_PORT = $1
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_STATE_DIR = '$2'
SUSHY_EMULATOR_FEATURE_SET = 'full'
SUSHY_EMULATOR_AUTH_FILE = '$DIR/htpasswd'
SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {'uuid': '%08x-0000-4000-8000-%012x' % (0xf1ee7000 + $6, i),
     'name': '$4%d' % i, 'power_state': 'Off', 'external_notifier': False,
     'nics': [{'mac': '52:54:00:%02x:%02x:%02x' % ((i >> 16) & 255, (i >> 8) & 255, i & 255), 'ip': '127.0.0.1'}]}
    for i in range($3)
]
PY
  if [ -n "${7:-}" ]; then
    echo "SUSHY_EMULATOR_SSL_CERT = '$7'"
    echo "SUSHY_EMULATOR_SSL_KEY = '$8'"
  fi
}

libvirt_conf() { # port count
  cat <<PY
import libvirt as _libvirt
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = $1
SUSHY_EMULATOR_LIBVIRT_URI = 'test:///default'
SUSHY_EMULATOR_STATE_DIR = '$DIR/state-libvirt'
SUSHY_EMULATOR_FEATURE_SET = 'full'
SUSHY_EMULATOR_AUTH_FILE = '$DIR/htpasswd'
# All test:///default connections of this process share one in-memory state,
# which is dropped when the last connection closes: hold one for the process'
# life and define the domains through it.
_FLEETFORM_CONN = _libvirt.open('test:///default')
_NS = 'http://openstack.org/xmlns/libvirt/sushy'
_ATTRS = {'BootMode': 'Uefi', 'EmbeddedSata': 'Raid', 'NicBoot1': 'NetworkBoot',
          'NumCores': '10', 'ProcTurboMode': 'Enabled', 'QuietBoot': 'true',
          'SriovGlobalEnable': 'Disabled', 'PcieAcsControl': 'Enabled',
          'IommuSupport': 'Enabled', 'SerialNumber': 'QPX12345'}
for _i in range($2):
    _attrs = ''.join('<sushy:attribute name="%s" value="%s"/>' % kv for kv in sorted(_ATTRS.items()))
    _FLEETFORM_CONN.defineXML(
        "<domain type='test'><name>gpu-node-%d</name>"
        "<uuid>f1ee7100-0000-4000-8000-%012x</uuid>"
        "<memory unit='KiB'>1048576</memory><vcpu>4</vcpu>"
        "<os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>"
        "<metadata><sushy:bios xmlns:sushy='%s'><sushy:attributes>%s</sushy:attributes>"
        "<sushy:versions><sushy:version name='BiosVersion' value='1.0.0'/></sushy:versions>"
        "</sushy:bios></metadata></domain>" % (_i, _i, _NS, _attrs))
PY
}

start() {
  stop_quiet
  [ -x "$VENV/bin/sushy-emulator" ] && [ -x "$VENV_LV/bin/sushy-emulator" ] || install
  rm -rf "$DIR"; mkdir -p "$DIR/state-fake" "$DIR/state-libvirt" "$DIR/state-tls"
  chmod 700 "$DIR"
  # Credentials: a random password in a file; tests read it by reference.
  (umask 077; openssl rand -hex 16 >"$DIR/password")
  htpasswd -B -b -c "$DIR/htpasswd" "$USER_NAME" "$(cat "$DIR/password")" 2>/dev/null
  # Self-signed CA + server cert for 127.0.0.1 (TLS emulator).
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=fleetform-test-ca" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$DIR/tls.key" -out "$DIR/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$DIR/tls.ext"
  openssl x509 -req -in "$DIR/tls.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
    -days 2 -extfile "$DIR/tls.ext" -out "$DIR/tls.pem" 2>/dev/null

  fake_conf "$FAKE_PORT" "$DIR/state-fake" 6 gpu-node- 127.0.0.1 0 >"$DIR/fake.conf"
  libvirt_conf "$LIBVIRT_PORT" 2 >"$DIR/libvirt.conf"
  fake_conf "$TLS_PORT" "$DIR/state-tls" 2 gpu-node- 127.0.0.1 1 "$DIR/tls.pem" "$DIR/tls.key" >"$DIR/tls.conf"

  trap 'stop_quiet' ERR
  local p1 p2 p3
  p1=$(launch fake "$VENV" "$DIR/fake.conf")
  p2=$(launch libvirt "$VENV_LV" "$DIR/libvirt.conf")
  p3=$(launch tls "$VENV" "$DIR/tls.conf")
  wait_ready "http://127.0.0.1:$FAKE_PORT" fake "$p1"
  wait_ready "http://127.0.0.1:$LIBVIRT_PORT" libvirt "$p2"
  wait_ready "https://127.0.0.1:$TLS_PORT" tls "$p3" "$DIR/ca.pem"

  trap - ERR
  mkdir -p "$PEERS_DIR"
  cat >"$PEERS_DIR/sushy.env" <<ENV
export SUSHY_FAKE_URL=http://127.0.0.1:$FAKE_PORT
export SUSHY_FAKE_SYSTEMS=gpu-node-0,gpu-node-1,gpu-node-2,gpu-node-3,gpu-node-4,gpu-node-5
export SUSHY_LIBVIRT_URL=http://127.0.0.1:$LIBVIRT_PORT
export SUSHY_LIBVIRT_SYSTEMS=gpu-node-0,gpu-node-1
export SUSHY_TLS_URL=https://127.0.0.1:$TLS_PORT
export SUSHY_TLS_SYSTEMS=gpu-node-0,gpu-node-1
export SUSHY_CA_CERT=$DIR/ca.pem
export SUSHY_USERNAME=$USER_NAME
export SUSHY_PASSWORD_FILE=$DIR/password
ENV
  log "ready: fake :$FAKE_PORT, libvirt :$LIBVIRT_PORT, tls :$TLS_PORT; env in $PEERS_DIR/sushy.env"
}

# Extra fake-driver emulators for benchmarks: N systems, K per process, one
# process per loopback address 127.0.0.(10+j), all on port P.
start_fleet() {
  local n=500 port=18100 per=100
  while [ $# -gt 0 ]; do
    case "$1" in
      --systems) n="$2"; shift 2 ;;
      --port) port="$2"; shift 2 ;;
      --per-process) per="$2"; shift 2 ;;
      *) echo "start-fleet: unknown option $1" >&2; exit 2 ;;
    esac
  done
  [ -f "$DIR/htpasswd" ] || { log "run '$0 start' first (it makes the credentials)"; exit 1; }
  local procs=$(( (n + per - 1) / per )) j urls="" pids=()
  for ((j = 0; j < procs; j++)); do
    local count=$(( n - j * per < per ? n - j * per : per )) ip="127.0.0.$((10 + j))"
    mkdir -p "$DIR/state-fleet-$j"
    fake_conf "$port" "$DIR/state-fleet-$j" "$count" "host-$j-" "$ip" "$((16 + j))" >"$DIR/fleet-$j.conf"
    pids+=("$(launch "fleet-$j" "$VENV" "$DIR/fleet-$j.conf")")
    urls="${urls:+$urls,}http://$ip:$port"
  done
  for ((j = 0; j < procs; j++)); do
    wait_ready "http://127.0.0.$((10 + j)):$port" "fleet-$j" "${pids[$j]}"
  done
  cat >"$PEERS_DIR/sushy-fleet.env" <<ENV
export SUSHY_FLEET_URLS=$urls
export SUSHY_FLEET_SYSTEMS=$n
export SUSHY_FLEET_PER_PROCESS=$per
ENV
  log "fleet ready: $n systems in $procs processes; env in $PEERS_DIR/sushy-fleet.env"
}

stop_fleet() {
  local f pid
  for f in "$DIR"/fleet-*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  rm -f "$PEERS_DIR/sushy-fleet.env"
}

stop_quiet() {
  [ -d "$DIR" ] || return 0
  local f pid
  for f in "$DIR"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
  done
  for f in "$DIR"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  rm -f "$PEERS_DIR/sushy.env" "$PEERS_DIR/sushy-fleet.env"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  start-fleet) shift; start_fleet "$@" ;;
  stop-fleet) stop_fleet; log "fleet stopped" ;;
  stop) stop_quiet; log "stopped" ;;
  *) echo "usage: $0 install|start|stop|stop-fleet|start-fleet [--systems N] [--port P] [--per-process K]" >&2; exit 2 ;;
esac
