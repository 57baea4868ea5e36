#!/usr/bin/env python3
"""Warm function invocation: Nimbus's invoke API vs calling the same runtime shim directly.

Row 1 (direct): the Python shim started by hand, `POST /invoke` on a kept-alive connection.
Row 2 (nimbus): `POST /v1/namespaces/default/functions/NAME/invoke` on the API (version choice,
admission through the version's gate, the invoke protocol, metering), kept-alive connection.
The difference of the medians is Nimbus's overhead per warm call (goal <= 1 ms). Then
invocations/s through Nimbus at concurrency 1 and 10 (10 instances, one call each at a time).

    python3 bench/invoke/run.py [--calls 500] [--seconds 5]
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import nimbus_bench as nb  # noqa: E402

HANDLER = "def main(event, context):\n    return {'ok': True}\n"
SHIM = os.path.join(nb.ROOT, "runtimes", "python", "nimbus_shim.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_posts(addr, path, headers, calls):
    conn = http.client.HTTPConnection(addr, timeout=30)
    body = b"{}"
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        conn.request("POST", path, body, {"content-type": "application/json", **headers})
        resp = conn.getresponse()
        data = resp.read()
        times.append(time.perf_counter() - started)
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {data[:200]!r}")
    conn.close()
    return times


def direct(code_dir, calls):
    port = free_port()
    proc = subprocess.Popen(
        ["python3", SHIM, "index.main"],
        cwd=code_dir,
        env={**os.environ, "PORT": str(port), "NIMBUS_FUNCTION": "bench"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        addr = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if nb.get(addr, "/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        timed_posts(addr, "/invoke", {}, 50)  # warm-up
        return timed_posts(addr, "/invoke", {}, calls)
    finally:
        proc.terminate()
        proc.wait()


def throughput(server, path, concurrency, seconds):
    stop = time.monotonic() + seconds
    counts = [0] * concurrency
    errors = [0] * concurrency
    auth = {"authorization": f"Bearer {server.token}"}

    def loop(i):
        conn = http.client.HTTPConnection(server.api, timeout=30)
        while time.monotonic() < stop:
            conn.request("POST", path, b"{}", {"content-type": "application/json", **auth})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                counts[i] += 1
            else:
                errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds, sum(errors)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    nb.build_release()
    code_dir = tempfile.mkdtemp(prefix="nimbus-bench-fn-")
    with open(os.path.join(code_dir, "index.py"), "w") as f:
        f.write(HANDLER)

    direct_times = direct(code_dir, args.calls)
    server = nb.Server(["--meter-interval", "5"])
    try:
        server.call(
            "POST",
            "/v1/namespaces/default/functions/bench/versions",
            {"runtime": "python3", "handler": "index.main", "code_dir": code_dir, "min_instances": 1, "max_instances": 10},
        )
        server.wait("bench v1 ready", lambda: server.version("bench")["status"] == "ready")
        path = "/v1/namespaces/default/functions/bench/invoke"
        auth = {"authorization": f"Bearer {server.token}"}
        timed_posts(server.api, path, auth, 50)  # warm-up
        nimbus_times = timed_posts(server.api, path, auth, args.calls)
        rps1, err1 = throughput(server, path, 1, args.seconds)
        rps10, err10 = throughput(server, path, 10, args.seconds)
    finally:
        server.close()

    ms = lambda s: s * 1000  # noqa: E731
    print(f"\nwarm sync invoke, python handler returning {{'ok': True}}, {args.calls} calls each")
    print(f"{'path':<44} {'median ms':>10} {'p95 ms':>10}")
    for label, times in (("direct: POST /invoke on the shim", direct_times), ("nimbus: POST .../functions/bench/invoke", nimbus_times)):
        print(f"{label:<44} {ms(statistics.median(times)):>10.3f} {ms(nb.percentile(times, 95)):>10.3f}")
    overhead = ms(statistics.median(nimbus_times) - statistics.median(direct_times))
    print(f"{'nimbus overhead (median)':<44} {overhead:>10.3f}")
    print(f"goal: <= 1 ms -> {'met' if overhead <= 1 else 'NOT met'}")
    print(f"\nthroughput through nimbus ({args.seconds:.0f} s each): concurrency 1: {rps1:.0f}/s ({err1} errors); concurrency 10: {rps10:.0f}/s ({err10} errors)")


if __name__ == "__main__":
    main()
