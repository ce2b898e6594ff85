"""The pure domain: articles, sections, editions and the statuses things move through.

Nothing here does I/O or reads settings; everything is a frozen value that the services compose.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime

# Sections shown first, in this order, when NEWSLETTER_SECTIONS does not say otherwise. Keys are
# compared through category_key(), so "Economie" and "économie" land in "Économie".
DEFAULT_SECTION_ORDER: tuple[str, ...] = (
    "À la une",
    "Politique",
    "Sécurité",
    "Économie",
    "International",
    "Société",
    "Culture",
    "Sport",
)

#: the key of the section that holds articles without any category
GENERAL_SECTION_KEY = ""


def category_key(name: str) -> str:
    """A category name folded for comparison: case, accents and spacing do not matter.

    "Économie", "economie" and " ECONOMIE " all give "economie".
    """
    decomposed = unicodedata.normalize("NFKD", name)
    without_marks = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(without_marks.casefold().split())


def is_rtl(text: str) -> bool:
    """True when the first strong character of ``text`` is right-to-left (Arabic, Hebrew...)."""
    for ch in text:
        direction = unicodedata.bidirectional(ch)
        if direction in ("R", "AL"):
            return True
        if direction == "L":
            return False
    return False


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"

    @property
    def is_suppressed(self) -> bool:
        """An address in this state must never be reactivated by an import or a new sign-up."""
        return self in (
            SubscriberStatus.UNSUBSCRIBED,
            SubscriberStatus.BOUNCED,
            SubscriberStatus.COMPLAINED,
        )


class DeliveryStatus(enum.StrEnum):
    """One ledger row (edition x subscriber) moves pending -> sending -> sent | failed | skipped.

    ``uncertain``: the relay took the whole message but never answered its end of data. It is
    not final: the run that saw it never retransmits it, the next run sends it again.
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"

    @property
    def is_final(self) -> bool:
        return self in (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED)


@dataclass(frozen=True, slots=True)
class ArticleImage:
    """An article's picture as its source names it: a link, never downloaded.

    Sources keep only what an email may show: an https URL, no tracking pixel (2 px or smaller).
    ``alt`` is the source's own text ("" when it has none: the renderer falls back to the
    headline); ``width`` and ``height`` are the source's pixel size when it says.
    """

    url: str
    alt: str = ""
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class Article:
    """One article as read from a source. HTML fields are untrusted feed markup."""

    uid: str  # the feed's guid/id, else the link: what de-duplication compares
    title: str
    link: str
    published: datetime  # timezone-aware
    categories: tuple[str, ...] = ()
    author: str = ""
    summary_html: str = ""
    content_html: str = ""
    source: str = ""
    updated: datetime | None = None
    image: ArticleImage | None = None

    @property
    def primary_category(self) -> str | None:
        return self.categories[0] if self.categories else None

    @property
    def section_key(self) -> str:
        primary = self.primary_category
        return category_key(primary) if primary else GENERAL_SECTION_KEY

    @property
    def freshness(self) -> datetime:
        """When this version of the article was last touched: de-duplication keeps the latest."""
        return self.updated or self.published

    @property
    def rtl(self) -> bool:
        return is_rtl(self.title)


@dataclass(frozen=True, slots=True)
class Section:
    key: str  # category_key() of the label, GENERAL_SECTION_KEY for the general section
    label: str
    articles: tuple[Article, ...]


class LeftOutReason(enum.StrEnum):
    """Why an edition did not carry an article (or a whole source), in the order they are told."""

    SOURCE_FAILED = "source-failed"  # the source could not be read: none of its articles
    DUPLICATE = "duplicate"  # another version of the same article (uid or link) was kept
    ALREADY_SENT = "already-sent"  # in the window, but an earlier edition carried it
    OVER_CAP = "over-cap"  # its section already had NEWSLETTER_MAX_PER_SECTION newer articles
    AFTER_CUTOFF = "after-cutoff"  # published after the cut-off: the next edition's
    BEFORE_WINDOW = "before-window"  # published before the window: the previous edition's
    EXCLUDED = "excluded"  # an editor excluded it from this edition


@dataclass(frozen=True, slots=True)
class LeftOut:
    """One thing an edition left out, and why: the domain decides, the entry points tell it."""

    reason: LeftOutReason
    article: Article | None = None  # None for SOURCE_FAILED
    edition: date | None = None  # AFTER_CUTOFF, BEFORE_WINDOW: the edition it belongs to
    kept: Article | None = None  # DUPLICATE: the version that was kept instead
    source: str = ""  # SOURCE_FAILED: the source as shown in messages
    detail: str = ""  # SOURCE_FAILED: why it failed

    def concerns(self, wanted: frozenset[str]) -> bool:
        """Whether a reader of the sections ``wanted`` (folded keys; empty = all) is concerned."""
        return not wanted or self.article is None or self.article.section_key in wanted


def wanted_keys(preferences: Iterable[str]) -> frozenset[str]:
    """A subscriber's category preferences folded to section keys; empty means every section."""
    return frozenset(category_key(p) for p in preferences if p.strip())


@dataclass(frozen=True, slots=True)
class Edition:
    """The articles of one day, in sections, ready to render.

    ``left_out`` says what composing it did not carry and why (see ``domain.edition``).
    """

    date: date
    window_start: datetime
    window_end: datetime
    sections: tuple[Section, ...]
    title: str = "Newsletter"
    locale: str = "fr"
    warnings: tuple[str, ...] = field(default=())
    left_out: tuple[LeftOut, ...] = field(default=())
    site_url: str = ""  # the site's home page: NEWSLETTER_SITE_URL, else the first feed's <link>
    # The editors' choices (domain.curation): the lead's uid ("" = the first article), the intro
    # under the masthead, the Subject as written ("" = the renderer's).
    lead_uid: str = ""
    intro: str = ""
    subject: str = ""

    @property
    def is_empty(self) -> bool:
        return not self.sections

    @property
    def articles(self) -> tuple[Article, ...]:
        return tuple(a for s in self.sections for a in s.articles)

    @property
    def section_keys(self) -> frozenset[str]:
        return frozenset(s.key for s in self.sections)

    def variant_keys(self, preferences: Iterable[str]) -> frozenset[str]:
        """The section keys a subscriber with these category preferences receives.

        Empty preferences mean every section. The result is the identity of a content variant:
        subscribers with equal keys get byte-identical bodies apart from their own links.
        """
        wanted = wanted_keys(preferences)
        if not wanted:
            return self.section_keys
        return frozenset(k for k in self.section_keys if k in wanted)

    def left_out_for(self, preferences: Iterable[str]) -> tuple[LeftOut, ...]:
        """What was left out that concerns a subscriber with these preferences (empty = all)."""
        wanted = wanted_keys(preferences)
        return tuple(item for item in self.left_out if item.concerns(wanted))

    def restricted_to(self, keys: frozenset[str]) -> Edition:
        """This edition with only the sections whose key is in ``keys``."""
        return replace(self, sections=tuple(s for s in self.sections if s.key in keys))


class ConsentSource(enum.StrEnum):
    """How consent reached us: the operator vouched (import, cli) or the owner opted in (web)."""

    IMPORT = "import"
    WEB = "web"
    CLI = "cli"


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One address on the list, as stored. Timestamps are timezone-aware UTC."""

    id: int
    email: str  # normalised: local part as written, lower-case ASCII (IDNA) domain
    email_key: str  # email lower-cased: what "the same address" means
    name: str
    locale: str  # "" = the newsletter's NEWSLETTER_LOCALE
    categories: tuple[str, ...]  # as the subscriber wrote them; empty = every section
    status: SubscriberStatus
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    confirmed_at: datetime | None  # last double opt-in confirmation
    unsubscribed_at: datetime | None
    consent_source: ConsentSource
    consent_at: datetime | None  # when consent was given or vouched for; None while pending
    consent_detail: str  # file name for an import, client address for the web, "" otherwise
    # When the reader turned click counting off on their preferences page (None: they did not).
    clicks_opted_out_at: datetime | None = None

    @property
    def category_keys(self) -> frozenset[str]:
        """The preferences folded for matching feed categories ("economie" finds "Économie")."""
        return frozenset(category_key(c) for c in self.categories if c.strip())

    @property
    def reader(self) -> Reader:
        """What a message needs of this subscriber."""
        return Reader(
            subscriber_id=self.id,
            email=self.email,
            email_key=self.email_key,
            name=self.name,
            locale=self.locale,
            categories=self.categories,
            clicks_opted_out=self.clicks_opted_out_at is not None,
        )


@dataclass(frozen=True, slots=True)
class Reader:
    """What one message needs of its subscriber: the one record the ledger's claimed rows, the
    previews and the test sends share (``Subscriber.reader`` makes one of a stored subscriber).

    ``subscriber_id`` 0 is never a subscriber: a preview's placeholder or an editor's test
    message, whose links lead to a "not valid" page.
    """

    subscriber_id: int
    email: str
    email_key: str  # email lower-cased: the key its links are signed for
    name: str = ""
    locale: str = ""  # "" = the newsletter's NEWSLETTER_LOCALE
    categories: tuple[str, ...] = ()  # empty = every section
    # The reader turned click counting off: their messages carry plain article links, no pixel.
    clicks_opted_out: bool = False


class EditionStatus(enum.StrEnum):
    """Where an edition stands in the ledger."""

    OPEN = "open"  # known (held, say) but not frozen yet
    SENDING = "sending"  # frozen: recipients fixed, deliveries under way or interrupted
    SENT = "sent"  # every delivery final
    EMPTY = "empty"  # no article in its window: nothing was sent, on purpose
    SKIPPED_LATE = "skipped-late"  # the scheduler found it past its deadline and did not send it


@dataclass(frozen=True, slots=True)
class EditionRecord:
    """One edition's line in the ledger: where it stands, whether an editor holds it."""

    edition_date: date
    status: EditionStatus
    held: bool
    recipients: int
    note: str
    frozen_at: datetime | None
    finished_at: datetime | None

    def describe(self) -> str:
        text = self.status.value + (", held" if self.held else "")
        if self.note:
            text += f" ({self.note})"
        return text


@dataclass
class SendReport:
    """What one send of an edition did, and where the edition's ledger stands after it."""

    edition_date: date
    counts: dict[str, int]
    failures: list[tuple[str, str]] = field(default_factory=list)
    sent_this_run: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()  # sources that failed while composing the edition

    @property
    def remaining(self) -> int:
        return sum(
            self.counts.get(status, 0)
            for status in (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.UNCERTAIN)
        )

    @property
    def complete(self) -> bool:
        return self.remaining == 0 and self.error is None
