"""``newsletter check``: every problem of the set-up in one run, and where each setting comes from."""

from __future__ import annotations

import click

from newsletter.config import (
    SECRET_SETTINGS,
    SETTINGS,
    ConfigError,
    Origins,
    Purpose,
    load_settings,
    setting_origins,
    unknown_settings,
)
from newsletter.domain.urls import redact_url


@click.command()
@click.option(
    "--settings",
    "show_settings",
    is_flag=True,
    help="Only list every setting's effective value and where it comes from (environment, "
    ".env or default), secrets masked.",
)
def check(show_settings: bool) -> None:
    """Check everything the daily send needs; send nothing, change nothing.

    Looks at the settings, the database (reachable, schema version, writable), the relay
    (connect, EHLO, STARTTLS and AUTH as configured; no MAIL), each source and how many of its
    articles fall in the next edition, the editors' addresses, the base URL, and the From
    domain's SPF, DKIM and DMARC records in DNS. Prints one line per finding, and after a missing
    or wrong DNS record a "publish:" line with the record to publish. Exit status: 0 when nothing
    is wrong, 1 when a problem was found.
    """
    if show_settings:
        for line in settings_lines(setting_origins(), unknown_settings()):
            click.echo(line)
        return
    problems = 0
    try:
        settings = load_settings()
    except ConfigError as err:
        for line in err.lines():
            click.echo(f"{'problem:':<9}settings: {line}")
        click.echo("the other checks need valid settings: fix the lines above and run check again")
        raise SystemExit(1) from None
    requirements = settings.problems_for(Purpose.SEND)
    for problem in requirements:
        click.echo(f"{'problem:':<9}settings: {problem}")
    problems += len(requirements)
    if not requirements:
        click.echo(f"{'ok:':<9}settings: everything send and run need is set")

    from newsletter.services.check import Level, check_everything

    for finding in check_everything(settings):
        click.echo(str(finding))
        if finding.publish:
            click.echo(f"{'publish:':<9}{finding.publish}")
        problems += finding.level is Level.PROBLEM
    if problems:
        noun = "problem" if problems == 1 else "problems"
        click.echo(f"{problems} {noun} found: the daily send would fail or go out wrong")
        raise SystemExit(1)
    click.echo("all good: the daily send has what it needs")


def settings_lines(origins: Origins, unknown: tuple[object, ...]) -> list[str]:
    """Every setting as ``NAME=value  (origin)``; secrets and the database password masked."""
    width = max(len(doc.name) for doc in SETTINGS)
    lines = [
        f"# each setting, where it comes from (environment, .env = {origins.env_file}, or"
        " default) and its value"
    ]
    for doc in SETTINGS:
        value = origins.values[doc.name]
        if doc.name in SECRET_SETTINGS:
            shown = "(set, hidden)" if value else "(not set)"
        elif doc.name == "NEWSLETTER_DATABASE_URL":
            shown = redact_url(value)
        else:
            shown = value if value else "(empty)"
        lines.append(f"{doc.name:<{width}}  {origins.origin[doc.name]:<11}  {shown}")
    lines.extend(f"warning: {name}" for name in unknown)
    return lines
