"""Service: write an edition's preview files (digest.html, digest.txt, digest.eml) for editors,
and say what the edition left out and why (``left_out_lines``; ``domain.edition`` decides)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from newsletter.adapters.files import write_atomically
from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.links import Links
from newsletter.adapters.message import ListIdentity, MessageTemplate, Recipient, Sender, unstuff
from newsletter.adapters.render import (
    PREFERENCES_SLOT,
    UNSUBSCRIBE_SLOT,
    RenderedVariant,
    section_label,
)
from newsletter.adapters.sources import display_name
from newsletter.adapters.store import database_exists, open_store
from newsletter.config import Settings
from newsletter.domain import Article, Edition, LeftOut, LeftOutReason, Reader, Section
from newsletter.domain.errors import NewsletterError
from newsletter.services.compose import VariantRenderer, compose_edition

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
    subscriber: Reader = PLACEHOLDER

    @property
    def shown(self) -> Edition:
        """The part of the edition this subscriber receives: their sections only."""
        if self.variant is None:
            return self.edition.restricted_to(frozenset())
        return self.edition.restricted_to(self.variant.keys)

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
        return Preview(edition, None, subscriber=subscriber)
    identity = identity_for(settings)
    recipient = recipient_for(links_for(settings, identity.sender), subscriber)
    wire = MessageTemplate(variant, identity, edition.date).personalise(recipient)
    return Preview(
        edition,
        variant,
        html=fill_slots(variant.html, recipient),
        text=fill_slots(variant.text, recipient),
        eml=unstuff(wire),
        subscriber=subscriber,
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


def preview_edition(settings: Settings, day: date) -> Edition:
    """Edition ``day`` composed now, as a send would compose it: from the sources, without what
    earlier editions carried (the ledger's frozen articles), as the editors curated it, and with
    what it left out.

    A database that cannot be opened is a warning here, not an error: a preview checks content.
    A SQLite file that does not exist yet holds no earlier edition, and is not created.
    """
    if not database_exists(settings.database_url):
        return compose_edition(settings, day)
    try:
        with open_store(settings.database_url) as store:
            sent = store.sent_article_uids(before=day)
            curation = store.edition_curation(day).curation
    except NewsletterError as err:
        edition = compose_edition(settings, day)
        note = (
            "cannot read the database, so articles sent in earlier editions are not left out of "
            f"this preview: {err}"
        )
        return replace(edition, warnings=(*edition.warnings, note))
    return compose_edition(settings, day, exclude_uids=sent, curation=curation)


def sample_note(settings: Settings) -> str | None:
    """A line saying the preview shows the bundled sample, when NEWSLETTER_SOURCES is empty."""
    if any(spec.strip() for spec in settings.sources):
        return None
    return (
        "note: NEWSLETTER_SOURCES is empty, so this preview shows the bundled sample articles, "
        "not your site's"
    )


def summary_lines(files: PreviewFiles) -> Sequence[str]:
    """Counts of what the previewed subscriber receives: their sections, not the whole edition."""
    preview = files.preview
    edition = preview.edition
    shown = preview.shown
    locale = preview.subscriber.locale or edition.locale
    head = f"edition {edition.date.isoformat()}"
    if preview.subscriber.subscriber_id:
        head += f" for {preview.subscriber.email}"
    lines = [f"{head}: {_articles_in_sections(shown)}"]
    if shown.section_keys != edition.section_keys:
        lines[0] += f" (the whole edition: {_articles_in_sections(edition)})"
    lines += [f"  {section_label(s, locale)}: {len(s.articles)}" for s in shown.sections]
    if files.variant:
        lines.append(f"HTML size: {files.html_bytes:,} bytes (Gmail clips above 102,400)")
    return lines


def _articles_in_sections(edition: Edition) -> str:
    articles, sections = len(edition.articles), len(edition.sections)
    return (
        english_ngettext("%(num)d article", "%(num)d articles", articles) % {"num": articles}
        + " in "
        + english_ngettext("%(num)d section", "%(num)d sections", sections) % {"num": sections}
    )


def left_out_lines(
    edition: Edition, zone: ZoneInfo, subscriber: Reader = PLACEHOLDER
) -> Sequence[str]:
    """One line per thing the edition left out that concerns ``subscriber``, with the reason.

    Times are the site's (``zone``), as the window and the cut-off are.
    """
    locale = subscriber.locale or edition.locale
    sections = {s.key: s for s in edition.sections}
    return [
        f"left out: {_left_out_text(item, zone, locale, sections)}"
        for item in edition.left_out_for(subscriber.categories)
    ]


def _left_out_text(item: LeftOut, zone: ZoneInfo, locale: str, sections: dict[str, Section]) -> str:
    article = item.article
    if item.reason is LeftOutReason.SOURCE_FAILED or article is None:
        return f"every article of source {item.source} — it could not be read ({item.detail})"
    # Its section named as the email names it: the NEWSLETTER_SECTIONS spelling, the general
    # section in the site's language.
    section = sections.get(article.section_key) or Section(
        article.section_key, article.primary_category or "", ()
    )
    what = (
        f"'{article.title}' ({section_label(section, locale)}, "
        f"published {_local(article.published, zone)})"
    )
    match item.reason:
        case LeftOutReason.DUPLICATE:
            kept = item.kept or article
            if kept.source == article.source:
                return (
                    f"{what} — appears twice in {_source(kept)} (same guid or link); kept the "
                    f"copy {_version(kept, zone)}"
                )
            return (
                f"{what}, from {_source(article)} — a duplicate (same guid or link) of the copy "
                f"from {_source(kept)}, which was kept ({_version(kept, zone)})"
            )
        case LeftOutReason.ALREADY_SENT:
            return f"{what} — already sent in an earlier edition"
        case LeftOutReason.EXCLUDED:
            return f"{what} — excluded by an editor (`newsletter edition include` brings it back)"
        case LeftOutReason.OVER_CAP:
            cap = len(section.articles)
            newest = english_ngettext("its newest article", "its %(num)d newest articles", cap)
            return (
                f"{what} — over the cap (NEWSLETTER_MAX_PER_SECTION={cap}): its section carries "
                f"{newest % {'num': cap}}"
            )
        case LeftOutReason.AFTER_CUTOFF:
            return f"{what} — after the cut-off; goes to the edition of {_iso(item.edition)}"
        case _:
            return (
                f"{what} — before this edition's window; belongs to the edition of "
                f"{_iso(item.edition)}"
            )


def _version(article: Article, zone: ZoneInfo) -> str:
    if article.updated is not None and article.updated != article.published:
        return f"updated {_local(article.updated, zone)}"
    return f"published {_local(article.published, zone)}"


def _source(article: Article) -> str:
    return display_name(article.source) if article.source else "an unnamed source"


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _iso(day: date | None) -> str:
    return day.isoformat() if day else "?"
