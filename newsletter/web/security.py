"""The web app's site checks: origins, the security headers, signed form tokens, redacted paths.

Pure functions and one small class, shared by the middleware and the handlers; nothing here
touches the store or renders a page.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from itsdangerous import BadData, URLSafeTimedSerializer

from newsletter.adapters.links import CONFIRM_PATH, PREFERENCES_PATH, UNSUBSCRIBE_PATH
from newsletter.config import ConfigError, Settings

FORM_TOKEN_MAX_AGE = 2 * 3600  # a preferences or editor page left open longer must be reloaded
# The click redirect (/c/) and the open pixel (/o/) carry a reader's id in their token: cut too.
_TOKEN_PATHS = (UNSUBSCRIBE_PATH, PREFERENCES_PATH, CONFIRM_PATH, "/c/", "/o/")


class ThankYouUrlError(ConfigError):
    """NEWSLETTER_THANK_YOU_URL is not an absolute URL on the newsletter's own site."""


def origin_of(url: str) -> str:
    """scheme://host[:port] of ``url``, lower-cased ("" when it has none)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def redact_path(path: str) -> str:
    """The path with any link token cut off: tokens are credentials and never reach a log."""
    for prefix in _TOKEN_PATHS:
        if path.startswith(prefix):
            return prefix + "…"
    return path


def same_site(host: str, base_host: str) -> bool:
    """Whether ``host`` is the base URL's host or on its parent domain (www. next to lettre.)."""
    host, base_host = host.lower(), base_host.lower()
    if host == base_host:
        return True
    try:
        ipaddress.ip_address(base_host)
        return False  # an IP address has no parent domain
    except ValueError:
        pass
    labels = base_host.split(".")
    parent = ".".join(labels[1:]) if len(labels) > 2 else base_host
    return host == parent or host.endswith("." + parent)


def check_thank_you_url(settings: Settings) -> None:
    """Refuse a thank-you URL that would make us redirect off the newsletter's own site."""
    url = settings.thank_you_url
    if not url:
        return
    parts, base = urlsplit(url), urlsplit(settings.base_url)
    https_or_same = parts.scheme == "https" or parts.scheme == base.scheme == "http"
    if not (https_or_same and parts.hostname and base.hostname):
        raise ThankYouUrlError(
            f"NEWSLETTER_THANK_YOU_URL={url!r} is not an absolute https URL",
            "write it in full, e.g. https://www.example.com/merci",
        )
    if not same_site(parts.hostname, base.hostname):
        raise ThankYouUrlError(
            f"NEWSLETTER_THANK_YOU_URL={url!r} is not on the site of NEWSLETTER_BASE_URL",
            f"use a page on {base.hostname} or its parent domain",
        )


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers every response carries (a page sets them itself when a handler already has)."""
    base = origin_of(settings.base_url)
    csp = "; ".join(
        (
            "default-src 'none'",
            "style-src 'unsafe-inline'",
            "img-src 'self' data: https:",
            f"form-action 'self' {base}".rstrip(),
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        # same-origin rather than no-referrer: with no-referrer, browsers send "Origin: null" on
        # our own form posts, which would defeat the cross-site check; cross-site, nothing leaks.
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        # Pages behind token links are personal: no shared cache may keep them.
        "Cache-Control": "no-store",
    }
    if settings.base_url.startswith("https://"):
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


# An edition's web version is the email's HTML: inline styles, and images from the https hosts of
# the feeds (the renderer shows https images only). No script, no form, no frame of it anywhere.
WEB_VERSION_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src https:",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)


class FormTokens:
    """Signed, short-lived tokens in our own forms: a cross-site page cannot forge one."""

    def __init__(self, secret_key: str) -> None:
        self._secret = secret_key

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret, salt=f"newsletter.form.{purpose}")

    def issue(self, purpose: str, binding: str) -> str:
        return self._serializer(purpose).dumps(binding)

    def valid(self, token: str, purpose: str, binding: str) -> bool:
        try:
            value = self._serializer(purpose).loads(token, max_age=FORM_TOKEN_MAX_AGE)
        except BadData:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, binding)
