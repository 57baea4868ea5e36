#!/usr/bin/env python3
"""Mass-crash recovery: how long a large Nimbus server takes to get every instance back, and how
much of its control-plane thread that costs.

The server holds SERVICES services x VERSIONS versions (seeded into its store before it starts,
as bench/gateway does); the newest version of each keeps one instance: a placeholder process
whose --port is a shared loopback nginx, so readiness probes are real HTTP. Once every
instance is ready and the server is idle, every instance's process group is killed at the same
moment (SIGKILL, as an OOM killer or a `pkill` would). Measured until all SERVICES instances are
ready again, and until the server is idle again (under 5% of a core over a second):
the wall time of each and the server's CPU time.

With --before BINARY the same run is made with another build first, and the ratios are printed.

    python3 bench/recovery/run.py [--services 1000] [--versions 10] [--before /tmp/nimbus-old]

Builds and uses the release build unless --no-build or --nimbus (e.g. target/dist/nimbus).
"""

import argparse
import glob
import json
import os
import shutil
import signal
import sys
import tempfile
import socket
import subprocess
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import nimbus_bench as nb  # noqa: E402

PLACEHOLDER = "exec sleep 2147483647"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend(tmp):
    """nginx answering 200 on a loopback port: the readiness probes of a thousand restarting
    instances at once must not wait on the backend (Python's http.server did)."""
    if shutil.which("nginx") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    port = free_port()
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(tmp, sub), exist_ok=True)
    conf = os.path.join(tmp, "backend.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-e", f"{tmp}/error.log", "-c", conf])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if nb.get(f"127.0.0.1:{port}", "/", timeout=1)[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the nginx backend did not start")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime (fields 14, 15)


def ready_count(server):
    return sum(1 for i in server.call("GET", "/v1/instances")["instances"] if i["state"] == "ready")


def wait_idle(pid, timeout):
    """Waits until the server used under 5% of a core over one second; returns when that second began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        began, before = time.monotonic(), cpu_seconds(pid)
        time.sleep(1)
        if cpu_seconds(pid) - before < 0.05:
            return began
    raise RuntimeError("the server did not go idle")


def instance_pgids(data):
    """The process groups of the instances the server's pid files name."""
    pgids = []
    for path in glob.glob(os.path.join(data, "run", "*.json")):
        try:
            with open(path) as f:
                pgid = int(json.load(f)["pgid"])
        except (OSError, ValueError, KeyError):
            continue
        if pgid > 1:
            pgids.append(pgid)
    return pgids


def kill_instances(pgids):
    """Cleanup: kills what is left, ignoring groups already gone."""
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


def measure(binary, services, versions, port, timeout):
    data_dir = tempfile.mkdtemp(prefix="nimbus-recovery-")
    data = os.path.join(data_dir, "data")
    server = None
    try:
        # A first start creates the store's schema; the deploy proves the setup serves.
        server = nb.Server(binary=binary, data=data)
        server.deploy("bench", command=PLACEHOLDER, port=port, min_instances=1)
        server.wait("bench ready", lambda: ready_count(server) >= 1, timeout=60)
        server.close()
        nb.seed_store(os.path.join(data, "nimbus.db"), services, versions, PLACEHOLDER, port)
        server = nb.Server(binary=binary, data=data)
        want = services + 1
        started = time.monotonic()
        server.wait(f"{want} instances ready", lambda: ready_count(server) >= want,
                    timeout=timeout, every=0.5)
        print(f"  {want} instances ready after {time.monotonic() - started:.1f}s", file=sys.stderr)
        pid = server.proc.pid
        wait_idle(pid, timeout)

        pgids = instance_pgids(data)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        for pgid in pgids:
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.5)  # let the exits land before the first count
        server.wait("every instance back", lambda: ready_count(server) >= want,
                    timeout=timeout, every=0.25)
        ready_after = time.monotonic() - t0
        idle_after = wait_idle(pid, timeout) - t0
        cpu = cpu_seconds(pid) - cpu0
        return {"killed": len(pgids), "ready": ready_after, "idle": idle_after, "cpu": cpu}
    finally:
        if server is not None:
            server.close()
        kill_instances(instance_pgids(data))
        shutil.rmtree(data_dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--nimbus", default=nb.NIMBUS, help="the nimbus binary (default: the release build)")
    parser.add_argument("--before", help="another nimbus binary to measure first (A/B)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build and args.nimbus == nb.NIMBUS:
        nb.build_release()

    tmp = tempfile.mkdtemp(prefix="nimbus-recovery-backend-")
    nginx, port = backend(tmp)
    rows = []
    try:
        if args.before:
            print(f"» before: {args.before}", file=sys.stderr)
            rows.append(("nimbus before", measure(args.before, args.services, args.versions, port, args.timeout)))
        print(f"» nimbus: {args.nimbus}", file=sys.stderr)
        rows.append(("nimbus", measure(args.nimbus, args.services, args.versions, port, args.timeout)))
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nEvery instance of {args.services} services x {args.versions} versions killed at once")
    print(f"{'row':<15} {'killed':>7} {'all ready (s)':>14} {'idle again (s)':>15} {'server CPU (s)':>15}")
    for name, r in rows:
        print(f"{name:<15} {r['killed']:>7} {r['ready']:>14.1f} {r['idle']:>15.1f} {r['cpu']:>15.1f}")
    if len(rows) == 2:
        (_, a), (_, b) = rows
        print(f"ratio nimbus/before: all ready {b['ready'] / a['ready']:.2f}, "
              f"idle again {b['idle'] / a['idle']:.2f}, CPU {b['cpu'] / max(a['cpu'], 0.01):.2f}")


if __name__ == "__main__":
    main()
