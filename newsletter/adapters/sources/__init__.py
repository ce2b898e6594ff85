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

The package, by concern: ``errors`` (what a failure is and how a source is named), ``fetch``
(downloads with their deadline, size cap and validator cache), ``feed`` (RSS/Atom entries ->
articles), ``jsonfolder`` (folders of JSON articles; their schema is documented there) and
``articles`` (one-line cleaning of titles and categories, merging duplicates).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from newsletter.adapters import resources
from newsletter.adapters.sources.articles import (
    clean_categories,
    clean_line,
    merge_articles,
    merge_noting_duplicates,
)
from newsletter.adapters.sources.errors import (
    DEFAULT_USER_AGENT,
    MAX_SOURCE_BYTES,
    SourceError,
    SourceReport,
    _BadItem,
    _read_file,
    _scheme,
    _SourceFailure,
    display_name,
)
from newsletter.adapters.sources.feed import FeedRead, parse_feed, read_feed
from newsletter.adapters.sources.fetch import MAX_REDIRECTS, _Fetcher
from newsletter.adapters.sources.jsonfolder import json_article, read_json_folder
from newsletter.domain import Article

__all__ = [
    "DEFAULT_USER_AGENT",
    "MAX_REDIRECTS",
    "MAX_SOURCE_BYTES",
    "FeedRead",
    "SourceError",
    "SourceReport",
    "_BadItem",
    "_SourceFailure",
    "clean_categories",
    "clean_line",
    "display_name",
    "json_article",
    "merge_articles",
    "merge_noting_duplicates",
    "parse_feed",
    "read_feed",
    "read_json_folder",
    "read_sources",
]


def read_sources(
    specs: Sequence[str],
    *,
    timeout: float = 20.0,
    user_agent: str = DEFAULT_USER_AGENT,
    cache_dir: Path | None = None,
    max_bytes: int = MAX_SOURCE_BYTES,
) -> SourceReport:
    """Read every source, merge and de-duplicate their articles, newest first.

    ``site_link`` is the channel ``<link>`` of the first feed read (in ``specs`` order) that has
    an http(s) one; folders of JSON articles have none. Raises ``SourceError`` when not one
    source could be read.
    """
    wanted = tuple(dict.fromkeys(s.strip() for s in specs if s.strip()))
    if not wanted:
        wanted = (str(resources.sample_dir() / "feed.xml"),)
    articles: list[Article] = []
    warnings: list[str] = []
    failures: list[tuple[str, str]] = []
    site_link = ""
    with _Fetcher(timeout, user_agent, cache_dir, max_bytes) as fetcher:
        for spec in wanted:
            try:
                read = _read_one(spec, fetcher)
            except _SourceFailure as failure:
                failures.append((spec, failure.reason))
                warnings.append(f"source {display_name(spec)} skipped: {failure.reason}")
                continue
            articles.extend(read.articles)
            warnings.extend(read.warnings)
            site_link = site_link or read.site_link
    if len(failures) == len(wanted):
        raise SourceError([(display_name(spec), reason) for spec, reason in failures])
    merged, duplicates = merge_noting_duplicates(articles)
    return SourceReport(
        articles=tuple(merged),
        warnings=tuple(warnings),
        failed=tuple(spec for spec, _ in failures),
        failures=tuple((display_name(spec), reason) for spec, reason in failures),
        duplicates=tuple(duplicates),
        site_link=site_link,
    )


def _read_one(spec: str, fetcher: _Fetcher) -> FeedRead:
    scheme = _scheme(spec)
    if scheme in ("http", "https"):
        data, final_url, content_type = fetcher.fetch(spec)
        return read_feed(data, spec, base_url=final_url, content_type=content_type)
    if scheme is not None:
        raise _SourceFailure(
            f"unsupported scheme {scheme}: (use an http(s) URL, a feed file or a folder of JSON "
            "files)"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        return FeedRead(*read_json_folder(path, spec, max_bytes=fetcher.max_bytes))
    if path.is_file():
        return read_feed(_read_file(path, fetcher.max_bytes), spec)
    raise _SourceFailure("file not found")
