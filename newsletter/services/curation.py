"""Service: the editors shape a coming edition (issue 14): exclude and include articles, choose
the lead, write the intro, set the Subject, add a link the feeds do not carry.

The CLI (`newsletter edition ...`) and the editors' web page both call these functions, so they
accept, refuse and say the same things. Each change is made in one write transaction that first
locks the edition's curation and then checks that its send has not started: a change racing the
freeze either lands before it (and the send freezes it: ledger.freeze_edition compares the
curation's revision) or is refused with EditionFrozen. Refusals change nothing and log nothing;
a change that changes nothing (excluding an excluded article) says so and logs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from newsletter.adapters.store import ExcludedArticle, Store, StoredCuration
from newsletter.config import Settings
from newsletter.domain import GENERAL_SECTION_KEY, Article, Edition, LeftOutReason, Section
from newsletter.domain.curation import (
    CurationRefused,
    EditorialChange,
    added_item,
    article_ref,
    clean_intro,
    clean_subject,
    lead_first,
)
from newsletter.domain.text import excerpt, one_line
from newsletter.services.editions import frozen_edition
from newsletter.services.status import editorial_changes

__all__ = [
    "CurationRefused",
    "DraftArticle",
    "EditionDraft",
    "EditionFrozen",
    "EditorialChange",
    "add_item",
    "choose_lead",
    "edition_draft",
    "editorial_changes",
    "exclude",
    "include",
    "set_intro",
    "set_subject",
]

WHO_MAX = 256  # the store's column
DETAIL_MAX = 200  # characters of an intro or a Subject quoted in the change log


class EditionFrozen(CurationRefused):
    """The edition's send has started: its content, editorial state included, is frozen."""

    def __init__(self, day: date, frozen_at: datetime, zone: ZoneInfo) -> None:
        started = frozen_at.astimezone(zone)
        when = f"{started:%H:%M}" if started.date() == day else f"{started:%Y-%m-%d %H:%M}"
        super().__init__(
            f"edition {day.isoformat()} is already going out (its send started at {when}): "
            "nothing was changed"
        )
        self.day = day
        self.frozen_at = frozen_at


@dataclass(frozen=True, slots=True)
class DraftArticle:
    """One article of an edition as the editors see it, with its state."""

    ref: str  # article_ref(uid): what `edition show` prints and every command accepts
    uid: str
    title: str
    url: str
    section: str  # the section's label
    excluded: bool
    lead: bool
    added: bool


@dataclass(frozen=True, slots=True)
class EditionDraft:
    """An edition with its editorial state: what `edition show` and the editors' page show."""

    day: date
    frozen: bool  # its send started: nothing can be changed any more
    # section label -> its articles, excluded ones included, in edition order (the lead first)
    sections: tuple[tuple[str, tuple[DraftArticle, ...]], ...]
    intro: str
    subject: str  # the editors' Subject, "" when the default is used
    default_subject: str  # the Subject the renderer makes from the headlines
    changes: tuple[EditorialChange, ...]


class _Unchanged(Exception):
    """Raised inside a change's transaction when it would change nothing: rolls back (nothing
    written, nothing logged) and carries the line that says so."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


# -- reading -------------------------------------------------------------------------------------


def edition_draft(store: Store, settings: Settings, day: date) -> EditionDraft:
    """Edition ``day`` with each article's reference and state, the intro, the Subject (the
    editors' and the default) and the change log. A coming edition is composed from the sources
    (SourceError when none can be read); a frozen one is rebuilt from what it was frozen with."""
    stored = store.edition_curation(day)
    edition = frozen_edition(store, settings, day)
    frozen = _frozen_at(store, day) is not None
    articles = _draft_sections(edition, stored, settings.locale)
    from newsletter.services.compose import renderer_for

    default_subject = renderer_for(settings).subject(replace(edition, subject=""))
    return EditionDraft(
        day=day,
        frozen=frozen,
        sections=articles,
        intro=stored.intro,
        subject=stored.subject,
        default_subject=default_subject,
        changes=editorial_changes(store, day),
    )


# -- changing ------------------------------------------------------------------------------------


def exclude(store: Store, settings: Settings, day: date, ref: str, who: str) -> str:
    """Leave article ``ref`` (its URL or short reference) out of edition ``day``; one line."""
    _refuse_if_frozen(store, settings, day)
    article, section = _find(store, settings, day, ref)
    name = _name(article)

    def change(current: StoredCuration) -> tuple[StoredCuration, str, str]:
        if article.uid in current.curation.excluded:
            raise _Unchanged(f"edition {day}: {name} is already excluded; nothing changed")
        if current.lead == article.uid:
            raise CurationRefused(
                f"{name} is the lead of edition {day}: it cannot be excluded",
                "choose another lead first with `newsletter edition lead REF`",
            )
        entry = ExcludedArticle(article.uid, article.title, article.link, section)
        return (
            replace(current, excluded=(*current.excluded, entry)),
            name,
            f"edition {day}: excluded {name}; it appears nowhere in this edition",
        )

    return _change(store, settings, day, who, "exclude", change)


def include(store: Store, settings: Settings, day: date, ref: str, who: str) -> str:
    """Bring an excluded article back into edition ``day``; one line."""
    _refuse_if_frozen(store, settings, day)
    article, _section = _find(store, settings, day, ref)
    name = _name(article)

    def change(current: StoredCuration) -> tuple[StoredCuration, str, str]:
        if article.uid not in current.curation.excluded:
            raise _Unchanged(f"edition {day}: {name} is not excluded; nothing changed")
        kept = tuple(e for e in current.excluded if e.uid != article.uid)
        return (
            replace(current, excluded=kept),
            name,
            f"edition {day}: included {name} again",
        )

    return _change(store, settings, day, who, "include", change)


def choose_lead(store: Store, settings: Settings, day: date, ref: str, who: str) -> str:
    """Make article ``ref`` the lead story of edition ``day`` (an empty ``ref`` goes back to the
    first article); refused when that article is excluded. One line."""
    _refuse_if_frozen(store, settings, day)
    if not ref.strip():

        def clear(current: StoredCuration) -> tuple[StoredCuration, str, str]:
            if not current.lead:
                raise _Unchanged(f"edition {day}: no lead was chosen; nothing changed")
            return (
                replace(current, lead=""),
                "cleared",
                f"edition {day}: lead cleared; the first article leads",
            )

        return _change(store, settings, day, who, "lead", clear)
    article, _section = _find(store, settings, day, ref)
    name = _name(article)

    def change(current: StoredCuration) -> tuple[StoredCuration, str, str]:
        if article.uid in current.curation.excluded:
            raise CurationRefused(
                f"{name} is excluded from edition {day}: it cannot lead",
                "include it first with `newsletter edition include REF`",
            )
        if current.lead == article.uid:
            raise _Unchanged(f"edition {day}: {name} is already the lead; nothing changed")
        return (
            replace(current, lead=article.uid),
            name,
            f"edition {day}: {name} is the lead; it comes first",
        )

    return _change(store, settings, day, who, "lead", change)


def set_intro(store: Store, settings: Settings, day: date, text: str, who: str) -> str:
    """Set the intro under the masthead (plain text, shown escaped); "" clears it. One line."""
    intro = clean_intro(text)
    _refuse_if_frozen(store, settings, day)

    def change(current: StoredCuration) -> tuple[StoredCuration, str, str]:
        if current.intro == intro:
            raise _Unchanged(f"edition {day}: the intro is already that; nothing changed")
        if not intro:
            return replace(current, intro=""), "cleared", f"edition {day}: intro cleared"
        chars = len(intro)
        return (
            replace(current, intro=intro),
            excerpt(one_line(intro), DETAIL_MAX),
            f"edition {day}: intro set ({chars} character{'s' if chars != 1 else ''})",
        )

    return _change(store, settings, day, who, "intro", change)


def set_subject(store: Store, settings: Settings, day: date, text: str, who: str) -> str:
    """Set the Subject, used exactly as written on one line; "" restores the default. One line."""
    subject = clean_subject(text)
    _refuse_if_frozen(store, settings, day)

    def change(current: StoredCuration) -> tuple[StoredCuration, str, str]:
        if current.subject == subject:
            raise _Unchanged(f"edition {day}: the Subject is already that; nothing changed")
        if not subject:
            return (
                replace(current, subject=""),
                "default restored",
                f"edition {day}: Subject back to the default",
            )
        return (
            replace(current, subject=subject),
            subject,
            f'edition {day}: Subject set to "{subject}"',
        )

    return _change(store, settings, day, who, "subject", change)


def add_item(
    store: Store,
    settings: Settings,
    day: date,
    *,
    url: str,
    title: str,
    section: str = "",
    summary: str = "",
    image_url: str = "",
    who: str,
) -> str:
    """Add a link the feeds do not carry to edition ``day`` (http(s) only). One line."""
    item = added_item(url, title, section=section, summary=summary, image_url=image_url)
    _refuse_if_frozen(store, settings, day)
    edition = frozen_edition(store, settings, day)
    for article in _candidates(edition):
        if _same_url(article.link, item.url) and article.uid != item.uid:
            raise CurationRefused(
                f"{item.url} is already in edition {day} as {_name(article)}",
                "nothing was added",
            )

    def change(current: StoredCuration) -> tuple[StoredCuration, str, str]:
        if any(a.uid == item.uid for a in current.added):
            raise _Unchanged(f"edition {day}: {item.url} was already added; nothing changed")
        where = item.section or "the general section"
        return (
            replace(current, added=(*current.added, item)),
            f'{article_ref(item.uid)} "{item.title}" <{item.url}>',
            f'edition {day}: added {article_ref(item.uid)} "{item.title}" to {where}',
        )

    return _change(store, settings, day, who, "add", change)


# -- the pieces ----------------------------------------------------------------------------------


def _change(
    store: Store,
    settings: Settings,
    day: date,
    who: str,
    action: str,
    change: Callable[[StoredCuration], tuple[StoredCuration, str, str]],
) -> str:
    """Apply ``change`` to edition ``day``'s curation in one write transaction: lock the
    curation, check the edition is not frozen (after the lock: a freeze waits for it or is seen),
    write the new curation and log it."""
    who = one_line(who)[:WHO_MAX] or "unknown"
    try:
        with store.write():
            current = store.lock_curation(day)
            _refuse_if_frozen(store, settings, day)
            new, detail, line = change(current)
            store.save_curation(day, replace(new, revision=current.revision + 1))
            store.record_change(day, who, action, detail)
    except _Unchanged as unchanged:
        return unchanged.line
    return line


def _frozen_at(store: Store, day: date) -> datetime | None:
    record = store.edition_record(day)
    return record.frozen_at if record is not None else None


def _refuse_if_frozen(store: Store, settings: Settings, day: date) -> None:
    frozen_at = _frozen_at(store, day)
    if frozen_at is not None:
        raise EditionFrozen(day, frozen_at, settings.timezone)


def _candidates(edition: Edition) -> list[Article]:
    """The articles a REF may name: those in the edition (added ones included) and those the
    editors excluded from it."""
    excluded = [
        item.article
        for item in edition.left_out
        if item.reason == LeftOutReason.EXCLUDED and item.article is not None
    ]
    return [*edition.articles, *excluded]


def _find(store: Store, settings: Settings, day: date, ref: str) -> tuple[Article, str]:
    """The article of edition ``day`` that ``ref`` names (its URL, with or without a trailing
    slash, or its short reference) and its section's label; CurationRefused naming ``ref``
    when it is not one of this edition's."""
    ref = ref.strip()
    if not ref:
        raise CurationRefused("no article given", "give its URL or the reference `show` prints")
    edition = frozen_edition(store, settings, day)
    for article in _candidates(edition):
        if _matches(article, ref):
            return article, _label_of(article, edition)
    shown = one_line(ref)[:120]
    for item in edition.left_out:
        if item.article is None or not _matches(item.article, ref):
            continue
        if item.edition is not None and item.edition != day:
            raise CurationRefused(
                f"{shown!r} belongs to edition {item.edition}, not {day}",
                f"add --date {item.edition} to change that edition",
            )
        if item.reason == LeftOutReason.ALREADY_SENT:
            raise CurationRefused(f"{shown!r} went out in an earlier edition, not in {day}")
        if item.reason == LeftOutReason.OVER_CAP:
            raise CurationRefused(
                f"{shown!r} is not in edition {day}: its section already has "
                f"NEWSLETTER_MAX_PER_SECTION newer articles",
                "exclude one of them to make room, or raise the setting",
            )
    raise CurationRefused(
        f"no article {shown!r} in edition {day}",
        f"`newsletter edition show --date {day}` lists its articles and their references",
    )


def _matches(article: Article, ref: str) -> bool:
    if ref.lower() == article_ref(article.uid):
        return True
    return _same_url(article.link, ref) or article.uid == ref


def _same_url(a: str, b: str) -> bool:
    return bool(a) and a.rstrip("/") == b.strip().rstrip("/")


def _name(article: Article) -> str:
    """An article as the lines name it: its reference and its title."""
    return f'{article_ref(article.uid)} "{excerpt(one_line(article.title), 80)}"'


def _label_of(article: Article, edition: Edition) -> str:
    for section in edition.sections:
        if section.key == article.section_key:
            return _section_label(section, edition.locale)
    label = article.primary_category or ""
    return _section_label(Section(article.section_key, label, ()), edition.locale)


def _draft_sections(
    edition: Edition, stored: StoredCuration, locale: str
) -> tuple[tuple[str, tuple[DraftArticle, ...]], ...]:
    """The edition's sections in order (the lead's first), each with its articles and then the
    ones the editors excluded from it; excluded articles of a section the edition no longer has
    get their own section at the end."""
    ordered = lead_first(edition)
    added = {item.uid for item in stored.added}

    def draft(uid: str, title: str, url: str, section: str, *, excluded: bool) -> DraftArticle:
        return DraftArticle(
            ref=article_ref(uid),
            uid=uid,
            title=title,
            url=url,
            section=section,
            excluded=excluded,
            lead=not excluded and uid == stored.lead,
            added=uid in added,
        )

    sections: dict[str, list[DraftArticle]] = {}
    for section in ordered.sections:
        label = _section_label(section, locale)
        sections[label] = [
            draft(a.uid, a.title, a.link, label, excluded=False) for a in section.articles
        ]
    # The excluded articles: from the composed edition when it still has them (a coming
    # edition), else as stored (a frozen one, or an article the feed has dropped since).
    composed = {
        item.article.uid: item.article
        for item in edition.left_out
        if item.reason == LeftOutReason.EXCLUDED and item.article is not None
    }
    for entry in stored.excluded:
        article = composed.get(entry.uid)
        label = _label_of(article, edition) if article is not None else entry.section
        label = label or _section_label(Section(GENERAL_SECTION_KEY, "", ()), locale)
        title = article.title if article is not None else entry.title
        url = article.link if article is not None else entry.url
        sections.setdefault(label, []).append(draft(entry.uid, title, url, label, excluded=True))
    return tuple((label, tuple(items)) for label, items in sections.items())


def _section_label(section: Section, locale: str) -> str:
    """The renderer's label of ``section``, the renderer imported at first use: `status` lists
    the editorial changes through this module without loading it."""
    from newsletter.adapters.render import section_label

    return section_label(section, locale)
