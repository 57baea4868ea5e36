#!/usr/bin/env python3
"""Nimbus runtime shim for Python 3 function handlers (standard library only).

Usage, in the function's code directory:

    PORT=8080 python3 nimbus_shim.py FILE.func      # e.g. index.main -> ./index.py, def main

The handler module is imported once, at start; every invocation then calls the same function in
the same process, so a warm call costs no process start. The shim serves the Nimbus invoke
protocol (docs/functions.md) on 127.0.0.1:$PORT (NIMBUS_HOST overrides the address):

    GET  /healthz  200 once the handler is loaded (the server only listens after that)
    POST /invoke   the event JSON in, the handler's JSON result out (200); a handler exception
                   is 200 with `x-nimbus-error: handler` and {"error": {type, message, traceback}}

Anything else that goes wrong (bad request, unknown path) is a non-200 answer without
`x-nimbus-error: handler`, so the engine can tell platform errors from handler errors.

A handler file or function that is missing, or a module that raises while loading, ends the
shim with exit status 1 and the reason (with the traceback) on stderr. Bad usage exits 2.
"""

import importlib.util
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHIM_FILE = os.path.abspath(__file__)
# Same rule as the engine's `--handler` check (crates/nimbus-functions/src/handler.rs).
HANDLER_RE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_-]*(?:/[A-Za-z0-9_][A-Za-z0-9_-]*)*)\.([A-Za-z_][A-Za-z0-9_]*)$")
# Reported by get_remaining_time_in_millis() when the request carries no deadline.
NO_DEADLINE_REMAINING_MS = 2**31 - 1


def fail(status, message):
    sys.stderr.write("nimbus-shim: " + message + "\n")
    sys.stderr.flush()
    sys.exit(status)


class Context:
    """What the handler learns about its invocation (second argument)."""

    def __init__(self, request_id, function_name, function_version, memory_limit_in_mb, deadline_ms):
        self.request_id = request_id
        self.function_name = function_name
        self.function_version = function_version
        self.memory_limit_in_mb = memory_limit_in_mb
        # Unix milliseconds, or None when the caller set no deadline.
        self.deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        if self.deadline_ms is None:
            return NO_DEADLINE_REMAINING_MS
        return max(0, self.deadline_ms - int(time.time() * 1000))

    def __repr__(self):
        return (
            "Context(request_id=%r, function_name=%r, function_version=%r, memory_limit_in_mb=%r)"
            % (self.request_id, self.function_name, self.function_version, self.memory_limit_in_mb)
        )


def load_handler(spec):
    match = HANDLER_RE.match(spec)
    if not match:
        fail(
            2,
            "invalid handler %r: expected FILE.func, e.g. index.main (file %r, function %r)"
            % (spec, "index.py", "main"),
        )
    file_part, func_name = match.group(1), match.group(2)
    code_dir = os.getcwd()
    path = os.path.join(code_dir, file_part + ".py")
    if not os.path.isfile(path):
        fail(1, "handler file %s not found (handler %r, code directory %s)" % (path, spec, code_dir))
    # Sibling modules of the handler are importable, as in `python3 index.py`.
    sys.path.insert(0, code_dir)
    module_name = file_part.replace("/", ".")
    try:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    except BaseException:  # noqa: B036 - a SystemExit while importing is a load error too
        sys.stderr.write("nimbus-shim: loading handler file %s failed:\n" % path)
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)
    func = getattr(module, func_name, None)
    if func is None:
        fail(1, "handler function %r not found in %s (handler %r)" % (func_name, path, spec))
    if not callable(func):
        fail(1, "handler %r in %s is not a function" % (func_name, path))
    return func


def user_traceback(exc):
    """The exception's traceback as lines, without the shim's own frames."""
    tb = exc.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == SHIM_FILE:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return text.rstrip("\n").split("\n")


def handler_error_body(exc):
    error = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": user_traceback(exc),
    }
    return json.dumps({"error": error}, ensure_ascii=False).encode("utf-8")


def platform_error_body(error_type, message):
    return json.dumps({"error": {"type": error_type, "message": message}}).encode("utf-8")


class Invoker:
    """Calls the handler, one invocation at a time (an instance has concurrency 1)."""

    def __init__(self, func):
        self.func = func
        self.lock = threading.Lock()
        self.default_function = os.environ.get("NIMBUS_FUNCTION") or os.environ.get("NIMBUS_SERVICE", "")
        self.default_version = os.environ.get("NIMBUS_VERSION", "")
        memory = os.environ.get("NIMBUS_MEMORY_MB", "")
        self.default_memory = int(memory) if memory.isdigit() else 0

    def invoke(self, event, context):
        """Returns (body, is_handler_error)."""
        with self.lock:
            try:
                result = self.func(event, context)
                # A result that is not JSON (a set, NaN, …) is the handler's mistake too.
                body = json.dumps(result, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
                return body.encode("utf-8"), False
            except BaseException as exc:  # noqa: B036 - sys.exit() in a handler is its error
                return handler_error_body(exc), True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the engine reuses its connection to the instance
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # headers and body leave in one write (flushed after each request)

    def version_string(self):
        return "nimbus-shim-python"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # stdout/stderr belong to the handler's logs

    def send_body(self, status, body, handler_error=False):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        if handler_error:
            self.send_header("x-nimbus-error", "handler")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            self.send_body(200, b'{"status":"ok"}')
        else:
            self.send_body(404, platform_error_body("NotFound", "no route for GET " + self.path))

    def do_POST(self):
        if self.path != "/invoke":
            self.drain_body()
            self.send_body(404, platform_error_body("NotFound", "no route for POST " + self.path))
            return
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.close_connection = True
            self.send_body(411, platform_error_body("LengthRequired", "send the event with content-length"))
            return
        raw = self.drain_body()
        try:
            event = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            self.send_body(400, platform_error_body("InvalidEvent", "the event is not JSON: %s" % exc))
            return
        invoker = self.server.invoker
        headers = self.headers
        try:
            memory = headers.get("x-nimbus-memory-mb")
            deadline = headers.get("x-nimbus-deadline-ms")
            context = Context(
                request_id=headers.get("x-nimbus-request-id") or str(uuid.uuid4()),
                function_name=headers.get("x-nimbus-function") or invoker.default_function,
                function_version=headers.get("x-nimbus-version") or invoker.default_version,
                memory_limit_in_mb=int(memory) if memory else invoker.default_memory,
                deadline_ms=int(deadline) if deadline else None,
            )
        except ValueError as exc:
            self.send_body(400, platform_error_body("InvalidHeader", str(exc)))
            return
        body, is_handler_error = invoker.invoke(event, context)
        self.send_body(200, body, handler_error=is_handler_error)

    def drain_body(self):
        length = int(self.headers.get("content-length") or "0")
        return self.rfile.read(length) if length > 0 else b""


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The engine drops the connection of an invocation that timed out; writing the late
        # answer then fails. That is expected, not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main(argv):
    if len(argv) != 2:
        fail(2, "usage: PORT=8080 python3 nimbus_shim.py FILE.func (run in the code directory)")
    port_text = os.environ.get("PORT", "")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        fail(2, "PORT must be set to a TCP port number, got %r" % port_text)
    # Handler output reaches the instance log line by line, not when a buffer fills.
    sys.stdout.reconfigure(line_buffering=True)
    func = load_handler(argv[1])
    host = os.environ.get("NIMBUS_HOST", "127.0.0.1")
    try:
        server = Server((host, int(port_text)), Handler)
    except OSError as exc:
        fail(1, "cannot listen on %s:%s: %s" % (host, port_text, exc))
    server.invoker = Invoker(func)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
