"""What every command module shares: the error-catching group and settings loading."""

from __future__ import annotations

import os
import re
import sys
from datetime import date

import click

from newsletter.config import Purpose, Settings, load_settings
from newsletter.domain.errors import NewsletterError


class NewsletterGroup(click.Group):
    """Turns every NewsletterError raised by a command into ``error: ...`` and its exit code.

    A database failure the store did not translate (SQLAlchemy's OperationalError: disk full,
    connection lost) gets the same one line instead of a traceback and SQLAlchemy's three lines.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except NewsletterError as err:
            for line in err.lines():
                click.echo(f"error: {_without_password(line, ctx)}", err=True)
            sys.exit(err.exit_code)
        except Exception as err:
            if not _is_database_error(err):
                raise
            click.echo(f"error: {_without_password(_database_message(err), ctx)}", err=True)
            sys.exit(DATABASE_ERROR_EXIT)


# EX_TEMPFAIL, like DatabaseBusy: a database that failed mid-command is usually worth a retry.
DATABASE_ERROR_EXIT = 75


def _is_database_error(err: Exception) -> bool:
    # Only look if SQLAlchemy was loaded: importing it here would slow every command's start-up.
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(err, exc.OperationalError)


def _database_message(err: Exception) -> str:
    # The driver's own message, without SQLAlchemy's [SQL: ...] and background-link lines.
    orig = getattr(err, "orig", None) or err
    problem = " ".join(str(orig).split()) or type(orig).__name__
    return (
        f"the database failed: {problem} (check NEWSLETTER_DATABASE_URL and the database server, "
        "then run the command again)"
    )


def _without_password(message: str, ctx: click.Context) -> str:
    """``message`` with the database password masked, wherever a library quoted it."""
    root = ctx.find_root()
    settings = root.obj.get("settings") if isinstance(root.obj, dict) else None
    url = settings.database_url if settings else os.environ.get("NEWSLETTER_DATABASE_URL", "")
    if "@" not in url:  # no user info, so no password to hide
        return message
    from newsletter.adapters.store import mask_password

    return mask_password(message, url)


def settings_from(ctx: click.Context, purpose: Purpose | None = None) -> Settings:
    """Load (once per invocation) and validate the settings; bad settings exit 2.

    A command that mails or serves passes its ``purpose``: everything it cannot go without is
    then checked in the same pass, unknown ``NEWSLETTER_*`` names included, and every problem
    is reported at once. Other commands only warn about an unknown name.
    """
    root = ctx.find_root()
    if not isinstance(root.obj, dict):
        root.obj = {}
    if "settings" not in root.obj:
        settings = load_settings(purpose=purpose)
        if purpose is None:
            for unknown in settings.unknown:
                click.echo(f"warning: {unknown}", err=True)
        root.obj["settings"] = settings
    return root.obj["settings"]


class IsoDate(click.ParamType):
    """A calendar date written exactly YYYY-MM-DD; anything else is a usage error (exit 2)."""

    name = "YYYY-MM-DD"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> date:
        if isinstance(value, date):
            return value
        text = str(value)
        if _ISO_DATE.match(text):
            try:
                day = date.fromisoformat(text)
            except ValueError:
                pass
            else:
                # An edition's window starts the day before: year 1 or 9999 cannot be computed.
                if date.min < day < date.max:
                    return day
                self.fail(
                    f"{text!r} is out of range; expected 0001-01-02 to 9999-12-30", param, ctx
                )
        self.fail(f"{text!r} is not a date; expected YYYY-MM-DD, e.g. 2026-01-27", param, ctx)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_DATE = IsoDate()
