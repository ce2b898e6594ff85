"""The editors' curation form (issue 14) through the real web app over HTTP, on a real SQLite file.

The page is /preview/{day}: the edition's articles with their references, the form that shapes
the edition, and beside it the preview at phone width. Posts go to /editor/{day}/edition; each
test reads the result back from the page (the iframe's srcdoc is the email as subscribers get
it) and from the store (the editorial state and its change log).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import lxml.html
import pytest

from newsletter.services import curation
from newsletter.services.curation import editorial_changes
from newsletter.services.delivery import send_edition
from tests.support import SAMPLE_DATE, SmtpServer
from tests.web_support import (
    ADMIN_PASSWORD,
    SAMPLE_DAY,
    LiveApp,
    form_token_of,
    running_app,
    wait_mails,
)

PAGE = f"/preview/{SAMPLE_DATE}"
ACTION = f"/editor/{SAMPLE_DATE}/edition"
AUTH = ("editor", ADMIN_PASSWORD)


@pytest.fixture
def live(tmp_path: Path, smtp_factory: Callable[..., SmtpServer]) -> Iterator[LiveApp]:
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD) as app:
        yield app


@dataclass(frozen=True)
class Row:
    ref: str
    title: str
    url: str
    excluded: bool
    lead: bool


@dataclass(frozen=True)
class Desk:
    """The editors' page of the edition, read as a browser would."""

    html: str
    token: str
    rows: list[Row]
    email: str  # the phone iframe's srcdoc: the email's HTML
    text: str  # the plain-text part
    subject_line: str
    doc: lxml.html.HtmlElement

    def row(self, title_start: str) -> Row:
        [found] = [r for r in self.rows if r.title.startswith(title_start)]
        return found


def desk(http: httpx.Client) -> Desk:
    page = http.get(PAGE)
    assert page.status_code == 200, page.text[:500]
    doc = lxml.html.fromstring(page.text)
    rows = []
    for item in doc.xpath("//ul[@class='articles']/li"):
        [link] = item.xpath(".//div[@class='article-title']/a")
        [box] = item.xpath(".//input[@name='excluded']")
        [radio] = item.xpath(".//input[@name='lead']")
        [ref] = item.xpath(".//span[@class='ref']")
        assert box.get("value") == radio.get("value") == ref.text_content()
        rows.append(
            Row(
                ref=ref.text_content(),
                title=link.text_content(),
                url=link.get("href"),
                excluded=box.get("checked") is not None,
                lead=radio.get("checked") is not None,
            )
        )
    frames = doc.xpath("//iframe[@class='phone']")
    subject = doc.xpath("//div[@class='card']/p[strong]")
    return Desk(
        html=page.text,
        token=form_token_of(page.text),
        rows=rows,
        email=frames[0].get("srcdoc") if frames else "",
        text=(doc.xpath("//pre") or [lxml.html.fromstring("<pre></pre>")])[0].text_content(),
        subject_line=subject[0].text_content() if subject else "",
        doc=doc,
    )


def save(http: httpx.Client, live: LiveApp, token: str, **fields: object) -> httpx.Response:
    """Post the curation form as a browser on our own page does."""
    return http.post(ACTION, data={"form_token": token, **fields}, headers={"Origin": live.url})


def form_as_shown(page: Desk, live: LiveApp) -> dict[str, list[str]]:
    """The curation form's fields as the page holds them (hidden state included), as a browser
    would post them if the editor pressed Save at once."""
    [form] = page.doc.xpath(f"//form[@action='{live.url}{ACTION}']")
    fields: dict[str, list[str]] = {}
    for name, value in form.form_values():
        fields.setdefault(name, []).append(value)
    # lxml posts "on" for a checked radio whose value is "" (a browser posts ""): the checked
    # "lead" radio's own value, as a browser sends it.
    fields["lead"] = [
        radio.get("value") for radio in form.xpath(".//input[@name='lead'][@checked]")
    ]
    return fields


def state(live: LiveApp) -> tuple[object, ...]:
    """The edition's whole editorial state and its change log, to compare before and after."""
    return (live.store.edition_curation(SAMPLE_DAY), editorial_changes(live.store, SAMPLE_DAY))


def test_the_page_lists_the_articles_with_their_references_and_the_form(live: LiveApp) -> None:
    with live.client(auth=AUTH) as http:
        page = desk(http)
    assert len(page.rows) == 15  # the bundled sample's edition of 2026-01-27
    assert len({r.ref for r in page.rows}) == 15
    assert all(len(r.ref) == 6 and r.url.startswith("https://") for r in page.rows)
    assert not any(r.excluded or r.lead for r in page.rows)
    decentralisation = page.row("Décentralisation")
    assert decentralisation.url in page.html
    doc = page.doc
    [form] = doc.xpath(f"//form[@action='{live.url}{ACTION}']")
    assert form.get("method") == "post"
    # Sections as fieldsets with their names as legends, then the add-a-link fieldset.
    legends = [legend.text_content() for legend in form.xpath(".//fieldset/legend")]
    assert {"Politique", "Économie", "Sport", "Ajouter un lien"} <= set(legends)
    # Every field has its label.
    for field in form.xpath(".//input[@id] | .//textarea[@id] | .//select[@id]"):
        assert form.xpath(f".//label[@for='{field.get('id')}']"), field.get("id")
    [subject] = form.xpath(".//input[@name='subject']")
    # The default Subject is the placeholder: the same as the page shows for the edition.
    assert subject.get("value") in ("", None)
    assert subject.get("placeholder") and subject.get("placeholder") in page.subject_line
    assert form.xpath(".//select[@name='add_section']/option[text()='Politique']")
    assert "Aucune modification pour l’instant" in page.html
    # Nothing to run in the page: the CSP stays strict.
    assert not doc.xpath("//script")


def test_saving_the_form_changes_the_preview_and_logs_the_changes(live: LiveApp) -> None:
    with live.client(auth=AUTH) as http:
        before = desk(http)
        first = before.rows[0]
        excluded = before.row("Cacao")
        lead = before.row("Athlétisme")
        assert excluded.title in before.email and lead.title in before.email
        assert before.email.index(first.title) < before.email.index(lead.title)
        intro = "Ce soir, <b>trois</b> dossiers.\n\nTout sur https://exemple.ma/dossier"
        answer = save(
            http,
            live,
            before.token,
            excluded=[excluded.ref],
            lead=lead.ref,
            intro=intro,
            subject="Notre sélection du soir",
        )
        assert answer.status_code == 303, answer.text[:500]
        assert answer.headers["location"] == f"{live.url}{PAGE}?saved=4"
        after = desk(http)
        saved_page = http.get(answer.headers["location"]).text
    assert "4 modifications enregistrées." in saved_page
    # The preview: the excluded article nowhere, the lead first, the intro escaped, the Subject.
    assert excluded.title not in after.email and excluded.title not in after.text
    assert after.email.index(lead.title) < after.email.index(first.title)
    assert "&lt;b&gt;trois&lt;/b&gt;" in after.email and "<b>trois</b>" not in after.email
    assert 'href="https://exemple.ma/dossier"' in after.email
    assert "Ce soir, <b>trois</b> dossiers." in after.text
    assert "Notre sélection du soir" in after.subject_line
    # The form shows the new state.
    assert after.row("Cacao").excluded and not after.row("Cacao").lead
    assert after.row("Athlétisme").lead
    [textarea] = after.doc.xpath("//textarea[@name='intro']")
    assert textarea.text_content() == intro
    [subject] = after.doc.xpath("//input[@name='subject']")
    assert subject.get("value") == "Notre sélection du soir"
    # The change log: who and what, on the page and in the store.
    changes = editorial_changes(live.store, SAMPLE_DAY)
    assert {c.action for c in changes} == {"exclude", "lead", "intro", "subject"}
    assert {c.who for c in changes} == {"web:editor"}
    log = after.doc.xpath("//table[contains(@class, 'changes')]/tbody/tr")
    assert len(log) == 4
    assert all("web:editor" in row.text_content() for row in log)
    # The latest first, each action named in the page's language, with what it was about.
    assert "Objet" in log[0].text_content() and "Notre sélection du soir" in log[0].text_content()
    [exclusion] = [row for row in log if "Article exclu" in row.text_content()]
    assert "Cacao" in exclusion.text_content() and excluded.ref in exclusion.text_content()
    assert "Article à la une choisi" in log[-1].text_content()

    # Saving the page again as it is changes nothing and logs nothing.
    with live.client(auth=AUTH) as http:
        again = save(
            http,
            live,
            after.token,
            excluded=[excluded.ref],
            lead=lead.ref,
            intro=intro,
            subject="Notre sélection du soir",
        )
        assert again.status_code == 303 and again.headers["location"].endswith("?saved=0")
        assert len(editorial_changes(live.store, SAMPLE_DAY)) == 4
        # Unticking brings the article back; emptying the Subject restores the default.
        back = save(http, live, after.token, lead=lead.ref, intro=intro, subject="")
        assert back.status_code == 303 and back.headers["location"].endswith("?saved=2")
        restored = desk(http)
    assert excluded.title in restored.email
    assert "Notre sélection du soir" not in restored.subject_line
    assert restored.email.index(lead.title) < restored.email.index(first.title)


def test_a_stale_page_does_not_undo_what_another_editor_changed(live: LiveApp) -> None:
    with live.client(auth=AUTH) as http:
        page = desk(http)
        fields = form_as_shown(page, live)
        assert fields["shown"] == ["1"] and "excluded" not in fields
        # Pressing Save on the page as it is changes nothing.
        unchanged = http.post(ACTION, data=fields, headers={"Origin": live.url})
        assert unchanged.status_code == 303, unchanged.text[-900:]
        assert unchanged.headers["location"].endswith("?saved=0")
        # Meanwhile another editor, at the command line, excludes an article and sets a Subject.
        other = page.rows[5]
        curation.exclude(live.store, live.settings, SAMPLE_DAY, other.ref, "cli:amina")
        curation.set_subject(live.store, live.settings, SAMPLE_DAY, "Le choix d’Amina", "cli:amina")
        # This editor, on the page loaded before, writes an intro and picks a lead.
        lead = page.rows[7]
        fields.update(intro=["Deux lignes.\r\nSur deux lignes."], lead=[lead.ref])
        answer = http.post(ACTION, data=fields, headers={"Origin": live.url})
        assert answer.status_code == 303 and answer.headers["location"].endswith("?saved=2")
        after = desk(http)
    assert after.row(other.title).excluded  # not brought back by the stale page
    assert "Le choix d’Amina" in after.subject_line  # not reset by the stale page
    assert after.row(lead.title).lead
    stored = live.store.edition_curation(SAMPLE_DAY)
    assert stored.intro == "Deux lignes.\nSur deux lignes."
    whos = [(c.who, c.action) for c in editorial_changes(live.store, SAMPLE_DAY)]
    assert whos == [
        ("cli:amina", "exclude"),
        ("cli:amina", "subject"),
        ("web:editor", "lead"),
        ("web:editor", "intro"),
    ]
    # Saving that page again (its hidden state is now the edition's) changes nothing.
    with live.client(auth=AUTH) as http:
        again = http.post(ACTION, data=form_as_shown(after, live), headers={"Origin": live.url})
        assert again.headers["location"].endswith("?saved=0")
    assert len(editorial_changes(live.store, SAMPLE_DAY)) == 4


def test_adding_a_link_and_going_back_to_the_first_article_as_lead(live: LiveApp) -> None:
    with live.client(auth=AUTH) as http:
        page = desk(http)
        lead = page.row("Athlétisme")
        assert save(http, live, page.token, lead=lead.ref).status_code == 303
        page = desk(http)
        answer = save(
            http,
            live,
            page.token,
            lead="",  # "no lead chosen": the first article leads again
            add_url="https://partenaire.example/festival-2026",
            add_title="Le festival des partenaires ouvre ses portes",
            add_section="Culture",
            add_section_new="",
            add_summary="Trois jours de concerts.",
        )
        assert answer.status_code == 303, answer.text[:500]
        after = desk(http)
    added = after.row("Le festival des partenaires")
    assert added.url == "https://partenaire.example/festival-2026"
    assert "Le festival des partenaires ouvre ses portes" in after.email
    assert "Trois jours de concerts." in after.email
    assert not any(r.lead for r in after.rows)
    assert after.email.index(after.rows[0].title) < after.email.index(lead.title)
    actions = [c.action for c in editorial_changes(live.store, SAMPLE_DAY)]
    assert actions == ["lead", "add", "lead"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"intro": "x" * 2001}, "the intro is 2001 characters long"),
        ({"add_url": "javascript:alert(1)", "add_title": "Piège"}, "is not an http(s) URL"),
        ({"add_url": "https://partenaire.example/a", "add_title": ""}, "has no title"),
        ({"lead": "ffffff"}, "no article ffffff"),
    ],
)
def test_refused_input_changes_nothing(live: LiveApp, fields: dict[str, str], says: str) -> None:
    with live.client(auth=AUTH) as http:
        page = desk(http)
        before = state(live)
        # A valid exclusion rides along: refused too, since the post as a whole is refused.
        answer = save(http, live, page.token, excluded=[page.rows[1].ref], **fields)
        assert answer.status_code == 400, answer.text[:500]
        assert "Cette modification a été refusée" in answer.text
        assert says in answer.text
        assert f'href="{live.url}{PAGE}"' in answer.text
    assert state(live) == before


def test_a_lead_that_is_excluded_or_a_link_already_in_the_edition_is_refused(
    live: LiveApp,
) -> None:
    with live.client(auth=AUTH) as http:
        page = desk(http)
        before = state(live)
        ref = page.rows[2].ref
        both = save(http, live, page.token, excluded=[ref], lead=ref)
        assert both.status_code == 400 and "cannot be both the lead and excluded" in both.text
        # The service alone knows the URL is already there; the add goes first, so the
        # exclusion and the intro posted with it are not made either.
        twice = save(
            http,
            live,
            page.token,
            excluded=[page.rows[3].ref],
            intro="Bonsoir",
            add_url=page.rows[0].url,
            add_title="Encore",
        )
        assert twice.status_code == 400 and "is already in edition" in twice.text
    assert state(live) == before


def test_a_post_without_the_token_or_from_another_site_is_refused(live: LiveApp) -> None:
    with live.client(auth=AUTH) as http:
        page = desk(http)
        before = state(live)
        wanted = {"excluded": [page.rows[0].ref], "intro": "Bonsoir", "subject": "Autre"}
        cross = http.post(
            ACTION,
            data={"form_token": page.token, **wanted},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        no_token = http.post(ACTION, data=wanted, headers={"Origin": live.url})
        assert no_token.status_code == 403
        forged = http.post(
            ACTION, data={"form_token": "forged", **wanted}, headers={"Origin": live.url}
        )
        assert forged.status_code == 403
        assert "Le formulaire a expiré" in forged.text
    assert state(live) == before


def test_editors_only(live: LiveApp) -> None:
    with live.client() as http:
        assert http.get(PAGE).status_code == 401
        token = desk(httpx.Client(base_url=live.url, auth=AUTH)).token
        before = state(live)
        for auth in (None, ("editor", "wrong")):
            answer = http.post(
                ACTION,
                data={"form_token": token, "intro": "Bonsoir"},
                headers={"Origin": live.url},
                auth=auth,  # type: ignore[arg-type]
            )
            assert answer.status_code == 401
    assert state(live) == before


def test_once_the_send_started_the_form_is_disabled_and_a_post_gets_409(live: LiveApp) -> None:
    live.add("lectrice@example.com")
    with live.client(auth=AUTH) as http:
        page = desk(http)
        intro_set = save(http, live, page.token, intro="Avant l’envoi")
        assert intro_set.status_code == 303
        report = send_edition(live.store, live.settings, SAMPLE_DAY)
        assert report.complete
        [sent] = wait_mails(live, 1)
        assert "Avant l’envoi" in sent.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        before = state(live)
        frozen = desk(http)
        [fieldset] = frozen.doc.xpath("//fieldset[contains(@class, 'curation-fields')]")
        assert fieldset.get("disabled") is not None
        assert "Cette édition part déjà : elle ne peut plus être modifiée." in frozen.html
        answer = save(
            http, live, frozen.token, excluded=[frozen.rows[0].ref], intro="Après l’envoi"
        )
        assert answer.status_code == 409, answer.text[:500]
        assert "Cette édition part déjà" in answer.text
        assert "rien n’a été modifié" in answer.text
        # Even a post that would change nothing is told the edition is frozen.
        assert save(http, live, frozen.token, intro="Avant l’envoi").status_code == 409
    assert state(live) == before


def test_the_form_in_arabic_reads_right_to_left(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    with (
        running_app(
            tmp_path,
            smtp_factory(),
            NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD,
            NEWSLETTER_LOCALE="ar",
        ) as live,
        live.client(auth=AUTH) as http,
    ):
        page = desk(http)
    assert page.doc.get("dir") == "rtl"
    for text in ("إعداد العدد", "مُستبعَد", "الخبر الرئيسي", "إضافة رابط", "حفظ العدد"):
        assert text in page.html, text
    assert len(page.rows) == 15
