"""Feed HTML reduced to safe plain text, excerpts, and one-line strings for headers.

Pure functions, no I/O. Feed markup is untrusted: it goes through nh3 (ammonia, an HTML5 parser)
with every tag stripped and the content of script-like elements dropped, then entities are decoded.
Because decoding can turn ``&lt;script&gt;`` back into markup, the reduction runs again until the
text stops changing: what comes out holds no tag at all, only text.
"""

from __future__ import annotations

import html
import re

import nh3

# Block elements become paragraph breaks so that "<p>a</p><p>b</p>" reads "a", "b", not "ab".
_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "blockquote",
        "pre",
        "table",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "section",
        "article",
        "header",
        "footer",
        "aside",
        "figure",
        "figcaption",
        "hr",
        "address",
    ]
)
# Inline separators: a line break or a table cell still separates words.
_SPACE_TAGS = frozenset({"br", "td", "th"})
# Elements whose content is never readable text (code, styles, embedded documents).
_CONTENT_DROPPED = frozenset(
    [
        "script",
        "style",
        "noscript",
        "template",
        "iframe",
        "object",
        "embed",
        "svg",
        "math",
        "textarea",
        "select",
        "title",
        "head",
        "frameset",
        "noembed",
        "noframes",
    ]
)
_CLEANER = nh3.Cleaner(
    tags=set(_BLOCK_TAGS | _SPACE_TAGS),
    clean_content_tags=set(_CONTENT_DROPPED),
    attributes={},
    url_schemes=set(),
    link_rel=None,
    strip_comments=True,
)
# nh3 serialises the allowed tags canonically ("<p>", "</p>", "<br>"), with no attribute left.
_BLOCK_RE = re.compile("</?(?:" + "|".join(sorted(_BLOCK_TAGS)) + ")>")
_SPACE_RE = re.compile("</?(?:" + "|".join(sorted(_SPACE_TAGS)) + ")>")
# C0/C1 controls except tab, LF, CR, FF (whitespace), and lone surrogates nh3 cannot take.
_CONTROLS_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Whitespace to collapse, except the no-break spaces French typography puts before ":" or "»".
_SPACES_RE = re.compile(r"[^\S\u00a0\u202f\u2007]+")
_PARAGRAPH_SPLIT_RE = re.compile(r"\n\s*\n")
# Everything that may break a header line: controls, Unicode line/paragraph separators.
_LINE_BREAKERS_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_MAX_PASSES = 8
_TRAILING_JUNK = " \t\n,;:–—-([{«\"'"
ELLIPSIS = "…"


def html_to_text(markup: str) -> str:
    """Readable text of untrusted feed HTML: no tag, no script text, entities decoded.

    Paragraphs are separated by one blank line ("\\n\\n"); whitespace inside a paragraph is
    collapsed to single spaces (no-break spaces are kept). Never raises on any str input.
    """
    text = _CONTROLS_RE.sub("", markup)
    for _ in range(_MAX_PASSES):
        reduced = _reduce_once(text)
        if reduced == text:
            break
        text = reduced
    else:
        # Entities nested deeper than _MAX_PASSES: give up decoding, keep no angle bracket at all.
        text = text.replace("<", "").replace(">", "")
    return _normalise_paragraphs(text)


def _reduce_once(text: str) -> str:
    """One sanitise + strip + decode step; a fixpoint of it contains no markup."""
    cleaned = _CLEANER.clean(text)
    cleaned = _BLOCK_RE.sub("\n\n", cleaned)
    cleaned = _SPACE_RE.sub(" ", cleaned)
    return html.unescape(cleaned)


def _normalise_paragraphs(text: str) -> str:
    paragraphs = (_SPACES_RE.sub(" ", p).strip() for p in _PARAGRAPH_SPLIT_RE.split(text))
    return "\n\n".join(p for p in paragraphs if p)


def collapse(text: str) -> str:
    """All whitespace runs (line breaks included) to one space, ends trimmed."""
    return _SPACES_RE.sub(" ", text).strip()


def excerpt(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary so that the result is at most ``limit`` chars.

    A cut text ends with "…" (counted in ``limit``). A single word longer than the limit is cut
    inside the word rather than dropped.
    """
    flat = collapse(text)
    if len(flat) <= limit:
        return flat
    if limit <= len(ELLIPSIS):
        return ELLIPSIS[: max(limit, 0)]
    room = limit - len(ELLIPSIS)
    head = flat[: room + 1]  # one more char tells whether the cut falls on a space
    boundary = head.rfind(" ")
    # Cutting back to a space more than half the room away loses too much: cut in the word.
    cut = head[:boundary] if boundary > room // 2 else flat[:room]
    return cut.rstrip(_TRAILING_JUNK) + ELLIPSIS


def one_line(text: str) -> str:
    """``text`` made safe for a header: no CR/LF or other control or line-separator char."""
    return collapse(_LINE_BREAKERS_RE.sub(" ", text))
