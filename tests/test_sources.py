"""Sources: real feed files, real JSON folders and a real HTTP server on loopback."""

from __future__ import annotations

import functools
import gzip
import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.adapters import resources
from newsletter.adapters.sources import (
    DEFAULT_USER_AGENT,
    SourceError,
    SourceReport,
    clean_line,
    merge_articles,
    merge_noting_duplicates,
    read_sources,
)
from newsletter.domain import Article, category_key

FEEDS = Path(__file__).parent / "data" / "feeds"
SAMPLE = resources.sample_dir() / "feed.xml"
MB = 1024 * 1024


def rss(*items: str) -> bytes:
    """A minimal WordPress-style RSS document around ``items``."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>T</title>'
        "<link>https://t.example.org/</link>" + "".join(items) + "</channel></rss>"
    ).encode()


def item(title: str, link: str, date: str, guid: str | None = None, extra: str = "") -> str:
    guid_xml = f'<guid isPermaLink="false">{guid}</guid>' if guid else ""
    return (
        f"<item><title>{title}</title><link>{link}</link><pubDate>{date}</pubDate>"
        f"{guid_xml}{extra}</item>"
    )


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


# ------------------------------------------------------------------------ a real HTTP server


@functools.cache
def gzip_bomb() -> bytes:
    """About 50 KB that inflate to 50 MB of spaces."""
    return gzip.compress(b" " * (50 * MB), compresslevel=9)


class FeedServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FeedHandler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent_bytes: dict[str, int] = {}
        self.feed = (FEEDS / "wordpress.xml").read_bytes()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-body is what several tests provoke on purpose

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


class FeedHandler(BaseHTTPRequestHandler):
    server: FeedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        route = getattr(
            self,
            "route_" + self.path.strip("/").split("?")[0].replace("-", "_").replace(".", "_"),
            None,
        )
        if route is None:
            self.answer(404, b"not found", "text/plain")
        else:
            route()

    def answer(self, status: int, body: bytes, kind: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def stream(self, chunks: Iterator[bytes], **headers: str) -> None:
        """A body without Content-Length: the client cannot know its size in advance."""
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.close_connection = True
        sent = 0
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:  # the client hung up: exactly what the size cap should do
            pass
        self.server.sent_bytes[self.path] = sent

    def route_feed_xml(self) -> None:
        self.answer(200, self.server.feed, "application/rss+xml; charset=UTF-8")

    def route_relative_xml(self) -> None:
        body = rss(item("Relatif", "/2026/01/26/relatif/", "Mon, 26 Jan 2026 10:00:00 +0000"))
        self.answer(200, body, "application/rss+xml; charset=UTF-8")

    def route_page_html(self) -> None:
        self.answer(200, (FEEDS / "page.html").read_bytes(), "text/html; charset=utf-8")

    def route_slow(self) -> None:
        time.sleep(2)
        self.answer(200, self.server.feed, "application/rss+xml")

    def route_trickle(self) -> None:
        # One byte every 0.1 s: each read is quick, only a whole-download deadline stops it.
        self.stream(iter(lambda: (time.sleep(0.1), b" ")[1], None))

    def route_loop(self) -> None:
        self.redirect("/loop")

    def route_moved(self) -> None:
        self.redirect("/feed.xml")

    def route_to_ftp(self) -> None:
        self.redirect("ftp://127.0.0.1/feed.xml")

    def route_to_file(self) -> None:
        self.redirect("file:///etc/passwd")

    def route_conditional(self) -> None:
        etag, modified = '"v1"', "Mon, 26 Jan 2026 10:00:00 GMT"
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.answer(200, self.server.feed, "application/rss+xml", ETag=etag, Last_Modified=modified)

    def route_huge(self) -> None:
        head = rss()[: -len(b"</channel></rss>")]
        filler = b"<!-- " + b"x" * (64 * 1024) + b" -->"
        self.stream(iter([head] + [filler] * (50 * MB // len(filler))))

    def route_huge_declared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(50 * MB))
        self.end_headers()
        self.close_connection = True

    def route_gzip_bomb(self) -> None:
        self.answer(200, gzip_bomb(), "application/rss+xml", Content_Encoding="gzip")

    def route_gzipped_xml(self) -> None:
        body = gzip.compress(self.server.feed)
        self.answer(200, body, "application/rss+xml", Content_Encoding="gzip")

    def route_a_path(self) -> None:
        # The body is the path of a valid feed file on this machine: it must stay a string.
        self.answer(200, str(FEEDS / "wordpress.xml").encode(), "application/rss+xml")

    def route_external_dtd(self) -> None:
        dtd = f'<!DOCTYPE rss SYSTEM "{self.server.base}/evil.dtd">'
        body = rss(item("Avec DTD", "https://t.example.org/dtd", "Mon, 26 Jan 2026 10:00:00 GMT"))
        body = body.replace(b"?>", b"?>" + dtd.encode(), 1)
        self.answer(200, body, "application/rss+xml")


@pytest.fixture
def server() -> Iterator[FeedServer]:
    httpd = FeedServer()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# ------------------------------------------------------------------------------ the sample


def test_sample_is_the_default_and_reads_as_a_full_edition() -> None:
    report = read_sources([])

    assert report.failed == () and report.warnings == ()
    assert len(report.articles) == 16
    assert {a.source for a in report.articles} == {str(SAMPLE)}
    # newest first, every date aware
    dates = [a.published for a in report.articles]
    assert dates == sorted(dates, reverse=True)
    assert all(d.tzinfo is not None for d in dates)
    assert all(
        a.author and a.content_html.startswith("<p>") and a.summary_html for a in report.articles
    )
    assert all(a.uid.startswith("https://www.example.com/?p=") for a in report.articles)
    assert all(a.link.startswith("https://www.example.com/") for a in report.articles)


def test_sample_fits_the_2026_01_27_edition_except_one_item() -> None:
    zone = ZoneInfo("Africa/Casablanca")
    end = datetime(2026, 1, 27, 7, 0, tzinfo=zone)
    start = end - timedelta(days=1)
    assert end.utcoffset() == timedelta(hours=1)

    articles = read_sources([str(SAMPLE)]).articles
    inside = [a for a in articles if start < a.published <= end]
    outside = [a for a in articles if a not in inside]

    assert len(inside) == 15
    assert [a.published.date().isoformat() for a in outside] == ["2026-01-25"]
    primaries = {a.primary_category for a in inside}
    assert primaries == {
        "Sécurité",
        "Économie",
        "Politique",
        "Culture",
        "Sport",
        "International",
        None,
    }
    assert sum(1 for a in inside if not a.categories) == 1
    # one article is much longer than the others
    sizes = sorted(len(a.content_html) for a in inside)
    assert sizes[-1] > 4 * sizes[len(sizes) // 2]
    # real French typography survives the trip
    titles = " ".join(a.title for a in inside)
    assert "’" in titles and "«\u00a0" in titles and "é" in titles


def test_sample_has_exactly_one_arabic_item() -> None:
    arabic = [a for a in read_sources([]).articles if a.rtl]

    assert len(arabic) == 1
    assert arabic[0].categories == ("International",)
    assert "المياه" in arabic[0].title and "المياه" in arabic[0].content_html
    assert arabic[0].author == "ليلى بنسالم"


def test_sample_json_folder_updates_a_feed_item() -> None:
    folder = resources.sample_dir() / "articles"
    report = read_sources([str(SAMPLE), str(folder)])

    assert len(report.articles) == 18  # 16 + 2 new; the third JSON item replaces a feed item
    racing = [a for a in report.articles if "Kassala" in a.title]
    assert len(racing) == 1
    assert racing[0].source == str(folder) and racing[0].title.endswith("88e minute")


# ------------------------------------------------------------------------------ feed files


def wordpress() -> SourceReport:
    return read_sources([str(FEEDS / "wordpress.xml")])


def test_wordpress_fields_and_category_order() -> None:
    first = next(a for a in wordpress().articles if a.uid == "https://news.example.org/?p=1")

    # order kept, first is primary, a repeat spelled differently dropped, whitespace collapsed
    assert first.categories == ("Économie", "Sécurité", "Afrique de l’Ouest")
    assert first.section_key == category_key("Economie")
    assert first.author == "Awa Diallo"
    assert first.published == datetime(2026, 1, 26, 9, 0, tzinfo=UTC)
    assert first.updated is None
    assert first.summary_html == "Résumé <b>court</b> [&#8230;]"
    # content stays raw: the renderer is the one place that sanitises
    assert first.content_html == '<p>Texte complet.</p><script>alert("raw")</script>'


def test_title_author_category_never_carry_a_line_break() -> None:
    crlf = next(a for a in wordpress().articles if a.uid == "https://news.example.org/?p=2")

    assert crlf.title == "Ligne un Bcc: victim@example.com suite tabulée fin"
    assert crlf.author == "Jean Dupont"
    assert crlf.categories == ("Poli tique",)
    for text in (crlf.title, crlf.author, *crlf.categories):
        assert not any(ch in text for ch in "\r\n\t")


def test_missing_guid_falls_back_to_link_and_titles_are_unescaped() -> None:
    plain = next(a for a in wordpress().articles if a.link.endswith("/sans-guid/"))

    assert plain.uid == plain.link
    assert plain.title == "L’Afrique & le monde"  # double-escaped WordPress entities
    assert plain.categories == () and plain.primary_category is None


def test_items_without_date_or_http_link_are_dropped_with_a_warning() -> None:
    report = wordpress()

    assert len(report.articles) == 3
    assert all(a.link.startswith("https://") for a in report.articles)
    assert not any(a.title in ("Sans date", "Lien hostile") for a in report.articles)
    name = FEEDS / "wordpress.xml"
    assert report.warnings == (
        f"source {name}: 1 item dropped (no date)",
        f"source {name}: 1 item dropped (no http(s) link)",
    )
    assert report.failed == ()


def test_atom_feed() -> None:
    articles = read_sources([str(FEEDS / "atom.xml")]).articles
    first, second = articles

    assert first.uid == "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"
    assert first.title == "Un titre avec balises & entités"
    assert first.link == "https://atom.example.org/2026/01/26/premier"
    assert first.published == datetime(2026, 1, 26, 8, 30, tzinfo=UTC)
    assert first.updated == datetime(2026, 1, 26, 17, 0, tzinfo=UTC)
    assert first.freshness == first.updated
    assert first.categories == ("Politique", "international")
    assert first.author == "Nadia El Amrani"
    assert first.summary_html == "Quand a &lt; b, le texte reste du texte."  # text -> HTML
    assert first.content_html == "<p>Le contenu <strong>complet</strong>.</p>"
    # an entry with only <updated> is published then
    assert second.published == second.updated == datetime(2026, 1, 26, 8, 0, tzinfo=UTC)
    assert "<p>XHTML body</p>" in second.content_html


def test_recoverable_malformed_feed_is_read_with_a_warning(tmp_path: Path) -> None:
    # A bare "&" breaks strict XML; feedparser's loose parser still reads the item.
    feed = write(
        tmp_path / "amp.xml",
        rss(item("Pierre & Paul", "https://t.example.org/pp", "Mon, 26 Jan 2026 10:00:00 GMT")),
    )
    report = read_sources([feed])

    assert [a.title for a in report.articles] == ["Pierre & Paul"]
    assert len(report.warnings) == 1 and "not well-formed XML (line 1" in report.warnings[0]


# ------------------------------------------------------------------------------ JSON folders


def test_json_folder_with_good_and_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "articles"
    folder.mkdir()
    write(
        folder / "a.json",
        json.dumps(
            {
                "id": 42,
                "title": "Un\r\narticle",
                "url": "https://j.example.org/a",
                "published": "2026-01-26T10:00:00+01:00",
                "categories": "Culture",
                "author": "Aïcha",
                "summary": "<p>Résumé</p>",
                "content": "<p>Corps</p>",
            }
        ),
    )
    write(
        folder / "b.json",
        json.dumps(
            [
                {
                    "title": "B",
                    "url": "https://j.example.org/b",
                    "published": "2026-01-26T12:00:00Z",
                    "updated": "2026-01-26T13:00:00Z",
                    "categories": ["Sport", "Football"],
                },
                {"title": "Sans date", "url": "https://j.example.org/c"},
                {
                    "title": "Mauvais lien",
                    "url": "javascript:alert(1)",
                    "published": "2026-01-26T12:00:00Z",
                },
            ]
        ),
    )
    write(folder / "c.json", '{"title": "cassé", ')
    no_title = {"url": "https://j.example.org/d", "published": "2026-01-26T12:00:00Z"}
    write(folder / "d.json", json.dumps(no_title))
    naive = {"title": "E", "url": "https://j.example.org/e", "published": "2026-01-26 12:00"}
    write(folder / "e.json", json.dumps(naive))
    write(folder / "notes.txt", "ignored")
    (folder / "sub").mkdir()
    write(folder / "sub" / "deep.json", json.dumps({"title": "deep"}))

    report = read_sources([str(folder)])

    b, a = report.articles
    assert (a.uid, a.title, a.link) == ("42", "Un article", "https://j.example.org/a")
    assert a.published == datetime(2026, 1, 26, 9, 0, tzinfo=UTC)
    assert (a.categories, a.author, a.summary_html, a.content_html) == (
        ("Culture",),
        "Aïcha",
        "<p>Résumé</p>",
        "<p>Corps</p>",
    )
    assert a.source == str(folder)
    assert b.uid == b.link == "https://j.example.org/b"
    assert b.categories == ("Sport", "Football")
    assert b.updated == datetime(2026, 1, 26, 13, 0, tzinfo=UTC)
    warnings = "\n".join(report.warnings)
    assert "b.json item 2 skipped: field 'published' is missing" in warnings
    assert "b.json item 3 skipped: field 'url' is not an http(s) URL" in warnings
    assert "c.json skipped: invalid JSON" in warnings
    assert "d.json skipped: field 'title' is missing" in warnings
    assert "e.json skipped: field 'published' is not an ISO 8601 date with a UTC offset" in warnings
    assert "deep" not in warnings and "notes" not in warnings
    assert len(report.warnings) == 5 and report.failed == ()


def test_json_folder_with_nothing_usable_is_a_failed_source(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    write(bad / "x.json", "[1, 2]")

    with pytest.raises(SourceError) as caught:
        read_sources([str(empty), str(bad)])

    message = str(caught.value)
    assert f"{empty} (no .json files in the folder)" in message
    assert f"{bad} (no usable article in 1 file; first: x.json item 1 skipped" in message


# ------------------------------------------------------------------------------ merging


def test_same_guid_across_sources_keeps_the_latest_version(tmp_path: Path) -> None:
    old = write(
        tmp_path / "old.xml",
        rss(
            item("Ancien titre", "https://t.example.org/a", "Mon, 26 Jan 2026 10:00:00 GMT", "G1"),
            item("Autre", "https://t.example.org/b", "Mon, 26 Jan 2026 09:00:00 GMT", "G2"),
        ),
    )
    folder = tmp_path / "json"
    folder.mkdir()
    write(
        folder / "new.json",
        json.dumps(
            {
                "id": "G1",
                "title": "Titre corrigé",
                "url": "https://t.example.org/a-corrige",
                "published": "2026-01-26T10:00:00Z",
                "updated": "2026-01-26T15:00:00Z",
            }
        ),
    )

    articles = read_sources([old, str(folder)]).articles

    assert [a.title for a in articles] == ["Titre corrigé", "Autre"]
    assert articles[0].source == str(folder)


def test_same_link_across_sources_keeps_the_latest_version(tmp_path: Path) -> None:
    newer = write(
        tmp_path / "newer.xml",
        rss(
            item(
                "Mis à jour", "https://t.example.org/a#top", "Mon, 26 Jan 2026 11:00:00 GMT", "X1"
            ),
        ),
    )
    older = write(
        tmp_path / "older.xml",
        rss(
            item(
                "Première version", "HTTPS://T.example.org/a", "Mon, 26 Jan 2026 10:00:00 GMT", "Y9"
            ),
        ),
    )

    report = read_sources([older, newer])

    assert [(a.title, a.source) for a in report.articles] == [("Mis à jour", newer)]


def test_equal_versions_keep_the_first_source(tmp_path: Path) -> None:
    same = item("Même", "https://t.example.org/m", "Mon, 26 Jan 2026 10:00:00 GMT", "M")
    first = write(tmp_path / "first.xml", rss(same))
    second = write(tmp_path / "second.xml", rss(same))

    assert [a.source for a in read_sources([first, second]).articles] == [first]


def test_an_article_linking_two_earlier_groups_merges_them() -> None:
    t = datetime(2026, 1, 26, 10, tzinfo=UTC)
    a = Article("U1", "a", "https://x.org/1", t)
    b = Article("U2", "b", "https://x.org/2", t + timedelta(hours=1))
    bridge = Article("U1", "bridge", "https://x.org/2", t - timedelta(hours=1))
    late = Article("U3", "late", "https://x.org/1", t)  # same link as a, via the merged group

    assert [x.title for x in merge_articles([a, b, bridge, late])] == ["b"]


# ------------------------------------------------------------------------------ failed sources


def test_missing_html_and_broken_sources_among_good_ones(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.xml")
    page = str(FEEDS / "page.html")
    broken = str(FEEDS / "broken.xml")

    report = read_sources([missing, page, str(SAMPLE), broken])

    assert len(report.articles) == 16
    assert report.failed == (missing, page, broken)
    assert report.warnings == (
        f"source {missing} skipped: file not found",
        f"source {page} skipped: not an RSS or Atom feed (it is an HTML page)",
        f"source {broken} skipped: unparsable feed (line 7: no element found)",
    )


def test_every_source_failed_raises_one_line_naming_each(tmp_path: Path) -> None:
    missing = str(tmp_path / "a.xml")
    junk = write(tmp_path / "junk.bin", b"\x00\x01\x02 not a feed")

    with pytest.raises(SourceError) as caught:
        read_sources([missing, junk, "ftp://example.org/feed.xml"])

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"no source could be read: {missing} (file not found); ")
    assert f"{junk} (not an RSS or Atom feed)" in message
    assert "ftp://example.org/feed.xml (unsupported scheme ftp:" in message
    assert "NEWSLETTER_SOURCES" in message
    assert caught.value.exit_code == 1
    assert len(caught.value.failures) == 3


@pytest.mark.parametrize(
    "spec", ["ftp://example.org/f.xml", "file:///etc/passwd", "javascript:alert(1)", "data:,x"]
)
def test_only_http_urls_files_and_folders_are_sources(spec: str) -> None:
    report = read_sources([spec, str(SAMPLE)])

    assert report.failed == (spec,)
    assert report.warnings[0].startswith(f"source {spec} skipped: unsupported scheme ")


def test_entity_expansion_is_refused_quickly_and_in_little_memory() -> None:
    started = time.monotonic()
    with pytest.raises(SourceError, match="declares XML entities"):
        read_sources([str(FEEDS / "billion_laughs.xml")])
    elapsed = time.monotonic() - started  # the refusal alone, not reading the good feed below
    tracemalloc.start()
    report = read_sources([str(FEEDS / "billion_laughs.xml"), str(SAMPLE)])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert report.failed == (str(FEEDS / "billion_laughs.xml"),)
    assert "declares XML entities" in report.warnings[0]
    assert not any("lol" in a.title for a in report.articles)
    assert elapsed < 1.0  # expat alone would take seconds reaching its amplification limit
    assert peak < 20 * MB


def test_entity_expansion_in_utf16_is_refused_too(tmp_path: Path) -> None:
    text = (FEEDS / "billion_laughs.xml").read_text().replace('<?xml version="1.0"?>', "")
    feed = write(tmp_path / "laughs16.xml", '<?xml version="1.0" encoding="UTF-16"?>' + text)
    Path(feed).write_bytes(Path(feed).read_text().encode("utf-16"))

    with pytest.raises(SourceError, match="declares XML entities"):
        read_sources([feed])


def test_external_entity_is_never_resolved() -> None:
    with pytest.raises(SourceError, match="declares XML entities"):
        read_sources([str(FEEDS / "xxe.xml")])


# ------------------------------------------------------------------------------ over HTTP


def test_url_feed_with_user_agent_and_source(server: FeedServer) -> None:
    url = f"{server.base}/feed.xml"
    report = read_sources([url])

    assert len(report.articles) == 3
    assert {a.source for a in report.articles} == {url}
    headers = server.requests[0][1]
    assert headers["User-Agent"] == DEFAULT_USER_AGENT
    assert DEFAULT_USER_AGENT.startswith("newsletter/")
    assert "application/rss+xml" in headers["Accept"]
    assert "If-None-Match" not in headers  # no cache folder, no conditional GET


def test_relative_links_resolve_against_the_final_url(server: FeedServer) -> None:
    (article,) = read_sources([f"{server.base}/relative.xml"]).articles

    assert article.link == f"{server.base}/2026/01/26/relatif/"


def test_html_page_url_is_a_failed_source(server: FeedServer) -> None:
    url = f"{server.base}/page.html"
    report = read_sources([url, str(SAMPLE)])

    assert report.failed == (url,)
    assert report.warnings == (
        f"source {url} skipped: not an RSS or Atom feed (it is an HTML page)",
    )


def test_http_error_status_is_a_failed_source(server: FeedServer) -> None:
    url = f"{server.base}/gone.xml"
    with pytest.raises(SourceError, match=r"gone.xml \(HTTP 404 Not Found\)"):
        read_sources([url])


def test_unreachable_server_is_a_failed_source(server: FeedServer) -> None:
    server.shutdown()
    server.server_close()
    url = f"{server.base}/feed.xml"
    with pytest.raises(SourceError, match=r"feed.xml \(unreachable"):
        read_sources([url], timeout=2)


def test_password_in_a_url_never_reaches_a_message(server: FeedServer) -> None:
    url = f"http://editor:s3cret@127.0.0.1:{server.server_address[1]}/gone.xml"
    report = read_sources([url, str(SAMPLE)])

    assert report.failed == (url,)
    assert "s3cret" not in report.warnings[0] and "editor:***@" in report.warnings[0]


def test_timeout_is_a_failed_source_not_a_hang(server: FeedServer) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"slow \(timed out after 0.5s\)"):
        read_sources([f"{server.base}/slow"], timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_a_trickling_server_is_stopped_by_the_overall_deadline(server: FeedServer) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"trickle \(timed out after 0.5s\)"):
        read_sources([f"{server.base}/trickle"], timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_redirect_is_followed(server: FeedServer) -> None:
    report = read_sources([f"{server.base}/moved"])

    assert len(report.articles) == 3
    assert server.paths() == ["/moved", "/feed.xml"]


def test_redirect_loop_is_a_failed_source(server: FeedServer) -> None:
    with pytest.raises(SourceError, match=r"too many redirects \(more than 5\)"):
        read_sources([f"{server.base}/loop"], timeout=5)
    assert server.paths() == ["/loop"] * 6  # the first request and five redirects


@pytest.mark.parametrize("route, scheme", [("to-ftp", "ftp"), ("to-file", "file")])
def test_redirect_off_http_is_refused(server: FeedServer, route: str, scheme: str) -> None:
    with pytest.raises(SourceError, match=rf"redirected to a non-http\(s\) URL \({scheme}:\)"):
        read_sources([f"{server.base}/{route}"])


def test_conditional_get_reuses_the_cached_body_on_304(server: FeedServer, tmp_path: Path) -> None:
    url = f"{server.base}/conditional"
    cache = tmp_path / "cache"

    first = read_sources([url], cache_dir=cache)
    server.feed = b"changed on the server, but the client is told 304"
    second = read_sources([url], cache_dir=cache)

    assert len(first.articles) == 3 and second.articles == first.articles
    sent = server.requests[1][1]
    assert sent["If-None-Match"] == '"v1"'
    assert sent["If-Modified-Since"] == "Mon, 26 Jan 2026 10:00:00 GMT"
    assert "If-None-Match" not in server.requests[0][1]
    assert len(list(cache.glob("*.json"))) == 1 and len(list(cache.glob("*.body"))) == 1


def test_gzip_body_is_inflated(server: FeedServer) -> None:
    assert len(read_sources([f"{server.base}/gzipped.xml"]).articles) == 3
    assert server.requests[0][1]["Accept-Encoding"] == "gzip"


def test_size_cap_stops_a_huge_stream_in_bounded_memory(server: FeedServer) -> None:
    tracemalloc.start()
    with pytest.raises(SourceError, match=r"huge \(larger than 1 MB\)"):
        read_sources([f"{server.base}/huge"], max_bytes=MB)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak < 8 * MB
    time.sleep(0.2)  # let the handler notice the hang-up
    assert server.sent_bytes.get("/huge", 0) < 20 * MB


def test_default_size_cap_is_20_mb(server: FeedServer) -> None:
    with pytest.raises(SourceError, match=r"huge \(larger than 20 MB\)"):
        read_sources([f"{server.base}/huge"])


def test_declared_oversize_fails_before_reading(server: FeedServer) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"huge-declared \(larger than 20 MB\)"):
        read_sources([f"{server.base}/huge-declared"])
    assert time.monotonic() - started < 1


def test_gzip_bomb_stops_at_the_cap(server: FeedServer) -> None:
    gzip_bomb()  # built before tracing: only the client's memory is measured
    tracemalloc.start()
    with pytest.raises(SourceError, match=r"gzip-bomb \(larger than 1 MB\)"):
        read_sources([f"{server.base}/gzip-bomb"], max_bytes=MB)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak < 8 * MB  # 50 MB of spaces once inflated


def test_a_body_that_names_a_local_file_is_not_opened(server: FeedServer) -> None:
    # feedparser.parse(bytes) would open() a body that is a valid path: we must not let it.
    with pytest.raises(SourceError, match=r"a-path \(not an RSS or Atom feed\)"):
        read_sources([f"{server.base}/a-path"])


def test_an_external_dtd_is_never_fetched(server: FeedServer) -> None:
    report = read_sources([f"{server.base}/external-dtd"])

    assert [a.title for a in report.articles] == ["Avec DTD"]
    assert server.paths() == ["/external-dtd"]


# ------------------------------------------------------------------------------ properties


@given(st.text())
def test_clean_line_leaves_no_line_break_or_control_character(text: str) -> None:
    cleaned = clean_line(text)

    assert cleaned == cleaned.strip()
    assert len(cleaned.splitlines()) <= 1
    assert not any(ch in cleaned for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00")
    assert "  " not in cleaned


_uids = st.sampled_from(["u1", "u2", "u3", "u4"])
_links = st.sampled_from([f"https://x.org/{n}" for n in range(4)])
_times = st.integers(0, 5).map(lambda h: datetime(2026, 1, 26, h, tzinfo=UTC))


@given(st.lists(st.builds(Article, uid=_uids, title=st.just("t"), link=_links, published=_times)))
def test_merge_leaves_one_article_per_identity_newest_first(articles: list[Article]) -> None:
    merged = merge_articles(articles)

    assert len({a.uid for a in merged}) == len(merged) == len({a.link for a in merged})
    assert [a.published for a in merged] == sorted((a.published for a in merged), reverse=True)
    assert set(merged) <= set(articles)
    assert len(merged) == identity_groups(articles)


@given(st.lists(st.builds(Article, uid=_uids, title=st.just("t"), link=_links, published=_times)))
def test_merge_accounts_for_every_version_it_dropped(articles: list[Article]) -> None:
    merged, duplicates = merge_noting_duplicates(articles)

    assert merged == merge_articles(articles)
    # Each version read is either kept or named once as dropped, with the version kept instead.
    assert len(merged) + len(duplicates) == len(articles)
    assert all(kept in merged for _, kept in duplicates)
    assert all(_chained(dropped, kept, articles) for dropped, kept in duplicates)


def _chained(a: Article, b: Article, articles: list[Article]) -> bool:
    """``a`` and ``b`` are one article through a chain of shared uids or links."""
    reached, frontier = {id(a)}, [a]
    while frontier:
        here = frontier.pop()
        for other in articles:
            if id(other) not in reached and (other.uid == here.uid or other.link == here.link):
                reached.add(id(other))
                frontier.append(other)
    return id(b) in reached


def identity_groups(articles: list[Article]) -> int:
    """How many groups "same uid or same link" makes, transitively (a plain union-find)."""
    parent = list(range(len(articles)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, a in enumerate(articles):
        for j in range(i):
            if a.uid == articles[j].uid or a.link == articles[j].link:
                parent[root(i)] = root(j)
    return len({root(i) for i in range(len(articles))})
