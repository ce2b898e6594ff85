"""The click redirect under load, side by side with /healthz (not a test: prints figures).

    .venv/bin/python bench/bench_clicks.py [--clicks 10000] [--concurrency 50] [--readers 100]

Starts the real server (`newsletter serve`, uvicorn, one process, NEWSLETTER_TRACK_CLICKS=true)
on a free loopback port over a fresh SQLite file holding --readers active subscribers and one
frozen, sent edition. Then --concurrency async httpx clients (one AsyncClient, keep-alive) send
--clicks GET /c/TOKEN on one article (each reader's own link, round robin), and as many
GET /healthz in the same run. Prints both rates and their ratio (issue 15's target: the redirect
at least 0.5 of /healthz), the 5xx count, and, after the server's clean stop (its lifespan writes
the last buffered clicks), whether every click was stored: rows in `clicks` == clicks sent, and
the counted clicks of the article (the scanner rule applied) the same.
The client runs on the same machine as the server: on 2 cores httpx's async client tops out
near 120 requests/s whatever it asks (bench_unsubscribe.py found the same), so ``--client
threads`` runs the same requests from --concurrency threads with plain http.client keep-alive
connections instead, which measures the server rather than the client.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.adapters.store import NewSubscriber, open_store  # noqa: E402
from newsletter.adapters.tokens import ClickSigner  # noqa: E402
from newsletter.domain import Article, ConsentSource, SubscriberStatus  # noqa: E402
from newsletter.domain.addresses import normalise_address  # noqa: E402
from newsletter.domain.curation import article_ref  # noqa: E402
from testkit.net import free_port  # noqa: E402
from testkit.serve import hammer_with_threads, start_serve  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
DAY = date(2026, 1, 27)
ARTICLE = Article(
    uid="https://journal.example/2026/01/27/reforme",
    title="Réforme des régions adoptée",
    link="https://journal.example/2026/01/27/reforme?id=5",
    published=datetime(2026, 1, 27, 5, tzinfo=UTC),
    categories=("Politique",),
)


def populate(url: str, readers: int) -> list[str]:
    """``readers`` active subscribers and edition DAY frozen and sent; each reader's click token."""
    signer = ClickSigner(SECRET)
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
                for n in range(readers)
            ]
        )
        store.freeze_edition(DAY, [ARTICLE])
        store.mark_edition_sent(DAY)
        ref = article_ref(ARTICLE.uid)
        return [
            signer.click(DAY, ref, s.id) for s in store.iter_subscribers(SubscriberStatus.ACTIVE)
        ]


def start_server(folder: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    return start_serve(
        folder,
        port,
        NEWSLETTER_DATABASE_URL=url,
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
        NEWSLETTER_TRACK_CLICKS="true",
        NEWSLETTER_UTM="utm_source=newsletter&utm_medium=email&utm_campaign=lettre-{date}",
    )


async def hammer(port: int, paths: list[str], concurrency: int) -> tuple[float, dict[int, int]]:
    """``concurrency`` tasks on one keep-alive AsyncClient share the requests."""
    pending = list(paths)
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    browser = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        limits=limits,
        timeout=60,
        headers={"User-Agent": browser},
    ) as client:

        async def worker() -> None:
            while pending:
                response = await client.get(pending.pop())
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, statuses


def hammer_threads(port: int, paths: list[str], concurrency: int) -> tuple[float, dict[int, int]]:
    """The same with threads, each with one http.client keep-alive connection."""
    browser = {
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
    }

    def send(connection: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
        connection.request("GET", path, headers=browser)
        return connection.getresponse()

    return hammer_with_threads(port, paths, concurrency, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--client", choices=("httpx", "threads"), default="httpx")
    args = parser.parse_args()

    def run(paths: list[str], concurrency: int) -> tuple[float, dict[int, int]]:
        if args.client == "threads":
            return hammer_threads(port, paths, concurrency)
        return asyncio.run(hammer(port, paths, concurrency))

    folder = Path(tempfile.mkdtemp(prefix="bench-clicks-"))
    url = f"sqlite:///{folder / 'bench.db'}"
    tokens = populate(url, args.readers)
    clicks = [f"/c/{tokens[n % len(tokens)]}" for n in range(args.clicks)]
    port = free_port()
    server = start_server(folder, url, port)
    try:
        run(clicks[:200], 10)  # warm-up, counted too
        elapsed, statuses = run(clicks[200:], args.concurrency)
        health_elapsed, health = run(["/healthz"] * (args.clicks - 200), args.concurrency)
    finally:
        server.send_signal(signal.SIGTERM)  # a clean stop: the lifespan writes the last clicks
        server.wait(30)
    measured = args.clicks - 200
    with open_store(url) as store:
        rows = len(store.click_rows(DAY))
        counted = store.article_tallies([DAY]).get((DAY, article_ref(ARTICLE.uid)))
    errors = sum(n for code, n in (*statuses.items(), *health.items()) if code >= 500)
    click_rate, health_rate = measured / elapsed, measured / health_elapsed
    print(f"{measured} clicks on one link, {args.concurrency} clients at a time ({args.client})")
    print(
        f"  GET /c/TOKEN: {click_rate:,.0f} requests/s; status codes {dict(sorted(statuses.items()))}"
    )
    print(
        f"  GET /healthz: {health_rate:,.0f} requests/s; status codes {dict(sorted(health.items()))}"
    )
    print(f"  ratio redirect / healthz: {click_rate / health_rate:.2f} (target >= 0.5)")
    print(f"  5xx: {errors}")
    print(
        f"  stored after the server's stop: {rows} rows for {args.clicks} clicks;"
        f" counted {counted.clicks if counted else 0} clicks,"
        f" {counted.unique_clicks if counted else 0} unique readers"
    )
    ok = (
        errors == 0
        and statuses.get(302) == measured
        and rows == args.clicks
        and counted is not None
        and counted.clicks == args.clicks
    )
    print("  OK: no 5xx, every click stored and counted" if ok else "  FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
