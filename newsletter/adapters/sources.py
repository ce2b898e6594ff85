"""Sources: RSS/Atom feeds (by URL or file) and folders of JSON articles -> ``Article`` values.

``read_sources(specs)`` reads every source, merges them, drops duplicates and returns a
``SourceReport``. A source that cannot be read is named in a warning and skipped; when every source
fails, ``SourceError`` names each one and why. Each spec is one of:

- an ``http://`` or ``https://`` URL of an RSS 2.0 or Atom feed (downloaded here with httpx:
  timeout, User-Agent, at most 5 redirects, a size cap, conditional GET when a cache folder is
  given);
- the path of a feed file;
- the path of a folder of JSON article files.

An empty list of specs means the bundled sample feed.

Feeds are parsed with feedparser from bytes we downloaded ourselves, so a feed can never make us
fetch another URL or read a local file. A feed that declares XML entities in its DOCTYPE is refused
(entity expansion, "billion laughs", can exhaust memory). Feed HTML (summary, content) is passed on
raw: the renderer sanitises it (newsletter.domain.text, which also flattens markup nested past 256 levels
so that a hostile item costs linear time).

JSON article folder
-------------------
Every ``*.json`` file directly in the folder (sorted by name, not recursive, hidden files ignored)
holds one article object or a list of them, UTF-8 encoded. Fields:

==============  ========  =========================================================================
field           required  meaning
==============  ========  =========================================================================
``id``          no        stable identifier used to spot duplicates; defaults to ``url``
``title``       yes       headline, plain text (line breaks and control characters are removed)
``url``         yes       the article's public address, ``http://`` or ``https://``
``published``   yes       ISO 8601 date and time with a UTC offset or ``Z``,
                          e.g. ``2026-01-26T14:30:00+01:00`` or ``2026-01-26T13:30:00Z``
``updated``     no        same form; when the article was last changed (the latest version wins)
``categories``  no        list of category names, first one is the section; or one string
``author``      no        author's name, plain text
``summary``     no        short excerpt, HTML or plain text
``content``     no        full article body, HTML
==============  ========  =========================================================================

Other fields are ignored. A file that is not valid JSON, or an article with a missing or malformed
field, is skipped with a warning naming the file and the field; the other files still count.

Example ``2026-01-26-budget.json``::

    {
      "id": "obs-2026-0142",
      "title": "Le budget 2026 adopté en première lecture",
      "url": "https://www.example.com/2026/01/26/budget-2026/",
      "published": "2026-01-26T18:30:00+01:00",
      "categories": ["Politique", "Économie"],
      "author": "Awa Diallo",
      "summary": "<p>Les députés ont voté le texte après trois jours de débats.</p>"
    }
"""

from __future__ import annotations

import calendar
import hashlib
import html
import io
import json
import re
import time
import unicodedata
import xml.sax
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import feedparser
import httpx

from newsletter import __version__
from newsletter.adapters import resources
from newsletter.domain import Article, category_key
from newsletter.domain.errors import NewsletterError

DEFAULT_USER_AGENT = f"newsletter/{__version__} (+https://github.com/newsletter)"
#: the largest feed or JSON file we read, after decompression; memory stays bounded by it
MAX_SOURCE_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 5
_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[^\S\u00a0\u202f]+")  # whitespace runs, except no-break spaces
_BREAKING = frozenset({"Cc", "Zl", "Zp"})  # control characters, line and paragraph separators


class SourceError(NewsletterError):
    """Every source failed: nothing to build an edition from."""

    def __init__(self, failures: Sequence[tuple[str, str]]) -> None:
        listed = "; ".join(f"{name} ({reason})" for name, reason in failures)
        super().__init__(
            f"no source could be read: {listed}",
            "check NEWSLETTER_SOURCES: comma-separated feed URLs, feed files or folders of JSON "
            "articles",
        )
        self.failures = tuple(failures)


class _SourceFailure(Exception):
    """One source cannot be used at all; ``reason`` is a short phrase for the warning."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BadItem(Exception):
    """One item of a source is unusable (no date, missing field...); the rest of it still counts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SourceReport:
    articles: tuple[Article, ...]  # merged, de-duplicated, newest first
    warnings: tuple[str, ...]  # "source <name> skipped: <reason>", and dropped items per source
    failed: tuple[str, ...]  # the specs of the sources that could not be read


# --------------------------------------------------------------------------------------- entry


def read_sources(
    specs: Sequence[str],
    *,
    timeout: float = 20.0,
    user_agent: str = DEFAULT_USER_AGENT,
    cache_dir: Path | None = None,
    max_bytes: int = MAX_SOURCE_BYTES,
) -> SourceReport:
    """Read every source, merge and de-duplicate their articles, newest first.

    Raises ``SourceError`` when not one source could be read.
    """
    wanted = tuple(dict.fromkeys(s.strip() for s in specs if s.strip()))
    if not wanted:
        wanted = (str(resources.sample_dir() / "feed.xml"),)
    articles: list[Article] = []
    warnings: list[str] = []
    failures: list[tuple[str, str]] = []
    with _Fetcher(timeout, user_agent, cache_dir, max_bytes) as fetcher:
        for spec in wanted:
            try:
                found, notes = _read_one(spec, fetcher)
            except _SourceFailure as failure:
                failures.append((spec, failure.reason))
                warnings.append(f"source {display_name(spec)} skipped: {failure.reason}")
                continue
            articles.extend(found)
            warnings.extend(notes)
    if len(failures) == len(wanted):
        raise SourceError([(display_name(spec), reason) for spec, reason in failures])
    return SourceReport(
        articles=tuple(merge_articles(articles)),
        warnings=tuple(warnings),
        failed=tuple(spec for spec, _ in failures),
    )


def _read_one(spec: str, fetcher: _Fetcher) -> tuple[list[Article], list[str]]:
    scheme = _scheme(spec)
    if scheme in ("http", "https"):
        data, final_url, content_type = fetcher.fetch(spec)
        return parse_feed(data, spec, base_url=final_url, content_type=content_type)
    if scheme is not None:
        raise _SourceFailure(
            f"unsupported scheme {scheme}: (use an http(s) URL, a feed file or a folder of JSON "
            "files)"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        return read_json_folder(path, spec, max_bytes=fetcher.max_bytes)
    if path.is_file():
        return parse_feed(_read_file(path, fetcher.max_bytes), spec)
    raise _SourceFailure("file not found")


def _scheme(spec: str) -> str | None:
    """The URL scheme of ``spec``, or None for a path. ``C:\\feeds`` is a path, not scheme c:."""
    match = _SCHEME.match(spec)
    if match is None or len(match.group(1)) == 1:
        return None
    return match.group(1).lower()


def display_name(spec: str) -> str:
    """``spec`` as shown in messages: a password in a URL is replaced by ``***``."""
    parts = urlsplit(spec) if _scheme(spec) else None
    if parts is None or not parts.password:
        return spec
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        if path.stat().st_size > max_bytes:
            raise _SourceFailure(f"larger than {_size(max_bytes)}")
        return path.read_bytes()
    except OSError as exc:
        raise _SourceFailure(f"cannot read the file ({exc.strerror or exc})") from None


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MB" if n >= 1024 * 1024 else f"{n} bytes"


# ---------------------------------------------------------------------------------- download


@dataclass(frozen=True, slots=True)
class _Cached:
    body: bytes
    etag: str
    last_modified: str


class _Fetcher:
    """Downloads feeds over http(s) with a deadline, a size cap and an optional validator cache."""

    def __init__(
        self, timeout: float, user_agent: str, cache_dir: Path | None, max_bytes: int
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.cache_dir = cache_dir
        self._client: httpx.Client | None = None
        self._headers = {
            "User-Agent": user_agent,
            "Accept": _ACCEPT,
            # Only gzip: we inflate it ourselves, chunk by chunk, so a small compressed body cannot
            # expand past the size cap in memory.
            "Accept-Encoding": "gzip",
        }

    def __enter__(self) -> _Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> httpx.Client:
        # Created on first use: reading only files should not pay for an SSL context.
        if self._client is None:
            self._client = httpx.Client(headers=self._headers, follow_redirects=False)
        return self._client

    def fetch(self, url: str) -> tuple[bytes, str, str]:
        """(body, final URL, content type) of ``url``; raises _SourceFailure with a short reason."""
        try:
            return self._fetch(url)
        except httpx.TimeoutException:
            raise _SourceFailure(f"timed out after {self.timeout:g}s") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _SourceFailure(f"invalid URL ({exc})") from None
        except httpx.HTTPError as exc:
            raise _SourceFailure(f"unreachable ({exc or type(exc).__name__})") from None

    def _fetch(self, url: str) -> tuple[bytes, str, str]:
        deadline = time.monotonic() + self.timeout
        cached = self._cache_load(url)
        headers = _conditional_headers(cached)
        current = url
        # We follow redirects by hand so that every hop is checked to be http(s) and counted.
        for _hop in range(MAX_REDIRECTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise httpx.TimeoutException("deadline")
            with self.client.stream("GET", current, headers=headers, timeout=remaining) as response:
                if response.has_redirect_location:
                    current = _redirect_target(current, response.headers["location"])
                    continue
                content_type = response.headers.get("content-type", "")
                if response.status_code == 304 and cached is not None:
                    return cached.body, current, content_type
                if response.status_code != 200:
                    raise _SourceFailure(f"HTTP {response.status_code} {response.reason_phrase}")
                body = _read_capped(response, self.max_bytes, deadline)
                self._cache_store(url, response.headers, body)
                return body, current, content_type
        raise _SourceFailure(f"too many redirects (more than {MAX_REDIRECTS})")

    # Conditional GET: the validators and body of the last 200 answer, one pair of files per URL.
    # The cache is an optimisation only: an unreadable or unwritable cache never fails a source.

    def _cache_paths(self, url: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        stem = hashlib.sha256(url.encode()).hexdigest()[:32]
        return self.cache_dir / f"{stem}.json", self.cache_dir / f"{stem}.body"

    def _cache_load(self, url: str) -> _Cached | None:
        paths = self._cache_paths(url)
        if paths is None:
            return None
        try:
            meta = json.loads(paths[0].read_text(encoding="utf-8"))
            body = paths[1].read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("url") != url:
            return None
        return _Cached(body, str(meta.get("etag", "")), str(meta.get("last_modified", "")))

    def _cache_store(self, url: str, headers: httpx.Headers, body: bytes) -> None:
        paths = self._cache_paths(url)
        etag = headers.get("etag", "")
        last_modified = headers.get("last-modified", "")
        if paths is None or not (etag or last_modified):
            return
        meta = {"url": url, "etag": etag, "last_modified": last_modified}
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(paths[1], body)
            _write_atomically(paths[0], json.dumps(meta).encode())
        except OSError:
            pass


def _conditional_headers(cached: _Cached | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if cached is not None and cached.etag:
        headers["If-None-Match"] = cached.etag
    if cached is not None and cached.last_modified:
        headers["If-Modified-Since"] = cached.last_modified
    return headers


def _write_atomically(path: Path, data: bytes) -> None:
    # A crash mid-write must not leave a truncated body that a later 304 would reuse.
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_bytes(data)
    partial.replace(path)


def _redirect_target(current: str, location: str) -> str:
    target = urljoin(current, location.strip())
    scheme = urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        raise _SourceFailure(f"redirected to a non-http(s) URL ({scheme or 'no scheme'}:)")
    return target


def _read_capped(response: httpx.Response, max_bytes: int, deadline: float) -> bytes:
    """The decoded body, refusing more than ``max_bytes`` and anything past the deadline.

    httpx's own timeout is per network read, so a server trickling one byte at a time would never
    trip it: the deadline check between chunks bounds the whole download.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _SourceFailure(f"larger than {_size(max_bytes)}")
    inflater = _inflater(response.headers.get("content-encoding", ""))
    body = _CappedBuffer(max_bytes)
    for chunk in response.iter_raw():
        if inflater is None:
            body.add(chunk)
        else:
            body.add_compressed(inflater, chunk)
        if time.monotonic() > deadline:
            raise httpx.TimeoutException("deadline")
    return body.value()


def _inflater(encoding: str) -> Any:
    """A zlib decompressor for the Content-Encoding, or None for an uncompressed body."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # 32: accept gzip or zlib headers
    raise _SourceFailure(f"unsupported Content-Encoding {encoding!r}")


class _CappedBuffer:
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        if len(self._data) + len(chunk) > self._max:
            raise _SourceFailure(f"larger than {_size(self._max)}")
        self._data += chunk

    def add_compressed(self, inflater: Any, chunk: bytes) -> None:
        # max_length bounds each inflated piece: a gzip bomb stops at the cap, not in memory.
        pending = chunk
        while pending:
            self.add(inflater.decompress(pending, self._max - len(self._data) + 1))
            pending = inflater.unconsumed_tail

    def value(self) -> bytes:
        return bytes(self._data)


# ------------------------------------------------------------------------------------- feeds


def parse_feed(
    data: bytes, source: str, *, base_url: str | None = None, content_type: str = ""
) -> tuple[list[Article], list[str]]:
    """The articles of one RSS/Atom document and the warnings about items it had to drop."""
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
    warnings = [f"source {name}: {n} item(s) dropped ({why})" for why, n in dropped.items()]
    if broken:
        warnings.append(f"source {name}: not well-formed XML ({broken}); read what was recoverable")
    return articles, warnings


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
    if not _is_http_url(link):
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
        summary_html=_as_html(entry.get("summary_detail"), entry.get("summary")),
        content_html=_entry_content(entry),
        source=source,
        updated=updated,
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


# -------------------------------------------------------------------------------- JSON folder


def read_json_folder(
    folder: Path, source: str, *, max_bytes: int = MAX_SOURCE_BYTES
) -> tuple[list[Article], list[str]]:
    """The articles of every ``*.json`` file in ``folder``; bad files become warnings."""
    files = sorted(p for p in folder.glob("*.json") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise _SourceFailure("no .json files in the folder")
    articles: list[Article] = []
    problems: list[str] = []
    for file in files:
        found, bad = _read_json_file(file, source, max_bytes)
        articles.extend(found)
        problems.extend(bad)
    if not articles and problems:
        raise _SourceFailure(f"no usable article in {len(files)} file(s); first: {problems[0]}")
    name = display_name(source)
    return articles, [f"source {name}: {problem}" for problem in problems]


def _read_json_file(file: Path, source: str, max_bytes: int) -> tuple[list[Article], list[str]]:
    try:
        items = _load_json(file, max_bytes)
    except _BadItem as bad:
        return [], [f"{file.name} skipped: {bad.reason}"]
    articles: list[Article] = []
    problems: list[str] = []
    for number, item in enumerate(items, start=1):
        try:
            articles.append(json_article(item, source))
        except _BadItem as bad:
            where = file.name if len(items) == 1 else f"{file.name} item {number}"
            problems.append(f"{where} skipped: {bad.reason}")
    return articles, problems


def _load_json(file: Path, max_bytes: int) -> list[Any]:
    try:
        if file.stat().st_size > max_bytes:
            raise _BadItem(f"larger than {_size(max_bytes)}")
        document = json.loads(file.read_bytes())
    except OSError as exc:
        raise _BadItem(f"cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise _BadItem("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _BadItem(
            f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    raise _BadItem("expected an article object or a list of them")


def json_article(item: Any, source: str) -> Article:
    """One JSON article object (schema in the module docstring) -> Article, or ``_BadItem``."""
    if not isinstance(item, dict):
        raise _BadItem("expected an article object")
    url = _required_text(item, "url")
    if not _is_http_url(url):
        raise _BadItem(f"field 'url' is not an http(s) URL: {url[:80]!r}")
    title = clean_line(html.unescape(_required_text(item, "title")))
    if not title:
        raise _BadItem("field 'title' is empty")
    published = _json_date(item, "published")
    if published is None:
        raise _BadItem("field 'published' is missing")
    return Article(
        uid=_optional_text(item, "id") or url,
        title=title,
        link=url,
        published=published,
        categories=_json_categories(item.get("categories")),
        author=clean_line(_optional_text(item, "author")),
        summary_html=_optional_text(item, "summary"),
        content_html=_optional_text(item, "content"),
        source=source,
        updated=_json_date(item, "updated"),
    )


def _required_text(item: Mapping[str, Any], field: str) -> str:
    if item.get(field) is None:
        raise _BadItem(f"field {field!r} is missing")
    return _optional_text(item, field)


def _optional_text(item: Mapping[str, Any], field: str) -> str:
    value = item.get(field)
    if value is None:
        return ""
    # A numeric id is common in CMS exports; anything else non-textual is a mistake.
    if isinstance(value, int) and not isinstance(value, bool) and field == "id":
        return str(value)
    if not isinstance(value, str):
        raise _BadItem(f"field {field!r} must be a string")
    return value.strip()


def _json_date(item: Mapping[str, Any], field: str) -> datetime | None:
    text = _optional_text(item, field)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise _BadItem(
            f"field {field!r} is not an ISO 8601 date with a UTC offset or Z: {text[:40]!r}"
        )
    return value.astimezone(UTC)


def _json_categories(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _BadItem("field 'categories' must be a list of strings or one string")
    return clean_categories(value)


# ------------------------------------------------------------------------------ text hygiene


def clean_line(text: str) -> str:
    """``text`` on one line: control characters and line breaks become spaces, runs collapse.

    Titles, authors and categories end up in mail headers; a CR/LF there would forge headers.
    No-break spaces (U+00A0, U+202F) survive: French puts them before : ; ? ! and inside « ».
    """
    spaced = "".join(" " if unicodedata.category(ch) in _BREAKING else ch for ch in text)
    return _SPACES.sub(" ", spaced).strip()


def clean_categories(names: Iterable[str]) -> tuple[str, ...]:
    """Cleaned category names in feed order (the first is primary), empty and repeated ones out."""
    seen: set[str] = set()
    kept: list[str] = []
    for name in names:
        label = clean_line(html.unescape(str(name)))
        key = category_key(label)
        if key and key not in seen:
            seen.add(key)
            kept.append(label)
    return tuple(kept)


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:  # "https://[exemple.ma/a": an invalid IPv6 literal is no link
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


# -------------------------------------------------------------------------------------- merge


def merge_articles(articles: Iterable[Article]) -> list[Article]:
    """One article per identity (same uid or same link), the freshest version, newest first.

    On equal freshness the version read first (earlier source, earlier in its feed) is kept.
    """
    kept: dict[int, Article] = {}
    keys_of: dict[int, set[str]] = {}
    owner: dict[str, int] = {}
    for number, article in enumerate(articles):
        keys = {"uid:" + article.uid, "link:" + _link_key(article.link)}
        versions = []
        for group in sorted({owner[k] for k in keys if k in owner}):
            versions.append(kept.pop(group))
            keys |= keys_of.pop(group)
        versions.append(article)
        best = versions[0]
        for version in versions[1:]:
            if version.freshness > best.freshness:  # strictly: ties keep the earlier version
                best = version
        kept[number] = best
        keys_of[number] = keys
        owner.update(dict.fromkeys(keys, number))
    return sorted(kept.values(), key=lambda a: (a.published, a.uid), reverse=True)


def _link_key(link: str) -> str:
    """A link compared case-insensitively in scheme and host, without its #fragment."""
    try:
        parts = urlsplit(link.strip())
    except ValueError:  # unparseable: compared as written
        return link.strip()
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))
