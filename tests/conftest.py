"""Shared fixtures only: a real SMTP server in its own process (helpers: tests/support.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.smtp import SmtpServer, start_smtp_server


@pytest.fixture
def smtp_factory(tmp_path: Path) -> Iterator[Callable[..., SmtpServer]]:
    """Start aiosmtpd in its own process, optionally with faults (see testkit/smtp_server.py)."""
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
