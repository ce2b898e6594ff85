"""Shared fixtures: a real SMTP server in its own process, and the real CLI as a subprocess."""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SAMPLE_DATE = "2026-01-27"
TEST_SECRET = "test-secret-key-0123456789abcdef"


def free_port() -> int:
    # aiosmtpd's Controller cannot take port 0, so we ask the OS for a free one and pass it on.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@dataclass
class SmtpServer:
    port: int
    out: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log(self) -> list[dict]:
        path = self.out / "log.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def raw_messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.out.glob("*.eml"))]

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
            for raw in self.raw_messages()
        ]

    def recipients(self) -> list[str]:
        return [rcpt for entry in self.log() for rcpt in entry["rcpt_tos"]]

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.log()) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def start_smtp_server(out: Path, *fault_args: str, port: int | None = None) -> SmtpServer:
    """tests/smtp_server.py in its own process, listening once this returns."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(TESTS / "smtp_server.py"),
            "--port",
            str(port),
            "--out",
            str(out),
            *fault_args,
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return SmtpServer(port, out, process)


@pytest.fixture
def smtp_factory(tmp_path: Path) -> Iterator[Callable[..., SmtpServer]]:
    """Start aiosmtpd in its own process, optionally with faults (see tests/smtp_server.py)."""
    started: list[SmtpServer] = []

    def start(*fault_args: str, out: Path | None = None, port: int | None = None) -> SmtpServer:
        server = start_smtp_server(out or tmp_path / f"smtp-{len(started)}", *fault_args, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    return smtp_factory()


def base_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A clean environment for the CLI: no NEWSLETTER_* from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_DATABASE_URL=f"sqlite:///{tmp_path / 'newsletter.db'}",
        NEWSLETTER_TIMEZONE="Africa/Casablanca",
        NEWSLETTER_SEND_TIME="07:00",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def send_env(tmp_path: Path, port: int, **overrides: str) -> dict[str, str]:
    """base_env plus what a send needs, pointed at the test SMTP server on ``port``."""
    return base_env(
        tmp_path,
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(port),
        NEWSLETTER_SMTP_SECURITY="none",
        NEWSLETTER_FROM="L’Observateur africain <lettre@exemple.ma>",
        NEWSLETTER_BASE_URL="http://localhost:8000",
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        **overrides,
    )


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        input=input,
    )
