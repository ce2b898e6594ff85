"""Article images: the one rule for what a source may hand the renderer as a picture.

Pure functions, no I/O: an image is a link the reader's mail client loads, never something we
download. Feeds and JSON articles are untrusted, so every candidate goes through ``safe_image``:

- the URL is an absolute ``https://`` URL with a host (``http:``, ``data:``, ``javascript:``,
  relative and protocol-relative URLs are refused), at most ``MAX_URL_CHARS`` characters once the
  ASCII whitespace and control characters a browser would strip from its ends are gone;
- a URL holding a space, a quote, a backtick, ``<``, ``>``, a backslash, a control character or
  any other unprintable character is refused, not repaired: repairing is guessing, and a guessed
  URL in an attribute is how markup gets injected;
- a width or height of 2 px or less (either one) is a tracking pixel: no image;
- width and height are positive integers ("600" and "600px" read as 600); anything else, and any
  size above ``MAX_DIMENSION``, is "unknown" rather than trusted;
- the alt text is one line of plain text (markup stripped, entities decoded, controls removed),
  at most ``MAX_ALT_CHARS`` characters; "" when the source has none (the renderer then uses the
  headline).

Nothing else is guessed (no "looks like a pixel" URL patterns): size and scheme are the rules.
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

from newsletter.domain import ArticleImage
from newsletter.domain.text import excerpt, html_to_text, one_line

MAX_URL_CHARS = 2048
MAX_ALT_CHARS = 300
#: sizes above this are not real pictures (a hostile or broken width): treated as unknown
MAX_DIMENSION = 10_000
#: an image this small or smaller, in either direction, is a tracking pixel
PIXEL_MAX = 2

# What a browser strips from both ends of a URL attribute (WHATWG URL: C0 controls and space).
_URL_TRIM = "".join(chr(c) for c in range(0x21))
# Characters that end or break out of an HTML attribute, or that browsers rewrite silently.
_URL_REFUSED = frozenset(" \"'`<>\\")
# "600", "600px", "600.5" (browsers read the leading integer), with optional spaces.
_DIMENSION_RE = re.compile(r"\s*(\d{1,9})(?:\.\d*)?\s*(?:px)?\s*", re.IGNORECASE)


def safe_image(
    url: object, alt: object = "", width: object = None, height: object = None
) -> ArticleImage | None:
    """The image a source names, or None when it must not be shown (see the module rules)."""
    safe_url = safe_image_url(url)
    if safe_url is None:
        return None
    w, h = image_dimension(width), image_dimension(height)
    if is_pixel(width) or is_pixel(height):
        return None
    return ArticleImage(url=safe_url, alt=image_alt(alt), width=w, height=h)


def safe_image_url(url: object) -> str | None:
    """``url`` with its ends trimmed when it is an https URL fit for an ``<img src>``, else None."""
    if not isinstance(url, str):
        return None
    text = url.strip(_URL_TRIM)
    if not text or len(text) > MAX_URL_CHARS:
        return None
    if any(ch in _URL_REFUSED or not ch.isprintable() for ch in text):
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
        credentials = parts.username is not None or parts.password is not None
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or not host or credentials:
        return None
    return text


def image_dimension(value: object) -> int | None:
    """A declared width or height in pixels, or None when unknown, unreadable or absurd."""
    pixels = _pixels(value)
    if pixels is None or pixels <= 0 or pixels > MAX_DIMENSION:
        return None
    return pixels


def is_pixel(value: object) -> bool:
    """True when a declared width or height says tracking pixel (0, 1 or 2 px)."""
    pixels = _pixels(value)
    return pixels is not None and 0 <= pixels <= PIXEL_MAX


def image_alt(value: object) -> str:
    """Alt text from a source: one line of plain text, capped; "" for anything but text."""
    if not isinstance(value, str) or not value:
        return ""
    return excerpt(one_line(html_to_text(value)), MAX_ALT_CHARS)


def _pixels(value: object) -> int | None:
    if isinstance(value, bool):  # True is an int in Python, never a size
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return math.floor(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = _DIMENSION_RE.fullmatch(value)
        return int(match.group(1)) if match else None
    return None
