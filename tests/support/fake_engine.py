"""A fault-injecting stand-in for an engine server (stdlib only), for process supervision tests.

Run as `python fake_engine.py --port N [options]`. It serves GET /health and logs every probe it
answers to stdout ("health 503", "health 200", "health hang"), so tests can read from the engine's
log file what a readiness loop actually saw.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stdout", action="append", default=[], help="print this line to stdout")
    p.add_argument("--stderr", action="append", default=[], help="print this line to stderr")
    p.add_argument("--load-time", type=float, default=0.0, help="seconds before opening the port")
    p.add_argument("--exit-code", type=int, help="exit with this code ...")
    p.add_argument(
        "--exit-after",
        type=float,
        default=0.0,
        help="... after T seconds (0: at once)",
    )
    p.add_argument("--busy-for", type=float, default=0.0, help="503 for this long after listening")
    p.add_argument("--busy-probes", type=int, default=0, help="503 for the first K probes")
    p.add_argument("--busy-after-probes", type=int, help="503 for ever after K probes")
    p.add_argument("--hang-after-probes", type=int, help="never answer /health after K probes")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--spawn-grandchild", metavar="PIDFILE", help="start a sleeping grandchild")
    return p.parse_args(argv)


def say(stream: TextIO, line: str) -> None:
    print(line, file=stream, flush=True)


def make_handler(args: argparse.Namespace, listening_since: float) -> type:
    lock = threading.Lock()
    probes = 0

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            nonlocal probes
            if self.path != "/health":
                self._answer(404, b'{"error": "not found"}')
                return
            with lock:
                probes += 1
                n = probes
            if args.hang_after_probes is not None and n > args.hang_after_probes:
                say(sys.stdout, "health hang")
                time.sleep(3600)  # alive, listening, but never answering
                return
            busy = (
                n <= args.busy_probes
                or time.monotonic() - listening_since < args.busy_for
                or (args.busy_after_probes is not None and n > args.busy_after_probes)
            )
            status = 503 if busy else 200
            say(sys.stdout, f"health {status}")
            body = b'{"status": "loading model"}' if busy else b'{"status": "ok"}'
            self._answer(status, body)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the probe lines above are the log

    return Handler


def exit_with(code: int) -> None:
    say(sys.stderr, f"fake engine: exiting with code {code}")
    os._exit(code)  # like a crash: no cleanup, no atexit


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.spawn_grandchild:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"], stdin=subprocess.DEVNULL
        )
        pidfile = Path(args.spawn_grandchild)
        pidfile.with_suffix(".tmp").write_text(str(child.pid))
        pidfile.with_suffix(".tmp").replace(pidfile)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for line in args.stdout:
        say(sys.stdout, line)
    for line in args.stderr:
        say(sys.stderr, line)
    if args.exit_code is not None:
        if args.exit_after <= 0:
            exit_with(args.exit_code)
        threading.Timer(args.exit_after, exit_with, (args.exit_code,)).start()
    time.sleep(args.load_time)
    server = http.server.ThreadingHTTPServer(
        (args.host, args.port), make_handler(args, time.monotonic())
    )
    server.daemon_threads = True
    say(sys.stdout, f"fake engine pid {os.getpid()} listening on {args.host}:{args.port}")
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
