"""The one rule for spelling a locale code, which config, the adapters and the services all use.

Babel spells a locale with an underscore ("fr_MA"); forms, CSV files and .env files also carry the
BCP 47 hyphen ("fr-MA"). Every reader of a locale goes through ``locale_spelling`` (and
``canonical_locale`` when it must also be one Babel knows), so the rule has one owner.
"""

from __future__ import annotations

from collections.abc import Collection

from babel import Locale, UnknownLocaleError


def locale_spelling(text: str) -> str:
    """Babel's spelling of a locale code: "fr-MA" and "fr_MA" both give "fr_MA"."""
    return text.replace("-", "_")


def canonical_locale(text: str) -> str | None:
    """Babel's canonical form of a locale it knows ("fr-ma" -> "fr_MA"), None for any other."""
    try:
        return str(Locale.parse(locale_spelling(text)))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def offered_language(text: str, offered: Collection[str]) -> str:
    """``text`` as a lower-case language code if ``offered`` holds it, else "" (none chosen)."""
    value = locale_spelling(text.strip().lower())
    return value if value in offered else ""
