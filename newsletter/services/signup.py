"""Service behind the subscriber pages: sign up, confirm, unsubscribe and preferences by token.

No Starlette here, so that the CLI (mailto: unsubscribes, see inbound.py) uses the same rules:

* A sign-up stores a pending subscriber (``Store.create_pending``) and builds one confirmation
  email; the caller sends it (the web app does so after answering, so the answer takes the same
  time whatever the address). An address that is active, unsubscribed or bounced keeps its status:
  only its owner, by confirming through the link of that sign-up, changes it. A link is bound to
  its sign-up's nonce: once the address unsubscribes, bounces or complains, links mailed before
  are dead, and only a new sign-up's link can bring it back.
* At most ``CONFIRMATIONS_PER_HOUR`` confirmation emails per address per hour (no mail bombing);
  over that the sign-up is stored but no mail goes out, and the caller cannot tell the difference.
* Every token is checked for its purpose, its signature and its address binding: a token for a
  forgotten subscriber (or for an id reused since) is refused like a forged one.
"""

from __future__ import annotations

import contextlib
import email.policy
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import time
from email.message import EmailMessage
from email.utils import make_msgid

from babel import Locale

from newsletter.adapters.dkim import DkimSigner
from newsletter.adapters.i18n import N_, gettext, is_rtl_locale, language_tag
from newsletter.adapters.links import Links
from newsletter.adapters.message import Sender, date_value, dot_stuff
from newsletter.adapters.render import make_environment
from newsletter.adapters.smtp import SmtpConfig, SmtpConnection
from newsletter.adapters.store import WEB_BUSY_TIMEOUT_MS, DatabaseBusy, Store
from newsletter.adapters.tokens import InvalidToken, Purpose, confirm_binding
from newsletter.config import Settings
from newsletter.domain import ConsentSource, Subscriber, SubscriberStatus, category_key
from newsletter.domain.addresses import Address, normalise_address
from newsletter.domain.locales import offered_language
from newsletter.domain.ratelimit import Rule, SlidingWindowLimiter
from newsletter.services.subscribers import InvalidValue, parse_name

CONFIRMATIONS_PER_HOUR = Rule(limit=3, window=3600.0)
# itsdangerous tokens of [id, digest] are about 40 characters; anything far longer is not ours,
# and refusing it early keeps a flood of huge paths from costing HMAC work.
MAX_TOKEN_CHARS = 256
#: languages the pages offer (each has a catalogue in newsletter/locale; see README)
PAGE_LOCALES: tuple[str, ...] = ("fr", "en", "ar")
# Links mailed before confirm nonces existed carry none: good for a pending address only (the
# store then activates it) or an active one ("already confirmed"), never a stopped one.
_LEGACY_CONFIRMABLE = frozenset({SubscriberStatus.PENDING, SubscriberStatus.ACTIVE})


class UnknownLink(InvalidToken):
    """A well-signed token whose subscriber is gone (forgotten) or whose address changed."""


@dataclass(frozen=True, slots=True)
class SignupForm:
    """A validated sign-up: what the form said, reduced to what we accept."""

    address: Address
    name: str
    categories: tuple[str, ...]
    locale: str  # "" = the newsletter's language


@dataclass(frozen=True, slots=True)
class ConfirmationMail:
    subscriber_id: int
    recipient: str
    data: bytes  # the whole message, CRLF line ends


@dataclass(frozen=True, slots=True)
class LanguageChoice:
    code: str  # "" = the newsletter's language
    label: str


def known_sections(chosen: Iterable[str], offered: Iterable[str]) -> tuple[str, ...]:
    """The offered section names that were chosen (compared by category_key), in offered order.

    Anything else a posted form carries is dropped: a forged form cannot store arbitrary text.
    """
    wanted = {category_key(c) for c in chosen if c.strip()}
    seen: set[str] = set()
    kept: list[str] = []
    for name in offered:
        key = category_key(name)
        if key in wanted and key not in seen:
            seen.add(key)
            kept.append(name)
    return tuple(kept)


def page_locale(text: str) -> str:
    """``text`` if it is one of PAGE_LOCALES, else "" (the newsletter's language)."""
    return offered_language(text, PAGE_LOCALES)


def parse_signup(
    settings: Settings, email: str, name: str, sections: Iterable[str], locale: str = ""
) -> SignupForm:
    """Validate a sign-up form; InvalidAddress or InvalidValue say what is wrong."""
    return SignupForm(
        address=normalise_address(email),
        name=parse_name(name),
        categories=known_sections(sections, settings.section_order),
        locale=page_locale(locale),
    )


# The sign-up page's promise for each part of the day the edition goes out in, by the send
# time's hour: (from hour, msgid). The first part whose hour is not after the send time's.
_PROMISES: tuple[tuple[int, str], ...] = (
    (0, N_("Every night around %(time)s, the day’s essential news in one email.")),
    (5, N_("Every morning around %(time)s, the day’s essential news in one email.")),
    (12, N_("Every day at lunchtime, around %(time)s, the day’s essential news in one email.")),
    (14, N_("Every afternoon around %(time)s, the day’s essential news in one email.")),
    (18, N_("Every evening around %(time)s, the day’s essential news in one email.")),
    (23, N_("Every night around %(time)s, the day’s essential news in one email.")),
)


def signup_promise(settings: Settings, locale: str) -> str:
    """What the sign-up page promises: NEWSLETTER_SIGNUP_PROMISE as written, else a sentence
    worded from NEWSLETTER_SEND_TIME in ``locale`` ("Chaque soir vers 18 h, …")."""
    if settings.signup_promise:
        return settings.signup_promise
    return gettext(locale, promise_for(settings.send_time)) % {
        "time": time_of_day(settings.send_time, locale)
    }


def promise_for(send_time: time) -> str:
    """The promise's msgid for an edition sent at ``send_time`` (its part of the day)."""
    return [text for hour, text in _PROMISES if hour <= send_time.hour][-1]


def time_of_day(moment: time, locale: str) -> str:
    """A time as people of ``locale`` write it in a sentence: "18 h", "18 h 30", "18:30"."""
    if moment.minute == 0:
        # TRANSLATORS: a time of day on the hour, in a sentence (fr: "%(hour)d h").
        text = gettext(locale, N_("%(hour)d:00"))
    else:
        # TRANSLATORS: a time of day, in a sentence (fr: "%(hour)d h %(minute)02d").
        text = gettext(locale, N_("%(hour)d:%(minute)02d"))
    return text % {"hour": moment.hour, "minute": moment.minute}


def mask_address(address: str) -> str:
    """Show "k…@example.com": enough for its owner to recognise, not enough to harvest."""
    local, at, domain = address.rpartition("@")
    return f"{local[:1]}…{at}{domain}" if at else "…"


def language_choices() -> tuple[LanguageChoice, ...]:
    """The languages a subscriber may pick, each named in its own language."""
    named = tuple(
        LanguageChoice(code, Locale.parse(code).get_display_name(code) or code)
        for code in PAGE_LOCALES
    )
    return (LanguageChoice("", ""), *named)


def page_direction(locale: str) -> tuple[str, str]:
    """(lang, dir) attributes for a page in ``locale``."""
    return language_tag(locale), "rtl" if is_rtl_locale(locale) else "ltr"


class WriterQueue:
    """This process's SQLite writers, one at a time, each waiting a bounded time for its turn.

    When another process holds the write lock (a long import), the requests queued here would
    otherwise wait one after the other, the Nth about N busy timeouts; a request that cannot
    start within one busy timeout gets DatabaseBusy (the web app's 503) instead.
    """

    def __init__(self, patience: float = WEB_BUSY_TIMEOUT_MS / 1000) -> None:
        self._lock = threading.Lock()
        self._patience = patience

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self._patience):
            raise DatabaseBusy(
                "the database is busy: other requests are waiting for its write lock",
                "try again in a few seconds",
            )

    def __exit__(self, *_exc: object) -> None:
        self._lock.release()


class Subscriptions:
    """Sign-up, confirmation, unsubscribe and preferences for one newsletter."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        per_address: SlidingWindowLimiter | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.sender = Sender.parse(settings.from_address)
        self.links = Links.from_settings(settings, self.sender.domain)
        self.signer = self.links.signer
        self.dkim = DkimSigner.from_settings(settings, self.sender.domain)
        self.per_address = per_address or SlidingWindowLimiter(CONFIRMATIONS_PER_HOUR)
        self._templates = make_environment()
        # SQLite has one writer at a time, and a writer that finds the database busy waits in
        # SQLite's busy handler, which sleeps in growing steps (measured: 50 one-click POSTs/s
        # with 50 in flight). Queueing this process's writers on a lock instead keeps them
        # back to back. PostgreSQL needs no such thing.
        self._writing: contextlib.AbstractContextManager[object] = (
            WriterQueue() if store.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    # -- sign-up ---------------------------------------------------------------------------------

    def sign_up(self, form: SignupForm, client: str) -> ConfirmationMail | None:
        """Store the sign-up; the confirmation to send, or None when this address had its share."""
        with self._writing:
            subscriber = self.store.create_pending(
                form.address,
                form.name,
                form.categories,
                form.locale,
                ConsentSource.WEB,
                detail=client[:512],
            )
        if not self.per_address.allow(form.address.key):
            return None
        return self.confirmation_mail(subscriber)

    def confirmation_mail(self, subscriber: Subscriber) -> ConfirmationMail:
        """The double opt-in email: one link, valid ``confirm_days`` days, in the reader's language."""
        locale = subscriber.locale or self.settings.locale
        lang, direction = page_direction(locale)
        nonce = self.store.confirm_nonce(subscriber.id)
        context = {
            "locale": locale,
            "lang": lang,
            "dir": direction,
            "title": self.settings.title,
            "confirm_url": self.links.confirm_url(subscriber.id, subscriber.email_key, nonce),
            "days": self.settings.confirm_days,
        }
        # A non-ASCII local part goes out with SMTPUTF8 (the relay offers it, or the sign-up was
        # refused): the To header then carries it in UTF-8 as is (RFC 6532), not encoded words.
        utf8 = not subscriber.email.isascii()
        message = EmailMessage(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)
        message["From"] = self.sender.header
        message["To"] = subscriber.email
        message["Subject"] = gettext(locale, "Confirm your subscription to %(title)s") % {
            "title": self.settings.title
        }
        message["Date"] = date_value()
        message["Message-ID"] = make_msgid("confirm", domain=self.sender.domain)
        message["Auto-Submitted"] = "auto-generated"
        if self.settings.reply_to:
            message["Reply-To"] = self.settings.reply_to
        text = self._templates.get_template("email/confirm.txt").render(context)
        html = self._templates.get_template("email/confirm.html").render(context)
        message.set_content(text, cte="quoted-printable")
        message.add_alternative(html, subtype="html", cte="quoted-printable")
        data = message.as_bytes()
        return ConfirmationMail(
            subscriber.id, subscriber.email, self.dkim.sign(data) if self.dkim else data
        )

    def send(self, mail: ConfirmationMail, smtp: SmtpConfig | None = None) -> None:
        """Hand one confirmation to the relay; raises the smtp module's errors."""
        connection = SmtpConnection(smtp or SmtpConfig.from_settings(self.settings))
        try:
            # On the wire a line that starts with "." gets a second one, which the relay takes
            # off again: the quoted-printable body can have such a line (a wrapped link), and the
            # relay would otherwise drop its dot, and break the DKIM signature with it.
            connection.send(self.sender.address, mail.recipient, dot_stuff(mail.data))
        finally:
            connection.close()

    # -- tokens ----------------------------------------------------------------------------------

    def subscriber_for(self, purpose: Purpose, token: str) -> Subscriber:
        """The subscriber a token of ``purpose`` names; InvalidToken / UnknownLink otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("this link is not valid", "it is longer than any link we send")
        claim = self.signer.read(purpose, token)
        subscriber = self.store.get(claim.subscriber_id)
        if subscriber is None or not self.signer.matches(claim, subscriber.email_key):
            raise UnknownLink("this link is no longer valid", "the address is not on the list")
        return subscriber

    def is_test_link(self, purpose: Purpose, token: str) -> bool:
        """Whether ``token`` comes from an editors' test message (it names no subscriber)."""
        return len(token) <= MAX_TOKEN_CHARS and self.signer.is_test(purpose, token)

    def confirmation_for(self, token: str) -> tuple[Subscriber, str | None]:
        """The subscriber a confirmation link names and the nonce it is bound to.

        UnknownLink when the link belongs to no current sign-up: forged for another address, or
        mailed before the address stopped or signed up again. An active subscriber's good link
        passes (its page says "already confirmed").
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("this link is not valid", "it is longer than any link we send")
        claim = self.signer.read(Purpose.CONFIRM, token)
        subscriber = self.store.get(claim.subscriber_id)
        if subscriber is not None:
            nonce = self.store.confirm_nonce(subscriber.id)
            binding = confirm_binding(subscriber.email_key, nonce)
            legacy_ok = nonce is not None or subscriber.status in _LEGACY_CONFIRMABLE
            if legacy_ok and self.signer.matches(claim, binding):
                return subscriber, nonce
        raise UnknownLink("this link is no longer valid", "sign up again for a new one")

    def confirm(self, token: str, detail: str) -> tuple[Subscriber, bool]:
        """Double opt-in: the owner confirmed; (subscriber, whether it was activated just now).

        Activated with consent recorded, unless already active (then nothing changes).
        """
        subscriber, nonce = self.confirmation_for(token)
        with self._writing:
            result = self.store.confirm_signup(
                subscriber.id, nonce, ConsentSource.WEB, detail[:512]
            )
        if result is None:  # forgotten or stopped between the two queries
            raise UnknownLink("this link is no longer valid", "sign up again for a new one")
        return result

    def unsubscribe(self, token: str) -> Subscriber:
        """Stop sending to the token's subscriber at once; idempotent.

        Returns the subscriber as found before (the pages only need its address and language).
        """
        subscriber = self.subscriber_for(Purpose.UNSUBSCRIBE, token)
        with self._writing:
            self.store.unsubscribe(subscriber.id)
        return subscriber

    def unsubscribe_url(self, subscriber: Subscriber) -> str:
        return self.links.unsubscribe_url(subscriber.id, subscriber.email_key)

    # -- preferences -----------------------------------------------------------------------------

    def offered_sections(self, subscriber: Subscriber | None = None) -> tuple[str, ...]:
        """The settings' sections, plus any the subscriber already has (an import may add some)."""
        offered = list(self.settings.section_order)
        keys = {category_key(s) for s in offered}
        for name in subscriber.categories if subscriber else ():
            if category_key(name) not in keys:
                keys.add(category_key(name))
                offered.append(name)
        return tuple(offered)

    def save_preferences(
        self,
        subscriber: Subscriber,
        sections: Iterable[str],
        locale: str,
        count_clicks: bool | None = None,
    ) -> Subscriber:
        """Store the chosen sections (none = every section) and language, at once.

        ``count_clicks``: the page's "count my clicks" box (None: the page did not show it,
        tracking being off, and the reader's choice stays as it was)."""
        chosen_locale = page_locale(locale)
        if locale.strip() and not chosen_locale:
            raise InvalidValue(f"unknown language {locale.strip()!r}")
        categories = known_sections(sections, self.offered_sections(subscriber))
        with self._writing:
            found = self.store.set_preferences(subscriber.id, categories, chosen_locale)
            if found and count_clicks is not None:
                if count_clicks:
                    self.store.opt_in_to_clicks(subscriber.id)
                else:
                    self.store.opt_out_of_clicks(subscriber.id)
        if not found:
            raise UnknownLink("this link is no longer valid", "the address is not on the list")
        return self.store.get(subscriber.id) or subscriber
