"""The web app (an entry point): sign-up, confirmation, unsubscribe, preferences, editors' pages.

``create_app(settings)`` builds a Starlette app; ``newsletter serve`` runs it under uvicorn. Like
the CLI, this layer only reads settings, calls the services (signup.py, deliver.py, the store) and
turns their errors into pages: every answer a user sees is a page in the newsletter's language,
never a stack trace.

Routes (under NEWSLETTER_BASE_URL):
  GET  /  and  /subscribe          the sign-up form
  POST /subscribe                  pending subscriber + confirmation email (same answer for all)
  GET  /confirm/{token}            double opt-in: a page with one button; changes nothing
  POST /confirm/{token}            the button (same-site, form token): the subscriber becomes active
  GET  /unsubscribe/{token}        a page with one button; never unsubscribes by itself
  POST /unsubscribe/{token}        RFC 8058 one-click (and the button): unsubscribes, 200
  GET/POST /preferences/{token}    sections and language, saved at once
  GET  /editor                     editors: recent editions, hold / release   (HTTP Basic)
  GET  /preview/{YYYY-MM-DD}       editors: the edition as subscribers see it (HTTP Basic)
  POST /editor/{date}/hold|release|test                                       (HTTP Basic)
  GET  /healthz                    "ok" when the database answers

Security: every response carries a strict Content-Security-Policy and friends; bodies are capped
at 64 KB and 30 s (headers: httpserver.py); state-changing editor, confirmation and preferences
forms need a same-site Origin/Referer (when sent) and a signed, short-lived form token; a busy
database is a 503 with Retry-After; the only redirect target besides our own fixed paths is
NEWSLETTER_THANK_YOU_URL, checked at start-up; tokens never reach the log (paths are redacted).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.addresses import InvalidAddress, normalise_address
from newsletter.compose import VariantRenderer
from newsletter.config import ConfigError, Settings
from newsletter.deliver import NothingToSend, frozen_edition, send_test
from newsletter.domain import Subscriber, SubscriberStatus, category_key
from newsletter.errors import NewsletterError
from newsletter.i18n import format_long_date, gettext
from newsletter.links import CONFIRM_PATH, PREFERENCES_PATH, UNSUBSCRIBE_PATH
from newsletter.preview import PLACEHOLDER, fill_slots, identity_for, links_for, recipient_for
from newsletter.ratelimit import Rule, SlidingWindowLimiter
from newsletter.render import make_environment
from newsletter.signup import (
    CONFIRMATIONS_PER_HOUR,
    ConfirmationMail,
    Subscriptions,
    UnknownLink,
    language_choices,
    mask_address,
    page_direction,
    parse_signup,
)
from newsletter.smtp import SmtpConfig
from newsletter.store import DatabaseBusy, Store, open_store
from newsletter.subscribers import InvalidValue
from newsletter.tokens import InvalidToken, Purpose

log = logging.getLogger("newsletter.web")

MAX_BODY_BYTES = 64 * 1024
# Seconds to receive a whole request body (at most MAX_BODY_BYTES: a slow phone needs a few):
# a client trickling a body must not hold a request open. httpserver.py bounds the headers.
BODY_TIMEOUT = 30.0
FORM_TOKEN_MAX_AGE = 2 * 3600  # a preferences or editor page left open longer must be reloaded
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
MAX_FORM_FIELDS = 100
RECENT_EDITIONS = 14
FAILURES_SHOWN = 5
# Seconds a client is asked to wait after a 503 for a busy database: a writer holds the lock for
# a send batch or an import chunk, so a few seconds later the retry (a mail client's one-click
# POST, say) goes through.
BUSY_RETRY_AFTER = 5
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Edition days the editors' pages accept. Outside this range there is no edition to speak of,
# and the edition window (the day before, at the send time, in the zone) overflows datetime.
EARLIEST_EDITION_DAY = date(1970, 1, 1)
LATEST_EDITION_DAY = date(9998, 12, 31)
_TOKEN_PATHS = (UNSUBSCRIBE_PATH, PREFERENCES_PATH, CONFIRM_PATH)


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


class ThankYouUrlError(ConfigError):
    """NEWSLETTER_THANK_YOU_URL is not an absolute URL on the newsletter's own site."""


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


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


def client_of(request: Request) -> str:
    # uvicorn puts the X-Forwarded-For client here when the proxy is in FORWARDED_ALLOW_IPS.
    return request.client.host if request.client else "unknown"


def text_field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def text_fields(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


# ---------------------------------------------------------------------------------------------
# Middleware (pure ASGI, so they also wrap streaming and error responses)
# ---------------------------------------------------------------------------------------------


class SecurityHeaders:
    """Adds the security headers to every response and logs one redacted line per request."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            log.info(
                "%s %s %s %.0fms", scope["method"], redact_path(scope["path"]), status, elapsed
            )


class BodyLimit:
    """413 for a declared Content-Length over the cap; BodyTooLarge when a body grows past it;
    BodyTooSlow when it is not all there ``timeout`` seconds after the request began."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        too_large: Callable[[], Response],
        timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.too_large()(scope, receive, send)
            return
        received = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # only waiting for a disconnect now: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(f"request body not received within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:  # chunked: no Content-Length to check up front
                    raise BodyTooLarge(f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


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


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


class WebApp:
    """The handlers, with what they share: settings, store, services, limiters, templates."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        limits: WebLimits,
        smtp: SmtpConfig | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.limits = limits
        self.smtp = smtp
        self.base = settings.base_url
        self.subscriptions = Subscriptions(
            store, settings, per_address=SlidingWindowLimiter(limits.confirmations_per_address)
        )
        self.signups = SlidingWindowLimiter(limits.signups_per_client)
        self.failed_logins = SlidingWindowLimiter(limits.failed_logins_per_client)
        self.forms = FormTokens(settings.secret_key)
        self.security = security_headers(settings)
        self.templates = make_environment()

    # -- pages -----------------------------------------------------------------------------------

    def t(self, locale: str | None, key: str, **fields: Any) -> str:
        text = gettext(locale or self.settings.locale, key)
        return text.format(**fields) if fields else text

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
        heading_key: str,
        *line_keys: str,
        locale: str | None = None,
        detail: str = "",
        link: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> HTMLResponse:
        """A short page: a heading, a few lines, maybe one link (always one of our own URLs)."""
        return self.page(
            "pages/message.html",
            status=status,
            locale=locale,
            headers=headers,
            heading=self.t(locale, heading_key),
            lines=[self.t(locale, key, **fields) for key in line_keys],
            detail=detail,
            link_url=link[0] if link else "",
            link_text=self.t(locale, link[1]) if link else "",
        )

    def subscribe_url(self) -> str:
        return f"{self.base}/subscribe"

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

    # -- health ----------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self.store.schema_version)
        except (SQLAlchemyError, NewsletterError):
            log.warning("health check: the database does not answer")
            return PlainTextResponse("unavailable", status_code=503)
        return PlainTextResponse("ok")

    # -- sign-up ---------------------------------------------------------------------------------

    def subscribe_page(
        self,
        *,
        status: int = 200,
        error: dict[str, str] | None = None,
        email: str = "",
        name: str = "",
        chosen: tuple[str, ...] = (),
    ) -> HTMLResponse:
        return self.page(
            "pages/subscribe.html",
            status=status,
            action=self.subscribe_url(),
            sections=self.settings.section_order,
            chosen=chosen,
            error=error,
            form_email=email,
            form_name=name,
        )

    async def subscribe_form(self, request: Request) -> Response:
        return self.subscribe_page()

    async def subscribe(self, request: Request) -> Response:
        form = await self.read_form(request)
        client = client_of(request)
        if not self.signups.allow(client):
            return self.message(429, "web_rate_limited_title", "web_rate_limited_text")
        if text_field(form, "website"):  # the honeypot: only robots fill a field nobody sees
            return self.signed_up(request, form)
        email, name = text_field(form, "email"), text_field(form, "name")
        sections = text_fields(form, "section")
        try:
            signup = parse_signup(self.settings, email, name, sections, text_field(form, "locale"))
        except InvalidAddress as err:
            return self.invalid_signup("web_invalid_address_text", err.reason, email, name)
        except InvalidValue as err:
            return self.invalid_signup("web_invalid_form_text", err.reason, email, name)
        mail = await run_in_threadpool(self.subscriptions.sign_up, signup, client)
        response = self.signed_up(request, form)
        if mail is not None:
            # After the answer: whether and how the relay answers must not show in our timing.
            response.background = BackgroundTask(self.send_confirmation, mail)
        return response

    def invalid_signup(self, text_key: str, reason: str, email: str, name: str) -> Response:
        error = {
            "heading": self.t(None, "web_invalid_address_title"),
            "text": self.t(None, text_key),
            "detail": reason,
        }
        return self.subscribe_page(status=400, error=error, email=email[:320], name=name[:256])

    def signed_up(self, request: Request, form: FormData) -> Response:
        """The one answer to every accepted sign-up: same page, or 303 to the thank-you URL."""
        if self.settings.thank_you_url and self.from_the_site(request, form):
            return RedirectResponse(self.settings.thank_you_url, status_code=303)
        return self.page("pages/check_mail.html", days=self.settings.confirm_days)

    def from_the_site(self, request: Request, form: FormData) -> bool:
        # The embed snippet posts from the site's own pages, or says so with a redirect field.
        if text_field(form, "redirect"):
            return True
        source = request.headers.get("origin") or request.headers.get("referer") or ""
        origin = origin_of(source)
        return bool(origin) and origin != origin_of(self.base)

    def send_confirmation(self, mail: ConfirmationMail) -> None:
        try:
            self.subscriptions.send(mail, self.smtp)
        except NewsletterError as err:
            log.warning("confirmation for subscriber %s not sent: %s", mail.subscriber_id, err)

    def confirm_page(
        self, token: str, subscriber: Subscriber, *, status: int = 200, error: str = ""
    ) -> HTMLResponse:
        """The page a confirmation link opens: one button, which posts the confirmation."""
        return self.page(
            "pages/confirm.html",
            status=status,
            locale=subscriber.locale or None,
            address=mask_address(subscriber.email),
            action=f"{self.base}{CONFIRM_PATH}{token}",
            form_token=self.forms.issue("confirm", str(subscriber.id)),
            error=error,
        )

    def confirmed_page(self, subscriber: Subscriber, *, already: bool) -> HTMLResponse:
        locale = subscriber.locale or None
        prefix = "web_already_confirmed" if already else "web_confirmed"
        return self.page(
            "pages/confirmed.html",
            locale=locale,
            heading=self.t(locale, f"{prefix}_title"),
            text=self.t(locale, f"{prefix}_text", title=self.settings.title),
            preferences_url=self.subscriptions.links.preferences_url(
                subscriber.id, subscriber.email_key
            ),
        )

    async def confirm_form(self, request: Request) -> Response:
        # GET changes nothing: mail scanners fetch every link of a message, and a fetched link
        # must not subscribe anyone (nor re-subscribe someone who left).
        token = request.path_params["token"]
        subscriber, _nonce = await run_in_threadpool(self.subscriptions.confirmation_for, token)
        if subscriber.status is SubscriberStatus.ACTIVE:
            return self.confirmed_page(subscriber, already=True)
        return self.confirm_page(token, subscriber)

    async def confirm(self, request: Request) -> Response:
        form = await self.read_form(request, allow_empty=True)
        token = request.path_params["token"]
        subscriber, _nonce = await run_in_threadpool(self.subscriptions.confirmation_for, token)
        form_token = text_field(form, "form_token")
        if not (
            self.same_origin(request)
            and self.forms.valid(form_token, "confirm", str(subscriber.id))
        ):
            error = self.t(subscriber.locale or None, "web_form_expired_text")
            return self.confirm_page(token, subscriber, status=403, error=error)
        confirmed, activated = await run_in_threadpool(
            self.subscriptions.confirm, token, client_of(request)
        )
        return self.confirmed_page(confirmed, already=not activated)

    # -- unsubscribe -----------------------------------------------------------------------------

    async def unsubscribe_form(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(
            self.subscriptions.subscriber_for, Purpose.UNSUBSCRIBE, token
        )
        return self.page(
            "pages/unsubscribe.html",
            locale=subscriber.locale or None,
            address=mask_address(subscriber.email),
            action=f"{self.base}{UNSUBSCRIBE_PATH}{token}",
        )

    async def unsubscribe(self, request: Request) -> Response:
        # RFC 8058: no cookie, no login, no form token; the signed link is the authority.
        await self.read_form(request, allow_empty=True)
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(self.subscriptions.unsubscribe, token)
        return self.page(
            "pages/unsubscribed.html",
            locale=subscriber.locale or None,
            subscribe_url=self.subscribe_url(),
        )

    # -- preferences -----------------------------------------------------------------------------

    def preferences_page(
        self,
        token: str,
        subscriber: Subscriber,
        *,
        status: int = 200,
        saved: bool = False,
        error: str = "",
    ) -> HTMLResponse:
        offered = self.subscriptions.offered_sections(subscriber)
        chosen = tuple(s for s in offered if category_key(s) in subscriber.category_keys)
        return self.page(
            "pages/preferences.html",
            status=status,
            locale=subscriber.locale or None,
            address=mask_address(subscriber.email),
            action=f"{self.base}{PREFERENCES_PATH}{token}",
            unsubscribe_action=self.subscriptions.unsubscribe_url(subscriber),
            form_token=self.forms.issue("preferences", str(subscriber.id)),
            sections=offered,
            chosen=chosen,
            languages=language_choices(),
            current_locale=subscriber.locale,
            active=subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING),
            saved=saved,
            error=error,
        )

    async def preferences_form(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(
            self.subscriptions.subscriber_for, Purpose.PREFERENCES, token
        )
        return self.preferences_page(token, subscriber)

    async def preferences(self, request: Request) -> Response:
        form = await self.read_form(request)
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(
            self.subscriptions.subscriber_for, Purpose.PREFERENCES, token
        )
        form_token = text_field(form, "form_token")
        if not (
            self.same_origin(request)
            and self.forms.valid(form_token, "preferences", str(subscriber.id))
        ):
            error = self.t(subscriber.locale or None, "web_form_expired_text")
            return self.preferences_page(token, subscriber, status=403, error=error)
        try:
            updated = await run_in_threadpool(
                self.subscriptions.save_preferences,
                subscriber,
                text_fields(form, "section"),
                text_field(form, "locale"),
            )
        except InvalidValue as err:
            return self.preferences_page(token, subscriber, status=400, error=err.reason)
        return self.preferences_page(token, updated, saved=True)

    # -- editors ---------------------------------------------------------------------------------

    def editor_denied(self, request: Request) -> Response | None:
        """None when the request carries the editors' login; else the 404/401/429 answer."""
        if not self.settings.admin_password:
            raise HTTPException(404)  # editors' pages are off: nothing here, not even a login
        client = client_of(request)
        if self.failed_logins.exceeded(client):
            return self.message(429, "web_rate_limited_title", "web_rate_limited_text")
        header = request.headers.get("authorization")
        if header is not None and self.authorised(header):
            return None
        if header is not None:  # a first visit without credentials is not a failed login
            self.failed_logins.record(client)
        challenge = {"WWW-Authenticate": 'Basic realm="newsletter editors", charset="UTF-8"'}
        return self.message(401, "web_login_title", "web_login_text", headers=challenge)

    def authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, colon, password = decoded.partition(":")
        # Both comparisons always run, in constant time, so timing says nothing about which failed.
        user_ok = hmac.compare_digest(user.encode(), self.settings.admin_user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.settings.admin_password.encode())
        return bool(colon) and user_ok and password_ok

    def editor_form_ok(self, request: Request, form: FormData) -> bool:
        token = text_field(form, "form_token")
        return self.same_origin(request) and self.forms.valid(
            token, "editor", self.settings.admin_user
        )

    @staticmethod
    def edition_day(request: Request) -> date:
        text = request.path_params["day"]
        if not _ISO_DAY.fullmatch(text):
            raise HTTPException(404)
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise HTTPException(404) from None
        if not EARLIEST_EDITION_DAY <= day <= LATEST_EDITION_DAY:
            raise HTTPException(404)
        return day

    def editor_rows(self) -> list[dict[str, Any]]:
        rows = []
        for record in self.store.recent_editions(RECENT_EDITIONS):
            day = record.edition_date.isoformat()
            rows.append(
                {
                    "day": day,
                    "status": record.status.value,
                    "held": record.held,
                    "note": record.note,
                    "counts": sorted(self.store.delivery_counts(record.edition_date).items()),
                    "failures": self.store.delivery_failures(record.edition_date, FAILURES_SHOWN),
                    "preview_url": f"{self.base}/preview/{day}",
                    "hold_url": f"{self.base}/editor/{day}/hold",
                    "release_url": f"{self.base}/editor/{day}/release",
                }
            )
        return rows

    async def editor(self, request: Request) -> Response:
        if denied := self.editor_denied(request):
            return denied
        rows = await run_in_threadpool(self.editor_rows)
        next_day = self.settings.next_edition_date().isoformat()
        return self.page(
            "pages/editor.html",
            rows=rows,
            next_date=next_day,
            next_preview_url=f"{self.base}/preview/{next_day}",
            form_token=self.forms.issue("editor", self.settings.admin_user),
        )

    async def hold(self, request: Request) -> Response:
        return await self.set_held(request, True)

    async def release(self, request: Request) -> Response:
        return await self.set_held(request, False)

    async def set_held(self, request: Request, held: bool) -> Response:
        if denied := self.editor_denied(request):
            return denied
        day = self.edition_day(request)
        form = await self.read_form(request)
        if not self.editor_form_ok(request, form):
            return self.message(403, "web_bad_request_title", "web_form_expired_text")
        await run_in_threadpool(self.store.set_held, day, held)
        return RedirectResponse(f"{self.base}/editor", status_code=303)

    def preview_context(self, day: date) -> dict[str, Any]:
        """The edition of ``day`` rendered as subscribers get it, with placeholder links."""
        edition = frozen_edition(self.store, self.settings, day)
        record = self.store.edition_record(day)
        context: dict[str, Any] = {
            "variant": None,
            "warnings": list(edition.warnings),
            "held": bool(record and record.held),
        }
        if edition.is_empty:
            return context
        variant = VariantRenderer.for_settings(edition, self.settings).variant(edition.section_keys)
        links = links_for(self.settings, identity_for(self.settings).sender)
        recipient = recipient_for(links, PLACEHOLDER)
        context.update(
            variant=variant,
            html=fill_slots(variant.html, recipient),
            text=fill_slots(variant.text, recipient),
            warnings=[*edition.warnings, *variant.warnings],
        )
        return context

    async def preview(self, request: Request) -> Response:
        if denied := self.editor_denied(request):
            return denied
        day = self.edition_day(request)
        try:
            context = await run_in_threadpool(self.preview_context, day)
        except NewsletterError as err:  # every source failed, say: the editors need the reason
            return self.message(503, "editor_preview_failed", detail=str(err))
        return self.page(
            "pages/preview.html",
            day=day.isoformat(),
            long_day=format_long_date(day, self.settings.locale),
            editor_url=f"{self.base}/editor",
            test_url=f"{self.base}/editor/{day.isoformat()}/test",
            form_token=self.forms.issue("editor", self.settings.admin_user),
            **context,
        )

    async def test_send(self, request: Request) -> Response:
        if denied := self.editor_denied(request):
            return denied
        day = self.edition_day(request)
        form = await self.read_form(request)
        if not self.editor_form_ok(request, form):
            return self.message(403, "web_bad_request_title", "web_form_expired_text")
        back = (f"{self.base}/preview/{day.isoformat()}", "editor_back")
        try:
            address = normalise_address(text_field(form, "address")).normalized
            await run_in_threadpool(send_test, self.store, self.settings, day, [address])
        except InvalidAddress as err:
            return self.message(
                400, "web_invalid_address_title", "web_invalid_address_text", detail=err.reason
            )
        except NothingToSend:
            return self.message(409, "editor_test_failed", "editor_empty", link=back)
        except NewsletterError as err:  # the relay: editors need the reason to fix it
            return self.message(502, "editor_test_failed", detail=str(err), link=back)
        return self.message(
            200, "editor_test_send", "editor_test_sent", link=back, date=day, address=address
        )

    # -- errors ----------------------------------------------------------------------------------

    async def on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        keys = {
            404: ("web_not_found_title", "web_not_found_text"),
            405: ("web_method_title", "web_bad_request_text"),
            413: ("web_too_large_title", "web_bad_request_text"),
        }.get(exc.status_code)
        if keys is None and exc.status_code < 500:
            keys = ("web_bad_request_title", "web_bad_request_text")
        elif keys is None:
            keys = ("web_error_title", "web_error_text")
        return self.message(exc.status_code, *keys, headers=exc.headers)

    async def on_bad_token(self, request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, UnknownLink) else 400
        if request.url.path.startswith(CONFIRM_PATH):
            return self.message(
                status,
                "web_bad_link_title",
                "web_bad_link_text",
                "web_confirm_expired_text",
                link=(self.subscribe_url(), "web_signup_again"),
                days=self.settings.confirm_days,
            )
        return self.message(status, "web_bad_link_title", "web_bad_link_text")

    async def on_too_large(self, request: Request, exc: Exception) -> Response:
        return self.too_large()

    def too_large(self) -> Response:
        return self.message(413, "web_too_large_title", "web_bad_request_text")

    async def on_too_slow(self, request: Request, exc: Exception) -> Response:
        # Connection: close makes uvicorn drop the connection once this page is sent.
        return self.message(
            408, "web_bad_request_title", "web_request_timeout", headers={"Connection": "close"}
        )

    async def on_unsupported(self, request: Request, exc: Exception) -> Response:
        return self.message(415, "web_bad_request_title", "web_bad_request_text")

    async def on_service_error(self, request: Request, exc: Exception) -> Response:
        # The database is down or similar: say so without details (they may name servers).
        log.error("%s %s: %s", request.method, redact_path(request.url.path), exc)
        return self.message(503, "web_error_title", "web_error_text")

    async def on_busy(self, request: Request, exc: Exception) -> Response:
        # The store's bounded wait for the write lock ran out (DatabaseBusy), or the driver
        # itself said the database is locked or unreachable: nothing was changed, so "try again
        # shortly" is the honest answer, not a 500. Only the class is logged (details may name
        # servers).
        reason = (
            type(exc.orig).__name__ if isinstance(exc, OperationalError) else type(exc).__name__
        )
        log.warning(
            "%s %s: database busy (%s)", request.method, redact_path(request.url.path), reason
        )
        return self.message(
            503,
            "web_busy_title",
            "web_busy_text",
            headers={"Retry-After": str(BUSY_RETRY_AFTER)},
        )

    async def on_client_gone(self, request: Request, exc: Exception) -> Response:
        # The client hung up in the middle of its body: nobody will read an answer, and it is
        # not our failure (no error, no traceback in the log).
        log.info("%s %s: client disconnected", request.method, redact_path(request.url.path))
        return Response(status_code=400)

    async def on_crash(self, request: Request, exc: Exception) -> Response:
        log.error(
            "%s %s failed: %s", request.method, redact_path(request.url.path), type(exc).__name__
        )
        return self.message(500, "web_error_title", "web_error_text")

    # -- wiring ----------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        token = "{token:str}"
        return [
            Route("/", self.subscribe_form, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/subscribe", self.subscribe_form, methods=["GET"]),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route(f"{CONFIRM_PATH}{token}", self.confirm_form, methods=["GET"]),
            Route(f"{CONFIRM_PATH}{token}", self.confirm, methods=["POST"]),
            Route(f"{UNSUBSCRIBE_PATH}{token}", self.unsubscribe_form, methods=["GET"]),
            Route(f"{UNSUBSCRIBE_PATH}{token}", self.unsubscribe, methods=["POST"]),
            Route(f"{PREFERENCES_PATH}{token}", self.preferences_form, methods=["GET"]),
            Route(f"{PREFERENCES_PATH}{token}", self.preferences, methods=["POST"]),
            Route("/editor", self.editor, methods=["GET"]),
            Route("/editor/{day}/hold", self.hold, methods=["POST"]),
            Route("/editor/{day}/release", self.release, methods=["POST"]),
            Route("/editor/{day}/test", self.test_send, methods=["POST"]),
            Route("/preview/{day}", self.preview, methods=["GET"]),
        ]

    def exception_handlers(self) -> dict[Any, Callable[..., Any]]:
        return {
            HTTPException: self.on_http_error,
            InvalidToken: self.on_bad_token,
            BodyTooLarge: self.on_too_large,
            BodyTooSlow: self.on_too_slow,
            UnsupportedForm: self.on_unsupported,
            ClientDisconnect: self.on_client_gone,
            DatabaseBusy: self.on_busy,
            OperationalError: self.on_busy,
            NewsletterError: self.on_service_error,
            Exception: self.on_crash,
        }


def create_app(
    settings: Settings,
    store: Store | None = None,
    *,
    limits: WebLimits | None = None,
    smtp: SmtpConfig | None = None,
) -> Starlette:
    """The web app. Opens the store when not given one, and then closes it at shutdown."""
    settings.require_sending()  # secret for tokens, base URL for links, From for confirmations
    check_thank_you_url(settings)
    owned = store is None
    store = store if store is not None else open_store(settings.database_url, for_web=True)
    web = WebApp(settings, store, limits or WebLimits(), smtp)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                store.close()

    app = Starlette(
        routes=web.routes(),
        exception_handlers=web.exception_handlers(),
        middleware=[
            Middleware(SecurityHeaders, headers=web.security),
            Middleware(
                BodyLimit,
                max_bytes=web.limits.max_body_bytes,
                too_large=web.too_large,
                timeout=web.limits.body_timeout,
            ),
        ],
        lifespan=lifespan,
    )
    app.state.web = web
    return app
