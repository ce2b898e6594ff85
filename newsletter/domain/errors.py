"""The one base exception every user-facing failure derives from.

Each subclass lives next to the code that raises it; this module only holds the base so that the
entry points (cli, web, scheduler) can turn any of them into a clean one-line message.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """A failure the user can act on. ``str(err)`` is one line: the problem, then the fix."""

    #: process exit status the CLI uses for this kind of failure
    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def lines(self) -> list[str]:
        """The error as the lines a command prints: one, unless several problems were found."""
        return [str(self)]


class UsageError(NewsletterError):
    """A bad argument or setting: the user must change how they call us."""

    exit_code = 2


def error_line(err: BaseException) -> str:
    """An exception as one safe log line: our errors say it all, others get their type.

    A foreign exception keeps only its first line (a driver's traceback-like detail stays out);
    either way the result goes through ``one_line``, so no message can forge a log line.
    """
    # Imported here: every entry point imports this module at start-up, the text rules only when
    # an error is logged (they compile their patterns and load nh3).
    from newsletter.domain.text import one_line

    if isinstance(err, NewsletterError):
        return one_line(str(err))
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {one_line(lines[0]) if lines else ''}".rstrip(": ")
