"""The fixed text of emails and pages, per language, and dates formatted with Babel.

A small in-code catalogue rather than gettext .po files: the product has a dozen strings and three
languages, and a dict keeps them reviewable in one place. Lookups fall back from the full locale
("fr_MA") to its language ("fr"), then to English, then to the key itself, so a missing
translation shows up as readable text instead of an error in the middle of a send.

Some entries hold ``{name}`` fields that the caller fills with ``str.format`` (``{title}``,
``{author}`` ...).
"""

from __future__ import annotations

from datetime import date

from babel import Locale, UnknownLocaleError
from babel.dates import format_date

FALLBACK_LOCALE = "en"

# French typography puts a no-break space before ":" (U+00A0 here: every client renders it).
_CATALOGUE: dict[str, dict[str, str]] = {
    "fr": {
        "general_section": "Autres actualités",
        "read_more": "Lire la suite",
        "unsubscribe": "Se désabonner",
        "preferences": "Choisir mes rubriques",
        "footer_reason": "Vous recevez cet e-mail parce que vous êtes abonné·e à « {title} ».",
        "preheader_fallback": "L’essentiel de l’actualité du jour",
        "by_author": "Par {author}",
        "empty_edition": "Aucun article dans cette édition.",
        "subject": "{title} – {date}\u00a0: {headline}",
        "subject_no_headline": "{title} – {date}",
        "colon": "\u00a0:",
        "headline_separator": " · ",
    },
    "en": {
        "general_section": "Other news",
        "read_more": "Read more",
        "unsubscribe": "Unsubscribe",
        "preferences": "Choose my sections",
        "footer_reason": "You are receiving this email because you subscribed to {title}.",
        "preheader_fallback": "Today’s top stories",
        "by_author": "By {author}",
        "empty_edition": "No articles in this edition.",
        "subject": "{title} – {date}: {headline}",
        "subject_no_headline": "{title} – {date}",
        "colon": ":",
        "headline_separator": " · ",
    },
    "ar": {
        "general_section": "أخبار أخرى",
        "read_more": "اقرأ المزيد",
        "unsubscribe": "إلغاء الاشتراك",
        "preferences": "اختيار الأقسام",
        "footer_reason": "تصلك هذه الرسالة لأنك مشترك في النشرة «{title}».",
        "preheader_fallback": "أهم أخبار اليوم",
        "by_author": "بقلم {author}",
        "empty_edition": "لا توجد مقالات في هذا العدد.",
        "subject": "{title} – {date}: {headline}",
        "subject_no_headline": "{title} – {date}",
        "colon": ":",
        "headline_separator": " · ",
    },
}


def normalise_locale(locale: str) -> str:
    """Babel's form of a locale: "fr-MA" and "fr_MA" both give "fr_MA"."""
    return locale.strip().replace("-", "_")


def _candidates(locale: str) -> tuple[str, ...]:
    full = normalise_locale(locale)
    language = full.split("_", 1)[0].lower()
    return (full, language, FALLBACK_LOCALE)


def gettext(locale: str, key: str) -> str:
    """The fixed text ``key`` in ``locale``; falls back to the language, English, then the key."""
    for candidate in _candidates(locale):
        text = _CATALOGUE.get(candidate, {}).get(key)
        if text is not None:
            return text
    return key


def babel_locale(locale: str) -> Locale:
    """Babel's Locale for ``locale``, English when Babel does not know it."""
    try:
        return Locale.parse(normalise_locale(locale))
    except (UnknownLocaleError, ValueError, TypeError):
        return Locale.parse(FALLBACK_LOCALE)


def format_long_date(d: date, locale: str) -> str:
    """The date written out in full: "mardi 27 janvier 2026" in fr."""
    return format_date(d, format="full", locale=babel_locale(locale))


def language_tag(locale: str) -> str:
    """The BCP 47 tag for HTML's lang attribute: "fr_MA" -> "fr-MA"."""
    return normalise_locale(locale).replace("_", "-")


def is_rtl_locale(locale: str) -> bool:
    return babel_locale(locale).character_order == "right-to-left"
