"""What every command module shares: the error-catching group and settings loading."""

from __future__ import annotations

import sys

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
