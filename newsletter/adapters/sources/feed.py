"""Sources: one RSS or Atom document -> articles, and warnings about the items it dropped."""

from __future__ import annotations

import calendar
import html
import io
import re
import time
import xml.sax
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feedparser

from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.sources.articles import clean_categories, clean_line
from newsletter.adapters.sources.errors import _BadItem, _SourceFailure, display_name
from newsletter.adapters.sources.images import entry_image, install_media_text_handlers
from newsletter.domain import Article
from newsletter.domain.urls import is_http_url

_TAG = re.compile(r"<[^>]*>")

install_media_text_handlers()


@dataclass(frozen=True, slots=True)
class FeedRead:
    """What one source gave: its articles, warnings, and (a feed's) its site's home page."""

    articles: list[Article]
    warnings: list[str]
    site_link: str = ""  # the channel's <link> (Atom: the feed's alternate link), if http(s)


def parse_feed(
    data: bytes, source: str, *, base_url: str | None = None, content_type: str = ""
) -> tuple[list[Article], list[str]]:
    """The articles of one RSS/Atom document and the warnings about items it had to drop."""
    read = read_feed(data, source, base_url=base_url, content_type=content_type)
    return read.articles, read.warnings


def read_feed(
    data: bytes, source: str, *, base_url: str | None = None, content_type: str = ""
) -> FeedRead:
    """``parse_feed``, and the feed's own link to its site."""
    if _declares_entities(data):
        raise _SourceFailure(
            "the feed declares XML entities (refused: they can expand without bound or read files)"
        )
    headers = {"content-type": content_type or "application/xml"}
    if base_url:
        headers["content-location"] = base_url
    # A BytesIO, never bare bytes: feedparser tries open(bytes) as a file name first, so a body
    # reading "/etc/passwd" would make it read that file.
    try:
        parsed = feedparser.parse(
            io.BytesIO(data),
            response_headers=headers,
            resolve_relative_uris=base_url is not None,
            sanitize_html=False,
        )
    except ValueError as err:  # feedparser's encoding sniffing chokes on a garbled prolog
        raise _SourceFailure(f"unparsable feed ({type(err).__name__})") from None
    _check_is_feed(parsed, data)
    articles: list[Article] = []
    dropped: Counter[str] = Counter()
    for entry in parsed.entries:
        try:
            articles.append(_entry_article(entry, source))
        except _BadItem as bad:
            dropped[bad.reason] += 1
    broken = _xml_error(parsed)
    if broken and not articles:
        raise _SourceFailure(f"unparsable feed ({broken})")
    name = display_name(source)
    warnings = [
        f"source {name}: "
        + english_ngettext("%(num)d item dropped", "%(num)d items dropped", n) % {"num": n}
        + f" ({why})"
        for why, n in dropped.items()
    ]
    if broken:
        warnings.append(f"source {name}: not well-formed XML ({broken}); read what was recoverable")
    return FeedRead(articles, warnings, _site_link(parsed))


def _site_link(parsed: Mapping[str, Any]) -> str:
    link = str((parsed.get("feed") or {}).get("link") or "").strip()
    return link if is_http_url(link) else ""


def _declares_entities(data: bytes) -> bool:
    """True when the DOCTYPE declares entities: real feeds never need to, attacks always do."""
    # Dropping NUL bytes makes a UTF-16/32 prolog searchable as ASCII.
    text = data.replace(b"\x00", b"") if b"\x00" in data[:4] else data
    first_element = re.search(rb"<[A-Za-z]", text)
    prolog = text[: first_element.start()] if first_element else text
    return b"<!ENTITY" in prolog


def _check_is_feed(parsed: Mapping[str, Any], data: bytes) -> None:
    if parsed.get("version") or parsed.get("entries"):
        return
    head = data[:2048].lower()
    if b"<html" in head or b"<!doctype html" in head:
        raise _SourceFailure("not an RSS or Atom feed (it is an HTML page)")
    raise _SourceFailure("not an RSS or Atom feed")


def _xml_error(parsed: Mapping[str, Any]) -> str:
    """The strict XML parser's complaint, or "" when the document was well-formed.

    feedparser also sets ``bozo`` for harmless things (a text/plain content type, an encoding
    override); only a SAX parse error means the document is broken.
    """
    exc = parsed.get("bozo_exception")
    if parsed.get("bozo") and isinstance(exc, xml.sax.SAXParseException):
        return f"line {exc.getLineNumber()}: {exc.getMessage()}"
    return ""


def _entry_article(entry: Mapping[str, Any], source: str) -> Article:
    link = str(entry.get("link") or "").strip()
    if not is_http_url(link):
        raise _BadItem("no http(s) link")
    updated = _from_struct(_own(entry, "updated_parsed"))
    published = _from_struct(_own(entry, "published_parsed")) or updated  # Atom: <updated> only
    if published is None:
        raise _BadItem("no date")
    title = _entry_title(entry)
    if not title:
        raise _BadItem("no title")
    return Article(
        uid=str(entry.get("id") or "").strip() or link,
        title=title,
        link=link,
        published=published,
        categories=clean_categories(
            tag.get("label") or tag.get("term") or "" for tag in entry.get("tags") or ()
        ),
        author=_entry_author(entry),
        summary_html=_entry_summary(entry),
        content_html=_entry_content(entry),
        source=source,
        updated=updated,
        image=entry_image(entry),
    )


def _own(entry: Mapping[str, Any], key: str) -> Any:
    """``entry[key]`` only if the feed set it: ``entry.get("updated_parsed")`` would fall back to
    ``published_parsed`` (with a DeprecationWarning), making every RSS item look updated."""
    return entry.get(key) if key in entry else None


def _from_struct(value: Any) -> datetime | None:
    """feedparser's UTC struct_time -> an aware datetime in UTC."""
    if not isinstance(value, time.struct_time):
        return None
    return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)


def _entry_title(entry: Mapping[str, Any]) -> str:
    title = str(entry.get("title") or "")
    detail = entry.get("title_detail") or {}
    if "html" in str(detail.get("type", "")):
        title = _TAG.sub("", title)
    return clean_line(html.unescape(title))


def _entry_author(entry: Mapping[str, Any]) -> str:
    # author_detail.name drops the e-mail address RSS <author> often carries.
    detail = entry.get("author_detail") or {}
    return clean_line(str(detail.get("name") or entry.get("author") or ""))


def _entry_summary(entry: Mapping[str, Any]) -> str:
    summary = _as_html(entry.get("summary_detail"), entry.get("summary"))
    # Video and podcast feeds (YouTube's among them) describe an item in its media:group only.
    return summary or html.escape(str(entry.get("media_description") or ""))


def _entry_content(entry: Mapping[str, Any]) -> str:
    for content in entry.get("content") or ():
        value = _as_html(content, content.get("value"))
        if value:
            return value
    return ""


def _as_html(detail: Mapping[str, Any] | None, value: Any) -> str:
    """Feed text as HTML: markup stays raw (sanitised later), plain text is escaped."""
    text = str(value or "")
    kind = str((detail or {}).get("type", "text/html"))
    return text if "html" in kind else html.escape(text)
