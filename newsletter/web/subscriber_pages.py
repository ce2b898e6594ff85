"""The subscribers' pages: sign-up, confirmation, unsubscribe and preferences.

Every handler reads the request, calls the sign-up service (signup.py) in a worker thread and
renders a page; the signed link token in the path is the only authority a subscriber needs.
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from newsletter.adapters.i18n import N_
from newsletter.adapters.smtp import SmtpConfig, Smtputf8Gate
from newsletter.adapters.tokens import Purpose
from newsletter.domain import Subscriber, SubscriberStatus, category_key
from newsletter.domain.addresses import InvalidAddress
from newsletter.domain.errors import NewsletterError
from newsletter.domain.ratelimit import SlidingWindowLimiter
from newsletter.services.signup import (
    ConfirmationMail,
    Subscriptions,
    language_choices,
    mask_address,
    parse_signup,
    signup_promise,
)
from newsletter.services.subscribers import InvalidValue
from newsletter.web.pages import FORM_EXPIRED, Site, client_of, log, text_field, text_fields
from newsletter.web.security import origin_of


class SubscriberPages:
    """The handlers a subscriber (or a mail client, for one-click unsubscribe) reaches."""

    def __init__(self, site: Site, smtp: SmtpConfig | None = None) -> None:
        self.site = site
        self.settings = site.settings
        self.smtp = smtp
        self.subscriptions = Subscriptions(
            site.store,
            site.settings,
            per_address=SlidingWindowLimiter(site.limits.confirmations_per_address),
        )
        self.signups = SlidingWindowLimiter(site.limits.signups_per_client)
        # A non-ASCII local part is only taken if the relay offers SMTPUTF8 (README, Delivery).
        self.smtputf8 = Smtputf8Gate(smtp or SmtpConfig.from_settings(site.settings))

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
        return self.site.page(
            "pages/subscribe.html",
            status=status,
            promise=signup_promise(self.settings, self.settings.locale),
            action=self.site.url("subscribe"),
            sections=self.settings.section_order,
            chosen=chosen,
            error=error,
            form_email=email,
            form_name=name,
        )

    async def subscribe_form(self, request: Request) -> Response:
        return self.subscribe_page()

    async def subscribe(self, request: Request) -> Response:
        form = await self.site.read_form(request)
        client = client_of(request)
        if not self.signups.allow(client):
            return self.site.message(
                429, N_("Too many requests"), N_("Please try again in a few minutes.")
            )
        if text_field(form, "website"):  # the honeypot: only robots fill a field nobody sees
            return self.signed_up(request, form)
        email, name = text_field(form, "email"), text_field(form, "name")
        sections = text_fields(form, "section")
        try:
            signup = parse_signup(self.settings, email, name, sections, text_field(form, "locale"))
        except InvalidAddress as err:
            return self.invalid_signup(
                N_("This address cannot receive email. Check it and try again."),
                err.reason,
                email,
                name,
            )
        except InvalidValue as err:
            return self.invalid_signup(
                N_("A field of the form is not accepted. Check it and try again."),
                err.reason,
                email,
                name,
            )
        address = signup.address.normalized
        # The relay may be asked (one EHLO, at most once in ten minutes): not on the loop.
        if not address.isascii() and (reason := await run_in_threadpool(self.smtputf8, address)):
            log.warning("sign-up refused: %s", reason)  # the relay's name stays in the log
            return self.invalid_signup(
                N_("This address cannot receive email. Check it and try again."),
                "this site's mail server cannot send to an address with non-ASCII "
                "characters before the @ (SMTPUTF8)",
                email,
                name,
            )
        mail = await run_in_threadpool(self.subscriptions.sign_up, signup, client)
        response = self.signed_up(request, form)
        if mail is not None:
            # After the answer: whether and how the relay answers must not show in our timing.
            response.background = BackgroundTask(self.send_confirmation, mail)
        return response

    def invalid_signup(self, text_key: str, reason: str, email: str, name: str) -> Response:
        error = {
            "heading": self.site.t(None, N_("Invalid email address")),
            "text": self.site.t(None, text_key),
            "detail": reason,
        }
        return self.subscribe_page(status=400, error=error, email=email[:320], name=name[:256])

    def signed_up(self, request: Request, form: FormData) -> Response:
        """The one answer to every accepted sign-up: same page, or 303 to the thank-you URL."""
        if self.settings.thank_you_url and self.from_the_site(request, form):
            return RedirectResponse(self.settings.thank_you_url, status_code=303)
        return self.site.page("pages/check_mail.html", days=self.settings.confirm_days)

    def from_the_site(self, request: Request, form: FormData) -> bool:
        # The embed snippet posts from the site's own pages, or says so with a redirect field.
        if text_field(form, "redirect"):
            return True
        source = request.headers.get("origin") or request.headers.get("referer") or ""
        origin = origin_of(source)
        return bool(origin) and origin != origin_of(self.site.base)

    def send_confirmation(self, mail: ConfirmationMail) -> None:
        try:
            self.subscriptions.send(mail, self.smtp)
        except NewsletterError as err:
            log.warning("confirmation for subscriber %s not sent: %s", mail.subscriber_id, err)

    # -- confirmation ----------------------------------------------------------------------------

    def confirm_page(
        self, token: str, subscriber: Subscriber, *, status: int = 200, error: str = ""
    ) -> HTMLResponse:
        """The page a confirmation link opens: one button, which posts the confirmation."""
        return self.site.page(
            "pages/confirm.html",
            status=status,
            locale=subscriber.locale or None,
            address=mask_address(subscriber.email),
            action=self.site.url("confirm", token=token),
            form_token=self.site.forms.issue("confirm", str(subscriber.id)),
            error=error,
        )

    def confirmed_page(self, subscriber: Subscriber, *, already: bool) -> HTMLResponse:
        locale = subscriber.locale or None
        if already:
            heading = N_("Subscription already confirmed")
            text = N_("This address already receives %(title)s. There is nothing else to do.")
        else:
            heading = N_("Subscription confirmed")
            text = N_("Thank you! You will receive %(title)s from the next edition.")
        return self.site.page(
            "pages/confirmed.html",
            locale=locale,
            heading=self.site.t(locale, heading),
            text=self.site.t(locale, text, title=self.settings.title),
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
        form = await self.site.read_form(request, allow_empty=True)
        token = request.path_params["token"]
        subscriber, _nonce = await run_in_threadpool(self.subscriptions.confirmation_for, token)
        if not self.site.form_ok(request, form, "confirm", str(subscriber.id)):
            error = self.site.t(
                subscriber.locale or None,
                FORM_EXPIRED,
            )
            return self.confirm_page(token, subscriber, status=403, error=error)
        confirmed, activated = await run_in_threadpool(
            self.subscriptions.confirm, token, client_of(request)
        )
        return self.confirmed_page(confirmed, already=not activated)

    # -- a test message's links ------------------------------------------------------------------

    def test_link_page(self, purpose: Purpose) -> HTMLResponse:
        """What a link of an editors' test message opens (GET or POST): it was a test, and
        nothing changed. A 200, so that a mail client's one-click POST reports no error."""
        if purpose is Purpose.UNSUBSCRIBE:
            lines = (
                N_("This message was a test send: this link unsubscribes nobody."),
                N_(
                    "In the real edition, it leads each reader to a page that asks whether they "
                    "want to unsubscribe, and unsubscribes them with one click."
                ),
            )
        else:
            lines = (
                N_("This message was a test send: this link changes nobody’s preferences."),
                N_(
                    "In the real edition, it leads each reader to their own preferences: the "
                    "sections they receive and their language."
                ),
            )
        return self.site.message(200, N_("This was a test message"), *lines)

    # -- unsubscribe -----------------------------------------------------------------------------

    async def unsubscribe_form(self, request: Request) -> Response:
        """The question and its one button; GET changes nothing (link scanners fetch it)."""
        token = request.path_params["token"]
        if self.subscriptions.is_test_link(Purpose.UNSUBSCRIBE, token):
            return self.test_link_page(Purpose.UNSUBSCRIBE)
        subscriber = await run_in_threadpool(
            self.subscriptions.subscriber_for, Purpose.UNSUBSCRIBE, token
        )
        if subscriber.status is SubscriberStatus.UNSUBSCRIBED:
            return self.unsubscribed_page(subscriber, already=True)
        return self.site.page(
            "pages/unsubscribe.html",
            locale=subscriber.locale or None,
            address=mask_address(subscriber.email),
            action=self.site.url("unsubscribe", token=token),
        )

    async def unsubscribe(self, request: Request) -> Response:
        # RFC 8058: no cookie, no login, no form token; the signed link is the authority.
        await self.site.read_form(request, allow_empty=True)
        token = request.path_params["token"]
        if self.subscriptions.is_test_link(Purpose.UNSUBSCRIBE, token):
            return self.test_link_page(Purpose.UNSUBSCRIBE)
        subscriber = await run_in_threadpool(self.subscriptions.unsubscribe, token)
        return self.unsubscribed_page(subscriber, already=False)

    def unsubscribed_page(self, subscriber: Subscriber, *, already: bool) -> HTMLResponse:
        """After the button (or a one-click POST): it is done, and how to come back."""
        return self.site.page(
            "pages/unsubscribed.html",
            locale=subscriber.locale or None,
            already=already,
            address=mask_address(subscriber.email),
            subscribe_url=self.site.url("subscribe_form"),
        )

    # -- preferences -----------------------------------------------------------------------------

    @property
    def tracking_shown(self) -> bool:
        """Whether the page offers the "count my clicks" box: only when something is counted."""
        return self.settings.track_clicks or self.settings.track_opens

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
        return self.site.page(
            "pages/preferences.html",
            status=status,
            locale=subscriber.locale or None,
            address=mask_address(subscriber.email),
            action=self.site.url("preferences", token=token),
            unsubscribe_action=self.subscriptions.unsubscribe_url(subscriber),
            form_token=self.site.forms.issue("preferences", str(subscriber.id)),
            sections=offered,
            chosen=chosen,
            languages=language_choices(),
            current_locale=subscriber.locale,
            tracking=self.tracking_shown,
            tracks_opens=self.settings.track_opens,
            counted=subscriber.clicks_opted_out_at is None,
            retention_days=self.settings.click_retention_days,
            active=subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING),
            saved=saved,
            error=error,
        )

    async def preferences_form(self, request: Request) -> Response:
        token = request.path_params["token"]
        if self.subscriptions.is_test_link(Purpose.PREFERENCES, token):
            return self.test_link_page(Purpose.PREFERENCES)
        subscriber = await run_in_threadpool(
            self.subscriptions.subscriber_for, Purpose.PREFERENCES, token
        )
        return self.preferences_page(token, subscriber)

    async def preferences(self, request: Request) -> Response:
        form = await self.site.read_form(request)
        token = request.path_params["token"]
        if self.subscriptions.is_test_link(Purpose.PREFERENCES, token):
            return self.test_link_page(Purpose.PREFERENCES)
        subscriber = await run_in_threadpool(
            self.subscriptions.subscriber_for, Purpose.PREFERENCES, token
        )
        if not self.site.form_ok(request, form, "preferences", str(subscriber.id)):
            error = self.site.t(
                subscriber.locale or None,
                FORM_EXPIRED,
            )
            return self.preferences_page(token, subscriber, status=403, error=error)
        try:
            updated = await run_in_threadpool(
                self.subscriptions.save_preferences,
                subscriber,
                text_fields(form, "section"),
                text_field(form, "locale"),
                # An unticked box sends nothing: only a page that showed it can mean "off".
                ("count_clicks" in form) if self.tracking_shown else None,
            )
        except InvalidValue as err:
            return self.preferences_page(token, subscriber, status=400, error=err.reason)
        return self.preferences_page(token, updated, saved=True)
