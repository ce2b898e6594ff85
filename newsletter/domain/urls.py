"""URLs in messages and settings: the http(s) check and the password redaction, one rule each.

Pure string work (no network, no driver): the configuration, the feed reader and the database
layer all call these.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def http_url(text: str) -> SplitResult | None:
    """The parts of ``text`` when it is an absolute http:// or https:// URL with a host, else None.

    The scheme is compared case-insensitively; text that does not parse (``https://[exemple.ma/a``,
    an invalid IPv6 literal) is no URL.
    """
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return parts


def is_http_url(text: str) -> bool:
    """True when ``text`` is an absolute http:// or https:// URL with a host."""
    return http_url(text) is not None


def is_secure_or_local_url(text: str) -> bool:
    """An https URL, or an http one on this machine (localhost, 127.0.0.1, ::1).

    What a public link of the site must be: one-click unsubscribe (RFC 8058) needs https.
    """
    parts = http_url(text)
    if parts is None:
        return False
    return parts.scheme.lower() == "https" or parts.hostname in LOOPBACK_HOSTS


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ***: fit for any message or log line."""
    return split_password(url)[0]


def split_password(url: str) -> tuple[str, str | None]:
    """(``url`` with its password masked, the password as written or None).

    Done on the text, not with a URL parser, because it must also work for what a parser cannot
    read, and because the user info ends at the *last* @ (a password with an unencoded @ is split
    differently by some parsers, which would show its tail as the host name).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return (f"***@{url.rpartition('@')[2]}" if "@" in url else url), None
    userinfo, at, location = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url, None
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{user}:***@{location}", password
