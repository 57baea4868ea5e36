#!/usr/bin/env bash
# Builds Nimbus (release), starts `nimbus server` with the sample app deployed as service
# `hello`, prints its URL, and keeps running until Ctrl-C, which stops the server and every
# instance it started.
#
#   scripts/quickstart.sh
#   NIMBUS_DATA=/tmp/nimbus-demo scripts/quickstart.sh     # another data dir
#   NIMBUS_API_ADDR=127.0.0.1:9090 NIMBUS_HTTP_ADDR=127.0.0.1:9000 scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

api_addr="${NIMBUS_API_ADDR:-127.0.0.1:8080}"
http_addr="${NIMBUS_HTTP_ADDR:-127.0.0.1:8000}"

echo "==> building nimbus and the sample app (release)"
cargo build --release -p nimbus -p nimbus-sample-app

nimbus="$root/target/release/nimbus"
app="$root/target/release/nimbus-sample-app"

work="$(mktemp -d "${TMPDIR:-/tmp}/nimbus-quickstart.XXXXXX")"
ready_file="$work/stdout"
log_file="$work/server.log"

server_args=(server --api "$api_addr" --http "$http_addr")
if [ -n "${NIMBUS_DATA:-}" ]; then
  server_args+=(--data "$NIMBUS_DATA")
fi

echo "==> starting nimbus server (logs: $log_file)"
"$nimbus" "${server_args[@]}" >"$ready_file" 2>"$log_file" &
server_pid=$!

stop() {
  trap - INT TERM EXIT
  if kill -0 "$server_pid" 2>/dev/null; then
    echo
    echo "==> stopping nimbus server (pid $server_pid)"
    kill -TERM "$server_pid" 2>/dev/null || true
    # Bounded wait for a graceful stop, then force it.
    for _ in $(seq 1 150); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
}
trap stop INT TERM EXIT

ready=""
for _ in $(seq 1 300); do
  ready="$(grep -m1 '^nimbus ready:' "$ready_file" || true)"
  [ -n "$ready" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "nimbus server exited before it was ready; its log:" >&2
    tail -n 50 "$log_file" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "nimbus server was not ready within 30s; its log:" >&2
  tail -n 50 "$log_file" >&2
  exit 1
fi
echo "$ready"

# `nimbus ready: api=URL gateway=URL data=DIR`
api_url="$(sed -n 's/.* api=\([^ ]*\).*/\1/p' <<<"$ready")"
gateway_url="$(sed -n 's/.* gateway=\([^ ]*\).*/\1/p' <<<"$ready")"
data_dir="$(sed -n 's/.* data=\(.*\)$/\1/p' <<<"$ready")"
export NIMBUS_API="$api_url"
NIMBUS_TOKEN="$(cat "$data_dir/admin.token")"
export NIMBUS_TOKEN

if "$nimbus" service show hello >/dev/null 2>&1; then
  echo "==> service hello already exists in $data_dir; not deploying it again"
else
  echo "==> deploying the sample app as service hello"
  "$nimbus" deploy hello --command "$app"
fi

gateway_port="${gateway_url##*:}"
cat <<MSG

Nimbus is running.
  service hello:  http://hello--default.nimbus.localhost:${gateway_port}/
  try:            curl http://hello--default.nimbus.localhost:${gateway_port}/
  or, if *.localhost does not resolve:
                  curl -H 'Host: hello--default.nimbus.localhost' ${gateway_url}/
  console:        $api_url/console  (sign in with the token in $data_dir/admin.token)
  CLI:            export NIMBUS_API=$api_url NIMBUS_TOKEN=\$(cat $data_dir/admin.token)
                  $nimbus services
  server log:     $log_file

Press Ctrl-C to stop the server and everything it started.
MSG

wait "$server_pid"
