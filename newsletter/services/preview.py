"""Service: write an edition's preview files (digest.html, digest.txt, digest.eml) for editors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from newsletter.adapters.files import write_atomically
from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.links import Links
from newsletter.adapters.message import ListIdentity, MessageTemplate, Recipient, Sender, unstuff
from newsletter.adapters.render import PREFERENCES_SLOT, UNSUBSCRIBE_SLOT, RenderedVariant
from newsletter.config import Settings
from newsletter.domain import Edition, Reader
from newsletter.services.compose import VariantRenderer

PLACEHOLDER_EMAIL = "lectrice@example.com"
PLACEHOLDER_NAME = "Lectrice Exemple"
PLACEHOLDER_FROM = "Newsletter <newsletter@example.com>"
PLACEHOLDER_BASE_URL = "https://newsletter.example.com"


PLACEHOLDER = Reader(
    subscriber_id=0,
    email=PLACEHOLDER_EMAIL,
    email_key=PLACEHOLDER_EMAIL.lower(),
    name=PLACEHOLDER_NAME,
)


@dataclass(frozen=True, slots=True)
class Preview:
    """Edition as one subscriber gets it, links filled in: what the CLI writes and the web shows."""

    edition: Edition
    variant: RenderedVariant | None  # None: nothing to send to this subscriber
    html: str = ""
    text: str = ""
    eml: bytes = b""  # the whole message as it goes on the wire, dot-stuffing undone

    @property
    def html_bytes(self) -> int:
        return len(self.variant.html.encode()) if self.variant else 0

    @property
    def warnings(self) -> tuple[str, ...]:
        """The sources that failed, then what rendering noticed (a clipped size, say)."""
        return (*self.edition.warnings, *(self.variant.warnings if self.variant else ()))


@dataclass(frozen=True, slots=True)
class PreviewFiles:
    preview: Preview
    paths: tuple[Path, ...]

    @property
    def edition(self) -> Edition:
        return self.preview.edition

    @property
    def variant(self) -> RenderedVariant | None:
        return self.preview.variant

    @property
    def html_bytes(self) -> int:
        return self.preview.html_bytes


def identity_for(settings: Settings) -> ListIdentity:
    """The sender of a preview: NEWSLETTER_FROM, or a placeholder before it is set."""
    return ListIdentity.from_settings(settings, PLACEHOLDER_FROM)


def links_for(settings: Settings, sender: Sender) -> Links:
    """Real signed links when the secret is set; otherwise clearly fake ones for a preview."""
    return Links.from_settings(
        replace(
            settings,
            base_url=settings.base_url or PLACEHOLDER_BASE_URL,
            secret_key=settings.secret_key or "preview-only-not-a-secret",
        ),
        sender.domain,
    )


def recipient_for(links: Links, subscriber: Reader) -> Recipient:
    own = links.for_subscriber(subscriber.subscriber_id, subscriber.email_key)
    return Recipient.with_links(subscriber, own)


def fill_slots(text: str, recipient: Recipient) -> str:
    return text.replace(UNSUBSCRIBE_SLOT, recipient.unsubscribe_url).replace(
        PREFERENCES_SLOT, recipient.preferences_url
    )


def render_preview(
    settings: Settings, edition: Edition, subscriber: Reader = PLACEHOLDER
) -> Preview:
    """The subscriber's variant of ``edition`` with its links filled in, or an empty preview."""
    variant = VariantRenderer.for_settings(edition, settings).variant_for(
        subscriber.categories, subscriber.locale
    )
    if variant is None:
        return Preview(edition, None)
    identity = identity_for(settings)
    recipient = recipient_for(links_for(settings, identity.sender), subscriber)
    wire = MessageTemplate(variant, identity, edition.date).personalise(recipient)
    return Preview(
        edition,
        variant,
        html=fill_slots(variant.html, recipient),
        text=fill_slots(variant.text, recipient),
        eml=unstuff(wire),
    )


def write_preview(
    settings: Settings,
    edition: Edition,
    out_dir: Path,
    subscriber: Reader = PLACEHOLDER,
) -> PreviewFiles:
    """Render the subscriber's variant and write the three files; nothing written when empty."""
    preview = render_preview(settings, edition, subscriber)
    if preview.variant is None:
        return PreviewFiles(preview, ())
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "digest.html": preview.html.encode(),
        "digest.txt": preview.text.encode(),
        "digest.eml": preview.eml,
    }
    paths = tuple(write_atomically(out_dir / name, data) for name, data in files.items())
    return PreviewFiles(preview, paths)


def summary_lines(files: PreviewFiles) -> Sequence[str]:
    edition = files.edition
    count = len(edition.articles)
    articles = english_ngettext("%(num)d article", "%(num)d articles", count) % {"num": count}
    lines = [f"edition {edition.date.isoformat()}: {articles}"]
    lines += [f"  {s.label or '(general)'}: {len(s.articles)}" for s in edition.sections]
    if files.variant:
        lines.append(f"HTML size: {files.html_bytes:,} bytes (Gmail clips above 102,400)")
    return lines
