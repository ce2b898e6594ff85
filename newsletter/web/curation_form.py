"""The editors' curation form of an edition: what the page shows, and what a post asks to change.

The page (templates/pages/preview.html) shows ``services.curation.edition_draft`` as one form:
per article a checkbox "excluded" and a radio "lead", the intro, the Subject and a fieldset to
add a link. The form posts the whole state; ``planned_changes`` compares it with the draft and
returns only the service calls for what differs, so a post that changes nothing records nothing
and two editors saving different fields do not undo each other's work.

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

    @classmethod
    def of(cls, form: FormData) -> PostedCuration:
        # A section typed in the free-text field wins over the one picked in the list.
        section = text_field(form, "add_section_new").strip() or text_field(form, "add_section")
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
        )

    @property
    def adds_item(self) -> bool:
        return bool(self.add_url or self.add_title.strip())


def planned_changes(
    store: Store, settings: Settings, draft: EditionDraft, posted: PostedCuration, who: str
) -> list[Change]:
    """The service calls that bring the edition from ``draft`` to ``posted``, in a safe order.

    CurationRefused when the post asks for something the service would refuse; nothing is
    called then. The added link goes first (the service alone knows whether its URL is already
    in the edition: refused there, nothing else is done), then the re-inclusions (a re-included
    article may become the lead), the lead (an article that stops leading may then be
    excluded), the exclusions, the intro and the Subject.
    """
    day = draft.day
    articles = {a.ref: a for _, section in draft.sections for a in section}
    unknown = sorted((posted.excluded | ({posted.lead} if posted.lead else set())) - set(articles))
    if unknown:
        raise CurationRefused(
            f"no article {unknown[0]} in the edition of {day.isoformat()}",
            "reload the page: the edition may have changed",
        )
    if posted.lead and posted.lead in posted.excluded:
        raise CurationRefused(
            f"article {posted.lead} cannot be both the lead and excluded",
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
    for ref, article in articles.items():
        if article.excluded and ref not in posted.excluded:
            call(curation.include, ref)
    current_lead = next((ref for ref, a in articles.items() if a.lead), "")
    if posted.lead is not None and posted.lead != current_lead:
        call(curation.choose_lead, posted.lead)
    for ref, article in articles.items():
        if ref in posted.excluded and not article.excluded:
            call(curation.exclude, ref)
    if intro != draft.intro:
        call(curation.set_intro, intro)
    if subject != draft.subject:
        call(curation.set_subject, subject)
    return changes


def draft_context(settings: Settings, draft: EditionDraft) -> dict[str, Any]:
    """What preview.html needs to show the form: sections, choices, the change log."""
    found = translations(settings.locale)
    general = found.gettext(GENERAL_SECTION)
    return {
        "draft": draft,
        "chosen_lead": any(a.lead for _, section in draft.sections for a in section),
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
