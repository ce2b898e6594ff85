"""newsletter.text: untrusted feed HTML reduced to safe text, excerpts, header-safe lines."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.text import excerpt, html_to_text, one_line

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
