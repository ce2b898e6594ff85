"""What every command module shares: the error-catching group and settings loading."""

from __future__ import annotations

import re
import sys
from datetime import date

import click

from newsletter.config import Settings, load_settings
from newsletter.errors import NewsletterError


class NewsletterGroup(click.Group):
    """Turns every NewsletterError raised by a command into ``error: ...`` and its exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except NewsletterError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)


def settings_from(ctx: click.Context) -> Settings:
    """Load (once per invocation) and validate the settings; bad settings exit 2."""
    root = ctx.find_root()
    if not isinstance(root.obj, dict):
        root.obj = {}
    if "settings" not in root.obj:
        root.obj["settings"] = load_settings()
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
