#!/usr/bin/env bash
# Git test peers: `git daemon` (git://), an OpenSSH server (ssh://) and smart HTTP with basic
# auth (http://, for token/basic credentials), all on 127.0.0.1,
# serving the same base directory in which tests create their repositories.
#   tests/peers/git.sh install   idempotent: git, openssh-server (sshd), openssh-client (ssh-keygen),
#                                gpg/gpgv; plus the -dev packages the engine's git2 build links
#                                against (libssh2-1-dev, libssl-dev, pkg-config; libgit2 itself is
#                                built from the bundled sources, Debian's 1.5 is too old for git2 0.21)
#   tests/peers/git.sh start     starts all three; writes $FLEETFORM_PEERS_DIR/git.env
#   tests/peers/git.sh stop      kills exactly the PIDs `start` recorded
# git.env:
#   FLEETFORM_GIT_BASE            directory served by all three (create <name>.git repos in it)
#   FLEETFORM_GIT_DAEMON_URL      git://127.0.0.1:<port>      -> $URL/<name>.git
#   FLEETFORM_GIT_SSH_URL         ssh://<user>@127.0.0.1:<port> -> $URL$FLEETFORM_GIT_BASE/<name>.git
#   FLEETFORM_GIT_HTTP_URL        http://127.0.0.1:<port> (git http-backend behind basic auth,
#                                 tests/peers/git-http.py) -> $URL/<name>.git
#   FLEETFORM_GIT_HTTP_PASSWORD_FILE  the password (any user name; a token is sent as the password)
#   FLEETFORM_GIT_SSH_KEY         client private key (ed25519, OpenSSH format, no passphrase)
#   FLEETFORM_GIT_SSH_KEY_PEM     client private key (RSA, PEM format, no passphrase)
#   FLEETFORM_GIT_SSH_KEY_PASS    client private key (ed25519, OpenSSH format) with a passphrase,
#   FLEETFORM_GIT_SSH_KEY_PASSPHRASE_FILE   ... which is in this file
#   FLEETFORM_GIT_SSH_KNOWN_HOSTS known_hosts file naming the server's host key
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="${FLEETFORM_PEERS_DIR:-$REPO/target/peers}"
DIR="$PEERS_DIR/git"
BASE="$DIR/repos"
GIT_PORT="${GIT_DAEMON_PORT:-19418}"
SSH_PORT="${GIT_SSH_PORT:-12222}"
HTTP_PORT="${GIT_HTTP_PORT:-18080}"
SSH_USER="$(id -un)"

log() { echo "git.sh: $*" >&2; }

install() {
  local need=()
  command -v git >/dev/null || need+=(git)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh-keygen >/dev/null || need+=(openssh-client)
  command -v gpgv >/dev/null || need+=(gpgv)
  command -v gpg >/dev/null || need+=(gpg)
  command -v python3 >/dev/null || need+=(python3)   # tests/peers/git-http.py
  dpkg -s libssh2-1-dev >/dev/null 2>&1 || need+=(libssh2-1-dev)
  dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
  command -v pkg-config >/dev/null || need+=(pkg-config)
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    # openssh-server's postinst tries to start sshd; without an init system that is a no-op.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
  fi
}

wait_port() { # port, pid, name
  local i
  for i in $(seq 1 100); do
    if ! kill -0 "$2" 2>/dev/null; then log "$3 exited; see $DIR/$3.log"; cat "$DIR/$3.log" >&2 || true; return 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$3 not listening on 127.0.0.1:$1 after 10 s"; return 1
}

start() {
  if [ -f "$DIR/git-daemon.pid" ] && kill -0 "$(cat "$DIR/git-daemon.pid")" 2>/dev/null; then
    log "already running (tests/peers/git.sh stop first)"; exit 1
  fi
  mkdir -p "$DIR" "$BASE"
  chmod 755 "$DIR" "$BASE"

  # Keys: made once per peers dir, kept across restarts.
  [ -f "$DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C fleetform-git-peer-host -f "$DIR/ssh_host_ed25519_key"
  [ -f "$DIR/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C fleetform-git-peer-client -f "$DIR/client_key"
  [ -f "$DIR/client_key_pem" ] || ssh-keygen -q -t rsa -b 3072 -m PEM -N '' -C fleetform-git-peer-client-pem -f "$DIR/client_key_pem"
  if [ ! -f "$DIR/client_key_pass" ]; then
    echo "fleetform-test-passphrase" > "$DIR/client_key_pass.passphrase"
    ssh-keygen -q -t ed25519 -N "fleetform-test-passphrase" -C fleetform-git-peer-client-pass -f "$DIR/client_key_pass"
  fi
  cat "$DIR/client_key.pub" "$DIR/client_key_pem.pub" "$DIR/client_key_pass.pub" > "$DIR/authorized_keys"
  chmod 600 "$DIR/authorized_keys"
  echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$DIR/ssh_host_ed25519_key.pub")" > "$DIR/known_hosts"

  cat > "$DIR/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $DIR/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $DIR/authorized_keys
AllowUsers $SSH_USER
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
EOF
  mkdir -p /run/sshd 2>/dev/null || true  # privilege separation directory (root only)

  # git-daemon itself (not the `git daemon` wrapper, which runs it as a child) so that $! is the listener.
  "$(git --exec-path)/git-daemon" --base-path="$BASE" --export-all --listen=127.0.0.1 --port="$GIT_PORT" --reuseaddr \
    >"$DIR/git-daemon.log" 2>&1 &
  echo $! > "$DIR/git-daemon.pid"
  # sshd must be started by absolute path (it re-executes itself); -D keeps it in the foreground
  # so $! is the listener itself.
  /usr/sbin/sshd -D -e -f "$DIR/sshd_config" >"$DIR/sshd.log" 2>&1 &
  echo $! > "$DIR/sshd.pid"

  # Smart HTTP with basic auth (any user name, this password), for token/basic credentials.
  [ -f "$DIR/http_password" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/http_password")
  python3 "$REPO/tests/peers/git-http.py" "$HTTP_PORT" "$BASE" "$DIR/http_password" >"$DIR/git-http.log" 2>&1 &
  echo $! > "$DIR/git-http.pid"

  wait_port "$GIT_PORT" "$(cat "$DIR/git-daemon.pid")" git-daemon
  wait_port "$HTTP_PORT" "$(cat "$DIR/git-http.pid")" git-http
  wait_port "$SSH_PORT" "$(cat "$DIR/sshd.pid")" sshd

  cat > "$PEERS_DIR/git.env" <<EOF
export FLEETFORM_GIT_BASE=$BASE
export FLEETFORM_GIT_DAEMON_URL=git://127.0.0.1:$GIT_PORT
export FLEETFORM_GIT_SSH_URL=ssh://$SSH_USER@127.0.0.1:$SSH_PORT
export FLEETFORM_GIT_HTTP_URL=http://127.0.0.1:$HTTP_PORT
export FLEETFORM_GIT_HTTP_PASSWORD_FILE=$DIR/http_password
export FLEETFORM_GIT_SSH_KEY=$DIR/client_key
export FLEETFORM_GIT_SSH_KEY_PEM=$DIR/client_key_pem
export FLEETFORM_GIT_SSH_KEY_PASS=$DIR/client_key_pass
export FLEETFORM_GIT_SSH_KEY_PASSPHRASE_FILE=$DIR/client_key_pass.passphrase
export FLEETFORM_GIT_SSH_KNOWN_HOSTS=$DIR/known_hosts
EOF
  log "git daemon on 127.0.0.1:$GIT_PORT, sshd on 127.0.0.1:$SSH_PORT, smart HTTP on 127.0.0.1:$HTTP_PORT; env in $PEERS_DIR/git.env"
}

stop() {
  local name pid
  for name in git-daemon git-http sshd; do
    if [ -f "$DIR/$name.pid" ]; then
      pid="$(cat "$DIR/$name.pid")"
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      fi
      rm -f "$DIR/$name.pid"
    fi
  done
  rm -f "$PEERS_DIR/git.env"
  log "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
