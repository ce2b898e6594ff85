"""The editors' curation form of an edition: what the page shows, and what a post asks to change.

The page (templates/pages/preview.html) shows ``services.curation.edition_draft`` as one form:
per article a checkbox "excluded" and a radio "lead", the intro, the Subject and a fieldset to
add a link. The form posts the whole state, and in hidden fields the state the page showed;
``planned_changes`` compares the two and returns only the service calls for what the editor
changed, so a post that changes nothing records nothing and an editor saving a stale page does
not undo what another editor (or the CLI) changed meanwhile.

Every check the service would make is made here first, with the domain's own rules, before
any call: a post refused half-way would otherwise leave half its changes recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from starlette.datastructures import FormData

from newsletter.adapters.i18n import N_, format_moment, translations
from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.domain.curation import (
    CurationRefused,
    added_item,
    clean_intro,
    clean_subject,
)
from newsletter.domain.text import one_line
from newsletter.services import curation
from newsletter.services.curation import EditionDraft
from newsletter.web.pages import text_field, text_fields

# The general section's label (render.section_label names it so in the edition's language); an
# item added to it has no section name of its own.
GENERAL_SECTION = "Other news"

# Each action of the change log as the page names it (the log stores the service's English word;
# the CLI prints that word).
ACTIONS = {
    "exclude": N_("Article excluded"),
    "include": N_("Article included again"),
    "lead": N_("Lead chosen"),
    "intro": N_("Intro"),
    "subject": N_("Subject"),
    "add": N_("Link added"),
}

# One change: a service call that returns the line saying what it did.
Change = Callable[[], str]


@dataclass(frozen=True, slots=True)
class Shown:
    """The edition's state as the page showed it (hidden fields of the form): a post changes
    only what the editor changed on the page, so a change made meanwhile by another editor (or
    the CLI) to another article or field is kept, not undone by a stale page."""

    excluded: frozenset[str]
    lead: str
    intro: str
    subject: str

    @classmethod
    def of(cls, draft: EditionDraft) -> Shown:
        articles = [a for _, section in draft.sections for a in section]
        return cls(
            excluded=frozenset(a.ref for a in articles if a.excluded),
            lead=next((a.ref for a in articles if a.lead), ""),
            intro=draft.intro,
            subject=draft.subject,
        )


@dataclass(frozen=True, slots=True)
class PostedCuration:
    """What the form posted, each field as the editor left it."""

    excluded: frozenset[str]  # refs ticked "excluded"
    lead: str | None  # the ref chosen as lead; "" = the first article leads; None = not posted
    intro: str
    subject: str
    add_url: str
    add_title: str
    add_section: str
    add_summary: str
    add_image_url: str
    shown: Shown | None  # None: posted without the page's state (then: the edition as it is)

    @classmethod
    def of(cls, form: FormData) -> PostedCuration:
        # A section typed in the free-text field wins over the one picked in the list.
        section = text_field(form, "add_section_new").strip() or text_field(form, "add_section")
        shown = (
            Shown(
                excluded=frozenset(text_fields(form, "shown_excluded")),
                lead=text_field(form, "shown_lead"),
                intro=text_field(form, "shown_intro"),
                subject=text_field(form, "shown_subject"),
            )
            if text_field(form, "shown") == "1"
            else None
        )
        return cls(
            excluded=frozenset(text_fields(form, "excluded")),
            lead=text_field(form, "lead") if "lead" in form else None,
            intro=text_field(form, "intro"),
            subject=text_field(form, "subject"),
            add_url=text_field(form, "add_url").strip(),
            add_title=text_field(form, "add_title"),
            add_section=section,
            add_summary=text_field(form, "add_summary"),
            add_image_url=text_field(form, "add_image_url").strip(),
            shown=shown,
        )

    @property
    def adds_item(self) -> bool:
        return bool(self.add_url or self.add_title.strip())


def _as_stored(intro: str) -> str:
    """An intro normalised as clean_intro stores it, without its length check (to compare)."""
    lines = intro.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def planned_changes(
    store: Store, settings: Settings, draft: EditionDraft, posted: PostedCuration, who: str
) -> list[Change]:
    """The service calls for what the editor changed on the page, in a safe order.

    What changed is the difference between the form as posted and the state the page showed
    (``posted.shown``); each such change is made unless the edition already has it. Every check
    runs first: CurationRefused when the post asks for something the service would refuse, and
    nothing is called then. The added link goes first (the service alone knows whether its URL
    is already in the edition: refused there, nothing else is done), then the re-inclusions (a
    re-included article may become the lead), the lead (an article that stops leading may then
    be excluded), the exclusions, the intro and the Subject.
    """
    day = draft.day
    articles = {a.ref: a for _, section in draft.sections for a in section}
    current = Shown.of(draft)
    was = posted.shown or current
    ticked = posted.excluded - was.excluded
    unticked = was.excluded - posted.excluded
    lead_changed = posted.lead is not None and posted.lead != was.lead
    asked = ticked | ({posted.lead} if lead_changed and posted.lead else set())
    if unknown := sorted(asked - set(articles)):
        raise CurationRefused(
            f"no article {unknown[0]} in the edition of {day.isoformat()}",
            "reload the page: the edition may have changed",
        )
    to_include = [ref for ref in articles if ref in unticked and ref in current.excluded]
    to_exclude = [ref for ref in articles if ref in ticked and ref not in current.excluded]
    lead = posted.lead if lead_changed and posted.lead is not None else current.lead
    if lead and lead in (current.excluded - set(to_include)) | set(to_exclude):
        raise CurationRefused(
            f"article {lead} cannot be both the lead and excluded",
            "choose another lead, or keep this article",
        )
    intro = clean_intro(posted.intro)
    subject = clean_subject(posted.subject)
    if posted.adds_item:
        added_item(  # only to check it: the service builds the item again
            posted.add_url,
            posted.add_title,
            section=posted.add_section,
            summary=posted.add_summary,
            image_url=posted.add_image_url,
        )

    changes: list[Change] = []

    def call(function: Callable[..., str], *args: Any, **kwargs: Any) -> None:
        changes.append(lambda: function(store, settings, day, *args, who=who, **kwargs))

    if posted.adds_item:
        call(
            curation.add_item,
            url=posted.add_url,
            title=posted.add_title,
            section=posted.add_section,
            summary=posted.add_summary,
            image_url=posted.add_image_url,
        )
    for ref in to_include:
        call(curation.include, ref)
    if lead != current.lead:
        call(curation.choose_lead, lead)
    for ref in to_exclude:
        call(curation.exclude, ref)
    if intro != _as_stored(was.intro) and intro != draft.intro:
        call(curation.set_intro, intro)
    if subject != one_line(was.subject) and subject != draft.subject:
        call(curation.set_subject, subject)
    return changes


def draft_context(settings: Settings, draft: EditionDraft) -> dict[str, Any]:
    """What preview.html needs to show the form: sections, choices, the change log."""
    found = translations(settings.locale)
    general = found.gettext(GENERAL_SECTION)
    return {
        "draft": draft,
        "chosen_lead": any(a.lead for _, section in draft.sections for a in section),
        "shown": Shown.of(draft),
        # The sections an added link may join: the edition's own ("" = the general one).
        "section_choices": [label for label, _ in draft.sections if label != general],
        "general_section": general,
        "changes": [
            {
                "at": format_moment(change.at, settings.timezone, settings.locale),
                "at_iso": change.at.isoformat(),
                "who": change.who,
                "action": found.gettext(ACTIONS[change.action])
                if change.action in ACTIONS
                else change.action,
                "detail": change.detail,
            }
            for change in reversed(draft.changes)  # the latest first
        ],
    }


def load_draft(store: Store, settings: Settings, day: date) -> EditionDraft:
    return curation.edition_draft(store, settings, day)
