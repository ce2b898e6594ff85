"""The daemon's APScheduler jobs, in-process: their triggers come from the timetable (in the
shifted time of ``run --now`` too), a late run is run once, and SIGTERM waits for the send's work
in flight then returns 0 promptly."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time as systime
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.date import DateTrigger

from newsletter.adapters.store import open_store
from newsletter.daemon import Daemon, shifted_clock
from newsletter.daemon import jobs as daemon_jobs
from newsletter.domain import DeliveryStatus, EditionStatus, SendReport
from tests.daemon_support import DAY, local, settings_for


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = systime.monotonic() + timeout
    while not condition():
        assert systime.monotonic() < deadline, "timed out"
        systime.sleep(0.02)


def fake_sender(sent: list[date], *, in_flight: float = 0.0, hold_until_stopped: bool = False):
    """A send_edition that sends to nobody; it can wait for its stop event like a long send."""

    def send_edition(store, settings, day, *, stop, on_frozen) -> SendReport:
        on_frozen(5)
        if hold_until_stopped:
            stop.wait(30)
        systime.sleep(in_flight)  # the messages in flight when the stop came
        sent.append(day)
        left = 3 if stop.is_set() else 0
        store.record_edition_status(day, EditionStatus.SENDING if left else EditionStatus.SENT)
        return SendReport(day, {DeliveryStatus.SENT: 5 - left, DeliveryStatus.PENDING: left})

    return send_edition


@pytest.fixture
def stopped_daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.request_stop("test end")
        daemon.shutdown()


def test_jobs_are_scheduled_from_the_timetable_in_shifted_time(
    tmp_path: Path,
    stopped_daemons: list[Daemon],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "newsletter")
    sent: list[date] = []
    monkeypatch.setattr(daemon_jobs, "send_edition", fake_sender(sent))
    settings = settings_for(tmp_path, NEWSLETTER_EDITORS="redaction@exemple.ma")
    with open_store(settings.database_url) as store:
        store.record_preview_sent(DAY, 1)  # today's preview went out already
        # Two seconds before the send time of 2026-01-27, on the daemon's shifted clock.
        daemon = Daemon(settings, store, clock=shifted_clock(local("2026-01-27T06:59:58")))
        stopped_daemons.append(daemon)
        began = systime.monotonic()
        daemon.start()
        assert daemon.lease.holds()
        wait_until(lambda: "next send: edition 2026-01-27" in caplog.text)
        # The announcement is made inside the jobs' first looks, and each job plans its next run
        # when it returns: under load the preview job can be between the two.
        wait_until(lambda: all(daemon.scheduler.get_job(job) for job in ("send", "preview")))
        for job in daemon.scheduler.get_jobs():
            assert job.coalesce and job.max_instances == 1 and job.misfire_grace_time is None
            assert isinstance(job.trigger, DateTrigger)
        real_now = datetime.now(UTC)
        send_job = daemon.scheduler.get_job("send")
        assert abs(send_job.next_run_time - (real_now + timedelta(seconds=2))) < timedelta(
            seconds=1
        )
        # The next preview is tomorrow's, at 06:00: 23 h and 2 s from now in real time.
        preview_job = daemon.scheduler.get_job("preview")
        expected = real_now + timedelta(hours=23, seconds=2)
        assert abs(preview_job.next_run_time - expected) < timedelta(seconds=1)
        assert sent == []

        wait_until(lambda: sent == [DAY])
        assert 1.5 < systime.monotonic() - began < 5  # at the shifted send time, not before
        wait_until(lambda: "next send: edition 2026-01-28" in caplog.text)
        assert "edition 2026-01-27: sending" in caplog.text  # on time, not a catch-up
        # Replanned after its run: tomorrow's send time, 24 h on.
        send_job = daemon.scheduler.get_job("send")
        expected = datetime.now(UTC) + timedelta(hours=24)
        assert abs(send_job.next_run_time - expected) < timedelta(seconds=2)
        assert daemon.scheduler.get_job("lease").next_run_time < datetime.now(UTC) + timedelta(
            seconds=11
        )


def test_a_held_edition_is_looked_at_again_every_minute(
    tmp_path: Path, stopped_daemons: list[Daemon], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "newsletter")
    settings = settings_for(tmp_path)
    with open_store(settings.database_url) as store:
        store.set_held(DAY, True)
        daemon = Daemon(settings, store, clock=shifted_clock(local("2026-01-27T07:05")))
        stopped_daemons.append(daemon)
        daemon.start()
        wait_until(lambda: "next send" in caplog.text)
        wait_until(lambda: daemon.scheduler.get_job("send") is not None)
        job = daemon.scheduler.get_job("send")
        expected = datetime.now(UTC) + timedelta(minutes=1)
        assert abs(job.next_run_time - expected) < timedelta(seconds=2)  # "within a minute"


def test_a_run_missed_while_the_process_was_paused_runs_once_coalesced(
    tmp_path: Path,
    stopped_daemons: list[Daemon],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "newsletter")
    sent: list[date] = []
    monkeypatch.setattr(daemon_jobs, "send_edition", fake_sender(sent))
    settings = settings_for(tmp_path)
    with open_store(settings.database_url) as store:
        store.record_edition_status(date(2026, 1, 26), EditionStatus.SENT)
        daemon = Daemon(settings, store, clock=shifted_clock(local("2026-01-27T06:59:59")))
        stopped_daemons.append(daemon)
        daemon.start()
        wait_until(lambda: "next send: edition 2026-01-27" in caplog.text)
        # As if the process were paused past the send time: the scheduler does not look at its
        # jobs for 3 s, then finds the send 2 s late.
        daemon.scheduler.pause()
        systime.sleep(3)
        assert sent == []
        daemon.scheduler.resume()
        wait_until(lambda: "next send: edition 2026-01-28" in caplog.text)
        systime.sleep(0.5)
    assert sent == [DAY]  # once
    assert caplog.text.count("edition 2026-01-27: sending") == 1
    assert "was missed by" not in caplog.text  # APScheduler ran it late rather than dropping it


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)
def test_sigterm_during_a_send_waits_for_its_work_in_flight_and_returns_0_promptly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "newsletter")
    sent: list[date] = []
    monkeypatch.setattr(
        daemon_jobs, "send_edition", fake_sender(sent, in_flight=1.0, hold_until_stopped=True)
    )
    settings = settings_for(tmp_path)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signalled: list[float] = []

    def signal_mid_send() -> None:
        try:
            wait_until(lambda: "5 recipients to send to" in caplog.text)
        finally:  # a send that never starts must fail the test, not leave run() blocked
            signalled.append(systime.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

    with open_store(settings.database_url) as store:
        daemon = Daemon(settings, store, clock=lambda: local("2026-01-27T07:05"))
        sender = threading.Thread(target=signal_mid_send)
        sender.start()
        try:
            code = daemon.run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            sender.join(10)
        returned = systime.monotonic()
        assert store.lock_holder("scheduler") is None  # released
    assert code == 0
    assert sent == [DAY]  # the work in flight finished before run() returned
    assert 1.0 <= returned - signalled[0] < 5
    messages = [r.getMessage() for r in caplog.records]
    assert "SIGTERM received: finishing the messages in flight, then stopping" in messages
    assert "edition 2026-01-27: send interrupted; the next sender continues it" in messages
    assert messages[-1] == "stopped"
    assert not daemon.scheduler.running


def test_log_timestamps_are_in_the_site_zone_whatever_the_server_zone() -> None:
    import logging
    from zoneinfo import ZoneInfo

    from newsletter.daemon.runner import LOG_FORMAT, SiteZoneFormatter

    record = logging.LogRecord("newsletter", logging.INFO, __file__, 1, "sent", None, None)
    record.created = 1_769_493_600.0  # 2026-01-27T07:00:00 in Casablanca (UTC+1), 06:00 UTC
    line = SiteZoneFormatter(LOG_FORMAT, ZoneInfo("Africa/Casablanca")).format(record)
    assert line.startswith("2026-01-27T07:00:00+0100"), line
    tokyo = SiteZoneFormatter(LOG_FORMAT, ZoneInfo("Asia/Tokyo")).format(record)
    assert tokyo.startswith("2026-01-27T15:00:00+0900"), tokyo


def test_the_daemon_folds_old_clicks_on_taking_the_lease_then_daily(
    tmp_path: Path,
    stopped_daemons: list[Daemon],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.domain.clicks import Click, Tally
    from tests.factories import new_subscriber

    caplog.set_level(logging.INFO, "newsletter")
    # 30 s after taking the lease in production; at once here
    monkeypatch.setattr("newsletter.daemon.runner.FIRST_FOLD_AFTER", timedelta(0))
    settings = settings_for(tmp_path, NEWSLETTER_CLICK_RETENTION_DAYS="30")
    with open_store(settings.database_url) as store:
        store.add_many([new_subscriber("lectrice@exemple.ma")])
        reader = store.find_by_email("lectrice@exemple.ma").id
        clock = shifted_clock(local("2026-01-27T12:00"))
        store.record_clicks(
            [
                Click(date(2025, 12, 1), "aaaaaa", reader, clock() - timedelta(days=57)),
                Click(DAY, "bbbbbb", reader, clock() - timedelta(days=1)),  # recent: kept
            ]
        )
        daemon = Daemon(settings, store, clock=clock)
        stopped_daemons.append(daemon)
        daemon.start()
        wait_until(lambda: "click retention: 1 click row past 30 days folded" in caplog.text)
        assert [c.article_ref for c in store.click_rows(DAY)] == ["bbbbbb"]
        assert store.click_rows(date(2025, 12, 1)) == []
        assert store.article_tallies([date(2025, 12, 1)]) == {
            (date(2025, 12, 1), "aaaaaa"): Tally(1, 1)
        }
        wait_until(lambda: daemon.scheduler.get_job("clicks") is not None)
        job = daemon.scheduler.get_job("clicks")
        expected = datetime.now(UTC) + timedelta(days=1)
        assert abs(job.next_run_time - expected) < timedelta(seconds=5)
