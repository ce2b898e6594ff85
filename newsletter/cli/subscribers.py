"""``newsletter subscribers ...``: the list commands, thin over newsletter.services.subscribers."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.common import NewsletterGroup, settings_from
from newsletter.domain import SubscriberStatus

# The service (and SQLAlchemy behind it) is imported when a command runs, not at start-up.
if TYPE_CHECKING:
    from newsletter.adapters.smtp import Smtputf8Gate
    from newsletter.adapters.store import Store
    from newsletter.domain import Subscriber

# Column widths of `list`: fixed, so the table streams instead of measuring every row first.
_LIST_WIDTHS = (40, 28, 12)
_STATUS = click.Choice([s.value for s in SubscriberStatus], case_sensitive=False)


@contextmanager
def _store(ctx: click.Context) -> Iterator[Store]:
    from newsletter.adapters.store import open_store

    store = open_store(settings_from(ctx).database_url)
    try:
        yield store
    finally:
        store.close()


def _gate(ctx: click.Context) -> Smtputf8Gate:
    """The SMTPUTF8 rule of add and import: asks the relay only if a non-ASCII local part comes."""
    from newsletter.adapters.smtp import SmtpConfig, Smtputf8Gate

    return Smtputf8Gate(SmtpConfig.from_settings(settings_from(ctx)))


@click.group(cls=NewsletterGroup)
def subscribers() -> None:
    """The subscriber list: add, import, export, list, unsubscribe, forget."""


@subscribers.command()
@click.argument("email")
@click.option("--name", default="", help="display name")
@click.option("--categories", default="", help="sections wanted, e.g. 'Économie,Sport'; none = all")
@click.option("--locale", default="", help="language, e.g. fr or ar; none = NEWSLETTER_LOCALE")
@click.pass_context
def add(ctx: click.Context, email: str, name: str, categories: str, locale: str) -> None:
    """Add EMAIL as an active subscriber (you vouch for their consent)."""
    from newsletter.services import subscribers as service

    with _store(ctx) as store:
        result = service.add(store, email, name, categories, locale, gate=_gate(ctx))
    messages = {
        "added": "added",
        "activated": "activated (was waiting for confirmation)",
        "already active": "already on the list (active); nothing changed",
    }
    click.echo(f"{result.subscriber.email}: {messages[result.outcome]}")


@subscribers.command(name="import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="import nothing if any row is rejected")
@click.pass_context
def import_(ctx: click.Context, file: Path, strict: bool) -> None:
    """Import subscribers from a CSV FILE (email column required).

    Exit status: 0 every row taken, 1 some rows rejected (listed on stderr), 2 unreadable file.
    """
    from newsletter.adapters.csvfile import open_csv
    from newsletter.services import subscribers as service

    with open_csv(file) as stream, _store(ctx) as store:
        report = service.import_csv(store, stream, file.name, strict=strict, gate=_gate(ctx))
    for row in report.rejected:
        click.echo(f"line {row.line}: {row.value!r}: {row.reason}", err=True)
    click.echo(report.summary())
    if report.rejected:
        sys.exit(1)


@subscribers.command()
@click.option("--status", type=_STATUS, default=None, help="only subscribers in this status")
@click.option(
    "--excel",
    is_flag=True,
    help="for French Excel: UTF-8 with a BOM, ';' between fields, CRLF (import reads it back)",
)
@click.pass_context
def export(ctx: click.Context, status: str | None, excel: bool) -> None:
    """Write the list as CSV to stdout: email,name,categories (| separated),locale,status."""
    from newsletter.services import subscribers as service

    with _store(ctx) as store:
        if not excel:
            service.export_csv(store, sys.stdout, _status(status))
            return
        # Excel guesses the encoding from a BOM and, in a French locale, splits on ';' (its list
        # separator there); without them accents and columns come out wrong.
        out = io.TextIOWrapper(
            click.get_binary_stream("stdout"), encoding="utf-8-sig", newline="", write_through=True
        )
        try:
            service.export_csv(store, out, _status(status), delimiter=";")
        finally:
            out.flush()
            out.detach()  # leave stdout open for click


@subscribers.command(name="list")
@click.option("--status", type=_STATUS, default=None, help="only subscribers in this status")
@click.pass_context
def list_(ctx: click.Context, status: str | None) -> None:
    """Show the list as a table."""
    from newsletter.services import subscribers as service

    count = 0
    with _store(ctx) as store:
        # The header only once the store opened: a bad database URL prints its error alone.
        click.echo(_table_line(("EMAIL", "NAME", "STATUS", "CATEGORIES")))
        for sub in service.iter_subscribers(store, _status(status)):
            click.echo(_table_line(_cells(sub, service.clean_name)))
            count += 1
    from newsletter.adapters.i18n import english_ngettext

    click.echo(
        english_ngettext("%(num)d subscriber", "%(num)d subscribers", count) % {"num": count}
    )


@subscribers.command()
@click.argument("email")
@click.pass_context
def unsubscribe(ctx: click.Context, email: str) -> None:
    """Stop sending to EMAIL (it stays on the list, unsubscribed)."""
    from newsletter.services import subscribers as service

    with _store(ctx) as store:
        sub, changed = service.unsubscribe(store, email)
    click.echo(
        f"{sub.email}: {'unsubscribed' if changed else f'already {sub.status}; nothing changed'}"
    )


@subscribers.command()
@click.argument("email")
@click.pass_context
def forget(ctx: click.Context, email: str) -> None:
    """Erase EMAIL's personal data; keep only a hash so it is never re-added."""
    from newsletter.services import subscribers as service

    with _store(ctx) as store:
        existed = service.forget(store, email)
    if existed:
        click.echo(f"{email.strip()}: personal data erased; the address can never be re-imported")
    else:
        click.echo(f"{email.strip()}: not on the list; recorded so that it is never added")


def _status(value: str | None) -> SubscriberStatus | None:
    return SubscriberStatus(value.lower()) if value else None


def _cells(sub: Subscriber, clean_name: Callable[[str], str]) -> tuple[str, str, str, str]:
    # clean_name again: a row stored before names were cleaned on input may hold an ESC.
    name = clean_name(sub.name)
    return (sub.email, name, sub.status.value, ", ".join(sub.categories) or "(all)")


def _table_line(cells: tuple[str, str, str, str]) -> str:
    fitted = [_fit(cell, width) for cell, width in zip(cells, _LIST_WIDTHS, strict=False)]
    return "  ".join([*fitted, cells[-1]])


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"
