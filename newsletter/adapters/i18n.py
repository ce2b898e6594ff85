"""The fixed text of emails and pages, per language, and dates formatted with Babel.

The texts live in gettext catalogues, ``newsletter/locale/<language>/LC_MESSAGES/newsletter.po``,
compiled to the ``newsletter.mo`` beside each (both committed, so an installed package carries
them; ``make messages`` extracts, updates and compiles them). The msgids are the English texts,
written where they are used: ``_("Read more")`` in a template, ``N_("Page not found")`` in code
that translates later, and ``ngettext`` for every count, so plurals follow each language's rule.

Lookups fall back from the full locale ("fr_MA") to its language ("fr"), then to English, then to
the msgid itself, so a missing translation shows up as readable English instead of an error in
the middle of a send. Fields are ``%(name)s``: the caller fills them with ``%``.

The lines written for the operator (the command line, the logs) are English by design: they use
``english_ngettext``, which is not extracted, so that translators never see them.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, tzinfo
from gettext import NullTranslations
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_percent as babel_format_percent
from babel.numbers import parse_pattern
from babel.support import Translations

from newsletter.domain.locales import locale_spelling

FALLBACK_LOCALE = "en"
DOMAIN = "newsletter"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"

#: a text to translate later: a msgid (``N_``), or a counted one, ``nN_``'s (singular, plural, n)
Text = str | tuple[str, str, int]


def N_(message: str) -> str:
    """Mark ``message`` for extraction; it is translated later, where the locale is known."""
    return message


def nN_(singular: str, plural: str, n: int) -> tuple[str, str, int]:
    """Mark a counted text for extraction (``make messages`` knows the keyword); see ``N_``."""
    return singular, plural, n


def normalise_locale(locale: str) -> str:
    """Babel's form of a locale: "fr-MA" and "fr_MA" both give "fr_MA"."""
    return locale_spelling(locale.strip())


def _candidates(locale: str) -> tuple[str, ...]:
    full = normalise_locale(locale)
    language = full.split("_", 1)[0].lower()
    return (full, language, FALLBACK_LOCALE)


def translations(locale: str) -> NullTranslations:
    """The catalogue chain for ``locale``: fr_MA -> fr -> en -> the msgid itself."""
    return _translations(normalise_locale(locale))


@functools.lru_cache(maxsize=64)
def _translations(locale: str) -> NullTranslations:
    chain: NullTranslations | None = None
    seen: set[str] = set()
    for candidate in _candidates(locale):
        if not candidate or candidate in seen:
            continue
        seen.add(candidate)
        if not (LOCALE_DIR / candidate / "LC_MESSAGES" / f"{DOMAIN}.mo").is_file():
            continue
        found = Translations.load(str(LOCALE_DIR), [candidate], domain=DOMAIN)
        if chain is None:
            chain = found
        else:
            chain.add_fallback(found)
    return chain if chain is not None else NullTranslations()


def gettext(locale: str, message: str) -> str:
    """``message`` (an English msgid) in ``locale``, or the msgid when nobody translated it."""
    return translations(locale).gettext(message)


def ngettext(locale: str, singular: str, plural: str, n: int) -> str:
    """The form of a counted text that ``n`` takes in ``locale`` (fields still to fill)."""
    return translations(locale).ngettext(singular, plural, n)


def english_ngettext(singular: str, plural: str, n: int) -> str:
    """An operator's line (English) with the right plural; never extracted for translators."""
    return translations(FALLBACK_LOCALE).ngettext(singular, plural, n)


def babel_locale(locale: str) -> Locale:
    """Babel's Locale for ``locale``, English when Babel does not know it."""
    try:
        return Locale.parse(normalise_locale(locale))
    except (UnknownLocaleError, ValueError, TypeError):
        return Locale.parse(FALLBACK_LOCALE)


def format_long_date(d: date, locale: str) -> str:
    """The date written out in full: "mardi 27 janvier 2026" in fr."""
    return format_date(d, format="full", locale=babel_locale(locale))


def format_medium_date(d: date, locale: str) -> str:
    """The date in short words, for a table: "27 janv. 2026" in fr."""
    return format_date(d, format="medium", locale=babel_locale(locale))


def format_moment(moment: datetime, zone: tzinfo, locale: str) -> str:
    """A moment in ``zone`` (the site's), as ``locale`` writes it: "27 janv. 2026, 06:42"."""
    return format_datetime(moment, format="medium", tzinfo=zone, locale=babel_locale(locale))


def format_percent(rate: float, locale: str) -> str:
    """A rate with two decimals, as ``locale`` writes it: "0.25%", "0,25 %"."""
    language = babel_locale(locale)
    # The locale's own pattern (its spacing, its sign's side), held to two decimals.
    pattern = parse_pattern(language.percent_formats[None].pattern)
    pattern.frac_prec = (2, 2)
    return babel_format_percent(rate, format=pattern, locale=language)


def language_tag(locale: str) -> str:
    """The BCP 47 tag for HTML's lang attribute: "fr_MA" -> "fr-MA"."""
    return normalise_locale(locale).replace("_", "-")


def is_rtl_locale(locale: str) -> bool:
    return babel_locale(locale).character_order == "right-to-left"
