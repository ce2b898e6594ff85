"""The editors' console: recent editions, the preview, hold / release and a test send.

Its login (HTTP Basic against NEWSLETTER_ADMIN_USER / NEWSLETTER_ADMIN_PASSWORD, with a limit on
failed attempts) is ``EditorLogin.required``, which app.py applies to every editors' route when it
builds the route table: no handler here checks the password itself, and a new editors' route
gets the login by being listed with the others.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from newsletter.adapters.i18n import (
    N_,
    Text,
    format_long_date,
    format_medium_date,
    format_percent,
    nN_,
)
from newsletter.domain import DeliveryStatus, EditionRecord, EditionStatus
from newsletter.domain.addresses import InvalidAddress, normalise_address
from newsletter.domain.curation import CurationRefused
from newsletter.domain.errors import NewsletterError
from newsletter.domain.ratelimit import SlidingWindowLimiter
from newsletter.domain.returned import (
    BOUNCE_RATE_WARNING,
    COMPLAINT_RATE_WARNING,
    ReturnedCounts,
)
from newsletter.services.curation import EditionFrozen
from newsletter.services.delivery import NothingToSend, send_test
from newsletter.services.editions import EditionFinished, frozen_edition, hold_edition
from newsletter.services.preview import render_preview
from newsletter.services.status import returned_counts
from newsletter.web.curation_form import (
    PostedCuration,
    draft_context,
    load_draft,
    planned_changes,
)
from newsletter.web.pages import Site, client_of, text_field
from newsletter.web.reading import reading_context

Endpoint = Callable[[Request], Awaitable[Response]]

RECENT_EDITIONS = 14
FAILURES_SHOWN = 5
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Edition days the editors' pages accept. Outside this range there is no edition to speak of,
# and the edition window (the day before, at the send time, in the zone) overflows datetime.
EARLIEST_EDITION_DAY = date(1970, 1, 1)
LATEST_EDITION_DAY = date(9998, 12, 31)


# Each state of an edition as the editors' page names it (the ledger's values are English).
EDITION_STATES: dict[EditionStatus, str] = {
    EditionStatus.OPEN: N_("not sent yet"),
    EditionStatus.SENDING: N_("sending"),
    EditionStatus.SENT: N_("sent"),
    EditionStatus.EMPTY: N_("not sent: no article in its window"),
    EditionStatus.SKIPPED_LATE: N_("not sent: found past its deadline"),
}
# States in which Hold is not offered: the edition is done, or its send is under way (a hold
# would not stop a running send). A held one still offers Release.
NOT_HOLDABLE = frozenset(
    {EditionStatus.SENT, EditionStatus.EMPTY, EditionStatus.SKIPPED_LATE, EditionStatus.SENDING}
)


def delivery_count(status: str, n: int) -> Text:
    """One delivery count of an edition, counted in the page's language: "3 envoyés"."""
    match status:
        case DeliveryStatus.SENT:
            return nN_("%(num)d sent", "%(num)d sent", n)
        case DeliveryStatus.FAILED:
            return nN_("%(num)d failed", "%(num)d failed", n)
        case DeliveryStatus.PENDING:
            return nN_("%(num)d not sent yet", "%(num)d not sent yet", n)
        case DeliveryStatus.SENDING:
            return nN_("%(num)d being sent", "%(num)d being sent", n)
        case DeliveryStatus.SKIPPED:
            return nN_("%(num)d skipped", "%(num)d skipped", n)
        case _:  # uncertain: the relay took it but never said so; the next run sends it again
            return nN_("%(num)d unconfirmed", "%(num)d unconfirmed", n)


_COUNT_ORDER = [s.value for s in DeliveryStatus]

# What came back for an edition, and the warnings past the providers' thresholds.
BOUNCE_WARNING = N_(
    "Bounce rate over %(limit)s: mailbox providers slow down such senders; clean the list "
    "before the next edition."
)
COMPLAINT_WARNING = N_(
    "Complaint rate over %(limit)s: mailbox providers may file the newsletter as spam; check "
    "how the addresses were collected."
)


def returned_texts(counts: ReturnedCounts) -> list[tuple[Text, float]]:
    """An edition's hard bounces, soft bounces and complaints, each with its rate."""
    return [
        (
            nN_("%(num)d hard bounce (%(rate)s)", "%(num)d hard bounces (%(rate)s)", counts.hard),
            counts.bounce_rate,
        ),
        (
            nN_("%(num)d soft bounce (%(rate)s)", "%(num)d soft bounces (%(rate)s)", counts.soft),
            counts.soft_rate,
        ),
        (
            nN_("%(num)d complaint (%(rate)s)", "%(num)d complaints (%(rate)s)", counts.complaints),
            counts.complaint_rate,
        ),
    ]


class EditorLogin:
    """The editors' HTTP Basic login, applied at routing to every editors' handler."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.failed_logins = SlidingWindowLimiter(site.limits.failed_logins_per_client)

    def required(self, handler: Endpoint) -> Endpoint:
        """``handler`` behind the login: it runs only for a request with the editors' login."""

        @functools.wraps(handler)
        async def with_login(request: Request) -> Response:
            if denied := self.denied(request):
                return denied
            return await handler(request)

        return with_login

    def denied(self, request: Request) -> Response | None:
        """None when the request carries the editors' login; else the 404/401/429 answer."""
        if not self.site.settings.admin_password:
            raise HTTPException(404)  # editors' pages are off: nothing here, not even a login
        client = client_of(request)
        if self.failed_logins.exceeded(client):
            return self.site.message(
                429, N_("Too many requests"), N_("Please try again in a few minutes.")
            )
        header = request.headers.get("authorization")
        if header is not None and self.authorised(header):
            return None
        if header is not None:  # a first visit without credentials is not a failed login
            self.failed_logins.record(client)
        challenge = {"WWW-Authenticate": 'Basic realm="newsletter editors", charset="UTF-8"'}
        return self.site.message(
            401, N_("Login required"), N_("This page is for the editors."), headers=challenge
        )

    def authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, colon, password = decoded.partition(":")
        settings = self.site.settings
        # Both comparisons always run, in constant time, so timing says nothing about which failed.
        user_ok = hmac.compare_digest(user.encode(), settings.admin_user.encode())
        password_ok = hmac.compare_digest(password.encode(), settings.admin_password.encode())
        return bool(colon) and user_ok and password_ok


def edition_day(request: Request) -> date:
    """The {day} of the path as a date; 404 for anything but a plausible YYYY-MM-DD."""
    return day_or_404(request.path_params["day"])


def day_or_404(text: str) -> date:
    """``text`` as a date; HTTPException(404) for anything but a plausible YYYY-MM-DD."""
    if not _ISO_DAY.fullmatch(text):
        raise HTTPException(404)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise HTTPException(404) from None
    if not EARLIEST_EDITION_DAY <= day <= LATEST_EDITION_DAY:
        raise HTTPException(404)
    return day


class EditorConsole:
    """The editors' handlers; each assumes the login already passed (EditorLogin.required)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.settings = site.settings
        self.store = site.store
        self.login = EditorLogin(site)

    def form_ok(self, request: Request, form: FormData) -> bool:
        """A same-site post carrying a form token from one of our editors' pages."""
        return self.site.form_ok(request, form, "editor", self.settings.admin_user)

    def form_token(self) -> str:
        return self.site.forms.issue("editor", self.settings.admin_user)

    # -- the list of editions --------------------------------------------------------------------

    def state_name(self, record: EditionRecord | None) -> str:
        status = record.status if record is not None else EditionStatus.OPEN
        return self.site.t(None, EDITION_STATES[status])

    def rows(self) -> list[dict[str, Any]]:
        url, t, locale = self.site.url, self.site.t, self.settings.locale
        rows = []
        summaries = self.store.editions_summary(RECENT_EDITIONS, FAILURES_SHOWN)
        returned = returned_counts(self.store, [s.record.edition_date for s in summaries])
        for summary in summaries:
            record = summary.record
            came_back = returned[record.edition_date]
            day = record.edition_date.isoformat()
            # The ledger's note is an operator's English line (`newsletter status` shows it);
            # the localised state says the same here.
            counts = sorted(
                summary.counts.items(),
                key=lambda item: _COUNT_ORDER.index(item[0]) if item[0] in _COUNT_ORDER else 99,
            )
            rows.append(
                {
                    "day": day,
                    "day_text": format_medium_date(record.edition_date, locale),
                    "state": self.state_name(record),
                    "held": record.held,
                    "counts": [t(None, delivery_count(status, n)) for status, n in counts],
                    "failures": summary.failures,
                    "returned": [
                        t(None, text, rate=format_percent(rate, locale))
                        for text, rate in returned_texts(came_back)
                    ]
                    if came_back.delivered
                    else [],
                    "warnings": self.warnings(came_back),
                    "preview_url": url("preview", day=day),
                    # Release whenever it is held; Hold only while holding can still matter.
                    "hold_url": ""
                    if record.status in NOT_HOLDABLE
                    else url("editor_hold", day=day),
                    "release_url": url("editor_release", day=day),
                }
            )
        return rows

    def warnings(self, counts: ReturnedCounts) -> list[str]:
        t, locale = self.site.t, self.settings.locale
        found = []
        if counts.bounce_warning:
            found.append(t(None, BOUNCE_WARNING, limit=format_percent(BOUNCE_RATE_WARNING, locale)))
        if counts.complaint_warning:
            limit = format_percent(COMPLAINT_RATE_WARNING, locale)
            found.append(t(None, COMPLAINT_WARNING, limit=limit))
        return found

    async def status(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.rows)
        reading = await run_in_threadpool(reading_context, self.store, self.settings)
        next_day = self.settings.next_edition_date()
        return self.site.page(
            "pages/editor.html",
            rows=rows,
            reading=reading,
            next_date=format_long_date(next_day, self.settings.locale),
            next_preview_url=self.site.url("preview", day=next_day.isoformat()),
            form_token=self.form_token(),
        )

    # -- hold / release --------------------------------------------------------------------------

    async def hold(self, request: Request) -> Response:
        return await self.set_held(request, True)

    async def release(self, request: Request) -> Response:
        return await self.set_held(request, False)

    async def set_held(self, request: Request, held: bool) -> Response:
        day = edition_day(request)
        form = await self.site.read_form(request)
        if not self.form_ok(request, form):
            return self.site.form_expired()
        if not held:
            await run_in_threadpool(self.store.set_held, day, False)
            return RedirectResponse(self.site.url("editor"), status_code=303)
        try:
            await run_in_threadpool(hold_edition, self.store, day)
        except EditionFinished as err:
            return self.site.message(
                409,
                N_("This edition cannot be held"),
                N_("The edition of %(date)s is already finished (%(state)s): nothing was changed."),
                link=self.back_to_editions(),
                date=format_long_date(day, self.settings.locale),
                state=self.site.t(None, EDITION_STATES[err.status]),
            )
        return RedirectResponse(self.site.url("editor"), status_code=303)

    def back_to_editions(self) -> tuple[str, str]:
        return self.site.url("editor"), N_("Back to the editions")

    # -- preview and test send -------------------------------------------------------------------

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
        preview = render_preview(self.settings, edition)
        context.update(
            variant=preview.variant,
            html=preview.html,
            text=preview.text,
            warnings=list(preview.warnings),
        )
        return context

    def desk_context(self, day: date) -> dict[str, Any]:
        """The preview of ``day`` and, beside it, its curation form (the same edition twice)."""
        draft = load_draft(self.store, self.settings, day)
        return {**self.preview_context(day), **draft_context(self.settings, draft)}

    async def preview(self, request: Request) -> Response:
        day = edition_day(request)
        try:
            context = await run_in_threadpool(self.desk_context, day)
        except NewsletterError as err:  # every source failed, say: the editors need the reason
            return self.site.message(
                503,
                N_("This edition cannot be prepared"),
                detail=str(err),
                link=self.back_to_editions(),
            )
        record = await run_in_threadpool(self.store.edition_record, day)
        return self.site.page(
            "pages/preview.html",
            day=day.isoformat(),
            long_day=format_long_date(day, self.settings.locale),
            state=self.state_name(record),
            editor_url=self.site.url("editor"),
            test_url=self.site.url("editor_test", day=day.isoformat()),
            curate_url=self.site.url("editor_curate", day=day.isoformat()),
            form_token=self.form_token(),
            saved=self.saved_notice(request.query_params.get("saved", "")),
            **context,
        )

    def saved_notice(self, saved: str) -> str:
        """After a save (?saved=N): how many changes it made; "" on any other visit."""
        if not (saved.isdigit() and len(saved) < 4):
            return ""
        count = int(saved)
        return self.site.t(None, nN_("%(num)d change saved.", "%(num)d changes saved.", count))

    # -- curation: what the editors change in the edition ----------------------------------------

    async def curate(self, request: Request) -> Response:
        """The curation form posted: the service calls for what changed, then back to the page."""
        day = edition_day(request)
        form = await self.site.read_form(request)
        if not self.form_ok(request, form):
            return self.site.form_expired()
        who = "web:" + self.settings.admin_user
        to_preview = (self.site.url("preview", day=day.isoformat()), N_("Back to the preview"))
        try:
            done = await run_in_threadpool(self.apply_curation, day, PostedCuration.of(form), who)
        except EditionFrozen as err:
            return self.frozen_page(day, str(err))
        except CurationRefused as err:
            return self.site.message(
                400,
                N_("This change was refused"),
                N_("Nothing was changed. Correct the form and save again."),
                detail=str(err),
                link=to_preview,
            )
        except NewsletterError as err:  # every source failed: the edition cannot be built
            return self.site.message(
                503, N_("This edition cannot be prepared"), detail=str(err), link=to_preview
            )
        if done is None:
            return self.frozen_page(day, "")
        preview = self.site.url("preview", day=day.isoformat())
        return RedirectResponse(f"{preview}?saved={len(done)}", status_code=303)

    def apply_curation(self, day: date, posted: PostedCuration, who: str) -> list[str] | None:
        """The changes made, each as the service's line; None when the edition is frozen.

        Every check runs before the first change (planned_changes), so a refused post changes
        nothing; the service refuses on its own a change that arrives once the send started.
        """
        draft = load_draft(self.store, self.settings, day)
        if draft.frozen:
            return None
        changes = planned_changes(self.store, self.settings, draft, posted, who)
        return [change() for change in changes]

    def frozen_page(self, day: date, detail: str) -> Response:
        return self.site.message(
            409,
            N_("This edition is already going out"),
            N_("The send of the edition of %(date)s has started: nothing was changed."),
            detail=detail,
            link=(self.site.url("preview", day=day.isoformat()), N_("Back to the preview")),
            date=format_long_date(day, self.settings.locale),
        )

    async def test_send(self, request: Request) -> Response:
        day = edition_day(request)
        form = await self.site.read_form(request)
        if not self.form_ok(request, form):
            return self.site.form_expired()
        # After a test send the editors go back to the list; to retry an address, to the preview.
        back = self.back_to_editions()
        to_preview = (self.site.url("preview", day=day.isoformat()), N_("Back to the preview"))
        try:
            address = normalise_address(text_field(form, "address")).normalized
            await run_in_threadpool(send_test, self.store, self.settings, day, [address])
        except InvalidAddress as err:
            return self.site.message(
                400,
                N_("Invalid email address"),
                N_("This address cannot receive email. Check it and try again."),
                detail=err.reason,
                link=to_preview,
            )
        except NothingToSend:
            return self.site.message(
                409,
                N_("The test send failed"),
                N_("No article in this edition’s window: nothing will be sent."),
                link=back,
            )
        except NewsletterError as err:  # the relay: editors need the reason to fix it
            return self.site.message(502, N_("The test send failed"), detail=str(err), link=back)
        return self.site.message(
            200,
            N_("Test send"),
            N_("Edition of %(date)s sent as a test to %(address)s."),
            link=back,
            date=format_long_date(day, self.settings.locale),
            address=address,
        )
