"""``newsletter edition ...``: the editors shape a coming edition, thin over services.curation.

Each command parses its arguments, calls one service function and prints its line; a refusal
(CurationRefused, EditionFrozen) is one ``error:`` line and exit 1, through NewsletterGroup.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.common import ISO_DATE, NewsletterGroup, settings_from
from newsletter.domain.errors import UsageError

# The service (and SQLAlchemy behind it) is imported when a command runs, not at start-up.
if TYPE_CHECKING:
    from newsletter.adapters.store import Store
    from newsletter.config import Settings
    from newsletter.services.curation import EditionDraft

_DATE_HELP = "Edition date (default: the next edition)."


def who() -> str:
    """The author of a change made here: "cli:" and the OS user."""
    try:
        user = getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (a bare container): still record it
        user = ""
    return f"cli:{user or 'unknown'}"


@contextmanager
def _edition(ctx: click.Context, day: date | None) -> Iterator[tuple[Store, Settings, date]]:
    from newsletter.adapters.store import open_store

    settings = settings_from(ctx)
    store = open_store(settings.database_url)
    try:
        yield store, settings, day or settings.next_edition_date()
    finally:
        store.close()


@click.group(cls=NewsletterGroup)
def edition() -> None:
    """Shape a coming edition: exclude, include, lead, intro, Subject, added links.

    REF is an article's URL or the short reference `newsletter edition show` prints. Once the
    edition's send has started every change is refused (exit 1) and nothing is changed.
    """


@edition.command()
@click.option("--date", "day", type=ISO_DATE, help=_DATE_HELP)
@click.pass_context
def show(ctx: click.Context, day: date | None) -> None:
    """The edition's articles by section, each with its reference and state (in, excluded,
    lead, added), then the intro, the Subject and the editorial changes."""
    from newsletter.services.curation import edition_draft

    with _edition(ctx, day) as (store, settings, day):
        draft = edition_draft(store, settings, day)
        for line in draft_lines(draft, settings):
            click.echo(line)


def draft_lines(draft: EditionDraft, settings: Settings) -> Iterator[str]:
    """What `edition show` prints, line by line."""
    state = "frozen: its send started, nothing can be changed" if draft.frozen else "open"
    yield f"edition {draft.day.isoformat()} ({state})"
    if not draft.sections:
        yield "  no article in its window"
    for label, articles in draft.sections:
        yield f"{label}"
        for article in articles:
            if article.excluded:
                mark = "excluded"
            elif article.lead:
                mark = "lead"
            elif article.added:
                mark = "added"
            else:
                mark = "in"
            if article.added and mark != "added":
                mark += ",added"
            yield f"  {article.ref}  {mark:<10} {article.title}"
            yield f"          {article.url}"
    if draft.intro:
        yield "intro:"
        for line in draft.intro.splitlines():
            yield f"  {line}"
    else:
        yield "intro: none"
    if draft.subject:
        yield f"Subject (the editors'): {draft.subject}"
    else:
        yield f"Subject (default): {draft.default_subject}"
    if not draft.changes:
        yield "editorial changes: none"
        return
    yield f"editorial changes: {len(draft.changes)}"
    for change in draft.changes:
        at = change.at.astimezone(settings.timezone).strftime("%Y-%m-%d %H:%M")
        yield f"  {at}  {change.who}  {change.action} {change.detail}".rstrip()


@edition.command()
@click.argument("ref")
@click.option("--date", "day", type=ISO_DATE, help=_DATE_HELP)
@click.pass_context
def exclude(ctx: click.Context, ref: str, day: date | None) -> None:
    """Leave article REF out of the edition: out of the email, the preview and the archive."""
    from newsletter.services.curation import exclude as service

    with _edition(ctx, day) as (store, settings, day):
        click.echo(service(store, settings, day, ref, who()))


@edition.command()
@click.argument("ref")
@click.option("--date", "day", type=ISO_DATE, help=_DATE_HELP)
@click.pass_context
def include(ctx: click.Context, ref: str, day: date | None) -> None:
    """Bring excluded article REF back into the edition."""
    from newsletter.services.curation import include as service

    with _edition(ctx, day) as (store, settings, day):
        click.echo(service(store, settings, day, ref, who()))


@edition.command()
@click.argument("ref")
@click.option("--date", "day", type=ISO_DATE, help=_DATE_HELP)
@click.pass_context
def lead(ctx: click.Context, ref: str, day: date | None) -> None:
    """Make article REF the lead story: it comes first, with its large picture.

    An excluded article cannot lead; an empty REF ("") goes back to the first article.
    """
    from newsletter.services.curation import choose_lead

    with _edition(ctx, day) as (store, settings, day):
        click.echo(choose_lead(store, settings, day, ref, who()))


@edition.command()
@click.argument("text", required=False)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the intro from this UTF-8 file instead.",
)
@click.option("--date", "day", type=ISO_DATE, help=_DATE_HELP)
@click.pass_context
def intro(ctx: click.Context, text: str | None, path: Path | None, day: date | None) -> None:
    """Set the intro under the masthead: plain text (paragraphs, URLs made links, everything
    escaped), at most 2,000 characters. An empty TEXT ("") clears it."""
    from newsletter.services.curation import set_intro

    if (text is None) == (path is None):
        raise UsageError(
            "give the intro as TEXT or with --file F (one of them)", 'TEXT "" clears it'
        )
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            raise UsageError(f"cannot read {path}: {reason}", "give a UTF-8 text file") from None
    with _edition(ctx, day) as (store, settings, day):
        click.echo(set_intro(store, settings, day, text or "", who()))


@edition.command()
@click.argument("text")
@click.option("--date", "day", type=ISO_DATE, help=_DATE_HELP)
@click.pass_context
def subject(ctx: click.Context, text: str, day: date | None) -> None:
    """Set the Subject, used exactly as written on one line. An empty TEXT ("") restores the
    default (made from the headlines)."""
    from newsletter.services.curation import set_subject

    with _edition(ctx, day) as (store, settings, day):
        click.echo(set_subject(store, settings, day, text, who()))


@edition.command()
@click.argument("url")
@click.option("--title", required=True, help="The item's title.")
@click.option("--section", default="", help="Its section, e.g. Culture (default: the general one).")
@click.option("--summary", default="", help="A short plain-text summary.")
@click.option("--image", "image_url", default="", help="The https URL of its picture.")
@click.option("--date", "day", type=ISO_DATE, help=_DATE_HELP)
@click.pass_context
def add(
    ctx: click.Context,
    url: str,
    title: str,
    section: str,
    summary: str,
    image_url: str,
    day: date | None,
) -> None:
    """Add a link the feeds do not carry (a partner piece, an event): an http(s) URL."""
    from newsletter.services.curation import add_item

    with _edition(ctx, day) as (store, settings, day):
        click.echo(
            add_item(
                store,
                settings,
                day,
                url=url,
                title=title,
                section=section,
                summary=summary,
                image_url=image_url,
                who=who(),
            )
        )
