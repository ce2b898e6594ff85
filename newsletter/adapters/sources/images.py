"""Sources: the one picture of a feed item, chosen among everything the item offers.

Candidates, best first (the first one ``domain.images.safe_image`` accepts wins, so an unsafe
first candidate gives way to the next):

1. ``media:content`` images (``medium="image"``, an ``image/*`` type, or an image file name when
   neither is said), the widest first, in feed order among equals and unknown widths last;
2. ``media:thumbnail``;
3. enclosures (RSS ``<enclosure>``, Atom ``<link rel="enclosure">``) of an ``image/*`` type;
4. the first ``<img>`` of the content (``content:encoded``), then of the summary.

Alt text: a ``media:content``'s own ``media:description`` (else its ``media:title``), else the
item's ``media:description``/``media:title`` (a ``media:group``'s), else nothing; an ``<img>``'s
``alt`` attribute.

feedparser's own handling of ``media:description`` and ``media:title`` is replaced
(``install_media_text_handlers``): it treats them as the item's description and title, so an
image caption overwrote the article's summary or content (feedparser issue #53, open since 2016).
Here they are kept apart, as ``description``/``title`` of the ``media:content`` they sit in, or
as ``media_description``/``media_title`` of the item.

``<img>`` tags are read with libxml2's HTML parser (lxml) in streaming mode: no tree is built,
nesting depth costs nothing, and parsing stops at the first usable image.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from feedparser.namespaces import mediarss
from lxml import etree

from newsletter.domain import ArticleImage
from newsletter.domain.images import image_dimension, safe_image

_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif"})
_IN_MEDIA = "_newsletter_in_media_content"


def entry_image(entry: Mapping[str, Any]) -> ArticleImage | None:
    """The one image to show for a feedparser entry, or None."""
    for url, alt, width, height in _media_candidates(entry):
        image = safe_image(url, alt, width, height)
        if image is not None:
            return image
    for detail in (*(entry.get("content") or ()), entry.get("summary_detail")):
        if detail and "html" in str(detail.get("type", "text/html")):
            image = first_html_image(str(detail.get("value") or ""))
            if image is not None:
                return image
    return None


def first_html_image(markup: str) -> ArticleImage | None:
    """The first ``<img>`` of untrusted HTML that ``safe_image`` accepts, or None."""
    if "<" not in markup:
        return None
    finder = _ImgFinder()
    parser = etree.HTMLParser(target=finder, no_network=True, recover=True)
    try:
        parser.feed(markup)
        parser.close()
    except _Found:
        pass
    except (etree.Error, ValueError):  # libxml2 gave up on it: whatever was found still counts
        pass
    return finder.found


def _media_candidates(entry: Mapping[str, Any]) -> Iterator[tuple[Any, Any, Any, Any]]:
    item_alt = entry.get("media_description") or entry.get("media_title") or ""
    contents = [m for m in _dicts(entry.get("media_content")) if _is_image_content(m)]
    # The widest first; sorted() is stable, so equal and unknown widths keep feed order.
    contents.sort(key=lambda m: -(image_dimension(m.get("width")) or 0))
    for media in contents:
        alt = media.get("description") or media.get("title") or item_alt
        yield media.get("url"), alt, media.get("width"), media.get("height")
    for thumb in _dicts(entry.get("media_thumbnail")):
        yield thumb.get("url"), item_alt, thumb.get("width"), thumb.get("height")
    seen: set[str] = set()
    enclosures = [
        *_dicts(entry.get("enclosures")),
        *(link for link in _dicts(entry.get("links")) if link.get("rel") == "enclosure"),
    ]
    for enclosure in enclosures:
        url = enclosure.get("href") or enclosure.get("url")
        if str(enclosure.get("type", "")).lower().startswith("image/") and url not in seen:
            seen.add(str(url))
            yield url, item_alt, None, None


def _dicts(value: Any) -> Iterable[Mapping[str, Any]]:
    if not isinstance(value, list):
        return ()
    return [v for v in value if isinstance(v, Mapping)]


def _is_image_content(media: Mapping[str, Any]) -> bool:
    medium = str(media.get("medium", "")).strip().lower()
    kind = str(media.get("type", "")).strip().lower()
    if medium or kind:
        return medium == "image" or kind.startswith("image/")
    try:
        path = urlsplit(str(media.get("url", ""))).path
    except ValueError:
        return False
    return posixpath.splitext(path)[1].lower() in _IMAGE_SUFFIXES


class _Found(Exception):
    """Stops the HTML parser at the first usable image."""


class _ImgFinder:
    """lxml parser target: looks at start tags only and stops at the first safe ``<img>``."""

    def __init__(self) -> None:
        self.found: ArticleImage | None = None

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        if tag != "img":
            return
        image = safe_image(
            attrib.get("src"), attrib.get("alt"), attrib.get("width"), attrib.get("height")
        )
        if image is not None:
            self.found = image
            raise _Found

    def end(self, tag: str) -> None:
        pass

    def data(self, data: str) -> None:
        pass

    def close(self) -> None:
        pass


# -- feedparser: media:description and media:title kept apart from the item's own text ---------


def _start_media_content(parser: Any, attrs_d: dict[str, Any]) -> None:
    context = parser._get_context()
    context.setdefault("media_content", [])
    context["media_content"].append(attrs_d)
    setattr(parser, _IN_MEDIA, True)


def _end_media_content(parser: Any) -> None:
    setattr(parser, _IN_MEDIA, False)


def _media_text_handlers(key: str) -> tuple[Any, Any]:
    element = f"newsletter_media_{key}"

    def start(parser: Any, attrs_d: dict[str, Any]) -> None:
        parser.push(element, 0)  # 0: pop() hands the text back and stores nothing itself

    def end(parser: Any) -> None:
        text = parser.pop(element)
        if not text or not parser.inentry or parser.insource:
            return  # a channel's media text says nothing about an item's picture
        context = parser._get_context()
        contents = context.get("media_content")
        if getattr(parser, _IN_MEDIA, False) and contents:
            contents[-1].setdefault(key, text)
        else:
            context.setdefault(f"media_{key}", text)

    return start, end


def install_media_text_handlers() -> None:
    """Make feedparser keep media:description/media:title out of the item's summary and title."""
    namespace: Any = mediarss.Namespace
    namespace._start_media_content = _start_media_content
    namespace._end_media_content = _end_media_content
    namespace._start_media_description, namespace._end_media_description = _media_text_handlers(
        "description"
    )
    namespace._start_media_title, namespace._end_media_title = _media_text_handlers("title")
