"""Click counts, receiving end (issue 15): the /c/ redirect and the /o/ pixel through the real
web app over HTTP on a SQLite file, the counting rule, the fold, `newsletter stats` through the
real CLI, forgetting a reader, and a flood of clicks.

Editions reach the ledger as a send leaves them: frozen with their articles, then sent to the
aiosmtpd server by the real delivery service. Click tokens are made with ClickSigner, as the
send side puts them into the email.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from newsletter.adapters.store import open_store
from newsletter.adapters.tokens import ClickSigner, Purpose
from newsletter.domain import Article
from newsletter.domain.clicks import (
    Click,
    Tally,
    is_prefetch,
    is_scanner_agent,
    scanner_messages,
    tally,
    with_campaign,
)
from newsletter.domain.curation import article_ref
from newsletter.services.delivery import send_edition
from tests.support import TEST_SECRET, SmtpServer, base_env, run_cli
from tests.web_support import LiveApp, running_app

DAY = date(2026, 1, 27)
OTHER_DAY = date(2026, 1, 26)
UTM = "utm_source=newsletter&utm_medium=email&utm_campaign=lettre-{date}"
BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.2 Safari/605.1.15"
)
READERS = ("amina@example.com", "youssef@example.com", "salma@example.com")


def articles_for(day: date) -> list[Article]:
    """Four articles in three sections; the first URL has its own query (one utm_source that
    must win) and a fragment."""
    published = datetime(day.year, day.month, day.day, 5, tzinfo=UTC)
    spec = (
        ("Politique", "Réforme des régions adoptée", "?id=5&utm_source=site#suite"),
        ("Politique", "Le budget voté", ""),
        ("Économie", "La Bourse de Casablanca monte", ""),
        ("Sport", "Le Raja s’impose au derby", ""),
    )
    return [
        Article(
            uid=f"https://journal.example/{day}/{n}",
            title=title,
            link=f"https://journal.example/{day}/{n}{tail}",
            published=published - timedelta(minutes=n),
            categories=(section,),
        )
        for n, (section, title, tail) in enumerate(spec)
    ]


def ref(day: date, n: int) -> str:
    return article_ref(f"https://journal.example/{day}/{n}")


@pytest.fixture
def smtp(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    return smtp_factory()


def start(tmp_path: Path, smtp: SmtpServer, **env: str) -> Iterator[LiveApp]:
    settings = {"NEWSLETTER_TRACK_CLICKS": "true", "NEWSLETTER_UTM": UTM, **env}
    with running_app(tmp_path, smtp, **settings) as live:
        ids = [live.add(address) for address in READERS]
        for day in (OTHER_DAY, DAY):
            live.store.freeze_edition(day, articles_for(day))
            assert send_edition(live.store, live.settings, day).complete
        live.ids = ids  # type: ignore[attr-defined]
        yield live


@pytest.fixture
def live(tmp_path: Path, smtp: SmtpServer) -> Iterator[LiveApp]:
    yield from start(tmp_path, smtp)


def link(live: LiveApp, day: date, article: str, subscriber_id: int) -> str:
    return f"/c/{ClickSigner(TEST_SECRET).click(day, article, subscriber_id)}"


def click_rows(live: LiveApp, wait_for: int | None = None) -> list[tuple[str, str, int]]:
    """The stored clicks (edition, ref, subscriber); with ``wait_for``, until that many are
    there (the flusher writes within a second), else after the flusher had its chance."""
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(live.settings.database_url.removeprefix("sqlite:///")) as db:
            rows = db.execute(
                "SELECT edition_date, article_ref, subscriber_id FROM clicks ORDER BY id"
            ).fetchall()
        if wait_for is None:
            if time.monotonic() > deadline - 7.5:  # 2.5 s: more than two flushes
                return rows
        elif len(rows) >= wait_for or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def get(http: httpx.Client, path: str, **headers: str) -> httpx.Response:
    return http.get(path, headers={"User-Agent": BROWSER, **headers})


# -- the redirect --------------------------------------------------------------------------------


def test_a_click_lands_exactly_on_the_article_with_the_campaign_merged(live: LiveApp) -> None:
    reader = live.ids[0]  # type: ignore[attr-defined]
    with live.client() as http:
        first = get(http, link(live, DAY, ref(DAY, 0), reader))
        second = get(http, link(live, DAY, ref(DAY, 2), reader))
    assert first.status_code == 302
    # The article's own utm_source wins; its query is kept as it was; {date} is the edition's.
    assert first.headers["location"] == (
        f"https://journal.example/{DAY}/0?id=5&utm_source=site"
        f"&utm_medium=email&utm_campaign=lettre-{DAY}#suite"
    )
    assert second.headers["location"] == (
        f"https://journal.example/{DAY}/2?utm_source=newsletter&utm_medium=email"
        f"&utm_campaign=lettre-{DAY}"
    )
    assert first.headers["cache-control"] == "no-store"
    assert first.headers["referrer-policy"] == "no-referrer"
    assert click_rows(live, 2) == [
        (DAY.isoformat(), ref(DAY, 0), reader),
        (DAY.isoformat(), ref(DAY, 2), reader),
    ]


def test_bad_tokens_get_the_404_page_and_no_redirect(live: LiveApp) -> None:
    reader = live.ids[0]  # type: ignore[attr-defined]
    good = link(live, DAY, ref(DAY, 1), reader)
    head, _sep, signature = good.rpartition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    unsubscribe = live.token(Purpose.UNSUBSCRIBE, READERS[0])
    bad = [
        f"{head}.{flipped}",  # tampered signature
        good.replace(ref(DAY, 1), ref(DAY, 2)),  # another article, same signature
        good.replace(f".{reader}.", f".{reader + 1}."),  # another reader
        good[:-4],  # truncated
        head,  # no signature
        "/c/nothing-at-all",
        f"/c/{unsubscribe}",  # a valid token of another purpose
        link(live, DAY, ref(OTHER_DAY, 1), reader),  # another edition's article
        link(live, DAY, "abcdef", reader),  # an article no edition has (excluded, say)
        link(live, date(2025, 6, 1), ref(DAY, 1), reader),  # an edition never sent
        "/c/" + "A" * 5000,
    ]
    with live.client() as http:
        for path in bad:
            answer = get(http, path)
            assert answer.status_code == 404, path
            assert "location" not in answer.headers, path
            assert "<html" in answer.text.lower(), path  # the app's own page, localised
        assert get(http, good).status_code == 302
    assert click_rows(live, 1) == [(DAY.isoformat(), ref(DAY, 1), reader)]


def test_head_prefetches_scanners_and_test_sends_are_not_counted(live: LiveApp) -> None:
    reader, other, third = live.ids  # type: ignore[attr-defined]
    path = link(live, DAY, ref(DAY, 3), reader)
    with live.client() as http:
        head = http.head(path, headers={"User-Agent": BROWSER})
        assert head.status_code == 302
        assert head.headers["location"].startswith(f"https://journal.example/{DAY}/3?")
        for headers in (
            {"Sec-Purpose": "prefetch;prerender"},
            {"Purpose": "prefetch"},
            {"X-Moz": "prefetch"},
            {"X-Purpose": "preview"},
        ):
            assert get(http, path, **headers).status_code == 302
        for agent in (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) BingPreview/1.0b",
            "python-requests/2.31",
            "curl/8.5.0",
            "Go-http-client/1.1",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Barracuda Sentinel (EE)",
            "",
        ):
            answer = http.get(path, headers={"User-Agent": agent})
            assert answer.status_code == 302, agent
        # An editors' test message (subscriber 0): redirects, never counted.
        assert get(http, link(live, DAY, ref(DAY, 3), 0)).status_code == 302
        # The one that counts, from a real browser on another reader's link.
        assert get(http, link(live, DAY, ref(DAY, 3), other)).status_code == 302
    assert click_rows(live) == [(DAY.isoformat(), ref(DAY, 3), other)]
    assert third  # three readers received the edition


def test_old_links_redirect_but_count_nothing_when_tracking_is_off(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    for live in start(tmp_path, smtp, NEWSLETTER_TRACK_CLICKS="false"):
        reader = live.ids[0]  # type: ignore[attr-defined]
        with live.client() as http:
            answer = get(http, link(live, DAY, ref(DAY, 1), reader))
            assert answer.status_code == 302
            assert answer.headers["location"].startswith(f"https://journal.example/{DAY}/1")
            pixel = get(http, f"/o/{ClickSigner(TEST_SECRET).open(DAY, reader)}.gif")
            assert pixel.status_code == 200 and pixel.content.startswith(b"GIF89a")
        assert click_rows(live) == []


def test_the_open_pixel_counts_a_first_open_only_when_asked(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    for live in start(tmp_path, smtp, NEWSLETTER_TRACK_OPENS="true"):
        reader = live.ids[1]  # type: ignore[attr-defined]
        signer = ClickSigner(TEST_SECRET)
        with live.client() as http:
            for _ in range(2):
                pixel = get(http, f"/o/{signer.open(DAY, reader)}.gif")
                assert pixel.status_code == 200
                assert pixel.headers["content-type"] == "image/gif"
                assert pixel.headers["cache-control"] == "no-store"
            assert get(http, f"/o/{signer.open(DAY, reader)[:-3]}.gif").status_code == 404
        deadline = time.monotonic() + 5
        while live.store.open_count(DAY) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.2)
        assert live.store.open_count(DAY) == 1


def test_clicks_in_the_buffer_are_written_at_shutdown(tmp_path: Path, smtp: SmtpServer) -> None:
    for live in start(tmp_path, smtp):
        reader = live.ids[0]  # type: ignore[attr-defined]
        with live.client() as http:
            assert get(http, link(live, DAY, ref(DAY, 1), reader)).status_code == 302
        path = live.settings.database_url.removeprefix("sqlite:///")
    # The app stopped right after the click, before a flush was due: the lifespan wrote it.
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM clicks").fetchone() == (1,)


# -- counting readers, not scanners -------------------------------------------------------------


def test_a_scanner_opening_every_link_is_not_counted_a_reader_twice_is(live: LiveApp) -> None:
    scanner, reader, _third = live.ids  # type: ignore[attr-defined]
    with live.client() as http:
        # A gateway with a browser's user agent opens every link of the message in a second.
        for n in range(4):
            assert get(http, link(live, DAY, ref(DAY, n), scanner)).status_code == 302
        # A reader opens one article twice.
        for _ in range(2):
            assert get(http, link(live, DAY, ref(DAY, 2), reader)).status_code == 302
    assert len(click_rows(live, 6)) == 6  # all stored; the rule applies when counting
    tallies = live.store.article_tallies([DAY])
    assert tallies == {(DAY, ref(DAY, 2)): Tally(clicks=2, unique_clicks=1)}


def test_the_scanner_rule() -> None:
    at = datetime(2026, 1, 27, 7, 0, tzinfo=UTC)

    def clicks(subscriber: int, *moments: tuple[str, int]) -> list[Click]:
        return [Click(DAY, r, subscriber, at + timedelta(seconds=s)) for r, s in moments]

    scanner = clicks(1, ("aaaaaa", 0), ("bbbbbb", 1), ("cccccc", 2))
    slow = clicks(2, ("aaaaaa", 0), ("bbbbbb", 30), ("cccccc", 90))
    quick_then_later = clicks(3, ("aaaaaa", 0), ("bbbbbb", 1), ("cccccc", 2), ("aaaaaa", 600))
    two_quick = clicks(4, ("aaaaaa", 0), ("bbbbbb", 1))
    assert scanner_messages(scanner + slow + quick_then_later + two_quick) == {(DAY, 1)}
    counted = tally(scanner + slow + quick_then_later + two_quick)
    assert counted[(DAY, "aaaaaa")] == Tally(clicks=4, unique_clicks=3)
    assert counted[(DAY, "cccccc")] == Tally(clicks=2, unique_clicks=2)
    # A reader's browser, even on a phone made by CUBOT, is not a robot.
    assert not is_scanner_agent(BROWSER)
    assert not is_scanner_agent(
        "Mozilla/5.0 (Linux; Android 12; CUBOT X50) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/120.0 Mobile Safari/537.36"
    )
    assert is_scanner_agent("AhrefsBot/7.0") and is_scanner_agent("Baiduspider")
    assert is_prefetch({"sec-purpose": "prefetch"}) and not is_prefetch({"accept": "text/html"})


def test_the_campaign_merge() -> None:
    assert with_campaign("https://a.example/x", "", DAY) == "https://a.example/x"
    assert (
        with_campaign("https://a.example/x?utm_medium=rss&b=%C3%A9#f", "utm_medium=email&c=1", DAY)
        == "https://a.example/x?utm_medium=rss&b=%C3%A9&c=1#f"
    )
    assert with_campaign("https://a.example/", "d={date}", DAY) == "https://a.example/?d=2026-01-27"


# -- stats, retention, forgetting ----------------------------------------------------------------


def cli_env(live: LiveApp, **extra: str) -> dict[str, str]:
    return base_env(Path(live.settings.database_url.removeprefix("sqlite:///")).parent, **extra)


def test_stats_csv_and_text_through_the_real_cli(live: LiveApp, tmp_path: Path) -> None:
    first, second, _third = live.ids  # type: ignore[attr-defined]
    with live.client() as http:
        for subscriber, n in ((first, 0), (first, 0), (second, 0), (second, 3)):
            assert get(http, link(live, DAY, ref(DAY, n), subscriber)).status_code == 302
    click_rows(live, 4)
    env = cli_env(live)
    done = run_cli("stats", "--date", DAY.isoformat(), "--csv", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == ["section", "title", "url", "clicks", "unique_clicks"]
    by_url = {row[2]: row for row in rows[1:]}
    assert len(rows) == 5  # one row per article, no totals
    assert by_url[f"https://journal.example/{DAY}/0?id=5&utm_source=site#suite"][3:] == ["3", "2"]
    assert by_url[f"https://journal.example/{DAY}/3"] == [
        "Sport",
        "Le Raja s’impose au derby",
        f"https://journal.example/{DAY}/3",
        "1",
        "1",
    ]
    assert by_url[f"https://journal.example/{DAY}/1"][3:] == ["0", "0"]
    text = run_cli("stats", env=env, cwd=tmp_path)  # default: the latest sent edition
    assert text.returncode == 0, text.stderr
    assert f"edition {DAY}: 3 messages sent" in text.stdout
    assert "Politique" in text.stdout and "(section total)" in text.stdout
    assert "total: 4 clicks, 3 unique clicks" in text.stdout
    unknown = run_cli("stats", "--date", "2025-06-01", env=env, cwd=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().count("\n") == 0 and "2025-06-01" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad = run_cli("stats", "--date", "hier", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_stats_with_no_sent_edition(tmp_path: Path) -> None:
    done = run_cli("stats", env=base_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "no edition was sent yet" in done.stderr and "Traceback" not in done.stderr


def test_the_fold_keeps_the_counts_and_deletes_the_rows(live: LiveApp, tmp_path: Path) -> None:
    first, second, scanner = live.ids  # type: ignore[attr-defined]
    old = datetime.now(UTC) - timedelta(days=40)
    live.store.record_clicks(
        [
            Click(OTHER_DAY, ref(OTHER_DAY, 1), first, old),
            Click(OTHER_DAY, ref(OTHER_DAY, 1), first, old + timedelta(minutes=5)),
            Click(OTHER_DAY, ref(OTHER_DAY, 1), second, old + timedelta(hours=1)),
            *(Click(OTHER_DAY, ref(OTHER_DAY, n), scanner, old) for n in range(4)),
            # a message of another edition, recent: stays a row
            Click(DAY, ref(DAY, 2), second, datetime.now(UTC)),
        ]
    )
    before = live.store.article_tallies([OTHER_DAY])
    assert before[(OTHER_DAY, ref(OTHER_DAY, 1))] == Tally(3, 2)
    env = cli_env(live)
    done = run_cli("stats", "--date", OTHER_DAY.isoformat(), "--csv", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    counts = {row[2]: row[3:] for row in csv.reader(io.StringIO(done.stdout))}
    assert counts[f"https://journal.example/{OTHER_DAY}/1"] == ["3", "2"]
    assert counts[f"https://journal.example/{OTHER_DAY}/2"] == ["0", "0"]
    path = live.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT subscriber_id FROM clicks").fetchall() == [(second,)]
        totals = db.execute(
            "SELECT article_ref, clicks, unique_clicks FROM click_totals ORDER BY article_ref"
        ).fetchall()
    assert totals == [(ref(OTHER_DAY, 1), 3, 2)]  # the scanner's message folded to nothing
    assert live.store.article_tallies([OTHER_DAY]) == before
    assert live.store.fold_clicks(datetime.now(UTC) - timedelta(days=30)) == 0


def test_forgetting_a_reader_removes_their_clicks_and_opens(live: LiveApp, tmp_path: Path) -> None:
    first, second, _third = live.ids  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    live.store.record_clicks(
        [Click(DAY, ref(DAY, 1), first, now), Click(DAY, ref(DAY, 1), second, now)]
    )
    live.store.record_opens([(DAY, first, now), (DAY, second, now)])
    path = live.settings.database_url.removeprefix("sqlite:///")
    with open_store(live.settings.database_url) as store, store.read() as c:
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    done = run_cli("subscribers", "forget", READERS[0], env=cli_env(live), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT subscriber_id FROM clicks").fetchall() == [(second,)]
        assert db.execute("SELECT subscriber_id FROM opens").fetchall() == [(second,)]
    # A click still in a buffer when its reader is forgotten is dropped, not an error.
    assert live.store.record_clicks([Click(DAY, ref(DAY, 1), first, now)]) == 0


def test_a_reader_who_turned_tracking_off_is_not_counted(live: LiveApp) -> None:
    first, second, _third = live.ids  # type: ignore[attr-defined]
    path = live.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE subscribers SET clicks_opted_out_at = '2026-01-27 08:00:00' WHERE id = ?",
            (first,),
        )
    with live.client() as http:
        assert get(http, link(live, DAY, ref(DAY, 1), first)).status_code == 302
        assert get(http, link(live, DAY, ref(DAY, 1), second)).status_code == 302
    assert click_rows(live) == [(DAY.isoformat(), ref(DAY, 1), second)]


# -- a flood -------------------------------------------------------------------------------------


def test_a_flood_of_clicks_counts_right_and_unsubscribes_still_answer(live: LiveApp) -> None:
    readers = live.ids  # type: ignore[attr-defined]
    per_reader, concurrency = 1000, 50
    paths = [link(live, DAY, ref(DAY, 2), r) for r in readers for _ in range(per_reader)]
    unsubscribe = live.token(Purpose.UNSUBSCRIBE, READERS[2])

    async def flood() -> tuple[list[int], float]:
        statuses: list[int] = []
        queue = list(paths)
        async with httpx.AsyncClient(
            base_url=live.url, headers={"User-Agent": BROWSER}, timeout=30
        ) as client:

            async def worker() -> None:
                while queue:
                    statuses.append((await client.get(queue.pop())).status_code)

            workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
            await asyncio.sleep(0.5)  # in the thick of it
            started = time.monotonic()
            answer = await client.post(
                f"/unsubscribe/{unsubscribe}", data={"List-Unsubscribe": "One-Click"}
            )
            took = time.monotonic() - started
            assert answer.status_code == 200, answer.text
            assert queue, "the flood was over before the unsubscribe"
            await asyncio.gather(*workers)
        return statuses, took

    statuses, took = asyncio.run(flood())
    assert statuses.count(302) == len(paths)
    assert took < 2.0, f"an unsubscribe took {took:.2f}s during the flood"
    assert len(click_rows(live, len(paths))) == len(paths)
    # (the third reader unsubscribed: their clicks before that still count)
    assert live.store.article_tallies([DAY]) == {
        (DAY, ref(DAY, 2)): Tally(clicks=len(paths), unique_clicks=len(readers))
    }


def test_the_editors_figures_top_articles_and_section_trend(live: LiveApp) -> None:
    from newsletter.services.stats import section_trend, top_articles

    first, second, _third = live.ids  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    live.store.record_clicks(
        [
            Click(DAY, ref(DAY, 3), first, now),
            Click(DAY, ref(DAY, 3), second, now + timedelta(minutes=1)),
            Click(DAY, ref(DAY, 0), first, now + timedelta(minutes=2)),
            Click(DAY, ref(DAY, 1), second, now + timedelta(minutes=3)),
            Click(OTHER_DAY, ref(OTHER_DAY, 2), first, now),
        ]
    )
    top = top_articles(live.store, live.settings, DAY, limit=2)
    assert [(a.title, a.clicks, a.unique_clicks) for a in top] == [
        ("Le Raja s’impose au derby", 2, 2),
        ("Réforme des régions adoptée", 1, 1),
    ]
    trend = section_trend(live.store, live.settings)
    assert [(t.day, t.sent) for t in trend] == [(OTHER_DAY, 3), (DAY, 3)]
    assert dict(trend[1].rates) == pytest.approx(
        {"Politique": 2 / 3, "Économie": 0, "Sport": 2 / 3}
    )
    assert dict(trend[0].rates) == pytest.approx({"Politique": 0, "Économie": 1 / 3, "Sport": 0})


# -- the whole loop: the sent mail's link, the redirect, the editors' page ---------------------


def test_a_link_in_the_sent_mail_lands_on_the_article_and_shows_on_the_editors_page(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    from tests.web_support import ADMIN_PASSWORD

    for live in start(tmp_path, smtp, NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD):
        reader = live.ids[0]  # type: ignore[attr-defined]
        mails = [m for m in smtp.messages() if m["To"].addresses[0].addr_spec == READERS[0]]
        html = next(
            body
            for body in (m.get_body(preferencelist=("html",)).get_content() for m in mails)  # type: ignore[union-attr]
            if "mardi 27 janvier 2026" in body  # the masthead's date: this edition's mail
        )
        tracked = sorted(set(re.findall(rf'href="{re.escape(live.url)}(/c/[^"]+)"', html)))
        assert len(tracked) == 4  # one per article, however many links point at it
        with live.client() as http:
            # HEAD answers like GET and counts nothing: every link lands on its article
            landed = [
                http.head(path, headers={"User-Agent": BROWSER}).headers["location"]
                for path in tracked
            ]
            assert "https://journal.example/2026-01-27/3?utm_source=newsletter" in " ".join(landed)
            assert all(url.startswith("https://journal.example/2026-01-27/") for url in landed)
            # the reader opens two of them (all four within seconds would read as a scanner)
            for path in tracked[:2]:
                assert get(http, path).status_code == 302
        rows = click_rows(live, wait_for=2)
        assert len(rows) == 2 and {r[2] for r in rows} == {reader}
        with httpx.Client(base_url=live.url, auth=("editor", ADMIN_PASSWORD)) as editors:
            page = editors.get("/editor")
        assert page.status_code == 200
        card = page.text.split('class="card reading"', 1)[1]
        assert "Ce que lisent les lecteurs" in card and "<script" not in card
        assert card.count("<polyline") >= 3  # a line per section (Politique, Économie, Sport)
        assert "journal.example/2026-01-27/" in card  # the most read articles, linked
