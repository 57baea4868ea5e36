#!/usr/bin/env python3
"""Cold-start overhead of the Nimbus activator, side by side with the app's own start time.

Row 1 (direct): spawn the sample app ourselves and poll it every 1 ms until `GET /` answers:
the app's raw spawn -> ready time.
Row 2 (nimbus): the same app as a min-0 Nimbus service scaled to zero; one `GET /` through the
gateway: the time until the first response, which includes the spawn, the app's start, the
readiness probe and the held request's release.
The difference of the medians (and p95s) is what the activator adds. Goal: <= 5 ms at the median.

Docker rows (when an engine is reachable; `--no-docker` skips them): the same two measurements for
a tiny FROM scratch busybox httpd image. Direct: create + start the container through the Engine
API ourselves (host network, /tmp tmpfs, as the driver does) and poll its port every 1 ms: the
container's own create -> ready time. Nimbus: the image as a min-0 service after scale to zero.
The two are taken in turns (container starts vary with the machine's load). Goal: <= 20 ms added
at the median.

    python3 bench/coldstart/run.py [--runs 20] [--no-docker]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import nimbus_bench as nb  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct_start(runs):
    times = []
    for _ in range(runs):
        port = free_port()
        started = time.perf_counter()
        proc = subprocess.Popen(
            [nb.SAMPLE_APP],
            env={**os.environ, "PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    status, _, _ = nb.get(f"127.0.0.1:{port}", "/", timeout=1)
                    if status == 200:
                        break
                except OSError:
                    pass
                if time.perf_counter() - started > 30:
                    raise RuntimeError("sample app did not start")
                time.sleep(0.001)
            times.append(time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait()
    return times


def wait_http(addr, started, what):
    """Polls GET / every 1 ms until it answers 200; seconds since `started`."""
    while True:
        try:
            status, _, _ = nb.get(addr, "/", timeout=1)
            if status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        if time.perf_counter() - started > 60:
            raise RuntimeError(f"{what} did not answer")
        time.sleep(0.001)


def docker_direct_once(image):
    """Create + start through the Engine API, poll the port: one container's create -> ready."""
    port = free_port()
    config = {
        "Image": image,
        "Env": [f"PORT={port}"],
        "HostConfig": {
            "NetworkMode": "host",
            "Tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777,size=536870912"},
            "RestartPolicy": {"Name": "no"},
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10485760", "max-file": "1"}},
        },
        "Labels": {"nimbus.bench": "coldstart"},
    }
    started = time.perf_counter()
    status, created = nb.docker_api("POST", "/containers/create", config)
    if status != 201:
        raise RuntimeError(f"create answered {status}: {created}")
    cid = created["Id"]
    try:
        status, answer = nb.docker_api("POST", f"/containers/{cid}/start")
        if status != 204:
            raise RuntimeError(f"start answered {status}: {answer}")
        return wait_http(f"127.0.0.1:{port}", started, "container")
    finally:
        nb.docker_api("DELETE", f"/containers/{cid}?force=1")


def docker_interleaved(runs, image):
    """Nimbus cold starts and direct container starts taken in turns, so load on the (shared)
    machine hits both alike. Returns (direct, first, engine, cold_events)."""
    server = nb.Server(
        ["--scale-stable-window", "1", "--scale-panic-window", "1", "--scale-tick", "0.1", "--scale-down-delay", "0"]
    )
    try:
        server.deploy("cold", image=image, min_instances=0, max_instances=1, scale_to_zero_after_secs=1)
        server.wait("cold v1 ready", lambda: server.version("cold")["status"] == "ready")
        host = server.host("cold")
        direct, first, engine = [], [], []
        for i in range(runs):
            server.wait_zero("cold")
            status, body, took = nb.get(server.gateway, "/", host=host)
            if status != 200:
                raise RuntimeError(f"cold request {i} answered {status}: {body!r}")
            first.append(took)
            engine.append(server.version("cold")["last_cold_start_ms"] / 1000)
            direct.append(docker_direct_once(image))
        cold_events = sum(1 for e in server.events("cold") if e["kind"] == "cold_start")
        return direct, first, engine, cold_events
    finally:
        server.close()


def nimbus_cold_starts(runs):
    server = nb.Server(
        ["--scale-stable-window", "1", "--scale-panic-window", "1", "--scale-tick", "0.1", "--scale-down-delay", "0"]
    )
    try:
        server.deploy(
            "cold",
            command=nb.SAMPLE_APP,
            min_instances=0,
            max_instances=1,
            scale_to_zero_after_secs=1,
        )
        server.wait("cold v1 ready", lambda: server.version("cold")["status"] == "ready")
        host = server.host("cold")
        first, engine = [], []
        for i in range(runs):
            server.wait_zero("cold")
            status, body, took = nb.get(server.gateway, "/", host=host)
            if status != 200:
                raise RuntimeError(f"cold request {i} answered {status}: {body!r}")
            first.append(took)
            engine.append(server.version("cold")["last_cold_start_ms"] / 1000)
        cold_events = sum(1 for e in server.events("cold") if e["kind"] == "cold_start")
        return first, engine, cold_events
    finally:
        server.close()


def table(title, direct_label, direct, first, engine, cold_events, runs, goal_ms):
    ms = lambda s: s * 1000  # noqa: E731
    rows = [
        (direct_label, direct),
        ("nimbus: first response after scale-to-zero", first),
        ("nimbus: engine-measured spawn -> ready", engine),
    ]
    print(f"\n{title}")
    print(f"{'measurement':<46} {'median ms':>10} {'p95 ms':>10}")
    for label, values in rows:
        print(f"{label:<46} {ms(statistics.median(values)):>10.2f} {ms(nb.percentile(values, 95)):>10.2f}")
    added_median = ms(statistics.median(first) - statistics.median(direct))
    added_p95 = ms(nb.percentile(first, 95) - nb.percentile(direct, 95))
    print(f"{'activator overhead (nimbus - direct)':<46} {added_median:>10.2f} {added_p95:>10.2f}")
    print(f"cold_start events recorded: {cold_events} (expected {runs})")
    print(f"goal: <= {goal_ms} ms added at the median -> {'met' if added_median <= goal_ms else 'NOT met'}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker rows")
    parser.add_argument("--no-process", action="store_true", help="skip the process rows")
    args = parser.parse_args()
    nb.build_release()

    if not args.no_process:
        direct = direct_start(args.runs)
        first, engine, cold_events = nimbus_cold_starts(args.runs)
        table(
            f"cold starts: {args.runs} runs each, process runtime, sample app (release build)",
            "direct: app spawn -> ready (1 ms poll)",
            direct, first, engine, cold_events, args.runs, 5,
        )

    if args.no_docker:
        return
    if not nb.docker_up():
        print("\n!!! docker: SKIPPED, no Docker Engine answers (start it with scripts/docker-up.sh)")
        return
    image = nb.build_bench_image()
    direct, first, engine, cold_events = docker_interleaved(args.runs, image)
    table(
        f"cold starts: {args.runs} runs each, Docker runtime, busybox httpd FROM scratch",
        "direct: container create -> ready (1 ms poll)",
        direct, first, engine, cold_events, args.runs, 20,
    )


if __name__ == "__main__":
    main()
