"""`newsletter serve` in a process of its own, for the benchmarks: started with a clean
``NEWSLETTER_*`` environment plus the given settings, returned once ``/healthz`` answers 200."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

START_SECONDS = 20


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
