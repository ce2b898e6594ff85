"""What the editors decided about one coming edition, and the rules each decision must follow.

An edition is compiled from the feeds; the editors may then shape it before it goes out:

- exclude an article (it appears nowhere: not in the email, the preview or the archive);
- choose the lead story (it comes first, with its large picture);
- write an intro (plain text under the masthead: paragraphs, URLs made links, all escaped);
- set the Subject (used exactly as written, on one line);
- add an item the feeds do not carry (a partner piece, an event): URL, title, section, summary.

``Curation`` holds those decisions; ``domain.edition.build_edition`` applies them. Each check here
raises ``CurationRefused`` with one line saying what is wrong, so the CLI and the web console
refuse the same things the same way. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass, field, replace
from datetime import datetime

from newsletter.domain import Article, Edition
from newsletter.domain.errors import NewsletterError
from newsletter.domain.images import safe_image
from newsletter.domain.text import one_line
from newsletter.domain.urls import is_http_url

INTRO_MAX = 2_000  # characters: two short paragraphs is the idea; more belongs in an article
SUBJECT_MAX = 150  # characters: longer Subjects are cut by every mail client anyway
TITLE_MAX = 300
SUMMARY_MAX = 1_000
URL_MAX = 2_048
REF_LENGTH = 6  # hex digits of the short reference `edition show` prints
ADDED_PREFIX = "added:"  # the uid of an added item: never a feed's guid


class CurationRefused(NewsletterError):
    """An editorial change that cannot be made (unknown article, a lead that is excluded...)."""


@dataclass(frozen=True, slots=True)
class AddedItem:
    """An item an editor added to the edition: a link the feeds do not carry."""

    url: str
    title: str
    section: str = ""  # a section name ("Culture"); "" = the general section
    summary: str = ""  # plain text
    image_url: str = ""  # https, optional

    @property
    def uid(self) -> str:
        return ADDED_PREFIX + self.url

    def article(self, published: datetime) -> Article:
        """The item as an article of the edition, dated ``published`` (the window's end: added
        items belong to the edition they were added to, whatever the clock says)."""
        image = safe_image(self.image_url) if self.image_url else None
        return Article(
            uid=self.uid,
            title=_shown_as_text(self.title),
            link=self.url,
            published=published,
            categories=(self.section,) if self.section else (),
            summary_html=html.escape(_shown_as_text(self.summary)),
            source="added by an editor",
            image=image,
        )


@dataclass(frozen=True, slots=True)
class EditorialChange:
    """One logged change: when, who ("cli:<os user>" or "web:<login>"), what. The store's log
    row as `status`, `edition show` and the editors' page read it."""

    at: datetime  # aware, UTC
    who: str
    action: str  # exclude, include, lead, intro, subject, add
    detail: str


@dataclass(frozen=True, slots=True)
class Curation:
    """The editors' decisions for one edition; the empty value changes nothing."""

    excluded: frozenset[str] = field(default=frozenset())  # article uids
    lead: str = ""  # the lead article's uid; "" = the first article of the edition
    intro: str = ""  # plain text
    subject: str = ""  # one line; "" = the Subject the renderer makes
    added: tuple[AddedItem, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self == Curation()

    def without_articles(self) -> Curation:
        """Only what is shown around the articles: for an edition rebuilt from its frozen articles,
        which already left out the excluded ones and carry the added ones."""
        return replace(self, excluded=frozenset(), added=())


def _shown_as_text(text: str) -> str:
    """An editor's plain text, its angle brackets as the look-alike ‹ ›.

    The renderer reduces article fields as feed HTML, decoding entities until none is left (feeds
    escape their HTML once, twice, or not at all), so a literal "<de>" would end up read as a tag
    and dropped; the look-alikes keep the editor's words on the page.
    """
    return text.replace("<", "‹").replace(">", "›")


def article_ref(uid: str) -> str:
    """The short reference of an article: the first hex digits of its uid's SHA-256.

    Stable across runs and machines (the uid is the feed's guid or the link), short enough to
    type; `edition show` prints it and every command accepts it as well as the URL.
    """
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()[:REF_LENGTH]


def clean_intro(text: str) -> str:
    """An intro as stored: line ends normalised, trailing spaces trimmed, at most INTRO_MAX."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cleaned = "\n".join(line.rstrip() for line in lines).strip("\n")
    if len(cleaned) > INTRO_MAX:
        raise CurationRefused(
            f"the intro is {len(cleaned)} characters long; the most is {INTRO_MAX}",
            "shorten it: two short paragraphs read best above the headlines",
        )
    return cleaned


def clean_subject(text: str) -> str:
    """A Subject as stored: one line (CR/LF and control characters become spaces)."""
    subject = one_line(text)
    if len(subject) > SUBJECT_MAX:
        raise CurationRefused(
            f"the Subject is {len(subject)} characters long; the most is {SUBJECT_MAX}",
            "phones show about 40 characters, desktop inboxes about 80",
        )
    return subject


def added_item(
    url: str, title: str, *, section: str = "", summary: str = "", image_url: str = ""
) -> AddedItem:
    """An added item checked: an http(s) URL, a title, an https picture if any."""
    url = url.strip()
    if not is_http_url(url) or len(url) > URL_MAX or any(ch.isspace() for ch in url):
        raise CurationRefused(
            f"{url!r} is not an http(s) URL", "give the full address, e.g. https://exemple.ma/a"
        )
    title = one_line(title)
    if not title:
        raise CurationRefused("the added item has no title", "give one with --title")
    if len(title) > TITLE_MAX:
        raise CurationRefused(f"the title is {len(title)} characters long; the most is {TITLE_MAX}")
    summary = one_line(summary)
    if len(summary) > SUMMARY_MAX:
        raise CurationRefused(
            f"the summary is {len(summary)} characters long; the most is {SUMMARY_MAX}"
        )
    if image_url and safe_image(image_url) is None:
        raise CurationRefused(
            f"the picture {image_url!r} is not an https URL an email can show",
            "give the https address of a picture, or none",
        )
    return AddedItem(
        url=url, title=title, section=one_line(section), summary=summary, image_url=image_url
    )


def lead_first(edition: Edition) -> Edition:
    """``edition`` with its lead story first: the lead's section opens the edition and the lead
    opens its section. Without a chosen lead (or when this variant does not carry it), the
    edition is unchanged and its first article leads."""
    if not edition.lead_uid:
        return edition
    for index, section in enumerate(edition.sections):
        lead = next((a for a in section.articles if a.uid == edition.lead_uid), None)
        if lead is None:
            continue
        reordered = replace(
            section, articles=(lead, *(a for a in section.articles if a is not lead))
        )
        others = tuple(s for i, s in enumerate(edition.sections) if i != index)
        return replace(edition, sections=(reordered, *others))
    return edition
