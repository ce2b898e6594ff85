"""Article images: the safety rule, feeds (media RSS, enclosures, <img>), JSON articles, the ledger.

Parsing tests, in-process: real feed documents through feedparser and lxml, real JSON files, the
real store on a SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.adapters import resources
from newsletter.adapters.sources import json_article, parse_feed, read_feed, read_sources
from newsletter.adapters.sources.images import first_html_image
from newsletter.domain import Article, ArticleImage
from newsletter.domain.images import MAX_ALT_CHARS, safe_image, safe_image_url
from tests.factories import make_store

MEDIA_NS = 'xmlns:media="http://search.yahoo.com/mrss/"'
JPG = "https://cdn.example.org/wp-content/uploads/2026/01/photo.jpg"


def rss(*items: str, link: str = "https://news.example.org/") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        f"{MEDIA_NS}><channel><title>T</title><link>{link}</link>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def item(extra: str = "", *, n: int = 1, summary: str = "Le résumé.", content: str = "") -> str:
    body = f"<content:encoded><![CDATA[{content}]]></content:encoded>" if content else ""
    return (
        f"<item><title>Titre {n}</title><link>https://news.example.org/{n}</link>"
        f"<pubDate>Tue, 27 Jan 2026 05:40:00 +0000</pubDate><guid>g{n}</guid>"
        f"<description><![CDATA[{summary}]]></description>{extra}{body}</item>"
    )


def one(*items: str) -> Article:
    articles, warnings = parse_feed(rss(*items), "test.xml")
    assert warnings == [] and len(articles) == 1
    return articles[0]


def media(url: str, *, width: str = "", height: str = "", inner: str = "", attrs: str = "") -> str:
    size = (f' width="{width}"' if width else "") + (f' height="{height}"' if height else "")
    return f'<media:content url="{url}" medium="image"{size}{attrs}>{inner}</media:content>'


# ------------------------------------------------------------------------------ the rule


def test_safe_image_keeps_an_https_picture_with_its_size() -> None:
    assert safe_image(JPG, "Une photo", "600", "338px") == ArticleImage(JPG, "Une photo", 600, 338)
    assert safe_image(JPG, "", 1200, 675.0) == ArticleImage(JPG, "", 1200, 675)
    # what a browser strips from the ends of an attribute is stripped, nothing else is repaired
    assert safe_image(f"  \t{JPG}\n ") == ArticleImage(JPG)
    assert safe_image("HTTPS://CDN.example.org/a.png") == ArticleImage(
        "HTTPS://CDN.example.org/a.png"
    )
    assert safe_image("https://cdn.example.org/été/photo.jpg") is not None  # IRIs are fine


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        " JavaScript:alert(document.cookie)",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/svg+xml,<svg onload=alert(1)>",
        "http://cdn.example.org/photo.jpg",
        "//cdn.example.org/photo.jpg",
        "/wp-content/uploads/photo.jpg",
        "photo.jpg",
        "https://",
        "https:///photo.jpg",
        "ftp://cdn.example.org/photo.jpg",
        'https://cdn.example.org/a.jpg" onerror="alert(1)',
        "https://cdn.example.org/a.jpg' onerror='alert(1)",
        "https://cdn.example.org/a b.jpg",
        "https://cdn.example.org/<script>.jpg",
        "https://cdn.example.org/a.jpg>",
        "https://cdn.example.org\\a.jpg",
        "https://cdn.example.org/a`.jpg",
        "https://cdn.example.org/a\x00.jpg",
        "https://cdn.example.org/a\t.jpg",
        "https://cdn.example.org/a\r\n.jpg",
        "https://cdn.example.org/a\u2028.jpg",
        "https://cdn.example.org/a\u200b.jpg",
        "https://user:secret@cdn.example.org/a.jpg",
        "https://[cdn.example.org/a.jpg",
        "https://cdn.example.org:port/a.jpg",
        "https://cdn.example.org/" + "a" * 2048,
        "",
    ],
)
def test_safe_image_refuses_unsafe_urls(url: str) -> None:
    assert safe_image(url, "alt", 600, 400) is None


@pytest.mark.parametrize("url", [None, 42, b"https://cdn.example.org/a.jpg", ["x"]])
def test_safe_image_refuses_what_is_no_text(url: object) -> None:
    assert safe_image(url) is None


@pytest.mark.parametrize(
    ("width", "height"), [(1, 1), ("1", "1"), ("2px", None), (None, 2), (0, 0), ("600", "1")]
)
def test_tracking_pixels_are_never_images(width: object, height: object) -> None:
    assert safe_image(JPG, "", width, height) is None


@pytest.mark.parametrize(
    ("given_size", "read"),
    [
        ("3", 3),
        (" 640 ", 640),
        ("640PX", 640),
        ("640.7", 640),
        (10_000, 10_000),
        (10_001, None),
        ("99999999", None),
        ("9" * 40, None),
        ("100%", None),
        ("auto", None),
        ("-5", None),
        (-5, None),
        (True, None),
        (float("inf"), None),
        (float("nan"), None),
        ("", None),
        ([600], None),
    ],
)
def test_sizes_are_positive_pixels_or_unknown(given_size: object, read: int | None) -> None:
    image = safe_image(JPG, "", given_size, given_size)
    assert image is not None and image.width == read and image.height == read


def test_alt_is_one_line_of_plain_text() -> None:
    hostile = '<script>alert("x")</script>Le <b>port</b> &amp; ses grues\r\nBcc: victime@x.sn\x00'
    image = safe_image(JPG, hostile)
    assert image is not None
    assert image.alt == "Le port & ses grues Bcc: victime@x.sn"
    # entities that spell markup are decoded and stripped too, not left to be decoded later
    assert safe_image(JPG, "&lt;img src=x onerror=alert(1)&gt;Légende").alt == "Légende"  # type: ignore[union-attr]
    long = safe_image(JPG, "mot " * 500)
    assert long is not None and len(long.alt) <= MAX_ALT_CHARS and long.alt.endswith("…")
    assert safe_image(JPG, None).alt == ""  # type: ignore[union-attr]
    assert safe_image(JPG, 42).alt == ""  # type: ignore[union-attr]


@given(st.text(max_size=80))
def test_no_text_yields_an_unsafe_url(text: str) -> None:
    for candidate in (text, "https://cdn.example.org/" + text, "https://" + text):
        url = safe_image_url(candidate)
        if url is not None:
            assert url.lower().startswith("https://")
            assert not any(ch in url for ch in " \"'`<>\\") and url.isprintable()
            assert url == url.strip() and len(url) <= 2048


# ------------------------------------------------------------------------------ feeds


def test_wordpress_item_takes_the_widest_media_content_and_keeps_its_text() -> None:
    caption = "<media:title type='html'>Titre de la photo</media:title>"
    caption += "<media:description type='html'>Les grues du port</media:description>"
    article = one(
        item(
            media("https://cdn.example.org/small.jpg", width="600", height="338", inner=caption)
            + media("https://cdn.example.org/big.jpg", width="1200", height="675", inner=caption)
            + media("https://cdn.example.org/unknown.jpg")
            + '<media:thumbnail url="https://cdn.example.org/thumb.jpg" width="150" height="150"/>'
            + '<enclosure url="https://cdn.example.org/enc.jpg" type="image/jpeg" length="1"/>',
            content='<p>Le texte.<img src="https://cdn.example.org/inline.jpg" alt="x"></p>',
        )
    )
    assert article.image == ArticleImage(
        "https://cdn.example.org/big.jpg", "Les grues du port", 1200, 675
    )
    # media:title and media:description are the picture's, not the article's (feedparser #53)
    assert article.title == "Titre 1"
    assert article.summary_html == "Le résumé."
    assert article.content_html.startswith("<p>Le texte.")


def test_media_text_before_the_items_own_elements_does_not_replace_them() -> None:
    inner = "<media:title>Photo</media:title><media:description>Légende</media:description>"
    doc = (
        "<item><link>https://news.example.org/1</link>"
        "<pubDate>Tue, 27 Jan 2026 05:40:00 +0000</pubDate>"
        f"{media(JPG, inner=inner)}<title>Le vrai titre</title>"
        "<description>Le vrai résumé</description></item>"
    )
    article = one(doc)
    assert (article.title, article.summary_html) == ("Le vrai titre", "Le vrai résumé")
    assert article.image == ArticleImage(JPG, "Légende")


def test_a_media_group_describes_its_pictures_and_the_item_without_a_description() -> None:
    group = (
        "<media:group><media:title>Le titre du groupe</media:title>"
        f'<media:content url="{JPG}" type="image/jpeg"/>'
        "<media:description>Une vue du fleuve</media:description></media:group>"
    )
    doc = (
        "<item><title>Vidéo</title><link>https://news.example.org/v</link>"
        f"<pubDate>Tue, 27 Jan 2026 05:40:00 +0000</pubDate>{group}</item>"
    )
    article = one(doc)
    assert article.image == ArticleImage(JPG, "Une vue du fleuve")
    assert article.summary_html == "Une vue du fleuve"  # YouTube-style: the group's text only
    assert article.title == "Vidéo"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '<media:thumbnail url="https://cdn.example.org/t.jpg" width="300" height="200"/>',
            ArticleImage("https://cdn.example.org/t.jpg", "", 300, 200),
        ),
        (
            '<enclosure url="https://cdn.example.org/e.png" type="image/png" length="99"/>',
            ArticleImage("https://cdn.example.org/e.png"),
        ),
        # no medium, no type: an image file name is enough
        (
            '<media:content url="https://cdn.example.org/n.webp"/>',
            ArticleImage("https://cdn.example.org/n.webp"),
        ),
        # a video, an audio enclosure: not pictures, and nothing else is offered
        ('<media:content url="https://cdn.example.org/v.mp4" medium="video"/>', None),
        ('<enclosure url="https://cdn.example.org/a.mp3" type="audio/mpeg" length="9"/>', None),
        ('<media:content url="https://cdn.example.org/p" type="video/mp4"/>', None),
    ],
)
def test_each_kind_of_feed_media(extra: str, expected: ArticleImage | None) -> None:
    assert one(item(extra)).image == expected


def test_atom_enclosure_link() -> None:
    doc = (
        b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        b'<title>A</title><link href="https://atom.example.org/"/><id>urn:a</id>'
        b"<updated>2026-01-27T05:00:00Z</updated><entry><title>E</title><id>urn:e</id>"
        b'<link href="https://atom.example.org/e"/>'
        b'<link rel="enclosure" type="image/jpeg" href="https://atom.example.org/e.jpg"/>'
        b"<updated>2026-01-27T05:00:00Z</updated><summary>S</summary></entry></feed>"
    )
    read = read_feed(doc, "atom.xml")
    assert [a.image for a in read.articles] == [ArticleImage("https://atom.example.org/e.jpg")]
    assert read.site_link == "https://atom.example.org/"


def test_an_unsafe_candidate_gives_way_to_the_next() -> None:
    article = one(
        item(
            media("javascript:alert(1)", width="2000")
            + media("http://cdn.example.org/plain-http.jpg", width="1900")
            + media("data:image/png;base64,AAAA", width="1800")
            + media("https://cdn.example.org/pixel.gif", width="1", height="1")
            + '<media:thumbnail url="https://cdn.example.org/a b.jpg"/>'
            + '<enclosure url="https://cdn.example.org/ok.jpg" type="image/jpeg" length="1"/>'
        )
    )
    assert article.image == ArticleImage("https://cdn.example.org/ok.jpg")


def test_the_first_real_img_of_the_content_then_of_the_summary() -> None:
    content = (
        '<p><img src="https://stats.example.org/p.gif?id=1" width="1" height="1" alt="">'
        "Le texte.</p>"
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="lazy">'
        '<img src="http://cdn.example.org/http.jpg">'
        "<img src=\"https://cdn.example.org/q.jpg'onerror='x\">"
        '<figure><img src="https://cdn.example.org/real.jpg" alt="La vraie &amp; belle photo" '
        'width="800" height="99999999"></figure>'
        '<img src="https://cdn.example.org/second.jpg">'
    )
    article = one(item(content=content))
    assert article.image == ArticleImage(
        "https://cdn.example.org/real.jpg", "La vraie & belle photo", 800, None
    )
    summary = '<p>Résumé <img src="https://cdn.example.org/s.jpg" alt="S"></p>'
    assert one(item(summary=summary)).image == ArticleImage("https://cdn.example.org/s.jpg", "S")
    # plain-text summaries are not markup: an "<img" written in text is no image
    plain = "<item><title>P</title><link>https://news.example.org/p</link>"
    plain += "<pubDate>Tue, 27 Jan 2026 05:40:00 +0000</pubDate>"
    plain += "<description>a &lt; b</description></item>"
    assert one(plain).image is None


def test_hostile_alt_and_sizes_from_a_feed() -> None:
    inner = (
        "<media:description type='html'><![CDATA[<script>alert(1)</script>Légende\r\n"
        "X-Injected: oui<img src=x onerror=alert(2)>]]></media:description>"
    )
    article = one(item(media(JPG, width="99999999", height="abc", inner=inner)))
    assert article.image == ArticleImage(JPG, "Légende X-Injected: oui", None, None)
    img = '<img src="https://cdn.example.org/i.jpg" alt="a&#13;&#10;b <script>x</script>c">'
    assert one(item(content=img)).image == ArticleImage("https://cdn.example.org/i.jpg", "a b c")


def test_fifty_images_in_one_item_give_one() -> None:
    medias = "".join(
        media(f"https://cdn.example.org/{n}.jpg", width=str(100 + n)) for n in range(50)
    )
    thumbs = "".join(
        f'<media:thumbnail url="https://cdn.example.org/t{n}.jpg"/>' for n in range(50)
    )
    imgs = "".join(f'<img src="https://cdn.example.org/i{n}.jpg">' for n in range(50))
    article = one(item(medias + thumbs, content=f"<p>{imgs}</p>"))
    assert article.image == ArticleImage("https://cdn.example.org/49.jpg", "", 149, None)
    assert one(item(content=f"<p>{imgs}</p>")).image == ArticleImage(
        "https://cdn.example.org/i0.jpg"
    )


def test_hostile_markup_is_read_in_linear_time() -> None:
    start = time.perf_counter()
    assert first_html_image("<div>" * 100_000 + f'<img src="{JPG}">') == ArticleImage(JPG)
    assert first_html_image("</" * 400_000) is None
    assert first_html_image('<img src="https://cdn.example.org/x.jpg' * 20_000) is None
    assert first_html_image("") is None and first_html_image("no markup") is None
    assert first_html_image("\x00<img src='\x00'>") is None
    assert time.perf_counter() - start < 5


def test_site_link_is_the_channel_link_when_http() -> None:
    assert read_feed(rss(item()), "a.xml").site_link == "https://news.example.org/"
    assert read_feed(rss(item(), link="javascript:alert(1)"), "a.xml").site_link == ""
    assert read_feed(rss(item(), link="/relative"), "a.xml").site_link == ""
    # parse_feed keeps its old shape for its callers
    articles, warnings = parse_feed(rss(item()), "a.xml")
    assert len(articles) == 1 and warnings == []


def test_read_sources_takes_the_first_feeds_site_link(tmp_path: Path) -> None:
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "a.json").write_text(
        json.dumps(
            {"title": "J", "url": "https://j.example.org/1", "published": "2026-01-27T05:00:00Z"}
        )
    )
    no_link = tmp_path / "nolink.xml"
    no_link.write_bytes(rss(item(n=2), link=""))
    first = tmp_path / "first.xml"
    first.write_bytes(rss(item(n=3), link="https://first.example.org/"))
    second = tmp_path / "second.xml"
    second.write_bytes(rss(item(n=4), link="https://second.example.org/"))
    missing = str(tmp_path / "missing.xml")

    report = read_sources([missing, str(folder), str(no_link), str(first), str(second)])
    assert report.site_link == "https://first.example.org/"
    assert read_sources([str(folder)]).site_link == ""


# ------------------------------------------------------------------------------ JSON articles


def json_item(image: object) -> dict[str, object]:
    return {
        "title": "Titre",
        "url": "https://www.example.com/a",
        "published": "2026-01-27T05:00:00Z",
        "image": image,
    }


def test_json_image_object_and_string() -> None:
    full = {"url": JPG, "alt": "<b>Le</b> port", "width": 1200, "height": "675"}
    assert json_article(json_item(full), "f").image == ArticleImage(JPG, "Le port", 1200, 675)
    assert json_article(json_item(JPG), "f").image == ArticleImage(JPG)
    assert json_article(json_item(None), "f").image is None
    assert json_article(json_item({"url": JPG, "alt": None}), "f").image == ArticleImage(JPG)


def test_a_bad_json_image_costs_the_image_not_the_article(tmp_path: Path) -> None:
    bad_images: list[object] = [
        42,
        ["https://x"],
        {"alt": "no url"},
        {"url": 7},
        {"url": JPG, "alt": ["x"]},
        {"url": "javascript:alert(1)"},
        {"url": "http://www.example.com/a.jpg"},
        {"url": 'https://www.example.com/a.jpg" onerror="x'},
        {"url": JPG, "width": 1, "height": 1},
    ]
    items = [
        dict(json_item(image), url=f"https://www.example.com/{n}")
        for n, image in enumerate(bad_images)
    ]
    items.append(dict(json_item({"url": JPG, "width": "huge"}), url="https://www.example.com/w"))
    (tmp_path / "lot.json").write_text(json.dumps(items))

    report = read_sources([str(tmp_path)])

    assert len(report.articles) == len(items)  # every article kept
    by_link = {a.link: a.image for a in report.articles}
    assert all(by_link[f"https://www.example.com/{n}"] is None for n in range(len(bad_images)))
    assert by_link["https://www.example.com/w"] == ArticleImage(JPG)  # size read as unknown
    warnings = list(report.warnings)
    assert len(warnings) == len(items)
    assert all(w.startswith(f"source {tmp_path}: lot.json item ") for w in warnings)
    assert "lot.json item 1: field 'image' must be an object" in warnings[0]
    assert "lot.json item 3: field 'image.url' is missing or not a string" in warnings[2]
    assert "lot.json item 5: field 'image.alt' must be a string" in warnings[4]
    assert (
        "item 6: field 'image.url' is not an https URL fit for an image: 'javascript:"
        in warnings[5]
    )
    assert "item 9: field 'image' is a tracking pixel" in warnings[8]
    assert all(w.endswith("the article is kept without an image") for w in warnings[:-1])
    assert (
        "item 10: field 'image.width' is not a size in pixels: 'huge' (read as unknown)"
        in warnings[-1]
    )
    assert all("\n" not in w and "\r" not in w for w in warnings)


# ------------------------------------------------------------------------------ the ledger

DAY = date(2026, 1, 27)
PUBLISHED = datetime(2026, 1, 26, 12, 0, tzinfo=UTC)


def test_the_ledger_freezes_and_reads_back_images(tmp_path: Path) -> None:
    articles = [
        Article(
            "a", "A", "https://x.sn/a", PUBLISHED, image=ArticleImage(JPG, "Le port", 1200, 675)
        ),
        Article("b", "B", "https://x.sn/b", PUBLISHED, image=ArticleImage(JPG)),
        Article("c", "C", "https://x.sn/c", PUBLISHED),
    ]
    store = make_store(tmp_path)
    try:
        store.freeze_edition(DAY, articles)
        assert store.frozen_articles(DAY) == articles
    finally:
        store.close()


def test_editions_frozen_before_images_read_without_them(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    try:
        store.freeze_edition(
            DAY, [Article("a", "A", "https://x.sn/a", PUBLISHED, image=ArticleImage(JPG, "x"))]
        )
    finally:
        store.close()
    database = tmp_path / "db" / "newsletter.db"
    with sqlite3.connect(database) as raw:
        (stored,) = raw.execute("SELECT articles FROM editions").fetchone()
        old = json.loads(stored)
        del old[0]["image"]  # the shape frozen before this change
        edited = [dict(old[0], uid="b", image={"url": "javascript:alert(1)", "alt": "x"})]
        raw.execute("UPDATE editions SET articles = ?", (json.dumps(old + edited),))
    store = make_store(tmp_path)
    try:
        frozen = store.frozen_articles(DAY)
    finally:
        store.close()
    assert frozen is not None and [a.image for a in frozen] == [None, None]
    assert frozen[0].title == "A"


# ------------------------------------------------------------------------------ the sample


def test_the_sample_feed_shows_every_kind_of_picture() -> None:
    report = read_sources([])
    images = {a.uid.rsplit("=", 1)[1]: a.image for a in report.articles}

    assert report.site_link == "https://www.example.com"
    assert images["4110"] is None  # the editors' note has no picture
    assert sum(1 for image in images.values() if image is not None) == 15
    assert all(
        image.url.startswith("https://picsum.photos/seed/") for image in images.values() if image
    )
    # the Dalaba article: only an <img> in its content
    assert images["4112"] == ArticleImage(
        "https://picsum.photos/seed/dalaba-port-sec/640/360",
        "Portiques de manutention et conteneurs empilés sur le terminal du port sec de Dalaba",
        640,
        360,
    )
    # a tracking pixel first, then the real picture
    assert images["4109"] is not None and images["4109"].url.endswith("/hameconnage/1024/576")
    assert images["4104"] == ArticleImage(
        "https://picsum.photos/seed/municipales-capitale/640/360", "", 640, 360
    )
    arabic = next(a for a in report.articles if a.rtl)
    assert arabic.image is not None and "المياه" in arabic.image.alt
    # media:description did not replace any summary
    assert all(a.summary_html.endswith("[&#8230;]") for a in report.articles)


def test_the_sample_json_folder_has_one_picture() -> None:
    report = read_sources([str(resources.sample_dir() / "articles")])
    assert report.warnings == () and report.site_link == ""
    assert [a.image.width for a in report.articles if a.image] == [1200]
