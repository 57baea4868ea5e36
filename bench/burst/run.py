#!/usr/bin/env python3
"""Bursts of simultaneous first requests against a service scaled to zero: how many cold starts
each burst causes and how many requests fail. A burst that fits one instance (concurrency 80,
target 70% = 56) should cost exactly one cold start and no errors; bigger bursts queue while
more instances start.

    python3 bench/burst/run.py [--sizes 1,20,100] [--work-ms 50]
"""

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import nimbus_bench as nb  # noqa: E402


def burst(server, host, size, work_ms):
    results = [None] * size
    barrier = threading.Barrier(size)

    def one(i):
        barrier.wait()
        try:
            status, _, took = nb.get(server.gateway, f"/slow?ms={work_ms}", host=host, timeout=120)
            results[i] = (status, took)
        except OSError as e:
            results[i] = (f"error: {e}", 0.0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,20,100")
    parser.add_argument("--work-ms", type=int, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    nb.build_release()

    server = nb.Server(
        ["--scale-stable-window", "2", "--scale-panic-window", "1", "--scale-tick", "0.1", "--scale-down-delay", "0"]
    )
    rows = []
    try:
        server.deploy(
            "burst",
            command=nb.SAMPLE_APP,
            min_instances=0,
            max_instances=10,
            concurrency=80,
            scale_to_zero_after_secs=1,
        )
        server.wait("burst v1 ready", lambda: server.version("burst")["status"] == "ready")
        host = server.host("burst")
        for size in sizes:
            server.wait_zero("burst")
            before = sum(1 for e in server.events("burst") if e["kind"] == "cold_start")
            started = time.perf_counter()
            results = burst(server, host, size, args.work_ms)
            wall = time.perf_counter() - started
            time.sleep(0.5)  # let the last cold-start event land
            after = sum(1 for e in server.events("burst") if e["kind"] == "cold_start")
            ok = [took for status, took in results if status == 200]
            errors = size - len(ok)
            rows.append((size, after - before, errors, statistics.median(ok) * 1000 if ok else float("nan"), max(ok) * 1000 if ok else float("nan"), wall * 1000))
    finally:
        server.close()

    print(f"\nbursts of first requests to a service at zero (concurrency 80, /slow?ms={args.work_ms})")
    print(f"{'burst':>6} {'cold starts':>12} {'errors':>7} {'median ms':>10} {'max ms':>8} {'wall ms':>8}")
    for size, colds, errors, median, most, wall in rows:
        print(f"{size:>6} {colds:>12} {errors:>7} {median:>10.1f} {most:>8.1f} {wall:>8.1f}")


if __name__ == "__main__":
    main()
