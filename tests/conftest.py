"""Shared fixtures only: a real SMTP server in its own process, and a real chromium (helpers:
tests/support.py)."""

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


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's chromium driven by Playwright, one per test module (never `playwright install`);
    each test opens its own context. The browser tests skip when chromium is missing."""
    from tests.support import CHROMIUM, CHROMIUM_ARGS

    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def smtp_server(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    return smtp_factory()


# Longest first. The xdist workers take tests (or a whole xdist_group) in collection order, so a
# test that runs for tens of seconds near the end keeps one worker busy while the other idles.
# The tests marked slow go first, then the modules made of real processes and servers, then the
# many short ones that fill in around them; both workers then finish at about the same time.
HEAVY_MODULES = frozenset(
    {
        "test_browser",
        "test_busy_database",
        "test_crash",
        "test_daemon",
        "test_faults",
        "test_imap",
        "test_package",
        "test_postgres",
        "test_security",
        "test_send",
        "test_send_guarantees",
        "test_web_hardening",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def weight(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return (
            1
            if item.module is not None and item.module.__name__.split(".")[-1] in HEAVY_MODULES
            else 2
        )

    items.sort(key=weight)  # stable: the order inside each weight is pytest's own
