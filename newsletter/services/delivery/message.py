"""Delivery, message stage: one pre-encoded template per variant, personalised per recipient.

The variant of a subscriber is the set of the edition's sections they follow plus their locale;
each variant is rendered and encoded once (``MessageTemplate``), then every message of it is a
substitution of the subscriber's name, address and links.
"""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.adapters.dkim import DkimSigner
from newsletter.adapters.links import Links
from newsletter.adapters.message import BounceMailbox, ListIdentity, MessageTemplate, Recipient
from newsletter.adapters.store import ClaimedDelivery
from newsletter.adapters.tokens import VerpSigner
from newsletter.config import Settings
from newsletter.domain import Edition, Reader
from newsletter.services.compose import VariantRenderer


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    delivery: ClaimedDelivery
    data: bytes


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
        self._templates: dict[tuple[frozenset[str], str, bool], MessageTemplate] = {}

    def template(self, keys: frozenset[str], locale: str, chosen: bool = False) -> MessageTemplate:
        if (keys, locale, chosen) not in self._templates:
            variant = self.variants.variant(keys, locale, chosen=chosen)
            self._templates[keys, locale, chosen] = MessageTemplate(
                variant, self.identity, self.edition.date, signer=self.signer
            )
        return self._templates[keys, locale, chosen]

    def envelope_sender(self, reader: Reader) -> str:
        """MAIL FROM of one message: ``bounces+TOKEN@DOMAIN``, the token naming this delivery
        (edition, subscriber) without the address, so that what comes back names it too."""
        return self.bounces.envelope(
            self.verp.sign(self._day_text, reader.subscriber_id, reader.email_key)
        )

    def personalise(self, row: ClaimedDelivery) -> bytes | None:
        """The message for ``row``, or None when none of its sections is in the edition."""
        reader = row.reader
        keys = self.edition.variant_keys(reader.categories)
        if not keys:
            return None
        links = self.links.for_subscriber(reader.subscriber_id, reader.email_key)
        recipient = Recipient.with_links(reader, links)
        chosen = any(name.strip() for name in reader.categories)  # as domain.wanted_keys reads it
        return self.template(keys, reader.locale, chosen).personalise(recipient)
