#!/usr/bin/env bash
# Gateway benchmark: Nimbus's gateway vs HAProxy vs nginx in one run, side by side.
#
# Every proxy runs pinned to the same single core (PROXY_CORE, default 0) with one worker/thread;
# wrk and the shared backend (nginx answering a fixed 2-byte body) run on LOAD_CORE (default 1).
# Rows: the backend alone (the ceiling), nginx, HAProxy, HAProxy over TLS (HTTP/1.1 with wrk,
# HTTP/2 with h2load), Nimbus with one service (metrics on, and the JSON access log to a file
# unless ACCESS_LOG=off), Nimbus over TLS the same two ways (its self-signed default
# certificate; HAProxy gets an ECDSA P-256 one as well), and a second
# Nimbus server whose route table also holds SERVICES services x VERSIONS versions (seeded
# into its store before it starts). All of them are started first and stay up; then ROUNDS rounds
# measure every row in turn (a 2-connection warm-up, then DURATION seconds of CONNS keep-alive
# connections), so background noise falls on all rows alike, and the table shows the median of
# the rounds: rps, p50, p99 and the ratios to HAProxy. Below it, each goal gets a verdict from
# the per-round pairs (Nimbus against HAProxy on the same protocol, measured back to back): their
# median ratio and a 90% interval for it (bench/lib/pairs.py). A goal counts as missed only when
# the whole interval lies on the wrong side of 1.00; "within noise" says this machine could not
# tell the two apart.
# Then, unless RATE=0, the wrk rows (all but h2) run again at a *fixed rate* of RATE requests per
# second (default 15,000, about half of what the slowest proxy row carries here) spread over the
# same connections (fixed_rate.lua), so every proxy carries exactly the same load and the latency
# percentiles compare at equal throughput — at saturation a closed loop's tail mostly reflects
# which stage is the bottleneck, and a faster proxy is handed more load.
#
#   bench/gateway/run.sh                        # build nimbus (dist profile), install tools, run
#   DURATION=30 CONNS=100 ROUNDS=5 bench/gateway/run.sh
#   BUILD=0 SERVICES=0 bench/gateway/run.sh     # reuse target/dist/nimbus, skip the big table
#   NIMBUS_BEFORE=/tmp/nimbus-old bench/gateway/run.sh   # A/B: adds "nimbus before" rows
#
# Everything listens on 127.0.0.1; the temp dir, the proxies, the servers and their instances
# are cleaned up on exit. While a row runs, the Nimbus servers not under test are paused.
# Numbers are only comparable within one run, on a quiet machine.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-50}
ROUNDS=${ROUNDS:-3}
SERVICES=${SERVICES:-1000}
VERSIONS=${VERSIONS:-10}
RATE=${RATE:-15000}         # fixed-rate rounds: requests per second for every row; 0: none
ACCESS_LOG=${ACCESS_LOG:-file} # file: the nimbus rows write the JSON access log; off: they do not
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
BUILD=${BUILD:-1}
# The `dist` profile: release with fat LTO and one codegen unit, the build to deploy.
NIMBUS=${NIMBUS:-$ROOT/target/dist/nimbus}

log() { printf '» %s\n' "$*" >&2; }
die() {
    printf 'bench: %s\n' "$*" >&2
    exit 1
}

# --- tools -------------------------------------------------------------------------------------
missing=()
for tool in haproxy nginx wrk curl jq openssl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ $BUILD == 1 ]]; then
    log "building nimbus (dist profile: release + fat LTO; a few minutes the first time)"
    (cd "$ROOT" && cargo build --profile dist -p nimbus --quiet)
fi
[[ -x $NIMBUS ]] || die "no nimbus binary at $NIMBUS (run with BUILD=1)"

# --- temp dir, processes and cleanup -----------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nimbus-bench.XXXXXX")
mkdir -p "$TMP"/tmp/{body,proxy,fastcgi,uwsgi,scgi}
PIDS=()         # proxies and the backend
SERVER_PIDS=()  # nimbus servers, stopped first
DATA_DIRS=()    # their data dirs, whose run/*.json name the instances' process groups

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# While a row is measured, every Nimbus server but the measured one is paused (SIGSTOP): their
# control-plane ticks (the big server walks its 10,000 versions every 2 s) would otherwise take
# the proxy core in the middle of whichever row runs, HAProxy's as much as Nimbus's.
pause_servers_except() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        [[ $pid == "${1:-}" ]] || kill -STOP "$pid" 2>/dev/null || true
    done
}
resume_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
}

# Kills the process group of every instance a server left a pid file for.
kill_instances() {
    local file pgid
    for file in "$1"/run/*.json; do
        [[ -e $file ]] || continue
        pgid=$(jq -r '.pgid // empty' "$file" 2>/dev/null || true)
        if [[ $pgid =~ ^[0-9]+$ ]] && ((pgid > 1)); then
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
    done
}

cleanup() {
    set +e
    resume_servers
    for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid"; done
    for dir in "${DATA_DIRS[@]}"; do kill_instances "$dir"; done
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Fills @DIR@, @PORT@ and @BACKEND_PORT@ in a template; prints the file's path.
render() {
    sed -e "s|@DIR@|$TMP|g" -e "s|@PORT@|$2|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        "$HERE/$1" >"$TMP/$1"
    printf '%s' "$TMP/$1"
}

# Waits until `curl ARGS` answers 200 (at most 10 s). TLS rows use self-signed certificates.
wait_ok() {
    for _ in $(seq 1 100); do
        [[ $(curl -sk -o /dev/null -w '%{http_code}' "$@" || true) == 200 ]] && return 0
        sleep 0.1
    done
    return 1
}

# --- rows --------------------------------------------------------------------------------------
ROWS=()
declare -A URL HOST_OF PID_OF TOOL_OF
# NAME URL HOST PID (of the process whose CPU time the row counts, with its children) [TOOL]
# TOOL is wrk (HTTP/1.1, the default) or h2load (HTTP/2 over TLS, one stream per connection:
# a request at a time per connection, as with wrk).
add_row() {
    ROWS+=("$1")
    URL[$1]=$2
    HOST_OF[$1]=$3
    PID_OF[$1]=$4
    TOOL_OF[$1]=${5:-wrk}
    wait_ok -H "Host: $3" "$2" || die "$1: $2 (Host: $3) does not answer 200"
    [[ $(curl -sk -H "Host: $3" "$2") == ok ]] || die "$1: unexpected body from $2"
}

BACKEND_PORT=$(free_port)
taskset -c "$LOAD_CORE" nginx -e "$TMP/backend.error.log" -c "$(render backend.nginx.conf 0)" &
PIDS+=($!)
add_row "backend alone (no proxy)" "http://127.0.0.1:$BACKEND_PORT/" "backend" "$!"

port=$(free_port)
taskset -c "$PROXY_CORE" nginx -e "$TMP/proxy-nginx.error.log" \
    -c "$(render proxy.nginx.conf "$port")" &
PIDS+=($!)
add_row "nginx $(nginx -v 2>&1 | sed 's|.*/||')" "http://127.0.0.1:$port/" "bench" "$!"

# HAProxy's TLS certificate: ECDSA P-256, the kind Nimbus generates for itself.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=bench" -keyout "$TMP/haproxy.key" -out "$TMP/haproxy.crt" 2>/dev/null
cat "$TMP/haproxy.crt" "$TMP/haproxy.key" >"$TMP/haproxy.pem"
port=$(free_port)
TLS_PORT=$(free_port)
sed -i "s|@TLS_PORT@|$TLS_PORT|g" "$(render haproxy.cfg "$port")"
taskset -c "$PROXY_CORE" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)
HAPROXY_ROW="haproxy $(haproxy -v | awk 'NR == 1 { print $3 }' | cut -d- -f1)"
add_row "$HAPROXY_ROW" "http://127.0.0.1:$port/" "bench" "$!"
add_row "$HAPROXY_ROW (TLS)" "https://127.0.0.1:$TLS_PORT/" "bench" "$!"
add_row "$HAPROXY_ROW (TLS, h2)" "https://127.0.0.1:$TLS_PORT/" "bench" "$!" h2load

# The service's instance is a placeholder process that keeps a version alive; with a fixed
# --port the gateway forwards to the shared backend, the same socket HAProxy and nginx use.
PLACEHOLDER='exec sleep 2147483647'
NIMBUS_HOST="bench--default.nimbus.localhost"

# start_nimbus NAME: starts a server pinned to the proxy core (gateway on plain HTTP and TLS)
# and deploys service `bench` unless it exists; sets API, TOKEN, GATEWAY, HTTPS and PID.
start_nimbus() {
    local data="$TMP/$1" out log_args=() bin=${2:-$NIMBUS}
    mkdir -p "$data"
    API="127.0.0.1:$(free_port)"
    GATEWAY="127.0.0.1:$(free_port)"
    HTTPS="127.0.0.1:$(free_port)"
    [[ $ACCESS_LOG == file ]] && log_args=(--access-log "$TMP/$1.access.log")
    NO_COLOR=1 taskset -c "$PROXY_CORE" "$bin" server --data "$data" --api "$API" \
        --http "$GATEWAY" --https "$HTTPS" "${log_args[@]}" >"$TMP/$1.out" 2>"$TMP/$1.err" &
    PID=$!
    SERVER_PIDS+=("$PID")
    DATA_DIRS+=("$data")
    wait_ok "http://$API/v1/health" || die "nimbus server $1 did not start: $(tail -5 "$TMP/$1.err")"
    TOKEN=$(cat "$data/admin.token")
    if [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
        "http://$API/v1/namespaces/default/services/bench") != 200 ]]; then
        out=$(NIMBUS_API="http://$API" NIMBUS_TOKEN="$TOKEN" "$NIMBUS" deploy bench \
            --command "$PLACEHOLDER" --port "$BACKEND_PORT" --concurrency 1000 --min-instances 1 2>&1) ||
            die "nimbus deploy failed: $out"
    fi
}

# seed_store DATA: writes SERVICES services of VERSIONS versions each straight into a stopped
# server's store (nimbus_bench.seed_store); the newest of each keeps one placeholder instance.
seed_store() {
    python3 "$HERE/../lib/nimbus_bench.py" seed "$1/nimbus.db" "$SERVICES" "$VERSIONS" \
        "$PLACEHOLDER" "$BACKEND_PORT"
}

# CPU time (user + system) a process and its children (nginx's workers) have used, in ticks.
cpu_ticks() {
    local pid total=0
    for pid in "$1" $(pgrep -P "$1"); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# Percent of one core a nimbus server uses over 5 s without requests: what its control plane
# (reconciler ticks, watchers) takes from the gateway's core.
idle_cpu() {
    local before after
    before=$(cpu_ticks "$1")
    sleep 5
    after=$(cpu_ticks "$1")
    awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f%%", 100 * t / hz / 5 }'
}

log "starting nimbus server (1 service)"
start_nimbus nimbus-small
NIMBUS_ROWS=("nimbus (1 service)" "nimbus (1 service, TLS)" "nimbus (1 service, TLS, h2)")
add_row "${NIMBUS_ROWS[0]}" "http://$GATEWAY/" "$NIMBUS_HOST" "$PID"
add_row "${NIMBUS_ROWS[1]}" "https://$HTTPS/" "$NIMBUS_HOST" "$PID"
add_row "${NIMBUS_ROWS[2]}" "https://$HTTPS/" "$NIMBUS_HOST" "$PID" h2load
IDLE=("1 service $(idle_cpu "$PID")")

if [[ -n ${NIMBUS_BEFORE:-} ]]; then
    log "starting nimbus server (1 service) from $NIMBUS_BEFORE"
    start_nimbus nimbus-before "$NIMBUS_BEFORE"
    NIMBUS_ROWS+=("nimbus before (1 service)" "nimbus before (1 service, TLS)")
    add_row "nimbus before (1 service)" "http://$GATEWAY/" "$NIMBUS_HOST" "$PID"
    add_row "nimbus before (1 service, TLS)" "https://$HTTPS/" "$NIMBUS_HOST" "$PID"
fi

if ((SERVICES > 0)); then
    log "starting nimbus server (+$SERVICES services x $VERSIONS versions)"
    start_nimbus nimbus-big
    stop_pid "$PID"
    kill_instances "$TMP/nimbus-big"
    seed_store "$TMP/nimbus-big" || die "seeding the store failed"
    start_nimbus nimbus-big
    started=$SECONDS
    want=$((SERVICES + 1))
    ready=0
    while ((SECONDS - started <= 300)); do
        ready=$(curl -s -H "Authorization: Bearer $TOKEN" "http://$API/v1/instances" |
            jq '[.instances[] | select(.state == "ready")] | length')
        ((ready >= want)) && break
        sleep 1
    done
    log "$ready of $want instances ready after $((SECONDS - started))s"
    # A big table with instances missing measures something else: stop and say so.
    ((ready >= want)) || die "only $ready of $want instances of the big-table server got ready;" \
        "its versions say why (GET http://$API/v1/namespaces/default/services/svc-1/versions)"
    NIMBUS_ROWS+=("nimbus (+${SERVICES}x$VERSIONS versions)")
    add_row "${NIMBUS_ROWS[-1]}" "http://$GATEWAY/" "$NIMBUS_HOST" "$PID"
    IDLE+=("+$SERVICES services x $VERSIONS versions $(idle_cpu "$PID")")
fi

# --- measuring ---------------------------------------------------------------------------------
declare -A RPS P50 P99 CPU # space-separated values, one per round
HZ=$(getconf CLK_TCK)

# Converts wrk's "215.00us" / "1.02ms" / "1.10s" to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END {
    printf "%s", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# h2load's figures in wrk's shape ("Requests/sec:", "N requests in", and its mean latency as
# the 50% line: h2load reports no percentiles, so the p99 column stays empty for h2 rows).
h2load_as_wrk() {
    awk '/^finished in/ { printf "Requests/sec: %s\n", $4 }
        /^requests:/ { printf "%s requests in\n", $2 }
        /^requests:/ { if ($10 + $12 + $14 > 0) print "Socket errors: " $0 }
        /^status codes:/ { if ($5 + $7 + $9 > 0) print "Non-2xx or 3xx responses: " $0 }
        /^time for request:/ { printf "50%% %s\n", $6 }'
}

measure() { # HOW NAME ROUND: runs HOW (measure_row or measure_rated) with the others paused
    local how=$1
    shift
    pause_servers_except "${PID_OF[$1]}"
    "$how" "$@"
    resume_servers
}

measure_row() { # NAME ROUND
    local name=$1 url=${URL[$1]} host=${HOST_OF[$1]} out
    local pid=${PID_OF[$1]} before after
    if [[ ${TOOL_OF[$1]} == h2load ]]; then
        taskset -c "$LOAD_CORE" h2load -c 2 -m 1 -D "$WARMUP" -H ":authority: $host" "$url" \
            >/dev/null
        log "round $2/$ROUNDS, $name: ${DURATION}s, $CONNS h2 connections"
        before=$(cpu_ticks "$pid")
        out=$(taskset -c "$LOAD_CORE" h2load -c "$CONNS" -m 1 -D "$DURATION" \
            -H ":authority: $host" "$url" | h2load_as_wrk)
        after=$(cpu_ticks "$pid")
        record "$name" "$out" $((after - before))
        return
    fi
    taskset -c "$LOAD_CORE" wrk -t1 -c2 -d"${WARMUP}s" -H "Host: $host" "$url" >/dev/null
    log "round $2/$ROUNDS, $name: ${DURATION}s, $CONNS connections"
    before=$(cpu_ticks "$pid")
    out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
        -H "Host: $host" "$url")
    after=$(cpu_ticks "$pid")
    record "$name" "$out" $((after - before))
}

# The fixed-rate load: wrk's delay() hook holds each request until its slot in a shared schedule.
declare -A RATED_RPS RATED_P50 RATED_P99
measure_rated() { # NAME ROUND
    local name=$1 url=${URL[$1]} host=${HOST_OF[$1]} out
    log "fixed-rate round $2/$ROUNDS, $name: ${DURATION}s, $CONNS connections, $RATE requests/s"
    out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
        -s "$HERE/fixed_rate.lua" -H "Host: $host" "$url" -- "$RATE")
    file_figures "$name" "$out" RATED_RPS RATED_P50 RATED_P99
}

record() { # NAME OUTPUT CPU_TICKS: files one round's figures
    local name=$1 out=$2 ticks=$3
    # CPU time per request is far less sensitive than rps to other load on the machine.
    CPU[$name]+=" $(awk -v t="$ticks" -v hz="$HZ" \
        -v n="$(awk '/requests in/ { print $1 }' <<<"$out")" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }')"
    file_figures "$name" "$out" RPS P50 P99
}

# Files a run's rps, p50 and p99 (when the tool gave one) under NAME in the three arrays named.
file_figures() { # NAME OUTPUT RPS_ARRAY P50_ARRAY P99_ARRAY
    local name=$1 out=$2 p99
    local -n rps_of=$3 p50_of=$4 p99_of=$5
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
        log "$name: errors during the run: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ')"
    fi
    rps_of[$name]+=" $(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")"
    p50_of[$name]+=" $(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    [[ -n $p99 ]] && p99_of[$name]+=" $(to_ms "$p99")"
    return 0
}

# The HAProxy row a Nimbus row is compared with: the same protocol.
peer_of() {
    case $1 in
    *"TLS, h2)"*) echo "$HAPROXY_ROW (TLS, h2)" ;;
    *"TLS)"*) echo "$HAPROXY_ROW (TLS)" ;;
    *) echo "$HAPROXY_ROW" ;;
    esac
}

# Each HAProxy row is measured right next to the Nimbus rows of its protocol, in forward order
# on odd rounds and reversed on even ones, so a drift in the machine's speed over a round falls
# on both sides of each comparison alike.
OTHER_ROWS=()
declare -A GROUP
for row in "${ROWS[@]}"; do
    case $row in
    "$HAPROXY_ROW"*) GROUP[$row]=$row ;;
    nimbus*) GROUP[$(peer_of "$row")]+=$'\n'$row ;;
    *) OTHER_ROWS+=("$row") ;;
    esac
done
# One round: HOW (measure_row or measure_rated) over ROW... in that order.
measure_round() { # HOW ROUND ROW...
    local how=$1 round=$2 row group peer
    shift 2
    local -A wanted
    for row in "$@"; do wanted[$row]=1; done
    for row in "${OTHER_ROWS[@]}"; do
        [[ -n ${wanted[$row]:-} ]] && measure "$how" "$row" "$round"
    done
    for peer in "$HAPROXY_ROW" "$HAPROXY_ROW (TLS)" "$HAPROXY_ROW (TLS, h2)"; do
        mapfile -t group <<<"${GROUP[$peer]}"
        if ((round % 2 == 0)); then
            mapfile -t group < <(printf '%s\n' "${group[@]}" | tac)
        fi
        for row in "${group[@]}"; do
            [[ -n ${wanted[$row]:-} ]] && measure "$how" "$row" "$round"
        done
    done
    return 0
}
for round in $(seq 1 "$ROUNDS"); do measure_round measure_row "$round" "${ROWS[@]}"; done

# Fixed-rate rounds: every row wrk drives (all but the h2 ones), paired the same way.
RATED_ROWS=()
if ((RATE > 0)); then
    for row in "${ROWS[@]}"; do
        [[ ${TOOL_OF[$row]} == wrk ]] && RATED_ROWS+=("$row")
    done
    for round in $(seq 1 "$ROUNDS"); do measure_round measure_rated "$round" "${RATED_ROWS[@]}"; done
fi

# One row's figures against its peer's, round by round (bench/lib/pairs.py): the median of the
# per-round ratios and a 90% interval for it; `goal` adds the verdict on "at-least" or
# "at-most" 1.00, which counts as missed only when the whole interval is on the wrong side.
paired() { python3 "$HERE/../lib/pairs.py" pair "$1" "$2"; } # ROW_VALUES PEER_VALUES
goal() { python3 "$HERE/../lib/pairs.py" goal "$1" "$2" "$3"; } # ROW_VALUES PEER_VALUES GOAL

# --- table -------------------------------------------------------------------------------------
base=$(median "${RPS[$HAPROXY_ROW]}")
base_p99=$(median "${P99[$HAPROXY_ROW]}")
echo
echo "Gateway benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), nimbus $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'):"
echo "proxies on core $PROXY_CORE (one worker/thread each), wrk and backend on core $LOAD_CORE;"
echo "GET / → 2-byte body, $CONNS keep-alive connections, median of $ROUNDS rounds of ${DURATION}s per row;"
echo "nimbus rows: metrics on, JSON access log: $ACCESS_LOG."
echo
printf '| %-32s | %7s | %7s | %7s | %11s | %13s | %13s | %s\n' row rps "p50 ms" "p99 ms" "CPU µs/req" "rps / haproxy" "p99 / haproxy" "rps of each round |"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "----------------------------------" "---------" "---------" "---------" "-------------" "---------------" "---------------" "---"
for row in "${ROWS[@]}"; do
    rps=$(printf '%.0f' "$(median "${RPS[$row]}")")
    p50=$(printf '%.3f' "$(median "${P50[$row]}")")
    cpu=$(printf '%.1f' "$(median "${CPU[$row]}")")
    ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    if [[ -n ${P99[$row]:-} ]]; then
        p99=$(printf '%.3f' "$(median "${P99[$row]}")")
        p99_ratio=$(awk -v a="$p99" -v b="$base_p99" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    else
        p99="—" p99_ratio="—" # h2load: the p50 column is the mean
    fi
    printf '| %-32s | %7s | %7s | %7s | %11s | %13s | %13s | %s |\n' "$row" "$rps" "$p50" "$p99" \
        "$cpu" "$ratio" "$p99_ratio" "${RPS[$row]# }"
done
echo
echo "CPU µs/req: CPU time of the proxy process (with its children) over the requests served."
echo "h2 rows: h2load, one stream per connection; it reports no percentiles, so p50 is the mean."
echo "nimbus server CPU while idle (share of its core): ${IDLE[*]}"
# Each Nimbus row against the HAProxy row of the same protocol, pair by pair (each round's pair
# measured back to back).
echo
echo "Goals, from per-round pairs: median ratio [90% interval for it]: verdict."
for row in "${NIMBUS_ROWS[@]}"; do
    peer=$(peer_of "$row")
    echo "$row vs $peer:"
    echo "  rps (goal ≥ 1.00): $(goal "${RPS[$row]}" "${RPS[$peer]}" at-least)"
    echo "  CPU per request: $(paired "${CPU[$row]}" "${CPU[$peer]}")"
    if [[ -n ${P99[$row]:-} ]]; then
        echo "  p99 (goal ≤ 1.00): $(goal "${P99[$row]}" "${P99[$peer]}" at-most)"
    fi
done
# The big table's cost: its row against the one-service row, measured in the same round.
BIG_ROW=${NIMBUS_ROWS[-1]}
if [[ $BIG_ROW == *versions* ]]; then
    one=${NIMBUS_ROWS[0]}
    echo "Route table cost, $BIG_ROW vs $one (goal: no measurable loss):"
    echo "  rps: $(goal "${RPS[$BIG_ROW]}" "${RPS[$one]}" at-least)"
    echo "  CPU per request: $(goal "${CPU[$BIG_ROW]}" "${CPU[$one]}" at-most)"
    echo "  p99: $(goal "${P99[$BIG_ROW]}" "${P99[$one]}" at-most)"
fi
# At equal load (the fixed-rate rounds) latency compares without one proxy's higher throughput
# moving the queue to the load core.
if ((${#RATED_ROWS[@]})); then
    echo "At equal load ($RATE requests/s), p99 (goal ≤ 1.00):"
    for row in "${NIMBUS_ROWS[@]}"; do
        peer=$(peer_of "$row")
        [[ -n ${RATED_P99[$row]:-} ]] &&
            echo "  $row vs $peer: $(goal "${RATED_P99[$row]}" "${RATED_P99[$peer]}" at-most)"
    done
    if [[ $BIG_ROW == *versions* ]]; then
        echo "  route table cost, $BIG_ROW vs $one: $(goal "${RATED_P99[$BIG_ROW]}" "${RATED_P99[$one]}" at-most)"
    fi
fi

if ((${#RATED_ROWS[@]})); then
    echo
    echo "Fixed rate: the same rows at $RATE requests/s over $CONNS connections (equal load),"
    echo "median of $ROUNDS rounds; ratios are medians of per-round pairs with HAProxy on the same protocol [90% interval]."
    echo
    printf '| %-32s | %7s | %7s | %7s | %17s | %17s |\n' row rps "p50 ms" "p99 ms" "p50 / haproxy" "p99 / haproxy"
    printf '|%s|%s|%s|%s|%s|%s|\n' "----------------------------------" "---------" "---------" "---------" "-------------------" "-------------------"
    for row in "${RATED_ROWS[@]}"; do
        printf '| %-32s | %7.0f | %7.3f | %7.3f | %17s | %17s |\n' "$row" \
            "$(median "${RATED_RPS[$row]}")" "$(median "${RATED_P50[$row]}")" "$(median "${RATED_P99[$row]}")" \
            "$(paired "${RATED_P50[$row]}" "${RATED_P50[$(peer_of "$row")]}")" \
            "$(paired "${RATED_P99[$row]}" "${RATED_P99[$(peer_of "$row")]}")"
    done
fi

# Every round's p99, so runs of the same build can be pooled later (bench/lib/pairs.py takes the
# space-separated lists as they are).
echo
echo "p99 ms of each round (saturated | fixed rate):"
for row in "${ROWS[@]}"; do
    if [[ -n ${P99[$row]:-} ]]; then
        rated=${RATED_P99[$row]:-}  # none with RATE=0
        echo "  $row: ${P99[$row]# } | ${rated# }"
    fi
done
