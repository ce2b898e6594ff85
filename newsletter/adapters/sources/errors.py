"""Sources: what a failed source or item is, and how a source is named in messages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from newsletter import __version__
from newsletter.domain import Article
from newsletter.domain.errors import NewsletterError
from newsletter.domain.urls import redact_url

DEFAULT_USER_AGENT = f"newsletter/{__version__} (+https://github.com/newsletter)"
#: the largest feed or JSON file we read, after decompression; memory stays bounded by it
MAX_SOURCE_BYTES = 20 * 1024 * 1024
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


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
    failures: tuple[tuple[str, str], ...] = ()  # (name as shown, reason) of each failed source
    duplicates: tuple[tuple[Article, Article], ...] = ()  # (dropped, kept) versions of one article
    site_link: str = ""  # the first readable feed's own <link> (its site's home page), if http(s)


def _scheme(spec: str) -> str | None:
    """The URL scheme of ``spec``, or None for a path. ``C:\\feeds`` is a path, not scheme c:."""
    match = _SCHEME.match(spec)
    if match is None or len(match.group(1)) == 1:
        return None
    return match.group(1).lower()


def display_name(spec: str) -> str:
    """``spec`` as shown in messages: a password in a URL is replaced by ``***``."""
    return redact_url(spec) if _scheme(spec) else spec


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        if path.stat().st_size > max_bytes:
            raise _SourceFailure(f"larger than {_size(max_bytes)}")
        return path.read_bytes()
    except OSError as exc:
        raise _SourceFailure(f"cannot read the file ({exc.strerror or exc})") from None


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MB" if n >= 1024 * 1024 else f"{n} bytes"
