"""newsletter.domain.text: untrusted feed HTML reduced to safe text, excerpts, header-safe lines."""

from __future__ import annotations

import html
import re
import time

import nh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.domain.text import MAX_NESTING, cap_nesting, excerpt, html_to_text, one_line

TAG_RE = re.compile(r"</?[A-Za-z]|<[!?]")  # what an HTML parser would read as markup

# Pieces that combine into hostile or broken markup far more often than random text would.
HTML_PIECES = st.sampled_from(
    [
        "<script>",
        "</script>",
        "<SCRIPT type=text/javascript>",
        "alert(1)",
        "<style>",
        "</style>",
        "p{color:red}",
        "<p>",
        "</p>",
        "<br/>",
        "<div onclick='x()'>",
        "</div>",
        "<img src=x onerror=alert(1)>",
        '<a href="javascript:alert(1)">',
        "</a>",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "&lt;",
        "&gt;",
        "&amp;",
        "&amp;lt;",
        "lt;",
        "script",
        "&#60;",
        "&#x3c;",
        "<",
        ">",
        "/",
        "&",
        " ",
        "\n",
        "é",
        "’",
        "«\u00a0",
        "عربي",
        "\x00",
        "\r",
        "<svg><script>",
        "<noscript>",
        "</noscript>",
        "<textarea>",
        "<iframe srcdoc='<script>'>",
        "<",
        "</",
        "<?",
        "<!",
        "=",
    ]
)
HOSTILE_MARKUP = st.lists(HTML_PIECES, max_size=40).map("".join)


def test_paragraphs_become_blank_lines_and_inline_tags_vanish() -> None:
    markup = "<p>Le <b>président</b> s’est exprimé.</p><p>Deuxième&nbsp;: « paragraphe ».</p>"
    assert html_to_text(markup) == "Le président s’est exprimé.\n\nDeuxième\u00a0: « paragraphe »."


def test_scripts_and_styles_are_dropped_with_their_content() -> None:
    markup = "<style>p { color: red }</style>avant<script>alert('x')</script> après"
    assert html_to_text(markup) == "avant après"


def test_event_attributes_and_links_leave_only_text() -> None:
    markup = '<img src=x onerror="alert(1)"><a href="javascript:alert(2)" onclick="y()">lien</a>'
    assert html_to_text(markup) == "lien"


def test_escaped_markup_is_not_resurrected_as_tags() -> None:
    # Decoding entities can produce markup; the reduction runs until nothing changes.
    markup = "a &lt;script&gt;alert(1)&lt;/script&gt; b &amp;lt;b&amp;gt;c"
    text = html_to_text(markup)
    assert "alert" not in text
    assert not TAG_RE.search(text)


def test_entities_are_decoded_and_plain_angle_brackets_kept() -> None:
    assert html_to_text("R&amp;D &eacute;t&eacute; 3 &lt; 4") == "R&D été 3 < 4"


def test_whitespace_is_collapsed_but_no_break_spaces_kept() -> None:
    assert html_to_text("  a \n\t b\u00a0:\r\n c ") == "a b\u00a0: c"


def test_empty_input() -> None:
    assert html_to_text("") == ""


def test_excerpt_keeps_short_text() -> None:
    assert excerpt("Un texte court.", 40) == "Un texte court."


def test_excerpt_cuts_at_a_word_boundary_with_ellipsis() -> None:
    text = "Le gouvernement a annoncé mardi une série de mesures destinées à soutenir"
    cut = excerpt(text, 40)
    assert cut == "Le gouvernement a annoncé mardi une…"
    assert len(cut) <= 40


def test_excerpt_drops_trailing_punctuation_before_the_ellipsis() -> None:
    assert excerpt("Premier point, second point et la suite", 16) == "Premier point…"


def test_excerpt_cuts_inside_a_very_long_word() -> None:
    assert excerpt("a" * 50, 10) == "a" * 9 + "…"


def test_excerpt_joins_paragraphs() -> None:
    assert excerpt("un\n\ndeux", 100) == "un deux"


def test_one_line_removes_line_breaks_and_controls() -> None:
    assert one_line(" Titre\r\nsur\x00deux\u2028lignes\x85 ") == "Titre sur deux lignes"


@given(st.text())
def test_html_to_text_never_raises_nor_returns_tags_on_any_text(markup: str) -> None:
    text = html_to_text(markup)
    assert not TAG_RE.search(text)
    assert "<script" not in text.lower()


@settings(max_examples=300)
@given(HOSTILE_MARKUP)
def test_html_to_text_never_returns_tags_on_hostile_markup(markup: str) -> None:
    text = html_to_text(markup)
    assert not TAG_RE.search(text)
    assert "<script" not in text.lower()


@given(st.text(), st.integers(min_value=1, max_value=500))
def test_excerpt_never_exceeds_the_limit(text: str, limit: int) -> None:
    cut = excerpt(text, limit)
    assert len(cut) <= limit
    assert "\n" not in cut


@given(st.text())
def test_one_line_has_no_line_break(text: str) -> None:
    line = one_line(text)
    assert not re.search(r"[\r\n\x00-\x1f\x7f-\x9f\u2028\u2029]", line)
    assert line.splitlines() in ([], [line])


# -- nesting: the sanitiser's parser is quadratic in depth, the reduction must not be -------------

DEEP_TEXT = "Le texte tout au fond."


def nested(open_tag: str, close_tag: str, depth: int) -> str:
    return open_tag * depth + DEEP_TEXT + close_tag * depth


# Ways to pile up open elements in an HTML5 parser; each took seconds at 64k before the cap.
DEEP_MARKUP = {
    "closed divs": nested("<div>", "</div>", 64_000),
    "unclosed divs": nested("<div>", "", 64_000),
    "self-closing divs": nested("<div/>", "", 64_000),  # the slash means nothing on a <div>
    "stray end tags": nested("<div></span>", "", 64_000),
    "misnested formatting": nested("<b><div></b>", "", 64_000),
    "escaped divs": nested("&lt;div&gt;", "", 64_000),  # markup again once decoded
}


def test_200k_nested_divs_reduce_to_their_text_in_linear_time() -> None:
    markup = nested('<div class="x">', "</div>", 200_000)  # 3.6 MB, under the 20 MB source cap
    started = time.monotonic()
    text = html_to_text(markup)
    # About 1 s here, was minutes (quadratic); loose enough for a loaded 2-core machine.
    assert time.monotonic() - started < 10
    assert text == DEEP_TEXT


@pytest.mark.parametrize("markup", DEEP_MARKUP.values(), ids=DEEP_MARKUP.keys())
def test_every_way_of_nesting_deep_is_reduced_fast(markup: str) -> None:
    started = time.monotonic()
    text = html_to_text(markup)
    assert time.monotonic() - started < 5  # a few tenths of a second; was 10 s and more
    assert text == DEEP_TEXT


@pytest.mark.parametrize(
    "piece",
    [
        "<div>",
        "<div/>",
        "<div></x>",
        "<b><div></b>",
        "<li><table><td><div></li>",  # </li> cannot reach the <li> past the table cell
        "<svg><div/>",
        "<p><b>",
    ],
)
def test_cap_nesting_flattens_deep_markup(piece: str) -> None:
    markup = piece * (MAX_NESTING + 1) + DEEP_TEXT
    # Only the tags whose content nh3 drops are left, for nh3 to drop that content.
    assert cap_nesting(markup).count("<") == markup.count("<svg")


def test_cap_nesting_flattens_formatting_elements_the_parser_would_reopen() -> None:
    # Closing <div> leaves each distinct <b> open in the parser's list of formatting elements:
    # every later <b> re-opens all of them, so nodes grow quadratically (16k ran out of memory).
    markup = "".join(f"<div><b id={i}></div>" for i in range(MAX_NESTING + 1)) + DEEP_TEXT
    assert cap_nesting(markup).count("<") == 0


@pytest.mark.parametrize(
    "markup",
    [
        "<p>un</p><p>deux</p>" * 2_000,
        "<p>paragraphe sans fin de balise" * 2_000,  # each <p> closes the one before
        "<ul>" + "<li>point" * 2_000 + "</ul>",
        "<div><p>texte</div>" * 2_000,  # </div> closes the <p> left open
        "<table>" + "<tr><td>a</td><td>b</td></tr>" * 2_000 + "</table>",
        nested("<div>", "</div>", MAX_NESTING),
    ],
)
def test_cap_nesting_leaves_ordinary_markup_alone(markup: str) -> None:
    assert cap_nesting(markup) is markup


def test_flattened_markup_reads_the_same() -> None:
    markup = (
        "<h2>Titre</h2><p>Le <b>président</b> a parlé&nbsp;: « bonjour ».<br>Suite</p>"
        "<ul><li>un</li><li>deux</li></ul><table><tr><td>a</td><td>b</td></tr></table>"
        "<script>alert(1)</script><svg><text>dessin</text></svg><p>R&amp;D &lt;b&gt;fin</p>"
    )
    assert html_to_text(cap_nesting(markup, limit=0)) == html_to_text(markup)


@settings(max_examples=300)
@given(HOSTILE_MARKUP)
def test_flattened_hostile_markup_still_gives_no_tags(markup: str) -> None:
    text = html_to_text(cap_nesting(markup, limit=0))
    assert not TAG_RE.search(text)
    assert "<script" not in text.lower()


def test_four_megabytes_of_french_prose_reduce_in_linear_time() -> None:
    # Once its tags are gone an article is one long text node, and html5ever is quadratic in
    # that length when it holds « or no-break spaces: 4.7 s for 2 MB of this, 19 s for 4 MB.
    paragraph = "<p>« Le budget est adopté »&nbsp;: l’Assemblée a voté à 21&nbsp;h.</p>"
    markup = paragraph * (4_000_000 // len(paragraph))
    started = time.monotonic()
    text = html_to_text(markup)
    assert time.monotonic() - started < 5  # about half a second
    assert text.startswith("« Le budget est adopté »\u00a0: l’Assemblée a voté à 21\u00a0h.\n\n«")


# What is left of any text once html_to_text has removed controls, minus "<", "&" and CR.
PLAIN_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<&")
    | st.sampled_from(["\n", "\t", "\x0c", " ", "\u00a0", "«", ">"])
)


# Except a leading U+FEFF, which nh3 (html5ever) drops as a byte order mark: see the next test.
@given(PLAIN_TEXT.filter(lambda text: not text.startswith("\ufeff")))
def test_nh3_gives_plain_text_back_unchanged(plain: str) -> None:
    """What html_to_text relies on to skip nh3 for text with no "<", "&" or CR."""
    assert html.unescape(nh3.clean(plain)) == plain


def test_a_leading_byte_order_mark_is_dropped_with_or_without_markup() -> None:
    # Found by Hypothesis (plain='\ufeff'): nh3 drops a leading U+FEFF, so html_to_text's
    # plain-text path (which skips nh3) kept it while its markup path dropped it.
    assert nh3.clean("\ufeffx") == "x" and nh3.clean("x\ufeffy") == "x\ufeffy"
    assert html_to_text("\ufeffx") == "x" == html_to_text("\ufeff<b>x</b>")
    assert html_to_text("x\ufeffy") == "x\ufeffy"


# -- the one rule for "text to one safe line" (headers, log lines, feed titles, settings) ---------


def test_one_line_keeps_french_no_break_spaces_and_drops_every_other_break() -> None:
    # No-break spaces (U+00A0 before ":", U+202F inside « », U+2007 figure space) are kept as they
    # are; tabs, CR/LF, VT/FF, NEL, the file separators, U+2028/U+2029, C1 controls and lone
    # surrogates become one ordinary space; runs of spaces collapse, the ends are trimmed.
    text = "\t« Titre\u202f» :\u00a0un\r\ndeux\x0btrois\x0cquatre\x1cx\x85y\u2028z\u2029\x9b\ud800 1\u2007000  "
    assert one_line(text) == "« Titre\u202f» :\u00a0un deux trois quatre x y z 1\u2007000"


def test_breaks_line_is_true_exactly_when_one_line_must_change_a_character() -> None:
    from newsletter.domain.text import breaks_line

    assert not breaks_line("Rédaction\u00a0<redaction@exemple.sn>")
    for bad in ("a\rb", "a\nb", "a\tb", "a\x00b", "a\x85b", "a\u2028b", "a\x7fb"):
        assert breaks_line(bad), repr(bad)


def test_error_line_is_one_safe_line_for_our_errors_and_foreign_ones() -> None:
    from newsletter.domain.errors import NewsletterError, error_line

    assert error_line(NewsletterError("relay down\r\nX-Forged: 1", "retry")) == (
        "relay down X-Forged: 1 (retry)"
    )
    assert error_line(ValueError("first line\nsecond line")) == "ValueError: first line"
    assert error_line(OSError("bad\x00byte")) == "OSError: bad byte"
    assert error_line(RuntimeError()) == "RuntimeError"


def test_the_feed_reader_and_the_store_use_the_one_line_rule() -> None:
    from newsletter.adapters.sources import clean_line
    from newsletter.adapters.store.engine import _one_line as store_line

    assert clean_line is one_line
    assert store_line("no\r\nsuch\ttable:\u00a0x", "sqlite:///x") == "no such table:\u00a0x"
