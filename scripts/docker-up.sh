#!/usr/bin/env bash
# Makes sure a Docker Engine is running here, for the docker driver and its tests (Debian-based,
# root). Idempotent: safe to run again and again; it only does what is missing and says so.
#
#   1. installs `docker.io` with apt-get when `dockerd` is missing;
#   2. installs `busybox-static` (test images are FROM scratch + /bin/busybox; no registry needed);
#   3. when `docker info` fails, starts `dockerd` in the background (log: $DOCKERD_LOG) and waits
#      up to 60 s for it. If the default storage driver (overlay2) cannot start, it retries with
#      `--storage-driver=vfs`; if networking setup fails, with `--iptables=false --bridge=none`
#      (Nimbus only uses host networking).
#
# Env: DOCKERD_LOG (default /var/log/nimbus-dockerd.log).
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/nimbus-dockerd.log}"
WAIT_SECONDS=60

say() { printf 'docker-up: %s\n' "$*"; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# `docker info` needs the CLI; the driver itself talks to the socket, so fall back to a raw ping.
engine_up() {
  if command -v docker >/dev/null 2>&1; then
    docker info >/dev/null 2>&1
  else
    curl -fsS --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1
  fi
}

# --- packages --------------------------------------------------------------------------------
if command -v dockerd >/dev/null 2>&1; then
  say "dockerd is installed ($(dockerd --version 2>/dev/null || echo 'version unknown'))"
else
  say "dockerd is missing: installing docker.io"
  apt_install docker.io
fi

# The statically linked busybox, not the dynamic one from the `busybox` package.
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  say "busybox-static is installed"
else
  say "installing busybox-static (for FROM scratch test images)"
  apt_install busybox-static
fi

# --- engine ----------------------------------------------------------------------------------
if engine_up; then
  say "Docker is already running"
  exit 0
fi

# try_start FLAGS...: starts dockerd with FLAGS, waits for it; returns 1 (and stops it) if it
# exits or is not up in time.
try_start() {
  say "starting dockerd${*:+ $*} (log: $DOCKERD_LOG)"
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  printf '\n=== %s: dockerd %s\n' "$(date -u +%FT%TZ)" "$*" >>"$DOCKERD_LOG"
  local log_start
  log_start=$(wc -l <"$DOCKERD_LOG")
  # setsid: the engine must outlive this script and the shell that ran it.
  setsid dockerd "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
  local pid=$!
  local waited=0
  while [ "$waited" -lt "$WAIT_SECONDS" ]; do
    if engine_up; then
      say "Docker is up after ${waited}s (dockerd pid $pid)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "dockerd${*:+ $*} exited; its last log lines:"
      tail -n +"$((log_start + 1))" "$DOCKERD_LOG" | tail -n 15 | sed 's/^/    /'
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "dockerd${*:+ $*} did not answer within ${WAIT_SECONDS}s; stopping it"
  kill "$pid" 2>/dev/null || true
  return 1
}

# A stale pid file from a killed engine makes a new dockerd refuse to start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  say "removing stale /var/run/docker.pid"
  rm -f /var/run/docker.pid
fi

try_start ||
  try_start --iptables=false --bridge=none ||
  try_start --storage-driver=vfs --iptables=false --bridge=none || {
  say "FAILED: Docker could not be started; see $DOCKERD_LOG"
  exit 1
}
