"""Loopback ports for the servers the tests and benchmarks start."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    # aiosmtpd's Controller cannot take port 0, so we ask the OS for a free one and pass it on.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")
