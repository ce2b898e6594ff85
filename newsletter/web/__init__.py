"""The web app (an entry point): sign-up, confirmation, unsubscribe, preferences, editors' pages.

``create_app(settings)`` builds a Starlette app; ``newsletter serve`` runs it under uvicorn. Like
the CLI, this layer only reads settings, calls the services (signup, delivery, the store) and
turns their errors into pages: every answer a user sees is a page in the newsletter's language,
never a stack trace.

The package, by what each module holds:
  app.py               create_app: the named route table (the list of routes is there),
                       the middleware stack, the exception handlers, the lifespan
  pages.py             Site, what the handlers share: page rendering, form reading, URLs
                       built from route names, the request limits
  subscriber_pages.py  sign-up, confirmation, unsubscribe, preferences
  editors.py           the editors' console and its login, applied to its routes at routing
  errors.py            the error pages (exception handlers)
  middleware.py        security headers and the request log line, the body cap and deadline
  security.py          origins, the security headers, signed form tokens, redacted paths

Security: every response carries a strict Content-Security-Policy and friends; bodies are capped
at 64 KB and 30 s (headers: server.py); state-changing editor, confirmation and preferences
forms need a same-site Origin/Referer (when sent) and a signed, short-lived form token; a busy
database is a 503 with Retry-After; the only redirect target besides our own fixed paths is
NEWSLETTER_THANK_YOU_URL, checked at start-up; tokens never reach the log (paths are redacted).

This module is the package's facade: ``from newsletter.web import X`` keeps working for the names
below, wherever they now live.
"""

from __future__ import annotations

from newsletter.web.app import create_app
from newsletter.web.editors import EditorConsole, EditorLogin
from newsletter.web.errors import BUSY_RETRY_AFTER, ErrorPages
from newsletter.web.middleware import BodyLimit, SecurityHeaders
from newsletter.web.pages import (
    BODY_TIMEOUT,
    MAX_BODY_BYTES,
    BodyTooLarge,
    BodyTooSlow,
    Site,
    UnsupportedForm,
    WebLimits,
)
from newsletter.web.security import (
    FORM_TOKEN_MAX_AGE,
    FormTokens,
    ThankYouUrlError,
    check_thank_you_url,
    origin_of,
    redact_path,
    same_site,
    security_headers,
)
from newsletter.web.subscriber_pages import SubscriberPages

__all__ = [
    "BODY_TIMEOUT",
    "BUSY_RETRY_AFTER",
    "FORM_TOKEN_MAX_AGE",
    "MAX_BODY_BYTES",
    "BodyLimit",
    "BodyTooLarge",
    "BodyTooSlow",
    "EditorConsole",
    "EditorLogin",
    "ErrorPages",
    "FormTokens",
    "SecurityHeaders",
    "Site",
    "SubscriberPages",
    "ThankYouUrlError",
    "UnsupportedForm",
    "WebLimits",
    "check_thank_you_url",
    "create_app",
    "origin_of",
    "redact_path",
    "same_site",
    "security_headers",
]
