"""Feed HTML reduced to safe plain text, excerpts, and one-line strings for headers.

Pure functions, no I/O. Feed markup is untrusted: it goes through nh3 (ammonia, an HTML5 parser)
with every tag stripped and the content of script-like elements dropped, then entities are decoded.
Because decoding can turn ``&lt;script&gt;`` back into markup, the reduction runs again until the
text stops changing: what comes out holds no tag at all, only text.

Two guards keep the cost linear in the size of the markup, whatever a feed sends:

- html5ever (inside nh3) scans its stack of open elements at many start tags, so deeply nested
  markup costs depth x tags: 64k nested ``<div>`` took seconds per call. Before each nh3 call,
  markup that could nest deeper than ``MAX_NESTING`` is flattened (see ``cap_nesting``).
- One edition renders an article's fields several times (every variant, every size-budget
  attempt), so ``html_to_text`` remembers its recent results: each markup is reduced once.
"""

from __future__ import annotations

import hashlib
import html
import re
import threading
from collections import OrderedDict

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

#: Markup whose elements may nest deeper than this is flattened before nh3 sees it. Real articles
#: nest a few dozen levels at most; libxml2 refuses documents past 256 by default.
MAX_NESTING = 256
#: Results kept by ``html_to_text``, counted in characters (plus a per-entry overhead): far more
#: than one edition needs, small enough to live in a long-running server.
TEXT_CACHE_CHARS = 16_000_000
_ENTRY_OVERHEAD = 64

# The nesting guard reads tags with one regular expression: linear by construction (possessive
# and atomic, and it always matches once it has seen "<" + letter, so no position is rescanned).
# The stdlib html.parser is not linear on this Python ("</" * 400_000 takes minutes: CVE-2025-6069).
# A quoted attribute value may hold ">"; an unterminated tag or quote runs to the end, as in HTML5.
_TAG_TOKEN_RE = re.compile(
    r"<(/?)([A-Za-z][^\t\n\f\r />]*)"
    r"""(?>=[\t\n\f\r ]*"[^"]*(?:"|\Z)|=[\t\n\f\r ]*'[^']*(?:'|\Z)|[^>])*+(?:>|\Z)"""
)
# HTML5 tree-building facts the depth estimate relies on (WHATWG "in body" insertion mode).
_VOID = frozenset(
    [
        "area",
        "base",
        "basefont",
        "bgsound",
        "br",
        "col",
        "embed",
        "frame",
        "hr",
        "image",
        "img",
        "input",
        "keygen",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_FORMATTING = frozenset(
    [
        "a",
        "b",
        "big",
        "code",
        "em",
        "font",
        "i",
        "nobr",
        "s",
        "small",
        "strike",
        "strong",
        "tt",
        "u",
    ]
)
# Start tags that close an open <p> first ("close a p element").
_CLOSES_P = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "details",
        "dialog",
        "dir",
        "div",
        "dl",
        "dd",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hgroup",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "li",
        "listing",
        "main",
        "menu",
        "nav",
        "ol",
        "p",
        "pre",
        "search",
        "section",
        "summary",
        "ul",
        "xmp",
    ]
)
# Start tags that close an open sibling of their kind: <li><li>, <dt><dd>, <option><option>.
_CLOSES_SIBLING = {
    "li": frozenset({"li"}),
    "dd": frozenset({"dd", "dt"}),
    "dt": frozenset({"dd", "dt"}),
    "option": frozenset({"option"}),
}
# End tags that close their element through anything in scope ("has an element in scope")...
_SCOPED_END = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "button",
        "center",
        "details",
        "dialog",
        "dir",
        "div",
        "dl",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "header",
        "hgroup",
        "listing",
        "main",
        "menu",
        "nav",
        "ol",
        "pre",
        "search",
        "section",
        "summary",
        "ul",
    ]
)
# ...where scope stops at these; formatting elements stop the walk too, because closing them
# from outside leaves them in the list of active formatting elements, to be re-opened later.
_SCOPE_BARRIERS = (
    frozenset(
        [
            "applet",
            "caption",
            "html",
            "table",
            "td",
            "th",
            "marquee",
            "object",
            "template",
            "button",
            "ol",
            "ul",
            "foreignobject",
            "desc",
            "title",
            "mi",
            "mo",
            "mn",
            "ms",
            "mtext",
            "annotation-xml",
        ]
    )
    | _FORMATTING
)
_END_TAG_REACH = 8  # how far below the top an end tag may look for its element


def html_to_text(markup: str) -> str:
    """Readable text of untrusted feed HTML: no tag, no script text, entities decoded.

    Paragraphs are separated by one blank line ("\\n\\n"); whitespace inside a paragraph is
    collapsed to single spaces (no-break spaces are kept). Never raises on any str input.
    Linear in the size of ``markup``; a markup already reduced recently is not reduced again.
    """
    key = _TEXT_CACHE.key(markup)
    text = _TEXT_CACHE.get(key)
    if text is None:
        text = _reduce(markup)
        _TEXT_CACHE.put(key, text)
    return text


def _reduce(markup: str) -> str:
    # A leading U+FEFF is a byte order mark that nh3 (html5ever) drops: drop it here too, so the
    # plain-text path below (which skips nh3) gives the same text as the markup path.
    text = _CONTROLS_RE.sub("", markup).lstrip("\ufeff")
    for _ in range(_MAX_PASSES):
        if _is_plain(text):
            break  # already a fixpoint: no need to ask nh3
        reduced = _reduce_once(text)
        if reduced == text:
            break
        text = reduced
    else:
        # Entities nested deeper than _MAX_PASSES: give up decoding, keep no angle bracket at all.
        text = text.replace("<", "").replace(">", "")
    return _normalise_paragraphs(text)


def _is_plain(text: str) -> bool:
    """True when nh3 would give ``text`` back as it is, once its escapes are decoded.

    Without "<" there is no tag, without "&" no entity, and CR is the only character the HTML
    parser rewrites (to LF). Skipping nh3 then matters: html5ever is quadratic in the length of
    one text node holding « or no-break spaces (4 MB of French prose: 20 s), and that is what
    every article becomes once the first pass has removed its tags.
    """
    return "<" not in text and "&" not in text and "\r" not in text


def _reduce_once(text: str) -> str:
    """One sanitise + strip + decode step; a fixpoint of it contains no markup."""
    # Every pass, not only the first: decoded entities can spell nested markup too.
    cleaned = _CLEANER.clean(cap_nesting(text))
    cleaned = _BLOCK_RE.sub("\n\n", cleaned)
    cleaned = _SPACE_RE.sub(" ", cleaned)
    return html.unescape(cleaned)


def cap_nesting(markup: str, limit: int = MAX_NESTING) -> str:
    """``markup`` unchanged if its elements cannot nest deeper than ``limit``, else flattened.

    Flattening replaces every tag with what ``_reduce_once`` would turn it into anyway (a block
    tag with a paragraph break, a line break or cell with a space, an inline tag with nothing)
    except the tags whose content nh3 drops (script, style, svg...), which stay for nh3 to remove
    with their content. nh3 still parses and cleans the result: this only removes nesting.
    """
    # Fewer tags than the limit cannot nest past it: most articles stop at this count.
    if markup.count("<") <= limit or not _may_nest_deeper(markup, limit):
        return markup
    return _TAG_TOKEN_RE.sub(_flat_tag, markup)


def _flat_tag(tag: re.Match[str]) -> str:
    name = tag.group(2).lower()
    if name in _CONTENT_DROPPED:
        return tag.group(0)
    if name in _BLOCK_TAGS:
        return "\n\n"
    return " " if name in _SPACE_TAGS else ""


def _may_nest_deeper(markup: str, limit: int) -> bool:
    """True unless the open elements of ``markup`` surely stay within ``limit`` levels.

    A linear estimate of the HTML5 parser's stack of open elements, built not to under-count the
    elements that tags open: one is only taken off when the parser would surely close it too (its
    own end tag on top, a block end tag with nothing but plain elements above it, a <p> or <li>
    closed by the next one). Anything else (stray end tags, misnested formatting, <x/>) leaves it
    on, so sloppy markup over-counts; the cost of that is a flattened article, never a slow one.
    Elements the parser adds by itself (tbody, tr) only multiply the real depth by a small factor.
    """
    stack: list[str] = []
    for tag in _TAG_TOKEN_RE.finditer(markup):
        name = tag.group(2).lower()
        if tag.group(1):
            _close(stack, name)
        elif name not in _VOID:
            _open(stack, name)
            if len(stack) > limit:
                return True
    return False


def _open(stack: list[str], name: str) -> None:
    if stack and stack[-1] == "p" and name in _CLOSES_P:
        stack.pop()
    if stack and stack[-1] in _CLOSES_SIBLING.get(name, ()):
        stack.pop()
    stack.append(name)


def _close(stack: list[str], name: str) -> None:
    if stack and stack[-1] == name:
        stack.pop()
        return
    if name not in _SCOPED_END:
        return  # the parser may ignore it or restructure around it: count nothing closed
    for depth in range(len(stack) - 1, max(len(stack) - 1 - _END_TAG_REACH, -1), -1):
        if stack[depth] == name:
            del stack[depth:]
            return
        if stack[depth] in _SCOPE_BARRIERS:
            return


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
    """``text`` made safe for a header or a log line: the one rule for "text to one safe line".

    Every control character (C0 with CR, LF and TAB, DEL, C1 with NEL), the line and paragraph
    separators U+2028/U+2029 and lone surrogates become a space; then runs of whitespace collapse
    to one space and the ends are trimmed. The no-break spaces French typography needs (U+00A0,
    U+202F, U+2007) are kept as they are.
    """
    return collapse(_LINE_BREAKERS_RE.sub(" ", text))


def breaks_line(text: str) -> bool:
    """True when ``one_line`` would have to change a character of ``text`` (a setting that goes
    into a header as written is refused rather than silently rewritten)."""
    return _LINE_BREAKERS_RE.search(text) is not None


class _TextCache:
    """Recent ``html_to_text`` results by a digest of the markup, least recently used out first.

    Keyed by digest rather than by the markup itself so that the cache never keeps megabytes of
    feed HTML alive; bounded by the characters of the results it holds. Thread-safe: the web app
    renders from several threads.
    """

    def __init__(self, budget_chars: int) -> None:
        self._budget = budget_chars
        self._size = 0
        self._items: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(markup: str) -> bytes:
        # surrogatepass: a lone surrogate in feed text must hash, not raise.
        data = markup.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=20).digest()

    def get(self, key: bytes) -> str | None:
        with self._lock:
            text = self._items.get(key)
            if text is not None:
                self._items.move_to_end(key)
            return text

    def put(self, key: bytes, text: str) -> None:
        cost = len(text) + _ENTRY_OVERHEAD
        if cost > self._budget:
            return
        with self._lock:
            previous = self._items.pop(key, None)
            if previous is not None:
                self._size -= len(previous) + _ENTRY_OVERHEAD
            self._items[key] = text
            self._size += cost
            while self._size > self._budget:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted) + _ENTRY_OVERHEAD


_TEXT_CACHE = _TextCache(TEXT_CACHE_CHARS)
