"""Delivery, message stage: one pre-encoded template per variant, personalised per recipient.

The variant of a subscriber is the set of the edition's sections they follow plus their locale;
each variant is rendered and encoded once (``MessageTemplate``), then every message of it is a
substitution of the subscriber's name, address and links.

With NEWSLETTER_TRACK_CLICKS (or _OPENS) a variant also says whether it is tracked: a reader who
turned counting off gets the untracked one, with the plain article links and no pixel, and a
tracked message's click URLs are signed once per article (``TrackedLinks.click_urls``).
"""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.adapters.dkim import DkimSigner
from newsletter.adapters.links import Links, TrackedLinks
from newsletter.adapters.message import BounceMailbox, ListIdentity, MessageTemplate, Recipient
from newsletter.adapters.render import NOT_TRACKED
from newsletter.adapters.store import ClaimedDelivery
from newsletter.adapters.tokens import VerpSigner
from newsletter.config import Settings
from newsletter.domain import Edition, Reader
from newsletter.services.compose import VariantRenderer, tracking_for


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    delivery: ClaimedDelivery
    data: bytes
    sender: str  # MAIL FROM (VERP), made with the message: the worker only sends


class MessageBuilder:
    """The messages of one edition: a template per (sections, locale), cached for the run."""

    def __init__(self, settings: Settings, edition: Edition) -> None:
        self.edition = edition
        self.identity = ListIdentity.from_settings(settings)
        self.links = Links.from_settings(settings, self.identity.sender.domain)
        # The key is read once per send; a bad one stops the send before any message.
        self.signer = DkimSigner.from_settings(settings, self.identity.sender.domain)
        self.variants = VariantRenderer.for_settings(edition, settings)
        self.bounces = BounceMailbox.from_settings(settings, self.identity.sender)
        self.verp = VerpSigner(settings.secret_key)
        self._day_text = f"{edition.date:%Y%m%d}"
        self.tracking = tracking_for(settings)
        # The ClickSigner is only made when something is tracked: off, nothing changes at all.
        self.tracked_links = TrackedLinks.from_settings(settings) if self.tracking else None
        self._templates: dict[tuple[frozenset[str], str, bool, bool], MessageTemplate] = {}

    def template(
        self, keys: frozenset[str], locale: str, chosen: bool = False, tracked: bool = False
    ) -> MessageTemplate:
        """The template of one variant; ``tracked`` (when the site tracks anything): its article
        links are the reader's click URLs and/or it has the open pixel."""
        cached = self._templates.get((keys, locale, chosen, tracked))
        if cached is None:
            tracking = self.tracking if tracked else NOT_TRACKED
            variant = self.variants.variant(keys, locale, chosen=chosen, tracking=tracking)
            cached = self._templates[keys, locale, chosen, tracked] = MessageTemplate(
                variant, self.identity, self.edition.date, signer=self.signer
            )
        return cached

    def envelope_sender(self, reader: Reader) -> str:
        """MAIL FROM of one message: ``bounces+TOKEN@DOMAIN``, the token naming this delivery
        (edition, subscriber) without the address, so that what comes back names it too."""
        return self.bounces.envelope(
            self.verp.sign(self._day_text, reader.subscriber_id, reader.email_key)
        )

    def warm(self) -> None:
        """Render the variant most readers get (every section, the site's locale, tracked as
        the site tracks) now: before a fork, so that sender processes share it."""
        self._template_of(Reader(subscriber_id=1, email="", email_key=""))

    def _template_of(self, reader: Reader) -> tuple[MessageTemplate, bool] | None:
        """The template of ``reader``'s variant and whether it is tracked; None when none of
        their sections is in the edition."""
        keys = self.edition.variant_keys(reader.categories)
        if not keys:
            return None
        chosen = any(name.strip() for name in reader.categories)  # as domain.wanted_keys reads it
        # Subscriber id 0 is never a reader (a test or a preview): never tracked either.
        tracked = (
            self.tracked_links is not None
            and not reader.clicks_opted_out
            and reader.subscriber_id != 0
        )
        return self.template(keys, reader.locale, chosen, tracked), tracked

    def personalise(self, row: ClaimedDelivery) -> bytes | None:
        """The message for ``row``, or None when none of its sections is in the edition."""
        reader = row.reader
        variant = self._template_of(reader)
        if variant is None:
            return None
        template, tracked = variant
        links = self.links.for_subscriber(reader.subscriber_id, reader.email_key)
        if not tracked or self.tracked_links is None:
            return template.personalise(Recipient.with_links(reader, links))
        day, subscriber_id = self.edition.date, reader.subscriber_id
        recipient = Recipient.with_links(
            reader,
            links,
            article_urls=self.tracked_links.click_urls(day, template.article_refs, subscriber_id),
            open_url=self.tracked_links.open_url(day, subscriber_id) if self.tracking.opens else "",
        )
        return template.personalise(recipient)
