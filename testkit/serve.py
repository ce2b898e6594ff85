"""`newsletter serve` in a process of its own for the benchmarks (started with a clean
``NEWSLETTER_*`` environment plus the given settings, returned once ``/healthz`` answers 200),
and the threaded keep-alive client they measure it with."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

START_SECONDS = 20
T = TypeVar("T")


def start_serve(folder: Path, port: int, **settings: str) -> subprocess.Popen[bytes]:
    """Run ``newsletter serve --port PORT`` in ``folder`` with ``settings`` (NEWSLETTER_* names);
    SystemExit when it does not answer /healthz within START_SECONDS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}", **settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            # A raw request: the benchmarks measure clients of their own, none is needed here.
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                if conn.recv(100).startswith(b"HTTP/1.1 200"):
                    return process
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


def hammer_with_threads(
    port: int,
    items: list[T],
    concurrency: int,
    send: Callable[[http.client.HTTPConnection, T], http.client.HTTPResponse],
) -> tuple[float, dict[int, int]]:
    """``concurrency`` threads, each with one keep-alive http.client connection, share
    ``items``; ``send`` makes the request for one and returns its response. Returns the seconds
    taken and the count of each status code.

    Plain http.client: httpx's async pool with 50 connections costs more CPU than the server it
    measures on 2 cores (it topped out near 120 requests/s even for /healthz).
    """
    pending = list(items)
    lock = threading.Lock()
    statuses: dict[int, int] = {}

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not pending:
                    break
                item = pending.pop()
            response = send(connection, item)
            response.read()
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, statuses
