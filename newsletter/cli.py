"""The ``newsletter`` command: a thin click shell over the services.

Each command parses its arguments, calls one service function and turns the library's errors
(``NewsletterError``) into one clean line on stderr and an exit status.
"""

from __future__ import annotations

import click

from newsletter.cli_common import NewsletterGroup


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="newsletter")
def cli() -> None:
    """Compile a news site's day of articles into one email edition and deliver it."""


def main() -> None:
    cli(prog_name="newsletter")
