"""The second attack round against the web app, each break replayed through the real server.

Same harness as test_web.py (uvicorn on a free port, a real SQLite file, the aiosmtpd process):
out-of-range dates, a locked database, spoofed X-Forwarded-For, replayed confirmation links,
and oversized or slow request headers.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from newsletter.domain import SubscriberStatus
from newsletter.tokens import Purpose
from tests.conftest import SmtpServer
from tests.test_web import ADMIN_PASSWORD, SAMPLE_DATE, LiveApp, form_token_of, running_app


class Records(logging.Handler):
    """Every log record of the loggers it is attached to (uvicorn's and ours)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.exc_info or r.stack_info]

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR]


@contextmanager
def log_records() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "newsletter")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture
def live(tmp_path: Path, smtp_factory: Callable[..., SmtpServer]) -> Iterator[LiveApp]:
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD) as app:
        yield app


# ---------------------------------------------------------------------------------------------
# Dates out of range on the editors' pages
# ---------------------------------------------------------------------------------------------

FAR_DAYS = ("0001-01-01", "0001-01-02", "1969-12-31", "9999-12-31", "9999-12-30")


def test_editor_routes_refuse_dates_out_of_range_without_a_traceback(live: LiveApp) -> None:
    with live.client(auth=("editor", ADMIN_PASSWORD)) as http, log_records() as logs:
        token = form_token_of(http.get(f"/preview/{SAMPLE_DATE}").text)
        for day in FAR_DAYS:
            preview = http.get(f"/preview/{day}")
            assert preview.status_code == 404, (day, preview.status_code)
            assert "Page introuvable" in preview.text
            for action in ("test", "hold", "release"):
                answer = http.post(
                    f"/editor/{day}/{action}",
                    data={"form_token": token, "address": "redaction@example.com"},
                )
                assert answer.status_code == 404, (day, action, answer.status_code)
                assert "Page introuvable" in answer.text
        # The edges of the accepted range still work.
        for day in ("1970-01-01", "9998-12-31"):
            assert http.get(f"/preview/{day}").status_code == 200
    assert logs.tracebacks() == [] and logs.errors() == []


# ---------------------------------------------------------------------------------------------
# A busy database: 503 with Retry-After, never 500
# ---------------------------------------------------------------------------------------------


@contextmanager
def write_lock_held(live: LiveApp) -> Iterator[None]:
    """Another process's writer: BEGIN IMMEDIATE on the same SQLite file, held for the block."""
    database = live.store.engine.url.database
    assert database
    holder = sqlite3.connect(database, isolation_level=None, timeout=5)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_locked_database_gets_503_with_retry_after(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_TEST_BUSY_TIMEOUT_MS", "300")  # the store's bounded wait
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD) as live:
        live.add("busy@example.com")
        token = live.token(Purpose.UNSUBSCRIBE, "busy@example.com")
        with live.client() as http, log_records() as logs:
            preview = http.get(f"/preview/{SAMPLE_DATE}", auth=("editor", ADMIN_PASSWORD))
            editor_token = form_token_of(preview.text)
            with write_lock_held(live):
                answers = [
                    http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}),
                    http.post("/subscribe", data={"email": "new@example.com"}),
                    http.post(
                        f"/editor/{SAMPLE_DATE}/hold",
                        data={"form_token": editor_token},
                        auth=("editor", ADMIN_PASSWORD),
                    ),
                ]
            for answer in answers:
                assert answer.status_code == 503, (answer.request.url.path, answer.status_code)
                assert answer.headers["retry-after"].isdigit()
                assert "Service momentanément indisponible" in answer.text
                assert answer.headers["content-security-policy"]  # the normal page
            assert live.status("busy@example.com") is SubscriberStatus.ACTIVE
            # The lock gone, the mail client's retry goes through.
            retried = http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
            assert retried.status_code == 200
        assert live.status("busy@example.com") is SubscriberStatus.UNSUBSCRIBED
        assert logs.tracebacks() == []
