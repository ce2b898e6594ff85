"""``newsletter bounces fetch``: poll the bounce mailbox (NEWSLETTER_BOUNCE_IMAP_URL) once.

The ``bounces`` group (cli/bounces.py) holds it.
"""

from __future__ import annotations

import click

from newsletter.cli.common import settings_from
from newsletter.domain.errors import UsageError


class NoBounceMailbox(UsageError):
    """NEWSLETTER_BOUNCE_IMAP_URL is empty: nothing to poll (exit 2)."""


@click.command("fetch")
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Poll the bounce mailbox once: hand each new returned message to the bounce handling.

    Handled messages are flagged $NewsletterHandled and seen, never deleted. Prints one line per
    message and a summary. Exit status: 0 polled, 1 the mailbox cannot be reached or the poll
    stopped early (the rest waits for the next poll), 2 NEWSLETTER_BOUNCE_IMAP_URL is not set.
    """
    from newsletter.adapters.store import open_store
    from newsletter.services.mailbox import poll_bounce_mailbox

    settings = settings_from(ctx)
    if not settings.bounce_imap_url:
        raise NoBounceMailbox(
            "no bounce mailbox to poll: NEWSLETTER_BOUNCE_IMAP_URL is not set",
            "set it to imaps://user@host/INBOX and NEWSLETTER_BOUNCE_IMAP_PASSWORD, or route "
            "bounces+* to `newsletter bounce-mail`",
        )
    with open_store(settings.database_url) as store:
        report = poll_bounce_mailbox(store, settings)
    for line in report.lines:
        click.echo(line)
    click.echo(report.summary())
    if report.error:
        click.echo(f"error: {report.error}", err=True)
        ctx.exit(1)
