"""Returned mail: ``newsletter bounce-mail`` (one message on stdin, from the MTA) and the
``newsletter bounces`` group (``bounces list``; the IMAP poller adds ``bounces fetch``).

How a site routes its bounces to us: every message goes out with the envelope sender
``bounces+TOKEN@DOMAIN`` (VERP). With Postfix, ``recipient_delimiter = +`` in main.cf and, in
/etc/aliases (then ``newaliases``)::

    bounces: "|/srv/newsletter/.venv/bin/newsletter bounce-mail"

Postfix delivers ``bounces+TOKEN@`` to that alias and gives the command the original recipient
in ORIGINAL_RECIPIENT (read here) and a Delivered-To header (read by the service).

Exit status, chosen for mail delivery agents: 0 when the message was handled or ignored (a
forged or unreadable report is only logged: never answered, which would be backscatter); 75
(EX_TEMPFAIL) when the database cannot be reached, so that the MTA keeps the message and retries.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from typing import BinaryIO

import click

from newsletter.cli.bounce_fetch import fetch
from newsletter.cli.common import ISO_DATE, NewsletterGroup, settings_from

# Postfix's local(8) sets these for a command in an alias: the address as it arrived and the
# part after the recipient delimiter (the VERP token).
_ENVELOPE_VARIABLES = ("ORIGINAL_RECIPIENT", "RECIPIENT", "EXTENSION")
EX_TEMPFAIL = 75
_CHUNK = 1 << 16


def read_capped(stream: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream``; the rest is read and dropped, in chunks, so that the
    MTA writing into our pipe sees it all taken (no broken pipe) and memory stays bounded."""
    kept = bytearray()
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return bytes(kept)
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]


@click.command("bounce-mail")
@click.option(
    "--recipient",
    "recipients",
    multiple=True,
    metavar="ADDRESS",
    help="The envelope recipient the message was delivered to (bounces+TOKEN@DOMAIN), when "
    "the mail server passes it; ORIGINAL_RECIPIENT and Delivered-To are read too.",
)
@click.pass_context
def bounce_mail(ctx: click.Context, recipients: tuple[str, ...]) -> None:
    """Read one returned message (a bounce or a complaint) on stdin and act on it.

    A hard bounce stops its subscriber as bounced, soft ones are counted, a complaint stops the
    subscriber as complained; anything not tied to a delivery of ours is ignored. Exit status:
    0 handled or ignored, 75 the database is unreachable (the mail server retries).
    """
    from newsletter.adapters.store import StoreError, open_store
    from newsletter.services.bounces import MAX_RETURNED_BYTES, handle_returned_mail

    settings = settings_from(ctx)
    if not settings.secret_key:
        click.echo(
            "error: NEWSLETTER_SECRET_KEY is not set: returned mail cannot be checked", err=True
        )
        ctx.exit(EX_TEMPFAIL)  # a setting to fix; the MTA keeps the message meanwhile
    raw = read_capped(sys.stdin.buffer, MAX_RETURNED_BYTES)
    envelope = [*recipients, *(os.environ.get(n, "") for n in _ENVELOPE_VARIABLES)]
    try:
        with open_store(settings.database_url) as store:
            result = handle_returned_mail(
                store, settings, raw, recipients=[e for e in envelope if e]
            )
    except StoreError as err:
        click.echo(f"error: {err}", err=True)
        ctx.exit(EX_TEMPFAIL)
    click.echo(result.line, err=not result.acted)


@click.group(cls=NewsletterGroup)
def bounces() -> None:
    """Returned mail: what came back for each edition, and polling the bounce mailbox."""


bounces.add_command(fetch)


@bounces.command("list")
@click.option("--date", "day", type=ISO_DATE, help="The edition (default: the latest).")
@click.pass_context
def list_returned(ctx: click.Context, day: date | None) -> None:
    """Print an edition's hard bounces, soft bounces and complaints, with their rates."""
    # Reads what `status` reads: the same glance at a current SQLite file, without SQLAlchemy.
    from newsletter.services.status import open_status_source, returned_lines

    settings = settings_from(ctx)
    with open_status_source(settings.database_url) as source:
        chosen = day or source.latest_edition_date()
        if chosen is None:
            click.echo("no edition sent yet")
            return
        for line in returned_lines(source, chosen):
            click.echo(line)
