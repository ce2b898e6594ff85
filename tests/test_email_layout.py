"""The edition's email in a real browser (Debian chromium via Playwright): the layout holds on a
375 px phone and at 640 px, with the <style> block and without it (what Gmail's app does to
IMAP accounts), in light and in emulated dark mode.

The pictures are https links; the browser gets them from a route that answers with a local SVG,
so the page lays out with real images and nothing leaves the machine. Screenshots land in
tmp_path, and in $NEWSLETTER_SCREENSHOTS when set, to look at them.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.adapters.render import Renderer
from newsletter.domain import Edition
from tests.support import CHROMIUM
from tests.test_browser import screenshot
from tests.test_render import BRAND, PHOTO, golden_edition

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
]

PICTURE = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="675">'
    '<rect width="1200" height="675" fill="#46698f"/><circle cx="850" cy="250" r="140" '
    'fill="#e9b45a"/><rect y="470" width="1200" height="205" fill="#2d4a33"/></svg>'
)
LOGO = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="80"><text x="8" y="54" '
    'font-family="Georgia" font-size="40" font-weight="bold" fill="#1a1a1a">Le Journal</text></svg>'
)
# A headline without a space is the worst case for a narrow column: it must wrap, not push.
UNBROKEN = "Anticonstitutionnellement" * 3


def edition_with_pictures() -> Edition:
    edition = golden_edition()
    sections = []
    for section in edition.sections:
        articles = tuple(
            replace(a, image=a.image or PHOTO, title=UNBROKEN if a.uid == "5" else a.title)
            for a in section.articles
        )
        sections.append(replace(section, articles=articles))
    return replace(edition, sections=tuple(sections))


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    """The edition as French and Arabic readers get it (every optional part present)."""
    edition = edition_with_pictures()
    return {
        locale: Renderer(title="La Lettre", locale=locale, brand=BRAND)
        .render(edition, chosen=True)
        .html
        for locale in ("fr", "ar")
    }


def serve_pictures(route: object) -> None:
    url = route.request.url  # type: ignore[attr-defined]
    body = LOGO if "logo" in url else PICTURE
    route.fulfill(status=200, content_type="image/svg+xml", body=body)  # type: ignore[attr-defined]


def open_page(browser: object, html: str, width: int, scheme: str) -> tuple[object, object]:
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": width, "height": 900}, color_scheme=scheme
    )
    context.route(re.compile(r"^https://"), serve_pictures)
    page = context.new_page()
    page.set_content(html, wait_until="load")
    return context, page


def strip_style(html: str) -> str:
    stripped = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    assert "<style>" not in stripped and "@media" not in stripped
    return stripped


@pytest.mark.parametrize("locale", ["fr", "ar"])
@pytest.mark.parametrize("styles", ["with-style", "without-style"])
def test_the_email_holds_on_a_phone_and_at_640_px_in_light_and_dark(
    browser: object, pages: dict[str, str], tmp_path: Path, locale: str, styles: str
) -> None:
    html = pages[locale] if styles == "with-style" else strip_style(pages[locale])
    for width in (375, 640):
        for scheme in ("light", "dark"):
            context, page = open_page(browser, html, width, scheme)
            try:
                scroll = page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
                assert scroll <= width, (locale, styles, width, scheme, scroll)
                boxes = page.evaluate(  # type: ignore[attr-defined]
                    "[...document.images].map(i => [i.complete && i.naturalWidth > 0,"
                    " i.getBoundingClientRect().left, i.getBoundingClientRect().right])"
                )
                # the logo, the lead picture and three thumbnails (Franc CFA's URL is unsafe)
                assert len(boxes) == 5
                for loaded, left, right in boxes:
                    assert loaded and left >= 0 and right <= width, (width, boxes)
                if width == 375 or os.environ.get("NEWSLETTER_SCREENSHOTS"):
                    # a full-page shot costs about a second: the phone's always, the rest on demand
                    screenshot(page, tmp_path / f"email-{locale}-{styles}-{width}-{scheme}.png")
            finally:
                context.close()  # type: ignore[attr-defined]


def test_dark_mode_rules_apply_and_the_logo_keeps_its_light_chip(
    browser: object, pages: dict[str, str]
) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        context, page = open_page(browser, pages["fr"], 640, scheme)
        try:
            colours[scheme] = page.evaluate(  # type: ignore[attr-defined]
                "['.container', '.article-link', '.logo-chip'].map(s =>"
                " getComputedStyle(document.querySelector(s)).backgroundColor + ' '"
                " + getComputedStyle(document.querySelector(s)).color)"
            )
        finally:
            context.close()  # type: ignore[attr-defined]
    light_container, light_link, light_chip = colours["light"]
    dark_container, dark_link, dark_chip = colours["dark"]
    assert light_container.startswith("rgb(255, 255, 255)")
    assert dark_container.startswith("rgb(28, 28, 28)")
    assert light_link.endswith("rgb(26, 26, 26)") and dark_link.endswith("rgb(242, 241, 236)")
    assert light_chip.startswith("rgb(255, 255, 255)") and dark_chip.startswith(
        "rgb(255, 255, 255)"
    )


def test_the_thumbnail_is_mirrored_in_a_right_to_left_item(
    browser: object, pages: dict[str, str]
) -> None:
    context, page = open_page(browser, strip_style(pages["fr"]), 375, "light")
    try:
        sides = page.evaluate(  # type: ignore[attr-defined]
            "[...document.querySelectorAll('img.thumb')].map(i => {"
            " const cell = i.closest('table').querySelector('.article-cell');"
            " return [cell.getAttribute('lang') || 'fr',"
            " i.getBoundingClientRect().left < cell.getBoundingClientRect().left]; })"
        )
    finally:
        context.close()  # type: ignore[attr-defined]
    assert ["ar", True] in sides  # Arabic: the picture on the left of the text
    assert ["fr", False] in sides  # French: on the right
