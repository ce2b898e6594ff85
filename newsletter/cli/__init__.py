"""The ``newsletter`` command: a thin click shell over the services.

Each command parses its arguments, calls one service function and turns the library's errors
(``NewsletterError``) into one clean line on stderr and an exit status: 0 done, 1 a failure or
work left, 2 a usage or configuration error.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.bounces import bounce_mail, bounces
from newsletter.cli.check import check
from newsletter.cli.common import ISO_DATE, NewsletterGroup, settings_from
from newsletter.cli.edition import edition
from newsletter.cli.subscribers import subscribers
from newsletter.config import Purpose
from newsletter.domain.errors import NewsletterError

# Each command imports the services it uses inside its body: `newsletter --help` or
# `subscribers list` should not pay for premailer, feedparser and SQLAlchemy all at once.
if TYPE_CHECKING:
    from newsletter.adapters.store import Store
    from newsletter.config import Settings
    from newsletter.domain import Reader
    from newsletter.services.delivery import SendReport


class OutputFolderError(NewsletterError):
    """--out names a folder that cannot be created or written."""

    exit_code = 2

    def __init__(self, folder: Path, err: OSError) -> None:
        super().__init__(
            f"cannot write to {folder}: {err.strerror or err}", "choose another folder with --out"
        )


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="newsletter")
def cli() -> None:
    """Compile a news site's day of articles into one email edition and deliver it."""


@cli.command()
@click.option("--date", "day", type=ISO_DATE, help="Edition date (default: the next edition).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Folder for digest.html, digest.txt and digest.eml.",
)
@click.option("--email", help="Render the variant this subscriber receives (their sections).")
@click.pass_context
def preview(ctx: click.Context, day: date | None, out_dir: Path, email: str | None) -> None:
    """Write edition D as digest.html, digest.txt and digest.eml for an editor to check.

    Prints the counts, then one "left out:" line per article or source the edition left out
    and why (late, early, duplicate, already sent, over the cap, source failed).
    """
    from newsletter.services.preview import (
        PLACEHOLDER,
        left_out_lines,
        preview_edition,
        sample_note,
        summary_lines,
        write_preview,
    )

    settings = settings_from(ctx)
    day = day or settings.next_edition_date()
    if note := sample_note(settings):
        click.echo(note, err=True)
    edition = preview_edition(settings, day)
    for warning in edition.warnings:
        click.echo(f"warning: {warning}", err=True)
    subscriber = PLACEHOLDER if email is None else _preview_subscriber(ctx, email)
    try:
        files = write_preview(settings, edition, out_dir, subscriber)
    except OSError as err:
        raise OutputFolderError(out_dir, err) from None
    if edition.is_empty:
        click.echo(f"edition {day.isoformat()}: no article in its window, nothing to send")
    elif files.variant is None:
        click.echo(
            f"edition {day.isoformat()}: nothing for {email} (none of their sections has an article)"
        )
    else:
        for warning in files.variant.warnings:
            click.echo(f"warning: {warning}", err=True)
        for line in summary_lines(files):
            click.echo(line)
    for line in left_out_lines(edition, settings.timezone, subscriber):
        click.echo(line)
    for path in files.paths:
        click.echo(f"wrote {path}")


def _preview_subscriber(ctx: click.Context, email: str) -> Reader:
    from newsletter.adapters.store import open_store
    from newsletter.domain.addresses import normalise_address
    from newsletter.services.subscribers import UnknownSubscriber

    with open_store(settings_from(ctx).database_url) as store:
        found = store.find_by_email(normalise_address(email).key)
    if found is None:
        raise UnknownSubscriber(email)
    return found.reader


@cli.command()
@click.option("--date", "day", type=ISO_DATE, help="Edition date (default: the next edition).")
@click.option(
    "--dry-run", is_flag=True, help="Say what would be sent; send nothing, record nothing."
)
@click.option(
    "--test",
    "test_addresses",
    multiple=True,
    metavar="ADDR",
    help="Send only to these addresses (editors); the ledger is left alone. Repeatable.",
)
@click.pass_context
def send(
    ctx: click.Context, day: date | None, dry_run: bool, test_addresses: tuple[str, ...]
) -> None:
    """Send edition D to every active subscriber; a re-run continues and never re-sends.

    Exit status: 0 when every recipient is final (sent or failed), 1 when work remains,
    2 for a usage or configuration error.
    """
    from newsletter.adapters.i18n import english_ngettext
    from newsletter.adapters.store import open_store
    from newsletter.services.delivery import NothingToSend, send_test
    from newsletter.services.editions import dry_run_lines, report_line

    settings = settings_from(ctx, Purpose.SEND)
    day = day or settings.next_edition_date()
    with open_store(settings.database_url) as store:
        if dry_run:
            for line in dry_run_lines(store, settings, day):
                click.echo(line)
            return
        if test_addresses:
            try:
                sent = send_test(store, settings, day, test_addresses)
            except NothingToSend as nothing:
                click.echo(str(nothing))
                return
            addresses = english_ngettext("%(num)d address", "%(num)d addresses", sent)
            click.echo(
                f"edition {day.isoformat()}: test sent to {addresses % {'num': sent}}; "
                "ledger untouched"
            )
            return
        try:
            report = _send_with_progress(store, settings, day)
        except NothingToSend as nothing:
            click.echo(str(nothing))
            return
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(report_line(report))
    if report.error:
        click.echo(f"error: {report.error}", err=True)
    for email, error in report.failures[:20]:
        click.echo(f"failed: {email}: {error}", err=True)
    ctx.exit(0 if report.complete else 1)


def _send_with_progress(store: Store, settings: Settings, day: date) -> SendReport:
    from newsletter.services.delivery import send_edition

    if not sys.stdout.isatty():
        return send_edition(store, settings, day)
    bar_holder: list = []

    def on_frozen(total: int) -> None:
        bar_holder.append(click.progressbar(length=total, label=f"edition {day.isoformat()}"))
        bar_holder[0].__enter__()

    try:
        return send_edition(
            store, settings, day, on_frozen=on_frozen, progress=lambda n: bar_holder[0].update(n)
        )
    finally:
        if bar_holder:
            bar_holder[0].__exit__(None, None, None)


STATUS_DEFAULT = "the latest edition recorded, else the next one"


@cli.command()
@click.option("--date", "day", type=ISO_DATE, help=f"Edition date (default: {STATUS_DEFAULT}).")
@click.pass_context
def status(ctx: click.Context, day: date | None) -> None:
    """How edition D went: sent, failed, pending and skipped counts, failures listed; the
    editors' changes to it (who, when, what)."""
    # A light module: on a SQLite file at the latest schema, status reads through sqlite3 and
    # never imports SQLAlchemy (issue 16: an answer within a second during a big send).
    from newsletter.services.status import change_lines, open_status_source, status_lines

    settings = settings_from(ctx)
    with open_status_source(settings.database_url) as source:
        day = day or source.latest_edition_date() or settings.next_edition_date()
        for line in (*status_lines(source, day), *change_lines(source, settings, day)):
            click.echo(line)


@cli.command()
@click.option("--date", "day", type=ISO_DATE, help="Edition date (default: the latest sent).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: section,title,url,clicks,unique_clicks.")
@click.pass_context
def stats(ctx: click.Context, day: date | None, as_csv: bool) -> None:
    """Clicks and unique clickers per article of edition D, with section totals.

    Counts readers, not link scanners (see Privacy in the README). Folds the click rows older
    than NEWSLETTER_CLICK_RETENTION_DAYS into per-article totals first. --csv writes one row per
    article with a header and no total rows.
    """
    from newsletter.adapters.store import open_store
    from newsletter.services.stats import edition_stats, stats_lines, write_csv

    settings = settings_from(ctx)
    with open_store(settings.database_url) as store:
        report = edition_stats(store, settings, day)
    if as_csv:
        write_csv(report, sys.stdout)
        return
    for line in stats_lines(report):
        click.echo(line)


cli.add_command(subscribers)
cli.add_command(edition)
cli.add_command(check)
cli.add_command(bounce_mail)
cli.add_command(bounces)


@cli.command()
@click.option(
    "--now",
    "start_at",
    metavar="INSTANT",
    help="Testing and rehearsal aid: the scheduler's clock starts at this ISO 8601 instant "
    "(with its offset, e.g. 2026-01-27T07:05:00+01:00) and runs on from there.",
)
@click.pass_context
def run(ctx: click.Context, start_at: str | None) -> None:
    """The daemon: send each edition at NEWSLETTER_SEND_TIME, once; stop it with SIGTERM.

    Catches up a missed send until NEWSLETTER_SEND_DEADLINE; one process per database sends,
    others stand by. Logs one line per event on stderr.
    """
    from newsletter.daemon import parse_now, run_daemon  # APScheduler only for this command

    settings = settings_from(ctx, Purpose.SEND)
    ctx.exit(run_daemon(settings, start_at=parse_now(start_at) if start_at else None))


@cli.command()
@click.option("--date", "day", type=ISO_DATE, help="Edition date (default: the next edition).")
@click.pass_context
def hold(ctx: click.Context, day: date | None) -> None:
    """Hold edition D: the scheduler does not send it until it is released.

    A finished edition (sent, empty or skipped) cannot be held: one line, exit 1, nothing changed.
    """
    _set_hold(ctx, day, held=True)


@cli.command()
@click.option("--date", "day", type=ISO_DATE, help="Edition date (default: the next edition).")
@click.pass_context
def release(ctx: click.Context, day: date | None) -> None:
    """Release edition D: the scheduler sends it (at its time, or at once before its deadline)."""
    _set_hold(ctx, day, held=False)


def _set_hold(ctx: click.Context, day: date | None, *, held: bool) -> None:
    from newsletter.adapters.store import open_store
    from newsletter.services.editions import set_hold

    settings = settings_from(ctx)
    with open_store(settings.database_url) as store:
        click.echo(set_hold(store, settings, day or settings.next_edition_date(), held=held))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Run the web app: sign-up, unsubscribe, preferences and the editors' pages."""
    import uvicorn

    from newsletter.web import create_app
    from newsletter.web.server import server_config

    settings = settings_from(ctx, Purpose.SERVE)
    app = create_app(settings)
    # Header limits and deadlines, proxy trust from NEWSLETTER_TRUSTED_PROXIES only, no access
    # log (paths carry link tokens): see web/server.py.
    uvicorn.Server(server_config(app, settings, host, port)).run()


@cli.command("unsubscribe-mail")
@click.pass_context
def unsubscribe_mail(ctx: click.Context) -> None:
    """Read one email on stdin and unsubscribe the subscriber its token names (mailto: route).

    Exit status: 0 handled (or ignored: no valid token), 75 the database is unreachable
    (the mail server keeps the message and retries).
    """
    from newsletter.adapters.store import StoreError, open_store
    from newsletter.services.inbound import NoUnsubscribeToken, unsubscribe_from_mail
    from newsletter.services.signup import Subscriptions

    settings = settings_from(ctx)
    settings.require_sending()
    raw = sys.stdin.buffer.read()
    try:
        with open_store(settings.database_url) as store:
            result = unsubscribe_from_mail(Subscriptions(store, settings), raw)
    except NoUnsubscribeToken as err:
        click.echo(f"ignored: {err}", err=True)
        return
    except StoreError as err:
        click.echo(f"error: {err}", err=True)
        ctx.exit(75)
    click.echo(f"subscriber {result.subscriber_id}: {result.status}")


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for the demo's database, preview and received messages (emptied first).",
)
@click.pass_context
def demo(ctx: click.Context, out: Path) -> None:
    """Run the whole job on the bundled sample, on this machine only.

    Imports the sample subscribers, previews the sample edition, starts a local SMTP server and
    sends the edition through it; nothing leaves the machine.
    """
    from newsletter.adapters.i18n import english_ngettext
    from newsletter.cli.demo import run_demo
    from newsletter.services.editions import report_line
    from newsletter.services.preview import summary_lines

    try:
        result = run_demo(settings_from(ctx), out)
    except OSError as err:
        raise OutputFolderError(out, err) from None
    click.echo(f"subscribers: {result.imported}")
    for line in summary_lines(result.preview):
        click.echo(line)
    click.echo(f"preview: {out / 'preview' / 'digest.html'} (open it in a browser)")
    click.echo(report_line(result.report))
    received = sorted(result.mail_dir.glob("*.eml"))
    messages = english_ngettext("%(num)d message", "%(num)d messages", len(received))
    click.echo(
        f"received by the local SMTP server: {messages % {'num': len(received)}}"
        f" in {result.mail_dir}/"
    )
    for path in received:
        click.echo(f"  {path.name}")


def main() -> None:
    cli(prog_name="newsletter")
