#!/usr/bin/env bash
# Where a proxy's slow requests lose their time: drives one running proxy with wrk (as run.sh
# does: 50 connections on LOAD_CORE) and records, for RECORD seconds in the middle of the run,
# the proxy's and wrk's socket syscalls and every context switch on both cores (perf). Then
# tail.py matches each request across wrk and the proxy and prints, per latency slice, how much
# was wrk→proxy (the proxy noticing a new request), inside the proxy (upstream included) and
# proxy→wrk, plus every moment the proxy or wrk made no syscall for >0.8 ms and what ran instead.
#
#   bench/gateway/tail.sh NAME URL PID [HOST]
#   e.g. bench/gateway/tail.sh nimbus http://127.0.0.1:18082/ "$(pgrep -f 'nimbus server')" web--default.nimbus.localhost
#
# Needs perf (Debian: linux-perf) and permission to trace (root). Tracing slows every process by
# a few percent, so compare proxies only within runs of this script, never with run.sh's table.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=$1 URL=$2 PROXY_PID=$3 HOST=${4:-localhost}
LOAD_CORE=${LOAD_CORE:-1}
PROXY_CORE=${PROXY_CORE:-0}
RECORD=${RECORD:-3}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/nimbus-tail.XXXXXX")}
command -v perf >/dev/null || { echo "tail.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
PORT=$(sed -E 's|^[a-z]+://[^:/]+:([0-9]+).*|\1|' <<<"$URL")

taskset -c "$LOAD_CORE" wrk -t1 -c50 -d$((RECORD + 6))s -H "Host: $HOST" "$URL" >"$OUT/wrk.txt" &
WRK_JOB=$!
sleep 1
WRK_PID=$(pgrep -P "$WRK_JOB" wrk || pgrep -n -x wrk)
sleep 2
# Each socket fd of both processes → its inode, and the kernel's table of inode → ports.
for pid in "$PROXY_PID" "$WRK_PID"; do
    for fd in /proc/"$pid"/fd/*; do
        link=$(readlink "$fd" || true)
        [[ $link == socket:* ]] && echo "$(basename "$fd") ${link//[^0-9]/}"
    done >"$OUT/fds.$pid"
done
cat /proc/net/tcp >"$OUT/tcp.txt"
perf record -q -k CLOCK_MONOTONIC -p "$PROXY_PID" -o "$OUT/proxy.data" \
    -e 'syscalls:sys_enter_recvfrom,syscalls:sys_exit_recvfrom,syscalls:sys_enter_sendto' \
    -- sleep "$RECORD" 2>/dev/null &
perf record -q -k CLOCK_MONOTONIC -C "$PROXY_CORE,$LOAD_CORE" -o "$OUT/switch.data" \
    -e sched:sched_switch -- sleep "$RECORD" 2>/dev/null &
perf record -q -k CLOCK_MONOTONIC -p "$WRK_PID" -o "$OUT/wrk.data" \
    -e 'syscalls:sys_enter_read,syscalls:sys_exit_read,syscalls:sys_enter_write' \
    -- sleep "$RECORD" 2>/dev/null
wait
perf script -i "$OUT/proxy.data" -F tid,time,event,trace >"$OUT/proxy.txt" 2>/dev/null
perf script -i "$OUT/wrk.data" -F tid,time,event,trace >"$OUT/wrk-calls.txt" 2>/dev/null
perf script -i "$OUT/switch.data" -F cpu,time,trace >"$OUT/switch.txt" 2>/dev/null
echo "$NAME: wrk $(awk '/Requests\/sec/ {print $2 " rps"}' "$OUT/wrk.txt") (whole run, traced for ${RECORD}s)"
python3 "$HERE/tail.py" "$OUT" "$PORT" "$PROXY_PID" "$WRK_PID"
echo "(files in $OUT)"
