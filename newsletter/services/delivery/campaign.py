"""Delivery, campaign stage: freeze an edition and its recipients, then run the sender.

``send_edition`` freezes the edition (its articles and its recipients) in the ledger and runs an
``EditionSender`` over it; re-running continues where a run stopped. ``send_test`` sends the full
edition to a few editors' addresses without touching the ledger.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from datetime import date

from newsletter.adapters.dkim import DkimSigner
from newsletter.adapters.links import Links
from newsletter.adapters.message import (
    BounceMailbox,
    ListIdentity,
    MessageTemplate,
    Recipient,
    Sender,
)
from newsletter.adapters.smtp import (
    RelayMisconfigured,
    RelayUnreachable,
    SmtpConfig,
    SmtpConnection,
)
from newsletter.adapters.store import CurationChanged, Store
from newsletter.adapters.tokens import VerpSigner
from newsletter.config import Settings
from newsletter.domain import DeliveryStatus, Edition, EditionStatus, Reader, SendReport
from newsletter.domain.addresses import normalise_address
from newsletter.domain.errors import NewsletterError
from newsletter.services.compose import VariantRenderer
from newsletter.services.delivery.pool import OpeningAhead
from newsletter.services.delivery.processes import SenderGroup, can_fork, shares
from newsletter.services.delivery.sender import EditionSender
from newsletter.services.editions import curated_edition, frozen_edition

# Editors changing the edition at the very moment its send starts: compose again, a few times.
FREEZE_ATTEMPTS = 3


class NothingToSend(NewsletterError):
    """The edition has no article in its window: there is nothing to send."""

    exit_code = 0


class NoActiveSubscriber(NewsletterError):
    """Nobody is on the list yet: freezing now would close the edition with no recipient.

    Nothing is recorded, so the same edition goes out to everyone once the list is imported.
    """


def send_edition(
    store: Store,
    settings: Settings,
    day: date,
    *,
    smtp: SmtpConfig | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    on_frozen: Callable[[int], None] | None = None,
) -> SendReport:
    """Deliver edition ``day`` to every frozen recipient; re-running continues where it stopped."""
    settings.require_sending()
    BounceMailbox.from_settings(settings, Sender.parse(settings.from_address))
    smtp = smtp or SmtpConfig.from_settings(settings)
    # Decided before any thread starts: a fork is only safe from a single-threaded process.
    processes = settings.send_processes if settings.send_processes > 1 and can_fork() else 1
    # This process's connections open while the edition is composed and frozen.
    ahead = OpeningAhead(smtp, shares(settings.smtp_connections, processes)[0], stop)
    try:
        edition = _freeze(store, settings, day)
    except BaseException:
        ahead.cancel()
        raise
    store.clear_backoff(day)  # rows deferred by an earlier run are retried now
    if on_frozen:
        # Every row still to send: pending ones, and those a killed sender left claimed.
        counts = store.delivery_counts(day)
        on_frozen(sum(counts.get(s, 0) for s in (DeliveryStatus.PENDING, DeliveryStatus.SENDING)))
    try:
        sender = _sender(store, settings, edition, processes, smtp, stop, progress, ahead)
    except BaseException:
        ahead.cancel()
        raise
    error: str | None = None
    try:
        sent = sender.run()
    except (RelayUnreachable, RelayMisconfigured) as err:
        sent, error = sender.sent, str(err)
        if isinstance(err, RelayMisconfigured):
            raise  # a setting to fix (exit 2), not a relay to wait for
    report = SendReport(
        day, store.delivery_counts(day), store.delivery_failures(day), sent, error, edition.warnings
    )
    if report.complete:
        store.mark_edition_sent(day)
    return report


def _sender(
    store: Store,
    settings: Settings,
    edition: Edition,
    processes: int,
    smtp: SmtpConfig,
    stop: threading.Event | None,
    progress: Callable[[int], None] | None,
    ahead: OpeningAhead,
) -> EditionSender | SenderGroup:
    if processes > 1:
        return SenderGroup(
            store,
            settings,
            edition,
            processes=processes,
            smtp=smtp,
            stop=stop,
            progress=progress,
            ahead=ahead,
        )
    # One process: the setting's default, and the daemon's way (its scheduler's threads make a
    # fork unsafe).
    return EditionSender(
        store, settings, edition, smtp=smtp, stop=stop, progress=progress, ahead=ahead
    )


def _freeze(store: Store, settings: Settings, day: date) -> Edition:
    """Compose edition ``day`` with its curation and freeze it (articles and recipients)."""
    for attempt in range(1, FREEZE_ATTEMPTS + 1):
        edition, revision = curated_edition(store, settings, day)
        if edition.is_empty:
            store.record_edition_status(day, EditionStatus.EMPTY, "no article in its window")
            raise NothingToSend(
                f"edition {day.isoformat()} has no article in its window: nothing to send"
            )
        if store.frozen_articles(day) is None and not store.has_active_subscriber():
            raise NoActiveSubscriber(
                f"edition {day.isoformat()}: no active subscriber, nothing sent and nothing "
                "recorded (import the list with `newsletter subscribers import FILE`, then send "
                "again)"
            )
        try:
            # Frozen as composed, editors' curation included, unless an editor changed it
            # meanwhile: then compose again with the change.
            store.freeze_edition(day, edition.articles, curation_revision=revision)
            return edition
        except CurationChanged:
            if attempt == FREEZE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # the loop returns or raises


def send_test(store: Store, settings: Settings, day: date, addresses: Sequence[str]) -> int:
    """Send the full edition to ``addresses`` (editors); the ledger is not touched."""
    settings.require_sending()
    targets = [normalise_address(a) for a in addresses]
    edition = frozen_edition(store, settings, day)
    if edition.is_empty:
        raise NothingToSend(
            f"edition {day.isoformat()} has no article in its window: nothing to send"
        )
    identity = ListIdentity.from_settings(settings)
    variant = VariantRenderer.for_settings(edition, settings).variant(edition.section_keys)
    links = Links.from_settings(settings, identity.sender.domain)
    bounces = BounceMailbox.from_settings(settings, identity.sender)
    verp = VerpSigner(settings.secret_key)
    signer = DkimSigner.from_settings(settings, identity.sender.domain)
    run = secrets.token_hex(6)  # each test send is new mail: its own Message-IDs, "[TEST]" first
    connection = SmtpConnection(SmtpConfig.from_settings(settings))
    try:
        for number, address in enumerate(targets, start=1):
            template = MessageTemplate(
                variant, identity, edition.date, test_run=f"{run}-{number}", signer=signer
            )
            # id 0 is never a subscriber, and test tokens (links.for_test) open the page that
            # says the message was a test: an editor's click unsubscribes nobody.
            reader = Reader(subscriber_id=0, email=address.normalized, email_key=address.key)
            recipient = Recipient.with_links(reader, links.for_test(address.key))
            # A VERP sender of its own, signed as a test's: a bounce of it is recognised and
            # changes nobody (services/bounces.py), whoever the editor's address belongs to.
            envelope = bounces.envelope(
                verp.sign_test(f"{edition.date:%Y%m%d}", secrets.token_hex(5))
            )
            connection.send(envelope, address.normalized, template.personalise(recipient))
    finally:
        connection.close()
    return len(targets)
