"""The web version and the public archive, through the real web app over HTTP on a SQLite file.

Editions reach the ledger as a send leaves them: frozen with their articles, then sent to the
aiosmtpd server by the real delivery service (or, for the many editions of the pagination test,
frozen and marked sent directly).
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import httpx
import pytest

from newsletter.adapters.render import PREFERENCES_SLOT, UNSUBSCRIBE_SLOT, Renderer
from newsletter.adapters.resources import templates_dir
from newsletter.adapters.tokens import Purpose
from newsletter.domain import Article
from newsletter.services.archive import LruCache
from newsletter.services.delivery import send_edition
from tests.support import SmtpServer
from tests.web_support import LiveApp, running_app, wait_mails

DAY = date(2026, 1, 27)
EARLIER = date(2026, 1, 26)
HELD = date(2026, 1, 28)  # frozen, then held before any message went out
PARTLY = date(2026, 1, 29)  # one reader has it; the rest of its send is still to come
READER = "lectrice@example.com"


def of_edition(message: object, day_text: str) -> bool:
    """Whether a received mail is the edition dated ``day_text`` (the Subject is its headline:
    the date is in the masthead)."""
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[attr-defined]
    return day_text in html


def articles_for(day: date) -> list[Article]:
    """Four articles in four sections (the last in none: "Autres actualités")."""
    published = datetime(day.year, day.month, day.day, 5, tzinfo=UTC)  # 06:00 in Casablanca
    sections = (("Politique",), ("Économie",), ("Sport",), ())
    titles = (
        f"Réforme des régions adoptée ({day.isoformat()})",
        "Budget & finances : la loi de finances rectificative",
        "Le Raja s’impose au derby",
        "Météo : un hiver doux sur le littoral",
    )
    return [
        Article(
            uid=f"https://journal.example/{day.isoformat()}/{n}",
            title=title,
            link=f"https://journal.example/{day.isoformat()}/{n}",
            published=published - timedelta(minutes=n),
            categories=categories,
            author="Rédaction",
            summary_html=f"<p>Résumé {n} de l’article.</p>",
        )
        for n, (title, categories) in enumerate(zip(titles, sections, strict=True))
    ]


def send(live: LiveApp, day: date) -> None:
    """Edition ``day`` sent to every active reader through the relay, as `newsletter send` does."""
    live.store.freeze_edition(day, articles_for(day))
    report = send_edition(live.store, live.settings, day)
    assert report.complete, report


@pytest.fixture
def smtp(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    return smtp_factory()


@pytest.fixture
def live(tmp_path: Path, smtp: SmtpServer) -> Iterator[LiveApp]:
    with running_app(tmp_path, smtp) as app:
        yield app


@pytest.fixture
def archived(live: LiveApp) -> LiveApp:
    """Two editions sent to two readers, one held before its send, one partly sent."""
    live.add(READER)
    live.add("lecteur@example.com")
    send(live, EARLIER)
    send(live, DAY)
    live.store.freeze_edition(HELD, articles_for(HELD))
    live.store.set_held(HELD, True)
    live.store.freeze_edition(PARTLY, articles_for(PARTLY))
    [first, *_rest] = live.store.claim_deliveries(PARTLY, "test-owner", 1, 30)
    live.store.mark_sent([first.delivery_id], "test-owner")
    return live


def edition_links(html: str) -> list[str]:
    return re.findall(r'<a class="edition-date" href="[^"]*/archive/(\d{4}-\d\d-\d\d)"', html)


def raw_get(live: LiveApp, path: str) -> tuple[int, str]:
    """GET ``path`` exactly as written (httpx would resolve "..")."""
    parts = urlsplit(live.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


# -- /archive ------------------------------------------------------------------------------------


def test_the_archive_lists_what_went_out_newest_first(archived: LiveApp) -> None:
    with archived.client() as http_client:
        page = http_client.get("/archive")
    assert page.status_code == 200
    # The partly sent edition is in (a reader has it); the held one never went out.
    assert edition_links(page.text) == ["2026-01-29", "2026-01-27", "2026-01-26"]
    assert "mardi 27 janvier 2026" in page.text
    assert "Réforme des régions adoptée (2026-01-27)" in page.text  # the lead headline
    assert page.text.count("4 articles") == 3
    assert "Archives" in page.text and "Toutes les éditions de «\xa0La Lettre\xa0»" in page.text
    assert 'name="robots"' not in page.text  # public: the list may be indexed
    assert page.headers["cache-control"] == "public, max-age=300"
    feed_link = re.search(r'<link rel="alternate" type="application/atom\+xml"[^>]*>', page.text)
    assert feed_link and f'href="{archived.url}/archive.atom"' in feed_link.group(0)


def test_an_empty_archive_says_so(live: LiveApp) -> None:
    with live.client() as http_client:
        page = http_client.get("/archive")
        feed = http_client.get("/archive.atom")
    assert page.status_code == 200 and "Aucune édition n’a encore été envoyée." in page.text
    parsed = feedparser.parse(feed.content)
    assert not parsed.bozo and parsed.version == "atom10" and parsed.entries == []


def test_the_archive_pages_by_fifty_with_an_older_link(live: LiveApp) -> None:
    first = date(2025, 11, 1)
    days = [first + timedelta(days=n) for n in range(53)]
    for day in days:
        live.store.freeze_edition(day, articles_for(day)[:1])
        live.store.mark_edition_sent(day)
    with live.client() as http_client:
        newest = http_client.get("/archive")
        shown = edition_links(newest.text)
        assert shown == [d.isoformat() for d in reversed(days[3:])]
        older = re.search(r'<a href="([^"]+)" rel="next">Éditions précédentes</a>', newest.text)
        assert older, newest.text[-800:]
        assert older.group(1) == f"{live.url}/archive?before={days[3].isoformat()}"
        second = http_client.get(older.group(1).removeprefix(live.url))
        assert edition_links(second.text) == [d.isoformat() for d in reversed(days[:3])]
        assert 'rel="next"' not in second.text
        assert f'<a href="{live.url}/archive">Dernières éditions</a>' in second.text
        assert "1 article" in second.text
        # Past the oldest there is no page, and a malformed cursor is no page either.
        for before in (days[0].isoformat(), "2026-13-45", "hier", ""):
            assert http_client.get("/archive", params={"before": before}).status_code == 404


# -- /archive/YYYY-MM-DD -------------------------------------------------------------------------


def test_the_web_version_is_the_edition_as_sent_with_no_personal_link(
    archived: LiveApp,
) -> None:
    with archived.client() as http_client:
        page = http_client.get("/archive/2026-01-27")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    html = page.text
    for section in ("Politique", "Économie", "Sport", "Autres actualités"):
        assert f">{section}</h2>" in html
    for article in articles_for(DAY):
        assert article.link in html
    assert "Budget &amp; finances" in html  # escaped as in the email
    # Every article the readers got is on the page.
    mails = wait_mails(archived, 4)
    mailed = next(m for m in mails if of_edition(m, "27 janvier"))
    mail_html = mailed.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    for link in set(re.findall(r'href="(https://journal\.example/[^"]+)"', mail_html)):
        assert link in html
    # Nothing personal: no token link, no slot, no reader's address, no sign-up token.
    for personal in (
        "/unsubscribe/",
        "/preferences/",
        "/confirm/",
        UNSUBSCRIBE_SLOT,
        PREFERENCES_SLOT,
    ):
        assert personal not in html
    for address in (READER, "lecteur@example.com"):
        assert address not in html
        token = archived.token(Purpose.UNSUBSCRIBE, address)
        assert token not in html
    assert f'href="{archived.url}/subscribe"' in html  # a forwarded copy's reader can sign up
    assert 'name="robots"' not in html and "x-robots-tag" not in page.headers


def test_the_web_version_may_show_images_and_styles_but_runs_no_script(
    archived: LiveApp,
) -> None:
    with archived.client() as http_client:
        page = http_client.get("/archive/2026-01-27")
    csp = {
        part.strip().split(" ", 1)[0]: part.strip().split(" ", 1)[1]
        for part in page.headers["content-security-policy"].split(";")
    }
    assert csp["script-src"] == "'none'" and csp["default-src"] == "'none'"
    assert csp["style-src"] == "'unsafe-inline'" and csp["img-src"] == "https:"
    assert csp["frame-ancestors"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_an_edition_page_is_cached_and_revalidated(archived: LiveApp) -> None:
    with archived.client() as http_client:
        page = http_client.get("/archive/2026-01-27")
        assert page.headers["cache-control"] == "public, max-age=86400"
        etag, modified = page.headers["etag"], page.headers["last-modified"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        record = archived.store.edition_record(DAY)
        assert record is not None and record.frozen_at is not None
        assert modified == format_datetime(record.frozen_at.replace(microsecond=0), usegmt=True)

        again = http_client.get("/archive/2026-01-27")
        assert again.content == page.content and again.headers["etag"] == etag

        for headers in (
            {"If-None-Match": etag},
            {"If-None-Match": f'"other", W/{etag}'},
            {"If-None-Match": "*"},
            {"If-Modified-Since": modified},
            {"If-Modified-Since": format_datetime(datetime.now(UTC), usegmt=True)},
        ):
            revalidated = http_client.get("/archive/2026-01-27", headers=headers)
            assert revalidated.status_code == 304, headers
            assert revalidated.content == b""
            assert revalidated.headers["etag"] == etag
            assert revalidated.headers["cache-control"] == "public, max-age=86400"
        stale_day = record.frozen_at - timedelta(days=1)
        for headers in (
            {"If-None-Match": '"something-else"'},
            {"If-None-Match": '"something-else"', "If-Modified-Since": modified},  # ETag wins
            {"If-Modified-Since": format_datetime(stale_day, usegmt=True)},
            {"If-Modified-Since": "not a date"},
        ):
            full = http_client.get("/archive/2026-01-27", headers=headers)
            assert full.status_code == 200 and full.content == page.content, headers


def test_a_burst_of_readers_renders_the_page_once(
    archived: LiveApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: list[date] = []
    original = Renderer.web_page
    lock = threading.Lock()

    def counting(self: Renderer, edition: object, **options: bool) -> str:
        with lock:
            renders.append(edition.date)  # type: ignore[attr-defined]
        time.sleep(0.2)  # a slow render: the other readers arrive while it runs
        return original(self, edition, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(Renderer, "web_page", counting)

    def read(_n: int) -> bytes:
        with httpx.Client(base_url=archived.url, timeout=30) as client:
            response = client.get("/archive/2026-01-26")
            assert response.status_code == 200
            return response.content

    with ThreadPoolExecutor(max_workers=12) as pool:
        bodies = list(pool.map(read, range(24)))
    assert len(set(bodies)) == 1
    assert renders == [EARLIER]


def test_unknown_malformed_and_unsent_editions_are_the_404_page(archived: LiveApp) -> None:
    paths = [
        "/archive/2026-01-25",  # no such edition
        f"/archive/{HELD.isoformat()}",  # frozen, held before any message went out
        "/archive/2026-13-45",
        "/archive/2026-02-30",
        "/archive/27-01-2026",
        "/archive/2026-01-27x",
        "/archive/99999-01-01",
        "/archive/0000-01-01",
        "/archive/%00",
        "/archive/2026-01-27/extra",
    ]
    with archived.client() as http_client:
        for path in paths:
            response = http_client.get(path)
            assert response.status_code == 404, path
            assert "Page introuvable" in response.text, path
            assert "no-store" in response.headers["cache-control"]
    for path in ("/archive/../x", "/archive/..%2Fx", "/archive/%2e%2e/etc/passwd"):
        status, body = raw_get(archived, path)
        assert status == 404 and "Page introuvable" in body, (path, status)


def test_the_partly_sent_edition_is_readable(archived: LiveApp) -> None:
    with archived.client() as http_client:
        page = http_client.get(f"/archive/{PARTLY.isoformat()}")
    assert page.status_code == 200
    assert "Réforme des régions adoptée (2026-01-29)" in page.text


# -- the Atom feed -------------------------------------------------------------------------------


def test_the_atom_feed_lists_the_editions_with_their_web_version(archived: LiveApp) -> None:
    with archived.client() as http_client:
        response = http_client.get("/archive.atom")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=300"
    feed = feedparser.parse(response.content)
    assert not feed.bozo, feed.bozo_exception
    assert feed.version == "atom10"
    assert feed.feed.id == f"{archived.url}/archive"
    assert feed.feed.title == "La Lettre\xa0: toutes les éditions"
    assert feed.feed.updated_parsed is not None
    assert feed.feed.language == "fr"
    links = {link.rel: link.href for link in feed.feed.links}
    assert links == {"self": f"{archived.url}/archive.atom", "alternate": f"{archived.url}/archive"}
    assert [e.link for e in feed.entries] == [
        f"{archived.url}/archive/{d}" for d in ("2026-01-29", "2026-01-27", "2026-01-26")
    ]
    entry = feed.entries[1]
    assert entry.id == f"{archived.url}/archive/2026-01-27"
    assert entry.title == "mardi 27 janvier 2026\xa0: Réforme des régions adoptée (2026-01-27)"
    assert entry.summary == "4 articles"
    record = archived.store.edition_record(DAY)
    assert record is not None and record.frozen_at is not None and record.finished_at
    assert entry.published_parsed[:6] == record.frozen_at.timetuple()[:6]
    assert entry.updated_parsed[:6] == record.finished_at.timetuple()[:6]
    # Each entry's link opens that edition's page.
    with archived.client() as http_client:
        assert http_client.get(entry.link.removeprefix(archived.url)).status_code == 200


def test_a_hostile_headline_is_escaped_in_the_feed_and_the_list(live: LiveApp) -> None:
    hostile = 'Fin ]]> <b>gras</b> & "guillemets" <script>alert(1)</script>\x0b\x00 é'
    article = Article(
        uid="hostile",
        title=hostile,
        link="https://journal.example/hostile",
        published=datetime(2026, 1, 27, 5, tzinfo=UTC),
    )
    live.store.freeze_edition(DAY, [article])
    live.store.mark_edition_sent(DAY)
    with live.client() as http_client:
        feed = feedparser.parse(http_client.get("/archive.atom").content)
        page = http_client.get("/archive").text
    assert not feed.bozo, feed.bozo_exception
    [entry] = feed.entries
    assert "<script>" not in entry.title and "alert(1)" not in entry.title
    assert "&" in entry.title and '"guillemets"' in entry.title and "]]>" in entry.title
    assert "<script>" not in page and "<b>gras" not in page


# -- NEWSLETTER_ARCHIVE ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["unlisted", "off"])
def test_unlisted_and_off(tmp_path: Path, smtp: SmtpServer, mode: str) -> None:
    with running_app(tmp_path, smtp, NEWSLETTER_ARCHIVE=mode) as live:
        live.add(READER)
        send(live, DAY)
        with live.client() as http_client:
            for path in ("/archive", "/archive.atom", "/archive?before=2026-02-01"):
                response = http_client.get(path)
                assert response.status_code == 404, path
                assert "Page introuvable" in response.text
            page = http_client.get("/archive/2026-01-27")
            if mode == "off":
                assert page.status_code == 404 and "Page introuvable" in page.text
                return
            # Unlisted: reachable from the emails' link, but no search engine may keep it.
            assert page.status_code == 200
            assert page.headers["x-robots-tag"] == "noindex"
            head = page.text.split("</head>", 1)[0]
            assert head.count('<meta name="robots" content="noindex">') == 1
            assert page.text.startswith("<!DOCTYPE html>")
            assert "Réforme des régions adoptée (2026-01-27)" in page.text
            revalidated = http_client.get(
                "/archive/2026-01-27", headers={"If-None-Match": page.headers["etag"]}
            )
            assert revalidated.status_code == 304
            assert revalidated.headers["x-robots-tag"] == "noindex"


# -- the email's link to its web version ---------------------------------------------------------


@pytest.mark.skipif(
    "web_version_url" not in (templates_dir() / "digest.html").read_text(encoding="utf-8"),
    reason="the email template does not link its web version yet (issue 13, main session)",
)
def test_a_sent_email_links_its_web_version_in_both_parts(archived: LiveApp) -> None:
    web_version = f"{archived.url}/archive/2026-01-27"
    mails = wait_mails(archived, 4)
    mailed = [m for m in mails if of_edition(m, "27 janvier")]
    assert len(mailed) == 2
    for message in mailed:
        html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert f'href="{web_version}"' in html
        assert web_version in text
    with archived.client() as http_client:
        assert http_client.get(web_version.removeprefix(archived.url)).status_code == 200


# -- the pieces ----------------------------------------------------------------------------------


def test_the_lru_keeps_the_most_recently_used() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2
