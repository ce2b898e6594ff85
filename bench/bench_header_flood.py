"""Oversized request headers against `newsletter serve` (not a test: prints figures).

    .venv/bin/python bench/bench_header_flood.py [--megabytes 50] [--clients 8]

Starts the real server on a free loopback port over a fresh SQLite file, then has --clients
connections each stream one header of --megabytes at once, reading the answer while sending.
Prints each client's answer and how much it got out before the server stopped it, and the
server's resident memory before and at its peak (VmHWM, Linux /proc): with the header limits of
newsletter/httpserver.py, every client gets 431 at once and the peak stays where it was.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit.net import free_port
from testkit.serve import start_serve

CHUNK = b"a" * 65536


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    return start_serve(
        folder,
        port,
        NEWSLETTER_DATABASE_URL=f"sqlite:///{folder / 'bench.db'}",
        NEWSLETTER_SECRET_KEY="bench-secret-key-0123456789abcdef",
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
    )


def flood(port: int, size: int) -> tuple[bytes, int, float]:
    """One header of ``size`` bytes; (the answer's status line, bytes sent, seconds)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=300)
    answer: list[bytes] = []

    def read() -> None:
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except OSError:
            pass
        answer.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    sent, started = 0, time.monotonic()
    try:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        while sent < size:
            conn.sendall(CHUNK)
            sent += len(CHUNK)
        conn.sendall(b"\r\n\r\n")  # then wait for the answer (not half-closing: that ends it)
    except OSError:
        pass  # the server closed the connection
    reader.join(300)
    conn.close()
    status = answer[0].split(b"\r\n", 1)[0] if answer else b""
    return status, sent, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    size = args.megabytes * 1024 * 1024
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        server = start_server(Path(folder), port)
        try:
            before = memory_kib(server.pid, "VmRSS")
            results: list[tuple[bytes, int, float]] = []
            threads = [
                threading.Thread(target=lambda: results.append(flood(port, size)))
                for _ in range(args.clients)
            ]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            peak = memory_kib(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(15)
    print(f"{args.clients} clients x one {args.megabytes} MB header, {elapsed:.1f} s in all")
    for status, sent, seconds in results:
        answer = status.decode("latin-1") or "(no answer)"
        stopped = "only" if sent < size else "all of it,"
        print(f"  {answer}; sent {stopped} {sent // 1024} KiB; closed after {seconds:.1f} s")
    print(f"server memory: {before // 1024} MiB before, {peak // 1024} MiB at its peak")


if __name__ == "__main__":
    main()
