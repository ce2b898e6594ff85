"""Sources: folders of JSON articles.

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
``image``       no        the article's picture, shown as a link (never downloaded): an object
                          ``{"url": ..., "alt": ..., "width": ..., "height": ...}`` where only
                          ``url`` is required, or just the URL as a string. ``url`` must be
                          ``https://``; ``alt`` is plain text describing the picture (default: the
                          headline); ``width`` and ``height`` are its size in pixels (``600`` or
                          ``"600"``). An image of 2 px or less is a tracking pixel, never shown.
==============  ========  =========================================================================

Other fields are ignored. A file that is not valid JSON, or an article with a missing or malformed
field, is skipped with a warning naming the file and the field; the other files still count.
The image is the exception: a malformed or unsafe ``image`` (not https, quotes or spaces in the
URL, a tracking pixel...) is left out with a warning naming the file and the field, and the
article is kept without it; an unreadable ``width`` or ``height`` is read as unknown, with a
warning.

Example ``2026-01-26-budget.json``::

    {
      "id": "obs-2026-0142",
      "title": "Le budget 2026 adopté en première lecture",
      "url": "https://www.example.com/2026/01/26/budget-2026/",
      "published": "2026-01-26T18:30:00+01:00",
      "categories": ["Politique", "Économie"],
      "author": "Awa Diallo",
      "summary": "<p>Les députés ont voté le texte après trois jours de débats.</p>",
      "image": {
        "url": "https://www.example.com/wp-content/uploads/2026/01/hemicycle.jpg",
        "alt": "L’hémicycle pendant le vote",
        "width": 1200,
        "height": 675
      }
    }
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.sources.articles import clean_categories, clean_line
from newsletter.adapters.sources.errors import (
    MAX_SOURCE_BYTES,
    _BadItem,
    _size,
    _SourceFailure,
    display_name,
)
from newsletter.domain import Article, ArticleImage
from newsletter.domain.images import image_dimension, is_pixel, safe_image, safe_image_url
from newsletter.domain.urls import is_http_url

# How an image warning ends: unlike a bad field elsewhere, a bad image does not cost the article.
_KEPT = "; the article is kept without an image"


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
        files_text = english_ngettext("%(num)d file", "%(num)d files", len(files))
        raise _SourceFailure(
            f"no usable article in {files_text % {'num': len(files)}}; first: {problems[0]}"
        )
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
        where = file.name if len(items) == 1 else f"{file.name} item {number}"
        try:
            article, notes = _json_article(item, source)
        except _BadItem as bad:
            problems.append(f"{where} skipped: {bad.reason}")
            continue
        articles.append(article)
        problems.extend(f"{where}: {note}" for note in notes)
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
    return _json_article(item, source)[0]


def _json_article(item: Any, source: str) -> tuple[Article, list[str]]:
    """``json_article``, and the notes about an image left out or read in part."""
    if not isinstance(item, dict):
        raise _BadItem("expected an article object")
    url = _required_text(item, "url")
    if not is_http_url(url):
        raise _BadItem(f"field 'url' is not an http(s) URL: {url[:80]!r}")
    title = clean_line(html.unescape(_required_text(item, "title")))
    if not title:
        raise _BadItem("field 'title' is empty")
    published = _json_date(item, "published")
    if published is None:
        raise _BadItem("field 'published' is missing")
    image, notes = _json_image(item.get("image"))
    article = Article(
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
        image=image,
    )
    return article, notes


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


def _json_image(value: Any) -> tuple[ArticleImage | None, list[str]]:
    """The ``image`` field -> (the image or None, notes for the warnings); never ``_BadItem``."""
    if value is None:
        return None, []
    if isinstance(value, str):
        value = {"url": value}
    if not isinstance(value, dict):
        return None, [f"field 'image' must be an object with a 'url', or a URL string{_KEPT}"]
    url, alt = value.get("url"), value.get("alt")
    if not isinstance(url, str):
        return None, [f"field 'image.url' is missing or not a string{_KEPT}"]
    if alt is not None and not isinstance(alt, str):
        return None, [f"field 'image.alt' must be a string{_KEPT}"]
    width, height = value.get("width"), value.get("height")
    if safe_image_url(url) is None:
        return None, [
            f"field 'image.url' is not an https URL fit for an image: {url[:80]!r}{_KEPT}"
        ]
    if is_pixel(width) or is_pixel(height):
        return None, [f"field 'image' is a tracking pixel (2 px or smaller){_KEPT}"]
    notes = [
        f"field 'image.{side}' is not a size in pixels: {str(size)[:20]!r} (read as unknown)"
        for side, size in (("width", width), ("height", height))
        if size is not None and image_dimension(size) is None
    ]
    return safe_image(url, alt or "", width, height), notes
