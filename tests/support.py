"""What the tests share besides fixtures: paths, the sample date, CLI environments, runners.

conftest.py keeps the fixtures only; test modules import helpers from here (and from
tests/factories.py), and the process-level helpers that bench/ uses too live in testkit/.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from testkit.net import free_port, wait_for_port
from testkit.smtp import MisbehavingRelay, SmtpServer, start_smtp_server

if TYPE_CHECKING:
    from click.testing import Result

    from newsletter.config import Settings

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SAMPLE_DATE = "2026-01-27"
TEST_SECRET = "test-secret-key-0123456789abcdef"
SAMPLE_FEED = ROOT / "newsletter" / "sample" / "feed.xml"

__all__ = [
    "ROOT",
    "SAMPLE_DATE",
    "SAMPLE_FEED",
    "TESTS",
    "TEST_SECRET",
    "MisbehavingRelay",
    "SmtpServer",
    "base_env",
    "free_port",
    "invoke_cli",
    "run_cli",
    "send_env",
    "settings_for",
    "start_smtp_server",
    "wait_for_port",
]


def base_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A clean environment for the CLI: no NEWSLETTER_* from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{tmp_path / 'newsletter.db'}",
        # The bundled sample, named: send and run refuse an empty NEWSLETTER_SOURCES.
        NEWSLETTER_SOURCES=str(SAMPLE_FEED),
        NEWSLETTER_TIMEZONE="Africa/Casablanca",
        NEWSLETTER_SEND_TIME="07:00",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def send_env(tmp_path: Path, port: int, **overrides: str) -> dict[str, str]:
    """base_env plus what a send needs, pointed at the test SMTP server on ``port``."""
    values = {
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_SECURITY": "none",
        "NEWSLETTER_FROM": "L’Observateur africain <lettre@exemple.ma>",
        "NEWSLETTER_BASE_URL": "http://localhost:8000",
        "NEWSLETTER_SECRET_KEY": TEST_SECRET,
    }
    return base_env(tmp_path, **{**values, **overrides})


def settings_for(tmp_path: Path, **env: str) -> Settings:
    """Settings of a site at lettre.example.com, built in-process (no .env file is read)."""
    from newsletter.config import load_settings

    values = base_env(
        tmp_path,
        NEWSLETTER_BASE_URL="https://lettre.example.com",
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
        **env,
    )
    return load_settings(env_file=tmp_path / "absent.env", environ=values)


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `newsletter` command in a subprocess (for what only a process can show)."""
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        input=input,
    )


@contextlib.contextmanager
def process_state(env: dict[str, str], cwd: Path) -> Iterator[None]:
    """Run a block as if in a fresh process: exactly ``env`` as os.environ, ``cwd`` as cwd."""
    saved_env = dict(os.environ)
    saved_cwd = Path.cwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


class _RunnerStderr(logging.StreamHandler):
    """Like logging.lastResort: message only, to whatever sys.stderr is at the time."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def invoke_cli(
    *args: str,
    env: dict[str, str],
    cwd: Path,
    input: str | None = None,
    timeout: float | None = None,  # accepted like run_cli's; a call in-process is not cut short
) -> subprocess.CompletedProcess[str]:
    """The `newsletter` command in this process through click's CliRunner: same arguments,
    environment, folder and result shape as ``run_cli``, without a Python start-up per call.

    For tests about what the command says and does; what only a real process shows (signals,
    kill -9, start-up, the installed entry point) stays with ``run_cli``. An exception that
    escapes the command is written to stderr as the interpreter would (with "Traceback").
    """
    result, trace = _invoke(args, env, cwd, input)
    argv = ["newsletter", *args]
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr + trace)


def invoke_cli_bytes(
    *args: str, env: dict[str, str], cwd: Path, input: bytes
) -> subprocess.CompletedProcess[bytes]:
    """``invoke_cli`` for a command that reads and writes bytes (a mail on stdin, say)."""
    result, trace = _invoke(args, env, cwd, input)
    stderr = result.stderr_bytes + trace.encode()
    return subprocess.CompletedProcess(
        ["newsletter", *args], result.exit_code, result.stdout_bytes, stderr
    )


def _invoke(
    args: tuple[str, ...], env: dict[str, str], cwd: Path, input: str | bytes | None
) -> tuple[Result, str]:
    from click.testing import CliRunner

    from newsletter.cli import cli

    # A fresh `newsletter` process configures no logging: its warnings reach stderr through
    # logging's last-resort handler. pytest's own handlers would swallow them here, so a handler
    # that writes to the runner's stderr stands in for it during the call.
    last_resort = _RunnerStderr(logging.WARNING)
    root = logging.getLogger()
    with process_state(env, cwd):
        root.addHandler(last_resort)
        try:
            result = CliRunner().invoke(cli, list(args), input=input, prog_name="newsletter")
        finally:
            root.removeHandler(last_resort)
    trace = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info))  # type: ignore[misc]
    return result, trace


#: Debian's chromium, driven by Playwright in the browser tests (conftest.py's ``browser``).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
