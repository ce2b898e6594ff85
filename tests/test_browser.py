"""The pages in a real browser: Debian chromium driven by Playwright, against the live app.

Screenshots land in tmp_path (and in $NEWSLETTER_SCREENSHOTS when set, to look at them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.adapters.tokens import Purpose
from newsletter.domain import SubscriberStatus
from tests.support import CHROMIUM, SAMPLE_DATE, SmtpServer
from tests.web_support import ADMIN_PASSWORD, LiveApp, confirmation_link, running_app, wait_mails

playwright_api = pytest.importorskip("playwright.sync_api")
PHONE = {"width": 375, "height": 812}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
]


@pytest.fixture
def live(tmp_path: Path, smtp_factory: Callable[..., SmtpServer]) -> Iterator[LiveApp]:
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD) as app:
        yield app


def csp_refusals(page: object) -> list[str]:
    """What the Content-Security-Policy refuses on ``page`` from now on, as chromium reports it
    on the console; the list fills as the page runs."""
    refused: list[str] = []
    page.on(  # type: ignore[attr-defined]
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return refused


def screenshot(page: object, path: Path, *, full_page: bool = True) -> Path:
    page.screenshot(path=str(path), full_page=full_page)  # type: ignore[attr-defined]
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    keep = os.environ.get("NEWSLETTER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def test_sign_up_confirm_and_unsubscribe_in_the_browser(
    live: LiveApp, browser: object, tmp_path: Path
) -> None:
    context = browser.new_context(viewport=PHONE, locale="fr-FR")  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"{live.url}/subscribe")
    screenshot(page, tmp_path / "subscribe.png")
    page.fill("#email", "navigatrice@example.com")
    page.fill("#name", "Aïcha Ouédraogo")
    page.check("input[value='Économie']")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Vérifiez votre boîte mail")
    screenshot(page, tmp_path / "check_mail.png")
    assert live.status("navigatrice@example.com") is SubscriberStatus.PENDING

    [message] = wait_mails(live, 1)
    page.goto(confirmation_link(message))
    page.wait_for_selector("text=Confirmer l’abonnement")  # the link alone changes nothing
    assert live.status("navigatrice@example.com") is SubscriberStatus.PENDING
    page.click("button[type=submit]")
    page.wait_for_selector("text=Abonnement confirmé")
    screenshot(page, tmp_path / "confirmed.png")
    subscriber = live.store.find_by_email("navigatrice@example.com")
    assert subscriber is not None and subscriber.status is SubscriberStatus.ACTIVE
    assert subscriber.categories == ("Économie",)

    page.goto(
        f"{live.url}/preferences/{live.token(Purpose.PREFERENCES, 'navigatrice@example.com')}"
    )
    page.check("input[value='Sport']")
    page.click("form >> nth=0 >> button[type=submit]")
    page.wait_for_selector("text=Vos préférences sont enregistrées.")
    screenshot(page, tmp_path / "preferences.png")
    subscriber = live.store.find_by_email("navigatrice@example.com")
    assert subscriber is not None and subscriber.categories == ("Économie", "Sport")

    page.goto(
        f"{live.url}/unsubscribe/{live.token(Purpose.UNSUBSCRIBE, 'navigatrice@example.com')}"
    )
    page.wait_for_selector("text=Se désabonner ?")  # it asks first
    assert "Voulez-vous vous désabonner" in page.inner_text("main")
    screenshot(page, tmp_path / "unsubscribe.png")
    assert live.status("navigatrice@example.com") is SubscriberStatus.ACTIVE
    page.click("button[type=submit]")
    page.wait_for_selector("text=Vous êtes désabonné·e")
    assert "C’est fait\u00a0: vous ne recevrez plus" in page.inner_text("main")
    screenshot(page, tmp_path / "unsubscribed.png")
    assert live.status("navigatrice@example.com") is SubscriberStatus.UNSUBSCRIBED
    context.close()


def test_editors_preview_screenshot(live: LiveApp, browser: object, tmp_path: Path) -> None:
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 1200, "height": 900},
        http_credentials={"username": "editor", "password": ADMIN_PASSWORD},
    )
    page = context.new_page()
    response = page.goto(f"{live.url}/preview/{SAMPLE_DATE}")
    assert response is not None and response.status == 200
    assert "mardi 27 janvier 2026" in page.inner_text("h1")
    phone = page.frame_locator("iframe.phone")
    assert "La Lettre" in phone.locator("body").inner_text()  # the edition's own title, rendered
    shot = screenshot(page, tmp_path / "preview.png")
    assert shot.stat().st_size > 10_000
    page.goto(f"{live.url}/editor")
    screenshot(page, tmp_path / "editor.png")
    # On a phone the five-column table becomes one block per edition: nothing scrolls sideways.
    from datetime import date

    from newsletter.domain import EditionStatus

    live.store.record_edition_status(date(2026, 1, 26), EditionStatus.EMPTY, "no article")
    page.set_viewport_size({"width": 375, "height": 900})
    page.goto(f"{live.url}/editor")
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.querySelector('.table-scroll').scrollWidth, document.querySelector('.table-scroll').clientWidth]"
    )
    assert widths[0] <= 375 and widths[1] <= widths[2], widths
    screenshot(page, tmp_path / "editor-375.png")
    context.close()


def test_archive_to_web_version_in_the_browser(
    live: LiveApp, browser: object, tmp_path: Path
) -> None:
    from datetime import UTC, date, datetime

    from newsletter.domain import Article

    day = date.fromisoformat(SAMPLE_DATE)
    sections = ("Politique", "Économie", "Sport")
    articles = [
        Article(
            uid=f"https://journal.example/{n}",
            title=f"Titre de l’article {n} : {section}",
            link=f"https://journal.example/{n}",
            published=datetime(2026, 1, 27, 5, n, tzinfo=UTC),
            categories=(section,),
            summary_html="<p>Un résumé de quelques mots, assez long pour passer à la ligne.</p>",
        )
        for n, section in enumerate(sections)
    ]
    live.store.freeze_edition(day, articles)
    live.store.mark_edition_sent(day)
    context = browser.new_context(viewport=PHONE, locale="fr-FR")  # type: ignore[attr-defined]
    page = context.new_page()
    blocked = csp_refusals(page)
    page.goto(f"{live.url}/archive")
    assert "mardi 27 janvier 2026" in page.inner_text("main")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, tmp_path / "archive.png")
    page.click("a.edition-date")
    page.wait_for_url(f"{live.url}/archive/{SAMPLE_DATE}")
    text = page.inner_text("body")
    for article in articles:
        assert article.title in text
    for section in sections:
        assert section in text
    assert not blocked, blocked  # the inline styles apply: the page's CSP allows them
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing sideways
    screenshot(page, tmp_path / "web-version-375.png")
    page.set_viewport_size({"width": 640, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth") <= 640
    screenshot(page, tmp_path / "web-version-640.png")
    context.close()


def test_editors_shape_the_edition_in_the_browser(
    live: LiveApp, browser: object, tmp_path: Path
) -> None:
    """The curation form driven as an editor does: exclude, lead, intro, Subject, save."""
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 1200, "height": 900},
        http_credentials={"username": "editor", "password": ADMIN_PASSWORD},
    )
    page = context.new_page()
    blocked = csp_refusals(page)
    page.goto(f"{live.url}/preview/{SAMPLE_DATE}")
    excluded_title = "Cacao : les coopératives misent sur la transformation locale"
    lead_title = "Athlétisme : Mariam Touré, 19 ans, bat le record national du 800 mètres"
    phone = page.frame_locator("iframe.phone")
    assert excluded_title in phone.locator("body").inner_text()
    # The checkbox and the radio are found by their labels, as a screen reader names them.
    page.get_by_label(f"Exclu: {excluded_title}").check()
    page.get_by_label(f"À la une: {lead_title}").check()
    page.get_by_label("Introduction").fill(
        "Ce soir, <b>trois</b> dossiers à lire.\n\nBonne lecture."
    )
    page.get_by_label("Objet", exact=True).fill("Notre sélection du soir")
    screenshot(page, tmp_path / "curation-form-1200.png")
    page.get_by_role("button", name="Enregistrer l’édition").click()
    page.wait_for_url(f"{live.url}/preview/{SAMPLE_DATE}?saved=4")
    assert "4 modifications enregistrées." in page.inner_text("main")
    email = phone.locator("body").inner_text()
    assert excluded_title not in email
    assert "Ce soir, <b>trois</b> dossiers à lire." in email  # shown as text, not as markup
    # The lead comes first, before the article that led the edition as the feeds made it.
    assert email.index(lead_title) < email.index("Décentralisation")
    assert "Notre sélection du soir" in page.inner_text(".card")
    assert page.get_by_label(f"Exclu: {excluded_title}").is_checked()
    assert page.get_by_label(f"À la une: {lead_title}").is_checked()
    assert not blocked, blocked
    screenshot(page, tmp_path / "curation-saved-1200.png")
    # Saving the page again as it now is changes nothing (its hidden state is the edition's).
    page.get_by_role("button", name="Enregistrer l’édition").click()
    page.wait_for_url(f"{live.url}/preview/{SAMPLE_DATE}?saved=0")
    assert "0 modification enregistrée." in page.inner_text("main")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing sideways
    screenshot(page, tmp_path / "curation-375.png")
    context.close()
