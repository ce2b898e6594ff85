"""One-click unsubscribe under load (not a test: prints figures).

    .venv/bin/python bench/bench_unsubscribe.py [--requests 2000] [--concurrency 50]

Starts the real server (`newsletter serve`, uvicorn, one process) on a free loopback port over a
fresh SQLite file holding one active subscriber per request, then sends every RFC 8058 one-click
POST (urlencoded, as mail clients do) from --concurrency keep-alive connections at once.
Checks: no 5xx, no redirect, and every subscriber unsubscribed in the database afterwards.
For scale, the same client then sends as many GET /healthz (one trivial query, no write) to the
same server: the ratio says what an unsubscribe costs over the HTTP round trip itself, which
dominates on a slow loopback.
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.adapters.store import NewSubscriber, open_store  # noqa: E402
from newsletter.adapters.tokens import Purpose, TokenSigner  # noqa: E402
from newsletter.domain import ConsentSource, SubscriberStatus  # noqa: E402
from newsletter.domain.addresses import normalise_address  # noqa: E402
from testkit.net import free_port  # noqa: E402
from testkit.serve import hammer_with_threads, start_serve  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"


def populate(url: str, count: int) -> list[str]:
    """``count`` active subscribers; their unsubscribe tokens."""
    signer = TokenSigner(SECRET)
    with open_store(url) as store:
        store.add_many(
            [
                NewSubscriber(
                    address=normalise_address(f"lecteur.{n}@example.com"),
                    name="",
                    locale="",
                    categories=(),
                    status=SubscriberStatus.ACTIVE,
                    consent_source=ConsentSource.CLI,
                    consent_detail="bench",
                )
                for n in range(count)
            ]
        )
        return [
            signer.sign(Purpose.UNSUBSCRIBE, s.id, s.email_key)
            for s in store.iter_subscribers(SubscriberStatus.ACTIVE)
        ]


def start_server(folder: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    return start_serve(
        folder,
        port,
        NEWSLETTER_DATABASE_URL=url,
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
    )


def hammer(
    port: int, tokens: list[str], concurrency: int, *, baseline: bool = False
) -> tuple[float, dict[int, int]]:
    """``concurrency`` threads, each with one keep-alive connection, share the requests: the
    one-click unsubscribe POSTs, or as many GET /healthz for the ``baseline``."""
    body = urlencode({"List-Unsubscribe": "One-Click"})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    def send(connection: http.client.HTTPConnection, token: str) -> http.client.HTTPResponse:
        if baseline:
            connection.request("GET", "/healthz")
        else:
            connection.request("POST", f"/unsubscribe/{token}", body=body, headers=headers)
        response = connection.getresponse()
        assert response.getheader("location") is None, "a one-click POST must never redirect"
        return response

    return hammer_with_threads(port, tokens, concurrency, send)


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
        elapsed, statuses = hammer(port, tokens, args.concurrency)
        health_elapsed, _ = hammer(port, tokens, args.concurrency, baseline=True)
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
