#!/usr/bin/env bash
# The one command that checks Nimbus on a fresh machine (Debian-based, root, Rust toolchain and
# python3 present): installs what the tests need, then lint, build and the whole test suite.
#
#   scripts/test.sh            # everything
#   TEST_THREADS=1 scripts/test.sh   # gentler on small machines
#
# Fails fast: formatting and clippy run before the (slower) build and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Two tests at a time per test binary: each black-box test runs a server plus instances.
TEST_THREADS="${TEST_THREADS:-2}"

step_names=()
step_times=()
current_step="setup"
started_all=$SECONDS

log() { printf '\n==> %s\n' "$*"; }

# Runs one named step and records how long it took.
step() {
  local name="$1"
  shift
  log "$name: $*"
  current_step="$name"
  local t0=$SECONDS
  "$@"
  step_names+=("$name")
  step_times+=("$((SECONDS - t0))s")
  current_step="done"
}

summary() {
  local rc=$?
  printf '\n==== summary ====\n'
  local i
  for i in "${!step_names[@]}"; do
    printf '  ok    %-8s (%s)\n' "${step_names[$i]}" "${step_times[$i]}"
  done
  printf '  %s\n' "${docker_note:-docker: not checked}"
  if [ "$rc" -eq 0 ]; then
    printf 'ALL CHECKS PASSED in %ss\n' "$((SECONDS - started_all))"
  else
    printf '  FAIL  %-8s (exit %s; its output is above)\n' "$current_step" "$rc"
    printf 'FAILED after %ss\n' "$((SECONDS - started_all))"
  fi
}
trap summary EXIT

# --- system packages -------------------------------------------------------------------------
apt_updated=0
# need_pkg COMMAND [PACKAGE]: installs PACKAGE (default: COMMAND) with apt-get when COMMAND is
# missing. `apt-get update` runs at most once.
need_pkg() {
  local cmd="$1" pkg="${2:-$1}"
  if command -v "$cmd" >/dev/null 2>&1; then
    return 0
  fi
  log "installing $pkg (for $cmd)"
  if [ "$apt_updated" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg"
}

# need_component NAME: adds a rustup component (rustfmt, clippy) when rustup can.
need_component() {
  local name="$1"
  if cargo "$name" --version >/dev/null 2>&1; then
    return 0
  fi
  if command -v rustup >/dev/null 2>&1; then
    log "installing rustup component $name"
    rustup component add "$name"
  else
    echo "cargo $name is missing and rustup is not available to install it" >&2
    return 1
  fi
}

command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install a Rust toolchain first" >&2; exit 1; }
need_pkg cc gcc        # linker for Rust, and the C compiler for SQLite (rusqlite "bundled")
need_pkg sh dash       # instances run as `sh -c COMMAND`
need_component rustfmt
need_component clippy
# The docker driver's tests need a running engine (this installs docker.io and busybox-static and
# starts dockerd). If the engine cannot run on this machine at all, say so loudly and skip only
# those tests (NIMBUS_SKIP_DOCKER=1) so the rest of the suite still runs.
docker_note="docker: engine running, container tests enabled"
if ! scripts/docker-up.sh; then
  export NIMBUS_SKIP_DOCKER=1
  docker_note="DOCKER TESTS SKIPPED: scripts/docker-up.sh could not start dockerd (see its output above)"
  printf '\n!!! %s\n' "$docker_note"
fi

# Python modules some tests drive real clients with: the OpenMetrics parser for /metrics, boto3
# for the S3 endpoint.
need_py() {
  python3 -c "import $1" >/dev/null 2>&1 && return 0
  log "installing python package $2"
  python3 -m pip install -q "$2"
}
need_pkg python3
need_pkg curl         # the TLS tests talk HTTPS and HTTP/2 with curl (--resolve, --cacert)
need_pkg node nodejs   # the Node function runtime shim and its tests
need_pkg npm npm        # installs the console test's packages
need_pkg chromium chromium   # the web console's browser test (crates/nimbus/tests/console.rs)
# playwright-core for that test, pinned by its package-lock.json.
if [ ! -d crates/nimbus/tests/console/node_modules ]; then
  log "installing the console test's npm packages"
  npm ci --prefix crates/nimbus/tests/console --no-audit --no-fund
fi
need_py prometheus_client prometheus_client
need_py boto3 boto3

# --- checks ----------------------------------------------------------------------------------
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --workspace --all-targets
step test cargo test --workspace --no-fail-fast -- --test-threads="$TEST_THREADS"
step bench-lib python3 -m unittest discover -s bench/lib
