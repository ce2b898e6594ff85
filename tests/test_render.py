"""newsletter.adapters.render: real Jinja2 and premailer on a fixed edition, checked with lxml.

Golden files live in tests/golden/; after an intended change of the templates, regenerate them with
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_render.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.adapters.render import (
    BUDGET_BYTES,
    GMAIL_CLIP_BYTES,
    PREFERENCES_SLOT,
    SUBJECT_MAX,
    SUBJECT_TARGET,
    UNSUBSCRIBE_SLOT,
    Brand,
    RenderedVariant,
    Renderer,
    make_environment,
    safe_url,
)
from newsletter.adapters.resources import templates_dir
from newsletter.domain import GENERAL_SECTION_KEY, Article, ArticleImage, Edition, Section, text

GOLDEN = Path(__file__).resolve().parent / "golden"
NOON = datetime(2026, 1, 26, 12, 0, tzinfo=UTC)
DAY = date(2026, 1, 27)
SLOTS = (UNSUBSCRIBE_SLOT, PREFERENCES_SLOT)
TAG_RE = re.compile(r"</?[A-Za-z]|<[!?]")
ENTITY_RE = re.compile(r"&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);")
ARABIC_TITLE = "الحكومة تعلن عن خطة جديدة للتنمية الاقتصادية"
ARABIC_CONTENT = "<p>أعلنت الحكومة اليوم عن خطة شاملة لدعم الاستثمار وخلق فرص العمل.</p>"
HOSTILE_CONTENT = (
    '<p onclick="steal()">Texte piégé<img src=x onerror="alert(2)"></p>'
    "<script>alert(1)</script><style>body{display:none}</style>"
    '<a href="javascript:alert(3)" onmouseover="x()">un lien</a>'
)
PHOTO = ArticleImage(
    "https://exemple.africa/wp-content/uploads/2026/01/hemicycle.jpg", "L’hémicycle", 1200, 675
)
BRAND = Brand(
    logo_url="https://exemple.africa/logo.png",
    publisher="Le Journal Africain SA",
    postal_address="12 avenue Hassan II, Rabat, Maroc",
    web_version_base="https://lettre.exemple.africa/archive/",
    signup_url="https://lettre.exemple.africa/subscribe",
    archive_url="https://lettre.exemple.africa/archive",
)
WEB_VERSION = "https://lettre.exemple.africa/archive/2026-01-27"
LONG_PARAGRAPH = (
    "<p>La zone franc traverse une période de réformes : la Banque centrale des États de "
    "l’Afrique de l’Ouest a confirmé l’agenda de transition, et les opérateurs économiques "
    "s’interrogent sur les effets concrets pour le commerce régional.</p>"
)


def article(uid: str, title: str, link: str, **fields: object) -> Article:
    return Article(uid=uid, title=title, link=link, published=NOON, **fields)  # type: ignore[arg-type]


def golden_edition() -> Edition:
    politique = Section(
        key="politique",
        label="Politique",
        articles=(
            article(
                "1",
                "Le Premier ministre s’exprime sur « l’avenir » du pays",
                "https://exemple.africa/politique/premier-ministre",
                categories=("Politique",),
                author="Aïcha Benali",
                image=PHOTO,
                summary_html=(
                    "<p>Devant l’Assemblée, il a détaillé les priorités de l’année&nbsp;: "
                    "emploi, santé et éducation. [&#8230;]</p>"
                ),
            ),
            article(
                "2",
                ARABIC_TITLE,
                "https://exemple.africa/ar/plan",
                categories=("Politique",),
                author="Aïcha Benali",
                content_html=ARABIC_CONTENT,
                image=ArticleImage("https://exemple.africa/ar/plan.jpg"),
            ),
        ),
    )
    economie = Section(
        key="economie",
        label="Économie",
        articles=(
            article(
                "3",
                "Franc CFA : ce qui change en 2026",
                "https://exemple.africa/economie/franc-cfa",
                categories=("Économie",),
                content_html=LONG_PARAGRAPH * 4,
                # what a hostile or sloppy feed could hand on: none of it may reach the page
                image=ArticleImage(
                    'https://exemple.africa/a.jpg" onerror="alert(1)', "x", 600, 400
                ),
            ),
            article(
                "4",
                "Alerte\r\nBcc: victime@example.com <b>gras</b>",
                "javascript:alert(document.cookie)",
                categories=("Économie",),
                author="Robot\nX-Injected: oui",
                content_html=HOSTILE_CONTENT,
            ),
        ),
    )
    general = Section(
        key=GENERAL_SECTION_KEY,
        label="",
        articles=(
            article(
                "5",
                "Météo : un week-end « très chaud » à Dakar",
                "https://exemple.africa/meteo?jour=samedi&ville=Dakar",
                summary_html="<p>Jusqu’à 38&nbsp;°C attendus samedi.</p>",
            ),
        ),
    )
    return Edition(
        date=DAY,
        window_start=NOON,
        window_end=NOON,
        sections=(politique, economie, general),
        title="La Lettre",
        locale="fr",
        site_url="https://exemple.africa/",
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(title="La Lettre", locale="fr", brand=BRAND)


@pytest.fixture(scope="module")
def variant(renderer: Renderer) -> RenderedVariant:
    return renderer.render(golden_edition())


@pytest.fixture(scope="module")
def tree(variant: RenderedVariant) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(variant.html)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8", newline="")
    expected = path.read_text(encoding="utf-8") if path.exists() else None
    assert expected is not None, f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert actual == expected, f"{name} differs from {path}; UPDATE_GOLDEN=1 rewrites it"


# -- golden files -------------------------------------------------------------------------------


def test_html_matches_golden(variant: RenderedVariant) -> None:
    check_golden("digest.html", variant.html)


def test_text_matches_golden(variant: RenderedVariant) -> None:
    check_golden("digest.txt", variant.text)


def test_variant_metadata(variant: RenderedVariant) -> None:
    assert variant.keys == frozenset({"politique", "economie", GENERAL_SECTION_KEY})
    # the lead headline leads; the brand is already in From
    assert variant.subject == "Le Premier ministre s’exprime sur « l’avenir » du pays"
    # the preheader previews the next headlines rather than repeating the Subject
    assert variant.preheader.startswith(ARABIC_TITLE + " · Franc CFA")
    assert "Le Premier ministre" not in variant.preheader
    assert variant.warnings == ()


# -- HTML safety --------------------------------------------------------------------------------


def test_no_script_element_or_event_attribute(tree: lxml.html.HtmlElement) -> None:
    assert tree.xpath("//script") == []
    for element in tree.iter():
        assert not [a for a in element.attrib if a.lower().startswith("on")], element.tag


def test_no_script_text_or_hostile_markup_reaches_the_page(variant: RenderedVariant) -> None:
    assert "alert(" not in variant.html
    assert "steal()" not in variant.html
    assert "onerror" not in variant.html
    assert "Texte piégé un lien" in variant.html  # the harmless text survives


def test_only_http_links_and_slots_are_hrefs(tree: lxml.html.HtmlElement) -> None:
    hrefs = tree.xpath("//@href")
    assert hrefs
    for href in hrefs:
        assert href.startswith("https://") or href in SLOTS, href
    assert not any("javascript" in h.lower() for h in hrefs)


def test_hostile_title_is_one_line_text(
    tree: lxml.html.HtmlElement, variant: RenderedVariant
) -> None:
    titles = [t.text_content() for t in tree.find_class("article-title")]
    # Titles are reduced like feed HTML: markup in a title is dropped, its text kept.
    assert "Alerte Bcc: victime@example.com gras" in titles
    assert "gras</b>" not in variant.html and "&lt;b&gt;" not in variant.html
    assert "\r" not in variant.html and "\r" not in variant.text
    assert "\n" not in variant.subject and "\r" not in variant.subject


def test_the_unsafe_link_gives_no_anchor(tree: lxml.html.HtmlElement) -> None:
    hostile = next(t for t in tree.find_class("article-title") if "Alerte" in t.text_content())
    assert hostile.xpath(".//a") == []


def test_no_external_assets_but_https_pictures(
    tree: lxml.html.HtmlElement, variant: RenderedVariant
) -> None:
    assert tree.xpath("//link | //iframe | //object | //embed") == []
    assert "@import" not in variant.html and "url(" not in variant.html
    assert all(src.startswith("https://") for src in tree.xpath("//img/@src"))


# -- HTML structure for email clients --------------------------------------------------------------


def test_document_language_charset_and_viewport(
    tree: lxml.html.HtmlElement, variant: RenderedVariant
) -> None:
    assert variant.html.startswith("<!DOCTYPE html>\n")
    assert tree.get("lang") == "fr"
    assert tree.xpath("//meta[@charset='utf-8']")
    assert tree.xpath("//meta[@name='viewport']")


def test_css_is_inlined_on_styled_elements(tree: lxml.html.HtmlElement) -> None:
    css = (templates_dir() / "_digest.css").read_text(encoding="utf-8")
    screen_css = css.split("\n@media", 1)[0]
    simple_classes = set(re.findall(r"^\.([a-z-]+) \{", screen_css, flags=re.MULTILINE))
    assert {"masthead", "article-title", "excerpt", "footer-link"} <= simple_classes
    checked = 0
    for name in simple_classes:
        for element in tree.find_class(name):
            assert element.get("style"), f".{name} on <{element.tag}> was not inlined"
            checked += 1
    assert checked > 10
    headline = tree.find_class("article-title")[1]
    assert "font-size:20px" in headline.get("style").replace(" ", "")


def test_media_rules_stay_in_a_style_block(tree: lxml.html.HtmlElement) -> None:
    styles = "".join(s.text or "" for s in tree.xpath("//style"))
    assert "@media only screen and (max-width: 620px)" in styles
    assert "!important" in styles  # strip_important=False
    for forbidden in ("display: flex", "display:flex", "display: grid", "var(--", "@font-face"):
        assert forbidden not in styles


def test_layout_tables_are_presentational(tree: lxml.html.HtmlElement) -> None:
    tables = tree.xpath("//table")
    assert len(tables) > 3
    assert all(t.get("role") == "presentation" for t in tables)


def test_preheader_is_hidden_and_first(
    tree: lxml.html.HtmlElement, variant: RenderedVariant
) -> None:
    preheader = tree.find_class("preheader")[0]
    style = preheader.get("style").replace(" ", "")
    for rule in ("display:none", "max-height:0", "overflow:hidden"):
        assert rule in style
    assert preheader.text_content().startswith(variant.preheader)
    body = tree.find("body")
    assert body is not None and body[0] is preheader


def test_header_shows_title_and_long_date(tree: lxml.html.HtmlElement) -> None:
    assert tree.find_class("logo")[0].get("alt") == "La Lettre"
    assert tree.find_class("edition-date")[0].text_content() == "mardi 27 janvier 2026"


def test_sections_in_order_with_localised_general_label(tree: lxml.html.HtmlElement) -> None:
    labels = [h.text_content() for h in tree.find_class("section-label")]
    assert labels == ["Politique", "Économie", "Autres actualités"]


def test_arabic_item_is_right_to_left(tree: lxml.html.HtmlElement) -> None:
    link = next(a for a in tree.xpath("//a") if a.text_content() == ARABIC_TITLE)
    assert link.xpath("ancestor::*[@dir][1]")[0].get("dir") == "rtl"
    holder = link.xpath("ancestor::*[@lang][1]")[0]
    assert holder.get("lang") == "ar"
    assert "text-align:right" in holder.get("style").replace(" ", "")
    french = next(a for a in tree.xpath("//a") if a.text_content().startswith("Le Premier"))
    assert french.xpath("ancestor::*[@dir][1]")[0].tag == "html"  # inherits the page's ltr


def test_excerpts_are_cut_text(tree: lxml.html.HtmlElement) -> None:
    excerpts = [p.text_content() for p in tree.find_class("excerpt")]
    franc = next(e for e in excerpts if e.startswith("La zone franc"))
    assert franc.endswith("…") and len(franc) <= 400
    # the WordPress "[…]" tail is replaced by nothing: the summary was short enough
    summary = "Devant l’Assemblée, il a détaillé les priorités de l’année\u00a0: emploi, santé"
    assert f"{summary} et éducation." in excerpts


def test_visible_unsubscribe_and_preferences_links(tree: lxml.html.HtmlElement) -> None:
    unsubscribe = tree.xpath(f"//a[@href='{UNSUBSCRIBE_SLOT}']")
    preferences = tree.xpath(f"//a[@href='{PREFERENCES_SLOT}']")
    assert [a.text_content() for a in unsubscribe] == ["Se désabonner"]
    assert [a.text_content() for a in preferences] == ["Choisir mes rubriques"]
    assert [a.text_content() for a in tree.xpath(f"//a[@href='{BRAND.signup_url}']")] == [
        "S’abonner"
    ]
    style = unsubscribe[0].get("style") or ""
    assert "display:none" not in style.replace(" ", "")
    assert (
        "vous êtes abonné·e à « La Lettre »" in tree.find_class("footer-reason")[0].text_content()
    )


def test_slots_substitute_cleanly(variant: RenderedVariant) -> None:
    # Delivery fills the slots with str.replace: they must appear verbatim, in both parts.
    url = "https://lettre.exemple.africa/u/abc123"
    html = variant.html.replace(UNSUBSCRIBE_SLOT, url)
    assert f'href="{url}"' in html
    assert variant.text.count(UNSUBSCRIBE_SLOT) == 1
    assert variant.text.count(PREFERENCES_SLOT) == 1


def test_ampersands_in_links_are_escaped_once(
    variant: RenderedVariant, tree: lxml.html.HtmlElement
) -> None:
    assert 'href="https://exemple.africa/meteo?jour=samedi&amp;ville=Dakar"' in variant.html
    assert "https://exemple.africa/meteo?jour=samedi&ville=Dakar" in tree.xpath("//@href")


def test_no_line_over_998_bytes(variant: RenderedVariant) -> None:
    for part in (variant.html, variant.text):
        assert max(len(line.encode("utf-8")) for line in part.split("\n")) <= 998


# -- text part -----------------------------------------------------------------------------------


def test_text_part_is_plain(variant: RenderedVariant) -> None:
    assert not TAG_RE.search(variant.text)
    assert not ENTITY_RE.search(variant.text)
    assert "alert(" not in variant.text and "steal()" not in variant.text


def test_text_part_has_urls_slots_headings_and_date(variant: RenderedVariant) -> None:
    lines = variant.text.split("\n")
    for url in (
        "https://exemple.africa/politique/premier-ministre",
        "https://exemple.africa/ar/plan",
        "https://exemple.africa/meteo?jour=samedi&ville=Dakar",
    ):
        assert url in lines  # on its own line
    assert UNSUBSCRIBE_SLOT in lines and PREFERENCES_SLOT in lines
    assert "mardi 27 janvier 2026" in lines
    heading = lines.index("Économie")
    assert lines[heading + 1] == "-" * len("Économie")
    assert "javascript" not in variant.text


def test_text_part_is_wrapped(variant: RenderedVariant) -> None:
    for line in variant.text.split("\n"):
        assert len(line) <= 72 or line.startswith("https://"), line


# -- size budget ---------------------------------------------------------------------------------


def big_article(uid: str, section: str, size: int) -> Article:
    paragraphs = LONG_PARAGRAPH * (size // len(LONG_PARAGRAPH) + 1)
    return article(
        uid,
        f"Article {uid} : la longue enquête sur l’économie régionale",
        f"https://exemple.africa/{section.replace(' ', '-')}/{uid}",
        categories=(section,),
        content_html=paragraphs[:size],
    )


def one_section(*articles: Article) -> Edition:
    return Edition(DAY, NOON, NOON, (Section("economie", "Économie", articles),))


def test_a_60_kb_article_is_cut_to_an_excerpt(renderer: Renderer) -> None:
    variant = renderer.render(one_section(big_article("a", "economie", 60_000)))
    assert renderer.measure(variant.html) < 20_000
    assert variant.warnings == ()


def test_a_60_kb_article_with_huge_excerpts_is_shortened_with_a_warning() -> None:
    # excerpt_chars this large lets whole articles through: the budget must catch it.
    greedy = Renderer(title="La Lettre", locale="fr", excerpt_chars=100_000)
    articles = [big_article("big", "economie", 60_000)]
    articles += [big_article(f"n{i}", "economie", 3_000) for i in range(20)]
    variant = greedy.render(one_section(*articles))
    size = greedy.measure(variant.html)
    assert size <= BUDGET_BYTES < GMAIL_CLIP_BYTES
    assert len(variant.html.encode("utf-8")) < GMAIL_CLIP_BYTES
    assert len(variant.warnings) == 1
    assert re.search(
        r"edition HTML is \d+ KB.*excerpts shortened to \d+ characters", variant.warnings[0]
    )
    tree = lxml.html.document_fromstring(variant.html)
    assert len(tree.find_class("article-title")) == 21  # shortened, nothing dropped


class CountingCleaner:
    """The real nh3 cleaner, counting how often it is handed each exact markup."""

    def __init__(self, cleaner: Any) -> None:
        self._cleaner = cleaner
        self.seen: Counter[str] = Counter()

    def clean(self, markup: str) -> str:
        self.seen[markup] += 1
        return self._cleaner.clean(markup)


def test_each_article_is_sanitised_once_however_often_the_edition_is_rendered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cleaner = CountingCleaner(text._CLEANER)
    monkeypatch.setattr(text, "_CLEANER", cleaner)
    # A marker unique to this run: nothing cached by an earlier test can answer for it.
    run = uuid.uuid4().hex
    articles = [big_article("big", "economie", 60_000)]
    articles += [big_article(f"n{i}", "economie", 3_000) for i in range(20)]
    articles = [replace(a, content_html=f"<p>{run} {a.uid}</p>{a.content_html}") for a in articles]
    edition = one_section(*articles)
    # Over budget: the French renderer renders several times to fit; then Arabic, then again.
    greedy = Renderer(title="La Lettre", locale="fr", excerpt_chars=100_000)
    assert greedy.render(edition).warnings
    Renderer(title="La Lettre", locale="ar").render(edition)
    greedy.render(edition.restricted_to(frozenset({"economie"})))
    assert {a.uid: cleaner.seen[a.content_html] for a in articles} == {a.uid: 1 for a in articles}


def test_two_hundred_articles_fit_with_a_warning(renderer: Renderer) -> None:
    sections = tuple(
        Section(
            f"rubrique {s}",
            f"Rubrique {s}",
            tuple(big_article(f"{s}-{i}", f"rubrique {s}", 3_000) for i in range(20)),
        )
        for s in range(10)
    )
    edition = Edition(DAY, NOON, NOON, sections)
    variant = renderer.render(edition)
    assert renderer.measure(variant.html) <= BUDGET_BYTES
    assert len(variant.warnings) == 1 and "articles kept" in variant.warnings[0]
    tree = lxml.html.document_fromstring(variant.html)
    # round-robin: every section keeps its top stories rather than the last ones being dropped
    assert len(tree.find_class("section-label")) == 10
    assert tree.xpath(f"//@href[.='{UNSUBSCRIBE_SLOT}']")
    assert variant.text.count("https://exemple.africa/") == len(tree.find_class("article-title"))


def test_measure_counts_the_real_urls(renderer: Renderer) -> None:
    html = f'<a href="{UNSUBSCRIBE_SLOT}"></a><a href="{PREFERENCES_SLOT}"></a>'
    filled = html.replace(UNSUBSCRIBE_SLOT, "u" * 160).replace(PREFERENCES_SLOT, "p" * 160)
    assert renderer.measure(html) == len(filled.encode("utf-8"))


# -- other locales, empty editions, the environment ---------------------------------------------


def test_empty_edition_renders_a_short_notice(renderer: Renderer) -> None:
    variant = renderer.render(Edition(DAY, NOON, NOON, ()))
    assert "Aucun article dans cette édition." in variant.html
    assert "Aucun article dans cette édition." in variant.text
    assert variant.subject == "La Lettre – mardi 27 janvier 2026"
    assert variant.preheader == "L’essentiel de l’actualité du jour"
    assert variant.keys == frozenset()


def test_regional_locale_gives_a_bcp47_lang() -> None:
    variant = Renderer(title="La Lettre", locale="fr_MA").render(golden_edition())
    assert lxml.html.document_fromstring(variant.html).get("lang") == "fr-MA"


def test_arabic_locale_makes_the_page_rtl() -> None:
    variant = Renderer(title="النشرة", locale="ar").render(golden_edition())
    tree = lxml.html.document_fromstring(variant.html)
    assert (tree.get("lang"), tree.get("dir")) == ("ar", "rtl")
    labels = [h.text_content() for h in tree.find_class("section-label")]
    assert labels[-1] == "أخبار أخرى"
    french = next(a for a in tree.xpath("//a") if a.text_content().startswith("Le Premier"))
    assert french.xpath("ancestor::*[@dir][1]")[0].get("dir") == "ltr"


def test_long_subject_is_cut_on_a_word_to_one_short_line(renderer: Renderer) -> None:
    edition = one_section(article("x", "Un titre " * 40 + "\r\nfin", "https://exemple.africa/x"))
    subject = renderer.subject(edition)
    assert len(subject) <= SUBJECT_TARGET and re.search(r" (Un|titre)…$", subject)
    assert "\n" not in subject


def test_environment_escapes_html_but_not_text(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("{{ value }} {{ _('Read more') }}", encoding="utf-8")
    (tmp_path / "page.txt").write_text("{{ value }} {{ day|long_date }}", encoding="utf-8")
    env = make_environment(tmp_path)
    value = "<b>R&D</b>"
    assert (
        env.get_template("page.html").render(value=value)
        == "&lt;b&gt;R&amp;D&lt;/b&gt; Lire la suite"
    )
    assert (
        env.get_template("page.txt").render(value=value, day=DAY)
        == "<b>R&D</b> mardi 27 janvier 2026"
    )
    assert env.get_template("page.html").render(value="", locale="en").endswith("Read more")


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://exemple.africa/a", "https://exemple.africa/a"),
        ("  http://exemple.africa/a\n", "http://exemple.africa/a"),
        ("javascript:alert(1)", ""),
        ("JaVaScRiPt:alert(1)", ""),
        ("java\nscript:alert(1)", ""),
        ("\x01javascript:alert(1)", ""),
        ("data:text/html,<script>", ""),
        ("/relative/path", ""),
        ("//exemple.africa/a", ""),
        ("https://exemple.africa/a b", ""),
        ("http://[::1", ""),
        ("", ""),
    ],
)
def test_safe_url(link: str, expected: str) -> None:
    assert safe_url(link) == expected


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(title=st.text(max_size=200), link=st.text(max_size=100), markup=st.text(max_size=500))
def test_any_feed_item_renders_safely(
    renderer: Renderer, title: str, link: str, markup: str
) -> None:
    edition = one_section(article("h", title, link, author=title, content_html=markup))
    variant = renderer.render(edition)
    tree = lxml.html.document_fromstring(variant.html)
    assert tree.xpath("//script") == []
    assert not any(a.lower().startswith("on") for el in tree.iter() for a in el.attrib)
    for href in tree.xpath("//@href"):
        assert href.startswith(("http://", "https://")) or href in SLOTS
    assert "\n" not in variant.subject and "\r" not in variant.subject


def test_premailer_never_loads_external_css(tmp_path: Path) -> None:
    # allow_network=False: a stylesheet link is left alone, not fetched (port 9 would refuse).
    for name in ("digest.html", "digest.txt", "_digest.css"):
        (tmp_path / name).write_text(
            (templates_dir() / name).read_text(encoding="utf-8"), encoding="utf-8"
        )
    page = (tmp_path / "digest.html").read_text(encoding="utf-8")
    link = '<link rel="stylesheet" href="http://127.0.0.1:9/remote.css">'
    (tmp_path / "digest.html").write_text(page.replace("</head>", f"{link}\n</head>"))
    variant = Renderer(title="La Lettre", locale="fr", templates=tmp_path).render(golden_edition())
    assert "remote.css" in variant.html


# -- issue 13: pictures, brand, footer, web version, layout -------------------------------------


def test_lead_story_gets_a_column_wide_picture_scaled_from_the_feeds_size(
    tree: lxml.html.HtmlElement,
) -> None:
    lead = tree.find_class("lead-image")
    assert len(lead) == 1
    img = lead[0]
    assert img.get("src") == PHOTO.url
    assert (img.get("width"), img.get("height")) == ("552", "310")  # 1200 x 675 in 552 px
    assert img.get("alt") == "L’hémicycle"
    style = img.get("style").replace(" ", "")
    assert "width:100%" in style and "max-width:552px" in style and "height:auto" in style
    assert img.getparent().get("href") == "https://exemple.africa/politique/premier-ministre"
    assert "lead-title" in tree.find_class("article-title")[0].get("class")


def test_other_stories_get_a_thumbnail_and_an_unknown_size_gets_no_height(
    tree: lxml.html.HtmlElement,
) -> None:
    thumbs = tree.find_class("thumb")
    assert len(thumbs) == 1  # the Arabic item's; Franc CFA's URL was unsafe, the others have none
    thumb = thumbs[0]
    assert thumb.get("src") == "https://exemple.africa/ar/plan.jpg"
    assert thumb.get("width") == "112" and thumb.get("height") is None
    assert "height:auto" in thumb.get("style").replace(" ", "")
    assert thumb.get("alt") == ARABIC_TITLE  # no alt in the feed: the headline
    # mirrored: in the right-to-left item the picture sits on the left, the gap on its right
    cell = thumb.xpath("ancestor::td[1]")[0]
    assert "thumb-cell-rtl" in cell.get("class")
    assert "padding:14px14px00" in cell.get("style").replace(" ", "")


def test_unsafe_pictures_never_reach_the_page() -> None:
    hostile = [
        ArticleImage("javascript:alert(1)"),
        ArticleImage("data:image/png;base64,AAAA"),
        ArticleImage("http://exemple.africa/plain-http.jpg", "", 600, 400),
        ArticleImage("https://exemple.africa/pixel.gif", "", 1, 1),
        ArticleImage("https://exemple.africa/a b.jpg"),
        ArticleImage("https://exemple.africa/ok.jpg", '"><script>alert(1)</script>\r\nX', 9, 9),
    ]
    edition = one_section(
        *(
            article(str(n), f"Titre {n}", f"https://exemple.africa/{n}", image=image)
            for n, image in enumerate(hostile)
        )
    )
    variant = Renderer(title="La Lettre", locale="fr").render(edition)
    tree = lxml.html.document_fromstring(variant.html)
    assert tree.xpath("//img/@src") == ["https://exemple.africa/ok.jpg"]
    assert tree.xpath("//img/@alt") == ['"> X']  # reduced to text: the markup is dropped
    assert tree.xpath("//script") == []
    assert "<script>" not in variant.html


def test_logo_links_to_the_site_with_the_title_as_alt(tree: lxml.html.HtmlElement) -> None:
    logo = tree.find_class("logo")[0]
    assert logo.get("src") == BRAND.logo_url and logo.get("alt") == "La Lettre"
    assert logo.get("width") == "200"
    assert logo.getparent().get("href") == "https://exemple.africa/"
    # the white chip keeps a dark-on-light logo legible on a dark background
    assert "background-color:#fff" in logo.xpath("ancestor::div[1]")[0].get("style").replace(
        " ", ""
    )
    assert tree.find_class("masthead") == []


def test_without_a_logo_the_title_links_to_the_site() -> None:
    variant = Renderer(title="La Lettre", locale="fr").render(golden_edition())
    tree = lxml.html.document_fromstring(variant.html)
    masthead = tree.find_class("masthead")[0]
    assert masthead.text_content() == "La Lettre"
    assert masthead.xpath(".//a/@href") == ["https://exemple.africa/"]
    assert tree.find_class("logo") == []
    assert tree.xpath("//img[contains(@src, 'logo')]") == []


def test_footer_names_the_publisher_the_reason_and_the_links_in_both_parts(
    renderer: Renderer,
) -> None:
    variant = renderer.render(golden_edition(), chosen=True)
    tree = lxml.html.document_fromstring(variant.html)
    footer = tree.find_class("footer")[0].text_content()
    publisher = "Le Journal Africain SA · 12 avenue Hassan II, Rabat, Maroc"
    assert publisher in footer and publisher in variant.text
    chosen = "Vos rubriques\u00a0: Politique, Économie, Autres actualités."
    assert chosen in footer and chosen in variant.text
    hrefs = tree.xpath("//a/@href")
    assert hrefs.count(WEB_VERSION) == 2  # the top bar and the footer
    assert BRAND.signup_url in hrefs
    lines = variant.text.split("\n")
    assert WEB_VERSION in lines and BRAND.signup_url in lines
    # a reader who did not choose sections is not told about a choice
    assert "Vos rubriques" not in renderer.render(golden_edition()).text


def test_no_web_version_link_when_the_archive_is_off() -> None:
    variant = Renderer(title="La Lettre", locale="fr", brand=Brand()).render(golden_edition())
    assert "/archive/" not in variant.html and "/archive/" not in variant.text
    assert "navigateur" not in variant.html


def test_the_web_page_carries_no_personal_link(renderer: Renderer) -> None:
    page = renderer.web_page(golden_edition())
    for slot in SLOTS:
        assert slot not in page
    tree = lxml.html.document_fromstring(page)
    assert tree.xpath("//a/@href").count(WEB_VERSION) == 0
    assert BRAND.signup_url in tree.xpath("//a/@href")
    assert tree.xpath(f"//a[@href='{BRAND.archive_url}']/text()") == ["Toutes les éditions"]
    assert "Version web de « La Lettre » du mardi 27 janvier 2026." in tree.text_content()
    assert len(tree.find_class("article-title")) == 5  # every section
    assert tree.xpath("//meta[@name='robots']") == []
    noindex = lxml.html.document_fromstring(renderer.web_page(golden_edition(), noindex=True))
    assert noindex.xpath("//meta[@name='robots']/@content") == ["noindex"]


def test_layout_is_fluid_with_outlook_ghost_tables_and_dark_mode(
    tree: lxml.html.HtmlElement, variant: RenderedVariant
) -> None:
    container = tree.find_class("container")[0]
    assert container.get("width") == "100%"
    assert "max-width:600px" in container.get("style").replace(" ", "")
    # no inline width wider than a 320 px phone's column, whatever the client strips
    for element in tree.iter():
        style = (element.get("style") or "").replace(" ", "")
        for match in re.finditer(r"(?<![-a-z])width:(\d+)px", style):
            assert int(match.group(1)) <= 200, (element.tag, style)
    assert '<!--[if mso]><table role="presentation" width="600"' in variant.html
    assert tree.xpath("//meta[@name='color-scheme']/@content") == ["light dark"]
    styles = "".join(s.text or "" for s in tree.xpath("//style"))
    assert "@media (prefers-color-scheme: dark)" in styles
    for heading in tree.find_class("article-title") + tree.find_class("section-label"):
        assert "font-family:" in heading.get("style")


def test_bylines_isolate_the_name_and_keep_the_page_direction(
    tree: lxml.html.HtmlElement,
) -> None:
    bylines = tree.find_class("byline")
    arabic = next(b for b in bylines if b.xpath("ancestor::*[@lang='ar']"))
    [phrase] = arabic.xpath("span")  # "Par" in the page's language and direction
    assert (phrase.get("dir"), phrase.get("lang")) == ("ltr", "fr")
    assert [b.text for b in phrase.xpath("bdi")] == ["Aïcha Benali"]
    assert arabic.text_content() == "Par Aïcha Benali"
    french = next(b for b in bylines if not b.xpath("ancestor::*[@lang='ar']"))
    assert french.xpath("span") == [] and french.xpath("bdi/text()") == ["Aïcha Benali"]


def test_subject_pattern_fills_its_fields_and_cuts_the_headline() -> None:
    brand = Brand(subject_pattern="{title} · {headline} (+{count})")
    renderer = Renderer(title="La Lettre", locale="fr", brand=brand)
    assert renderer.subject(golden_edition()) == (
        "La Lettre · Le Premier ministre s’exprime sur « l’avenir » du pays (+5)"
    )
    long = one_section(article("x", "Mot " * 60, "https://exemple.africa/x"))
    subject = renderer.subject(long)
    assert len(subject) <= SUBJECT_TARGET and subject.endswith("Mot… (+1)")
    wordy = Renderer(title="T" * 90, locale="fr", brand=Brand(subject_pattern="{title} {date}"))
    assert len(wordy.subject(long)) <= SUBJECT_MAX


def test_sixty_articles_with_pictures_stay_under_gmails_clip(renderer: Renderer) -> None:
    sections = tuple(
        Section(
            f"rubrique {s}",
            f"Rubrique {s}",
            tuple(
                replace(big_article(f"{s}-{i}", f"rubrique {s}", 800), image=PHOTO)
                for i in range(10)
            ),
        )
        for s in range(6)
    )
    variant = renderer.render(Edition(DAY, NOON, NOON, sections))
    # 60 excerpts of 400 characters are 27 KB of text alone: the budget may shorten them, but
    # every article keeps its headline and its picture (a link, a few hundred bytes)
    assert all("excerpts shortened" in warning for warning in variant.warnings)
    tree = lxml.html.document_fromstring(variant.html)
    assert len(tree.find_class("article-title")) == 60
    assert len(tree.xpath("//img[@class='thumb' or @class='lead-image']")) == 60
    assert renderer.measure(variant.html) <= BUDGET_BYTES < GMAIL_CLIP_BYTES
