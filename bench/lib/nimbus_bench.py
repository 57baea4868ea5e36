"""Shared helpers for Nimbus benchmarks: start a release `nimbus server` on loopback with a
private data dir, call its API, and time HTTP requests. Standard library only."""

import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# cargo builds into CARGO_TARGET_DIR when it is set.
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
RELEASE = os.path.join(TARGET, "release")
NIMBUS = os.path.join(RELEASE, "nimbus")
SAMPLE_APP = os.path.join(RELEASE, "nimbus-sample-app")


def build_release():
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "nimbus", "-p", "nimbus-sample-app"],
        cwd=ROOT,
        check=True,
    )


class Server:
    """A `nimbus server` with its own data dir (or `data`, which `close` leaves in place);
    stopped (SIGTERM) by `close`. `binary` runs another build (an A/B's "before")."""

    def __init__(self, extra_args=(), binary=None, data=None):
        self.dir = tempfile.mkdtemp(prefix="nimbus-bench-")
        self.data = data or os.path.join(self.dir, "data")
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [binary or NIMBUS, "server", "--data", self.data, "--api", "127.0.0.1:0", "--http", "127.0.0.1:0", *extra_args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, "NO_COLOR": "1", "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
        )
        line = self.proc.stdout.readline().decode()
        if not line.startswith("nimbus ready:"):
            raise RuntimeError(f"server did not start: {line!r}; log in {self.dir}")
        fields = dict(part.split("=", 1) for part in line.split()[2:])
        self.api = fields["api"].removeprefix("http://")
        self.gateway = fields["gateway"].removeprefix("http://")
        with open(os.path.join(self.data, "admin.token")) as f:
            self.token = f.read().strip()

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, method, path, body=None):
        conn = http.client.HTTPConnection(self.api, timeout=60)
        headers = {"authorization": f"Bearer {self.token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["content-type"] = "application/json"
        conn.request(method, path, payload, headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        answer = json.loads(data) if data else None
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status} {answer}")
        return answer

    def deploy(self, service, **spec):
        return self.call("POST", f"/v1/namespaces/default/services/{service}/versions", spec)

    def version(self, service, name="v1"):
        return self.call("GET", f"/v1/namespaces/default/services/{service}/versions/{name}")

    def events(self, service):
        return self.call("GET", f"/v1/namespaces/default/services/{service}/events?limit=1000")["events"]

    def wait(self, what, check, timeout=60.0, every=0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(every)
        raise RuntimeError(f"timed out waiting for {what}")

    def wait_zero(self, service):
        def idle():
            v = self.version(service)
            return v["desired_instances"] == 0 and v["ready_instances"] == 0 and not self.instances(service)
        self.wait(f"{service} at zero", idle, timeout=120, every=0.1)

    def instances(self, service):
        return self.call("GET", f"/v1/instances?namespace=default&service={service}")["instances"]

    def host(self, service):
        return f"{service}--default.nimbus.localhost"


def seed_store(db, services, versions, command, port):
    """Writes `services` services of `versions` versions each straight into a stopped server's
    store (deploying 10,000 versions through the API would start an instance for each). The
    newest version of each takes all traffic and keeps one instance running `command`, whose
    --port is `port` (a shared backend, so readiness probes are real HTTP)."""
    now = int(time.time())
    conn = sqlite3.connect(db)
    for i in range(1, services + 1):
        name = f"svc-{i}"
        traffic = {"split": [{"version": f"v{versions}", "percent": 100}], "rules": []}
        conn.execute(
            "INSERT INTO services (namespace, name, created_at, next_version, traffic)"
            " VALUES ('default', ?, ?, ?, ?)",
            (name, now, versions + 1, json.dumps(traffic)))
        for v in range(1, versions + 1):
            spec = {"command": command, "env": {}, "port": port, "health_path": "/",
                    "min_instances": 1 if v == versions else 0, "max_instances": 10,
                    "concurrency": 1000, "timeout_secs": 300}
            conn.execute(
                "INSERT INTO versions (namespace, service, name, seq, spec, created_at)"
                " VALUES ('default', ?, ?, ?, ?, ?)",
                (name, f"v{v}", v, json.dumps(spec), now))
    conn.commit()
    conn.close()


def get(addr, path, host=None, timeout=60):
    """One GET on a fresh connection; returns (status, body, seconds)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(addr, timeout=timeout)
    try:
        conn.request("GET", path, headers={"host": host} if host else {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, time.perf_counter() - started
    finally:
        conn.close()


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


# --- Docker Engine API over its unix socket (for baselines measured without Nimbus) ---

def docker_socket():
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("docker", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def docker_api(method, path, body=None, timeout=60):
    """One Engine API call; returns (status, parsed JSON, the text when not JSON, or None)."""
    conn = _UnixHTTPConnection(docker_socket(), timeout=timeout)
    try:
        headers = {}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["content-type"] = "application/json"
        conn.request(method, path, payload, headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, (json.loads(data) if data.strip() else None)
        except ValueError:
            return resp.status, data.decode(errors="replace")
    finally:
        conn.close()


def docker_up():
    try:
        status, _ = docker_api("GET", "/_ping", timeout=5)
        return status == 200
    except OSError:
        return False


# Serves `/` with busybox httpd on 127.0.0.1:$PORT and stops at once on SIGTERM.
BENCH_ENTRY = """#!/bin/sh
mkdir -p /www
echo "hello from $NIMBUS_SERVICE $NIMBUS_VERSION" > /www/index.html
httpd -f -p "127.0.0.1:$PORT" -h /www &
pid=$!
trap 'kill $pid; wait $pid; exit 0' TERM INT
wait $pid
"""


def build_bench_image(tag="nimbus-bench/httpd:v1", busybox="/bin/busybox"):
    """A FROM scratch image with the host's static busybox (no registry needed)."""
    ctx = tempfile.mkdtemp(prefix="nimbus-bench-image-")
    try:
        shutil.copy(busybox, os.path.join(ctx, "busybox"))
        with open(os.path.join(ctx, "entry.sh"), "w") as f:
            f.write(BENCH_ENTRY)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(
                "FROM scratch\n"
                "COPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                "COPY entry.sh /entry.sh\n"
                'ENTRYPOINT ["/bin/sh", "/entry.sh"]\n'
            )
        subprocess.run(["docker", "build", "-q", "-t", tag, ctx], check=True, stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return tag


if __name__ == "__main__":
    # For the shell benches: nimbus_bench.py seed DB SERVICES VERSIONS COMMAND PORT
    if len(sys.argv) != 7 or sys.argv[1] != "seed":
        sys.exit("usage: nimbus_bench.py seed DB SERVICES VERSIONS COMMAND PORT")
    seed_store(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
