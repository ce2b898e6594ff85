"""domain.curation and its rendering: the editors' decisions applied to an edition, pure."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import lxml.html
import pytest

from newsletter.adapters.render import Renderer, text_paragraphs
from newsletter.domain import Article, LeftOutReason
from newsletter.domain.curation import (
    INTRO_MAX,
    AddedItem,
    Curation,
    CurationRefused,
    added_item,
    article_ref,
    clean_intro,
    clean_subject,
)
from newsletter.domain.edition import build_edition

DAY = date(2026, 1, 27)
ZONE = ZoneInfo("Africa/Casablanca")


def article(uid: str, section: str, hour: int) -> Article:
    return Article(
        uid=uid,
        title=f"Titre {uid}",
        link=f"https://exemple.ma/{uid}",
        published=datetime(2026, 1, 27, hour, 0, tzinfo=UTC),
        categories=(section,),
        summary_html=f"<p>Résumé {uid}</p>",
    )


ARTICLES = [
    article("pol-1", "Politique", 5),
    article("pol-2", "Politique", 4),
    article("eco-1", "Économie", 3),
    article("cul-1", "Culture", 2),
]


def edition(curation: Curation | None = None):  # type: ignore[no-untyped-def]
    return build_edition(
        ARTICLES,
        day=DAY,
        send_time=time(7, 0),
        zone=ZONE,
        order=["Politique", "Économie", "Culture"],
        max_per_section=10,
        title="La Lettre",
        locale="fr",
        curation=curation,
    )


def test_an_excluded_article_appears_nowhere_and_is_told_as_left_out() -> None:
    curated = edition(Curation(excluded=frozenset({"eco-1"})))
    assert "eco-1" not in {a.uid for a in curated.articles}
    assert [s.label for s in curated.sections] == ["Politique", "Culture"]
    [left] = [item for item in curated.left_out if item.reason is LeftOutReason.EXCLUDED]
    assert left.article is not None and left.article.uid == "eco-1"


def test_an_added_item_joins_its_section_once_even_when_already_frozen() -> None:
    item = added_item(
        "https://partenaire.ma/evenement",
        "Un forum à Rabat",
        section="culture",
        summary="Le 3 février.\nEntrée libre.",
    )
    curated = edition(Curation(added=(item,)))
    culture = next(s for s in curated.sections if s.label == "Culture")
    assert [a.uid for a in culture.articles] == [item.uid, "cul-1"]
    added = culture.articles[0]
    assert added.link == "https://partenaire.ma/evenement" and added.categories == ("culture",)
    assert added.summary_html == "Le 3 février. Entrée libre."
    # an edition rebuilt from its frozen articles already carries it: not twice
    frozen = [*ARTICLES, added]
    rebuilt = build_edition(
        frozen,
        day=DAY,
        send_time=time(7, 0),
        zone=ZONE,
        order=["Politique"],
        max_per_section=10,
        title="La Lettre",
        locale="fr",
        curation=Curation(added=(item,)),
    )
    assert [a.uid for a in rebuilt.articles].count(item.uid) == 1


def test_the_chosen_lead_comes_first_with_its_section() -> None:
    curated = edition(Curation(lead="cul-1", intro="Bonsoir.", subject="Notre choix"))
    variant = Renderer(title="La Lettre", locale="fr").render(curated)
    tree = lxml.html.document_fromstring(variant.html)
    titles = [h.text_content() for h in tree.find_class("article-title")]
    assert titles[0] == "Titre cul-1" and "lead-title" in tree.find_class("article-title")[0].get(
        "class"
    )
    assert tree.find_class("section-label")[0].text_content() == "Culture"
    assert variant.subject == "Notre choix"
    assert variant.preheader == "Bonsoir."
    # a variant without the lead's section: its own first article leads
    politics = Renderer(title="La Lettre", locale="fr").render(
        curated.restricted_to(frozenset({"politique"}))
    )
    assert politics.subject == "Notre choix"
    assert (
        "Titre pol-1"
        in lxml.html.document_fromstring(politics.html).find_class("lead-title")[0].text_content()
    )


def test_the_intro_is_escaped_text_with_links_in_both_parts() -> None:
    intro = (
        "Bonsoir <b>chers</b> lecteurs,\n<script>alert(1)</script>\n\n"
        "Le programme : https://exemple.ma/forum?j=1&k=2. À demain."
    )
    variant = Renderer(title="La Lettre", locale="fr").render(edition(Curation(intro=intro)))
    tree = lxml.html.document_fromstring(variant.html)
    paragraphs = tree.find_class("intro-text")
    assert len(paragraphs) == 2
    assert paragraphs[0].text_content() == "Bonsoir <b>chers</b> lecteurs,<script>alert(1)</script>"
    assert tree.xpath("//script") == [] and tree.xpath("//b") == []
    assert paragraphs[1].xpath(".//a/@href") == ["https://exemple.ma/forum?j=1&k=2"]
    assert "Bonsoir <b>chers</b> lecteurs," in variant.text
    assert "https://exemple.ma/forum?j=1&k=2. À demain." in variant.text


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("a\nb", ["a<br>b"]),
        ("a\n\n\nb", ["a", "b"]),
        (
            "voir https://x.ma/a).",
            ['voir <a class="intro-link" href="https://x.ma/a">https://x.ma/a</a>).'],
        ),
        ("javascript:alert(1)", ["javascript:alert(1)"]),
        ('"><img src=x>', ["&#34;&gt;&lt;img src=x&gt;"]),
    ],
)
def test_text_paragraphs(text: str, html: list[str]) -> None:
    assert [str(p) for p in text_paragraphs(text)] == html


def test_bad_input_is_refused_with_one_line() -> None:
    with pytest.raises(CurationRefused, match=f"2001 characters long; the most is {INTRO_MAX}"):
        clean_intro("x" * 2001)
    assert clean_intro("  a \r\nb\r\n") == "  a\nb"
    assert clean_subject("Notre\r\nBcc: x@y.ma") == "Notre Bcc: x@y.ma"
    with pytest.raises(CurationRefused, match="not an http"):
        added_item("javascript:alert(1)", "x")
    with pytest.raises(CurationRefused, match="not an http"):
        added_item("ftp://exemple.ma/a", "x")
    with pytest.raises(CurationRefused, match="no title"):
        added_item("https://exemple.ma/a", " \n ")
    with pytest.raises(CurationRefused, match="picture"):
        added_item("https://exemple.ma/a", "x", image_url="http://exemple.ma/a.jpg")
    assert isinstance(added_item("https://exemple.ma/a", "Titre"), AddedItem)


def test_article_refs_are_short_and_stable() -> None:
    assert article_ref("pol-1") == article_ref("pol-1") != article_ref("pol-2")
    assert len(article_ref("https://exemple.ma/a")) == 6


def test_an_added_items_angle_brackets_stay_on_the_page() -> None:
    item = added_item("https://exemple.ma/a", "Le <Forum>", summary="Trois jours <de> rencontres.")
    variant = Renderer(title="La Lettre", locale="fr").render(edition(Curation(added=(item,))))
    assert "Le ‹Forum›" in variant.text and "Trois jours ‹de› rencontres." in variant.text
    assert "Trois jours ‹de› rencontres." in variant.html
