"""What every handler of the web app shares: the ``Site`` (settings, store, templates, URLs).

``Site`` renders pages and short message pages in the newsletter's language, reads posted forms,
checks that a post comes from our own site, and builds absolute URLs from route names (the route
table is in app.py). The request limits and the exceptions the middleware and form reading raise
live here too, so that every other module of the package can import them without a cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Router

from newsletter.adapters.i18n import N_, Text, translations
from newsletter.adapters.render import make_environment
from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.domain.errors import NewsletterError
from newsletter.domain.ratelimit import Rule
from newsletter.services.signup import CONFIRMATIONS_PER_HOUR, page_direction
from newsletter.web.security import FormTokens, origin_of, security_headers

# One logger for the whole package: operators (and the tests) filter on "newsletter.web".
log = logging.getLogger("newsletter.web")

MAX_BODY_BYTES = 64 * 1024
# Seconds to receive a whole request body (at most MAX_BODY_BYTES: a slow phone needs a few):
# a client trickling a body must not hold a request open. server.py bounds the headers.
BODY_TIMEOUT = 30.0
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
MAX_FORM_FIELDS = 100
# What every form that fails form_ok says (a stale page, or a post from another site).
FORM_EXPIRED = N_(
    "The form has expired or does not come from this site. Reload the page and try again."
)


@dataclass(frozen=True, slots=True)
class WebLimits:
    """Rate limits and the body cap; per process (see ratelimit.py)."""

    signups_per_client: Rule = field(default_factory=lambda: Rule(10, 600.0))
    confirmations_per_address: Rule = CONFIRMATIONS_PER_HOUR
    failed_logins_per_client: Rule = field(default_factory=lambda: Rule(10, 600.0))
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout: float = BODY_TIMEOUT


class BodyTooLarge(NewsletterError):
    """The request body is over the cap: 413."""


class BodyTooSlow(NewsletterError):
    """The request body did not arrive within the deadline: 408, and the connection closed."""


class UnsupportedForm(NewsletterError):
    """A POST that is not a urlencoded or multipart form: 415."""


def client_of(request: Request) -> str:
    # uvicorn puts the X-Forwarded-For client here when the proxy is in FORWARDED_ALLOW_IPS.
    return request.client.host if request.client else "unknown"


def text_field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def text_fields(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


class Site:
    """Settings, store, templates and the route table, with the page helpers built on them."""

    def __init__(self, settings: Settings, store: Store, limits: WebLimits) -> None:
        self.settings = settings
        self.store = store
        self.limits = limits
        self.base = settings.base_url
        self.forms = FormTokens(settings.secret_key)
        self.security = security_headers(settings)
        self.templates = make_environment()
        # The app's router, set by create_app once the routes exist (they need the handlers,
        # which need this Site): url() looks route names up in it.
        self.router: Router | None = None

    # -- URLs ------------------------------------------------------------------------------------

    def url(self, name: str, **params: str) -> str:
        """The absolute URL of the route ``name``: NEWSLETTER_BASE_URL and the route's path.

        Not request.url_for: behind a proxy the request's own host and scheme are not the
        public ones, and the base URL may carry a path prefix the proxy strips.
        """
        if self.router is None:
            raise RuntimeError("Site.url() before create_app() set the router")
        return self.base + self.router.url_path_for(name, **params)

    # -- pages -----------------------------------------------------------------------------------

    def t(self, locale: str | None, message: Text, **fields: Any) -> str:
        """``message`` (an English msgid, or ``nN_``'s counted text) in ``locale``, fields filled.

        A counted text's number is the field ``num``.
        """
        found = translations(locale or self.settings.locale)
        if isinstance(message, tuple):
            singular, plural, n = message
            return found.ngettext(singular, plural, n) % {**fields, "num": n}
        text = found.gettext(message)
        return text % fields if fields else text

    def page(
        self,
        template: str,
        *,
        status: int = 200,
        locale: str | None = None,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        page_locale = locale or self.settings.locale
        lang, direction = page_direction(page_locale)
        html = self.templates.get_template(template).render(
            locale=page_locale, lang=lang, dir=direction, title=self.settings.title, **context
        )
        response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
        # Set here too: the 500 page is sent from outside the middleware stack.
        for name, value in self.security.items():
            response.headers.setdefault(name, value)
        return response

    def message(
        self,
        status: int,
        heading: str,
        *lines: Text,
        locale: str | None = None,
        detail: str = "",
        link: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> HTMLResponse:
        """A short page: a heading, a few lines, maybe one link (always one of our own URLs).

        The heading, the lines and the link's text are msgids (``N_``, ``nN_``), translated here.
        """
        return self.page(
            "pages/message.html",
            status=status,
            locale=locale,
            headers=headers,
            heading=self.t(locale, heading),
            lines=[self.t(locale, line, **fields) for line in lines],
            detail=detail,
            link_url=link[0] if link else "",
            link_text=self.t(locale, link[1]) if link else "",
        )

    # -- forms -----------------------------------------------------------------------------------

    async def read_form(self, request: Request, *, allow_empty: bool = False) -> FormData:
        """The posted form; UnsupportedForm for another content type (415)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in FORM_TYPES:
            if allow_empty and not content_type and not await request.body():
                return FormData()
            raise UnsupportedForm(f"unsupported content type {content_type or '(none)'}")
        # No file parts at all: nothing we accept is a file (a file part is a 400).
        return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)

    def form_expired(self) -> HTMLResponse:
        """The 403 page of a form that failed ``form_ok``."""
        return self.message(403, N_("Invalid request"), FORM_EXPIRED)

    def form_ok(self, request: Request, form: FormData, purpose: str, binding: str) -> bool:
        """A same-site post carrying a form token we issued for ``purpose`` and ``binding``."""
        token = text_field(form, "form_token")
        return self.same_origin(request) and self.forms.valid(token, purpose, binding)

    def same_origin(self, request: Request) -> bool:
        """False when Origin (else Referer) names another site; True when neither is sent.

        Without either header (privacy tools strip them) the signed form token alone decides.
        """
        source = request.headers.get("origin") or request.headers.get("referer")
        if not source:
            return True
        origin = origin_of(source)
        if not origin:  # "null" (sandboxed or privacy-mode documents) or garbage
            return False
        own_host = request.headers.get("host", "").lower()
        return origin == origin_of(self.base) or urlsplit(origin).netloc == own_host
