"""One-click unsubscribe under load (not a test: prints figures).

    .venv/bin/python bench/bench_unsubscribe.py [--requests 2000] [--concurrency 50]

Starts the real server (`newsletter serve`, uvicorn, one process) on a free loopback port over a
fresh SQLite file holding one active subscriber per request, then sends every RFC 8058 one-click
POST (urlencoded, as mail clients do) with httpx.AsyncClient, at most --concurrency in flight.
Checks: no 5xx, no redirect, and every subscriber unsubscribed in the database afterwards.
For scale, the same client then sends as many GET /healthz (one trivial query, no write) to the
same server: the ratio says what an unsubscribe costs over the HTTP round trip itself, which
dominates on a slow loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.addresses import normalise_address  # noqa: E402
from newsletter.domain import ConsentSource, SubscriberStatus  # noqa: E402
from newsletter.store import NewSubscriber, open_store  # noqa: E402
from newsletter.tokens import Purpose, TokenSigner  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def populate(url: str, count: int) -> list[str]:
    """``count`` active subscribers; their unsubscribe tokens."""
    signer = TokenSigner(SECRET)
    with open_store(url) as store:
        store.add_many(
            [
                NewSubscriber(
                    normalise_address(f"lecteur.{n}@example.com"),
                    "",
                    "",
                    (),
                    SubscriberStatus.ACTIVE,
                    ConsentSource.CLI,
                    "bench",
                )
                for n in range(count)
            ]
        )
        return [
            signer.sign(Purpose.UNSUBSCRIBE, s.id, s.email_key)
            for s in store.iter_subscribers(SubscriberStatus.ACTIVE)
        ]


def start_server(folder: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=url,
        NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not start")


async def hammer(
    base: str, tokens: list[str], concurrency: int, *, baseline: bool = False
) -> tuple[float, dict[int, int]]:
    gate = asyncio.Semaphore(concurrency)
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def one(token: str) -> None:
            async with gate:
                if baseline:
                    response = await client.get("/healthz")
                else:
                    response = await client.post(
                        f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
                    )
            assert "location" not in response.headers, "a one-click POST must never redirect"
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one(t) for t in tokens))
        return time.perf_counter() - started, statuses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-unsubscribe-"))
    url = f"sqlite:///{folder / 'bench.db'}"
    tokens = populate(url, args.requests)
    port = free_port()
    server = start_server(folder, url, port)
    try:
        base = f"http://127.0.0.1:{port}"
        elapsed, statuses = asyncio.run(hammer(base, tokens, args.concurrency))
        health_elapsed, _ = asyncio.run(hammer(base, tokens, args.concurrency, baseline=True))
    finally:
        server.terminate()
        server.wait(10)
    with open_store(url) as store:
        counts = store.count_by_status()
    errors = sum(n for code, n in statuses.items() if code >= 500)
    print(f"{args.requests} one-click POSTs, {args.concurrency} at a time: {elapsed:.2f} s")
    print(
        f"  {args.requests / elapsed:,.0f} requests/s; status codes {dict(sorted(statuses.items()))}"
    )
    print(
        f"  baseline GET /healthz, same client: {args.requests / health_elapsed:,.0f} requests/s"
        f" (unsubscribe at {health_elapsed / elapsed:.0%} of it)"
    )
    print(
        f"  database: {counts[SubscriberStatus.UNSUBSCRIBED]} unsubscribed, {counts[SubscriberStatus.ACTIVE]} active"
    )
    ok = errors == 0 and counts[SubscriberStatus.UNSUBSCRIBED] == args.requests
    print("  OK: no 5xx, every one applied" if ok else "  FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
