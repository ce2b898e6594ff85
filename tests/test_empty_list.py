"""An empty list never closes an edition (issue 11, problem 2): `send` and the daemon refuse to
freeze an edition that nobody would get, record nothing, and the same edition goes out to
everyone once the list is imported."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.adapters.store import open_store
from newsletter.daemon import Daemon, shifted_clock
from tests.daemon_support import DAY, local
from tests.daemon_support import settings_for as daemon_settings
from tests.factories import import_addresses, readers
from tests.support import SAMPLE_DATE, invoke_cli, run_cli, send_env


def test_send_before_any_import_exits_1_records_nothing_and_the_edition_goes_out_after_it(
    tmp_path: Path, smtp_server
) -> None:
    env = send_env(tmp_path, smtp_server.port)
    first = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)  # the real command
    assert first.returncode == 1, first.stdout + first.stderr
    assert first.stderr.count("\n") == 1 and "Traceback" not in first.stderr
    assert "no active subscriber" in first.stderr
    assert "newsletter subscribers import" in first.stderr
    assert smtp_server.recipients() == []
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.edition_record(DAY) is None  # not frozen, not "sent to 0"
        assert store.frozen_articles(DAY) is None

    import_addresses(tmp_path, env, readers(3))
    second = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "3 sent this run" in second.stdout
    assert sorted(smtp_server.recipients()) == sorted(readers(3))


def test_the_daemon_warns_once_records_nothing_and_looks_again_every_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "newsletter")
    settings = daemon_settings(tmp_path)
    with open_store(settings.database_url) as store:
        daemon = Daemon(settings, store, clock=shifted_clock(local("2026-01-27T07:05")))
        try:
            daemon.start()
            deadline = datetime.now(UTC) + timedelta(seconds=10)
            while "no active subscriber" not in caplog.text:
                assert datetime.now(UTC) < deadline, caplog.text
                time.sleep(0.05)
            while daemon.scheduler.get_job("send") is None:
                assert datetime.now(UTC) < deadline
                time.sleep(0.05)
            job = daemon.scheduler.get_job("send")
            expected = datetime.now(UTC) + timedelta(minutes=1)
            assert abs(job.next_run_time - expected) < timedelta(seconds=3)
        finally:
            daemon.request_stop("test over")
            daemon.shutdown()
        assert store.edition_record(DAY) is None
    warnings = [r.getMessage() for r in caplog.records if "no active subscriber" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("edition 2026-01-27: no active subscriber")
    assert "looking again every minute until its deadline" in warnings[0]
