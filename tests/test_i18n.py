"""The gettext catalogues: complete, compiled, current, with each language's plural rule."""

from __future__ import annotations

import io
from datetime import date
from gettext import GNUTranslations
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from newsletter.adapters.i18n import (
    LOCALE_DIR,
    english_ngettext,
    format_long_date,
    gettext,
    ngettext,
    translations,
)
from newsletter.adapters.render import make_environment
from newsletter.domain.locales import canonical_locale, locale_spelling, offered_language

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("fr", "en", "ar")
TRANSLATED = ("fr", "ar")  # English is the msgids' own language
DAY_ONE = "The link is valid for %(num)d day."
DAYS = "The link is valid for %(num)d days."


def _po(language: str):
    with (LOCALE_DIR / language / "LC_MESSAGES" / "newsletter.po").open("rb") as f:
        return read_po(f, locale=language)


def _pot():
    with (LOCALE_DIR / "newsletter.pot").open("rb") as f:
        return read_po(f)


def _mo_catalog(data: bytes) -> dict:
    return GNUTranslations(io.BytesIO(data))._catalog  # type: ignore[attr-defined]


@pytest.mark.parametrize("language", LANGUAGES)
def test_committed_mo_is_the_compiled_po(language: str) -> None:
    catalog = _po(language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    committed = (LOCALE_DIR / language / "LC_MESSAGES" / "newsletter.mo").read_bytes()
    fresh, shipped = _mo_catalog(compiled.getvalue()), _mo_catalog(committed)
    # The header entry ("") carries dates that change with every `make messages`.
    header_fresh, header_shipped = fresh.pop(""), shipped.pop("")
    assert shipped == fresh, f"run `make messages`: {language}'s .mo is older than its .po"
    plural = next(line for line in header_fresh.splitlines() if line.startswith("Plural-Forms"))
    assert plural in header_shipped


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_msgid_is_translated(language: str) -> None:
    template = {m.id for m in _pot() if m.id}
    catalog = _po(language)
    found = {m.id for m in catalog if m.id}
    assert found == template, "run `make messages`"
    for message in catalog:
        if not message.id:
            continue
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(forms), f"{language}: no translation for {message.id!r}"
        assert not message.fuzzy, f"{language}: fuzzy translation for {message.id!r}"
        if isinstance(message.id, tuple):
            assert len(forms) == catalog.num_plurals, message.id


def test_pot_holds_every_msgid_of_the_code_and_templates() -> None:
    method_map, options_map = parse_mapping_cfg(io.StringIO((ROOT / "babel.cfg").read_text()))
    keywords = {**DEFAULT_KEYWORDS, "nN_": (1, 2)}
    extracted = {
        message[2]  # (filename, lineno, message, comments, context)
        for message in extract_from_dir(str(ROOT), method_map, options_map, keywords=keywords)
    }
    extracted = {m if isinstance(m, str) else tuple(m) for m in extracted}
    assert extracted == {m.id for m in _pot() if m.id}, "run `make messages`"


def test_plural_forms_headers() -> None:
    assert _po("fr").plural_forms == "nplurals=2; plural=(n > 1);"
    assert _po("en").plural_forms == "nplurals=2; plural=(n != 1);"
    assert _po("ar").num_plurals == 6


def test_english_counts_for_the_operator() -> None:
    assert english_ngettext("%(num)d article", "%(num)d articles", 1) % {"num": 1} == "1 article"
    assert english_ngettext("%(num)d article", "%(num)d articles", 2) % {"num": 2} == "2 articles"
    assert english_ngettext("%(num)d article", "%(num)d articles", 0) % {"num": 0} == "0 articles"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "Le lien est valable 0 jour."),
        (1, "Le lien est valable 1 jour."),
        (2, "Le lien est valable 2 jours."),
        (7, "Le lien est valable 7 jours."),
    ],
)
def test_french_plural(n: int, text: str) -> None:
    assert ngettext("fr", DAY_ONE, DAYS, n) % {"num": n} == text
    assert ngettext("fr-MA", DAY_ONE, DAYS, n) % {"num": n} == text  # via the language


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "الرابط صالح لمدة 0 يوم."),
        (1, "الرابط صالح لمدة يوم واحد."),
        (2, "الرابط صالح لمدة يومين."),
        (7, "الرابط صالح لمدة 7 أيام."),  # 3 to 10: the existing wording
        (11, "الرابط صالح لمدة 11 يومًا."),
        (100, "الرابط صالح لمدة 100 يوم."),
    ],
)
def test_arabic_counts_pick_their_form(n: int, text: str) -> None:
    assert ngettext("ar", DAY_ONE, DAYS, n) % {"num": n} == text


def test_english_and_unknown_locales_fall_back_to_the_msgid() -> None:
    assert ngettext("en", DAY_ONE, DAYS, 1) % {"num": 1} == "The link is valid for 1 day."
    assert ngettext("de_CH", DAY_ONE, DAYS, 3) % {"num": 3} == "The link is valid for 3 days."
    assert gettext("de", "Read more") == "Read more"
    assert gettext("fr_MA", "Read more") == "Lire la suite"
    assert gettext("fr", "a text nobody wrote") == "a text nobody wrote"
    assert translations("fr-MA") is translations("fr_MA")  # one cached chain per locale


def test_french_typography_survives() -> None:
    assert gettext("fr", "Unsubscribe:") == "Se désabonner\u00a0:"
    assert gettext("fr", "Today’s top stories") == "L’essentiel de l’actualité du jour"


def test_templates_count_and_escape_with_new_style_gettext(tmp_path: Path) -> None:
    (tmp_path / "t.html").write_text(
        '{{ _("By %(author)s", author=author) }}|{{ ngettext("The link is valid for %(num)d day.",'
        ' "The link is valid for %(num)d days.", days) }}',
        encoding="utf-8",
    )
    template = make_environment(tmp_path).get_template("t.html")
    assert (
        template.render(locale="fr", author="<i>A&B</i>", days=1)
        == "Par &lt;i&gt;A&amp;B&lt;/i&gt;|Le lien est valable 1 jour."
    )
    assert template.render(locale="ar", author="x", days=2) == "بقلم x|الرابط صالح لمدة يومين."


def test_confirmation_email_text_counts_days() -> None:
    env = make_environment()
    text = env.get_template("email/confirm.txt").render(
        locale="en", title="T", confirm_url="https://x/c", days=1
    )
    assert "The link is valid for 1 day." in text


def test_long_date_still_uses_babel() -> None:
    assert format_long_date(date(2026, 1, 27), "fr") == "mardi 27 janvier 2026"


def test_one_rule_for_locale_spelling() -> None:
    assert locale_spelling("fr-MA") == "fr_MA"
    assert canonical_locale("fr-ma") == "fr_MA"
    assert canonical_locale("xx-nope") is None
    assert offered_language(" FR ", ("fr", "en")) == "fr"
    assert offered_language("de", ("fr", "en")) == ""


def test_pages_offer_the_languages_with_a_catalogue() -> None:
    from newsletter.services.signup import PAGE_LOCALES

    assert set(PAGE_LOCALES) == {p.name for p in LOCALE_DIR.iterdir() if p.is_dir()}
