#!/usr/bin/env bash
# Start this project's Docker engine if it is not running, wait for it, and print its DOCKER_HOST on stdout:
#
#   export DOCKER_HOST="$(scripts/docker-engine.sh)"
#
# The daemon must never create a bridge network (docker0, NAT rules) on these machines: it runs with
# --bridge=none and no iptables, on its own data root and socket, and containers use `--network host` with
# servers bound to 127.0.0.1. An engine already answering on the socket is reused only if it was started
# with --bridge=none; anything else is refused. Needs root and `dockerd` (Debian: apt-get install docker.io).
set -euo pipefail

ROOT="${MLPLAT_DOCKER_ROOT:-/var/lib/mlplat-docker}"
SOCKET="${MLPLAT_DOCKER_SOCKET:-/var/run/mlplat-docker.sock}"
HOST="unix://$SOCKET"
PIDFILE="$ROOT/dockerd.pid"
FLAGS=(--bridge=none --iptables=false --ip-masq=false --ip6tables=false
       --data-root "$ROOT/data" --exec-root "$ROOT/exec" -H "$HOST" --pidfile "$PIDFILE")

say() { echo "docker-engine: $*" >&2; }

# The guard: whatever edits this file sees, no daemon starts with a bridge network.
bridge_none() { local arg; for arg in "$@"; do [ "$arg" = "--bridge=none" ] && return 0; done; return 1; }
if ! bridge_none "${FLAGS[@]}"; then
  say "refusing to start dockerd without --bridge=none (it would create docker0 on a private range)"
  exit 1
fi

answers() { DOCKER_HOST="$HOST" docker info >/dev/null 2>&1; }

if answers; then
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [ -z "$pid" ] || [ ! -r "/proc/$pid/cmdline" ]; then
    say "an engine answers on $SOCKET but $PIDFILE names no running process: cannot check its flags; refusing"
    exit 1
  fi
  mapfile -d '' running_args < "/proc/$pid/cmdline"
  if ! bridge_none "${running_args[@]}"; then
    say "the engine on $SOCKET (pid $pid) runs without --bridge=none; stop it (kill $pid) and rerun"
    exit 1
  fi
  say "reusing the engine on $SOCKET (pid $pid)"
  echo "$HOST"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  say "dockerd not found: apt-get install -y docker.io"
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  say "dockerd needs root"
  exit 1
fi

mkdir -p "$ROOT/data" "$ROOT/exec"
rm -f "$PIDFILE"
say "starting dockerd (log: $ROOT/dockerd.log)"
# setsid: the daemon outlives this script and the CI step that ran it, in its own session.
setsid dockerd "${FLAGS[@]}" >>"$ROOT/dockerd.log" 2>&1 < /dev/null &

for _ in $(seq 1 120); do
  if answers; then
    if [ -e /sys/class/net/docker0 ]; then
      say "docker0 exists after start: this must not happen here; stopping the engine"
      kill "$(cat "$PIDFILE")"
      exit 1
    fi
    say "ready on $SOCKET"
    echo "$HOST"
    exit 0
  fi
  sleep 0.5
done
say "the engine did not answer within 60 s; last log lines:"
tail -n 30 "$ROOT/dockerd.log" >&2
exit 1
