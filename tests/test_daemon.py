"""`newsletter run` as an operator runs it: real daemon processes, a real SQLite file, a real SMTP
server (aiosmtpd in its own process) and real signals.

The daemons start with ``--now`` (the documented testing aid) a few minutes after the 2026-01-27
send time (07:00 Africa/Casablanca, +01:00), the edition that holds the bundled sample articles.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from newsletter.adapters.store import open_store
from newsletter.domain import DeliveryStatus, EditionStatus
from tests.support import SAMPLE_DATE, SmtpServer, base_env, run_cli, send_env

DAY = date.fromisoformat(SAMPLE_DATE)
AFTER_SEND_TIME = "2026-01-27T07:05:00+01:00"
STOP_WITHIN = 15.0


daemon_env = send_env


class Daemon:
    """One `newsletter run` process; its stdout and stderr go to a file we can read as it runs."""

    def __init__(self, tmp_path: Path, env: dict[str, str], name: str, now: str) -> None:
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "run", "--now", now],
            cwd=tmp_path,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}):\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM) -> float:
        """Signal it and wait; returns how long it took to exit (asserting it did, with 0)."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(STOP_WITHIN + 5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"still running {STOP_WITHIN + 5}s after {signum}") from None
        took = time.monotonic() - started
        assert code == 0, self.output
        assert took < STOP_WITHIN, f"took {took:.1f}s to stop:\n{self.output}"
        return took

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.close()


def start(
    daemons: list[Daemon], tmp_path: Path, env: dict[str, str], now: str = AFTER_SEND_TIME
) -> Daemon:
    daemon = Daemon(tmp_path, env, f"daemon-{len(daemons)}", now)
    daemons.append(daemon)
    return daemon


def add_subscribers(tmp_path: Path, env: dict[str, str], count: int) -> list[str]:
    addresses = [f"lecteur{i}@exemple.ma" for i in range(count)]
    csv = tmp_path / "subscribers.csv"
    csv.write_text("email;name\n" + "\n".join(f"{a};Lecteur" for a in addresses) + "\n")
    proc = run_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return addresses


def assert_clean(*daemons: Daemon) -> None:
    for daemon in daemons:
        assert "Traceback" not in daemon.output, daemon.output
        assert "stopped" in daemon.output.splitlines()[-1], daemon.output


def ledger_counts(env: dict[str, str]) -> dict[str, int]:
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        return store.delivery_counts(DAY)


# ---------------------------------------------------------------------------------------------


def test_catch_up_send_then_a_second_daemon_sends_nothing_twice(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    env = daemon_env(tmp_path, smtp_server.port)
    for address in ("aicha@exemple.ma", "karim@exemple.ma", "fatou@exemple.ma"):
        proc = run_cli("subscribers", "add", address, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr

    first = start(daemons, tmp_path, env)
    first.wait_for("edition 2026-01-27: catching up")
    first.wait_for("(complete)")
    first.wait_for("next send: edition 2026-01-28 at 2026-01-28 07:00 +0100")
    smtp_server.wait_for(3)

    second = start(daemons, tmp_path, env)
    second.wait_for("standby: the scheduler lock is held by")
    first.stop()
    # The standby takes the lock over, finds the edition sent, and only says when it sends next.
    second.wait_for("lock taken")
    second.wait_for("next send: edition 2026-01-28")
    second.stop()

    assert sorted(smtp_server.recipients()) == [
        "aicha@exemple.ma",
        "fatou@exemple.ma",
        "karim@exemple.ma",
    ]
    assert "sending" not in second.output and "catching up" not in second.output
    assert_clean(first, second)
    status = run_cli("status", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert status.stdout.startswith("edition 2026-01-27: sent"), status.stdout


@pytest.mark.slow
def test_two_daemons_started_together_deliver_300_once_each_within_a_minute(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    # The acceptance: two `newsletter run` a few minutes after the send time, one database.
    env = daemon_env(tmp_path, smtp_server.port)
    addresses = add_subscribers(tmp_path, env, 300)
    began = time.monotonic()
    pair = [start(daemons, tmp_path, env), start(daemons, tmp_path, env)]
    smtp_server.wait_for(300, timeout=60)
    assert len(smtp_server.recipients()) == 300, time.monotonic() - began
    assert time.monotonic() - began < 60
    sender = next(d for d in pair if "(complete)" in d.output or "catching up" in d.output)
    sender.wait_for("(complete)")
    sender.wait_for("next send: edition 2026-01-28")
    other = pair[1] if sender is pair[0] else pair[0]
    other.wait_for("standby")
    time.sleep(1)  # anything a second sender would do, it would have started by now
    for daemon in pair:
        daemon.stop()

    received = Counter(smtp_server.recipients())
    assert sorted(received) == sorted(addresses)
    assert set(received.values()) == {1}
    assert_clean(*pair)
    assert ledger_counts(env) == {DeliveryStatus.SENT: 300}


@pytest.mark.slow
def test_sigterm_mid_send_records_what_went_out_and_a_restart_completes_it(
    tmp_path: Path, smtp_factory, daemons: list[Daemon]
) -> None:
    smtp = smtp_factory("--delay", "0.1")  # a slow relay: about 40 messages a second
    env = daemon_env(tmp_path, smtp.port)
    add_subscribers(tmp_path, env, 300)

    first = start(daemons, tmp_path, env)
    smtp.wait_for(20)
    first.stop()
    assert "send interrupted" in first.output
    counts = ledger_counts(env)
    # Every message the relay accepted is recorded as sent, nothing is left claimed, work remains.
    assert counts.get(DeliveryStatus.SENT, 0) == len(smtp.recipients()) < 300
    assert counts.get(DeliveryStatus.SENDING, 0) == 0

    second = start(daemons, tmp_path, env)
    second.wait_for("(complete)", timeout=60)
    second.stop()
    received = Counter(smtp.recipients())
    assert len(received) == 300 and set(received.values()) == {1}
    assert_clean(first, second)


@pytest.mark.slow
def test_kill_9_of_the_sender_the_standby_takes_over_at_once_and_completes(
    tmp_path: Path, smtp_factory, daemons: list[Daemon]
) -> None:
    smtp = smtp_factory("--delay", "0.1")
    env = daemon_env(tmp_path, smtp.port)
    add_subscribers(tmp_path, env, 200)
    first = start(daemons, tmp_path, env)
    first.wait_for("to send to")
    second = start(daemons, tmp_path, env)
    second.wait_for("standby")
    smtp.wait_for(10)
    first.process.kill()
    first.process.wait(10)
    # Same host, dead pid: no need to wait the 30 s of its lease.
    second.wait_for("no longer exists; taking over", timeout=15)
    second.wait_for("(complete)", timeout=60)
    second.stop()
    received = Counter(smtp.recipients())
    assert len(received) == 200
    # At least once across a crash: only what was in flight at the kill may arrive twice.
    assert sum(received.values()) - 200 <= 4 * 2
    assert ledger_counts(env)[DeliveryStatus.SENT] == 200
    assert_clean(second)


@pytest.mark.slow
def test_a_sender_that_loses_its_lock_stops_sending(
    tmp_path: Path, smtp_factory, daemons: list[Daemon]
) -> None:
    smtp = smtp_factory("--delay", "0.2")  # slow enough that the send outlasts a renewal
    env = daemon_env(tmp_path, smtp.port, NEWSLETTER_SMTP_CONNECTIONS="2")
    add_subscribers(tmp_path, env, 300)
    daemon = start(daemons, tmp_path, env)
    daemon.wait_for("to send to")
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        holder = store.lock_holder("scheduler")
        assert holder is not None
        # Someone else's lease now (as if ours had expired while the database was away).
        assert store.take_over_lock("scheduler", holder[0], "elsewhere:1:intruder", 300)
    daemon.wait_for("lock lost (now held by elsewhere:1:intruder)", timeout=20)
    daemon.wait_for("send interrupted")
    stopped_at = len(smtp.recipients())
    time.sleep(1)
    assert len(smtp.recipients()) == stopped_at < 300  # no more messages from this process
    daemon.stop()
    counts = ledger_counts(env)
    assert counts[DeliveryStatus.SENT] == stopped_at
    assert counts.get(DeliveryStatus.SENDING, 0) == 0
    assert_clean(daemon)


@pytest.mark.slow
def test_a_daemon_paused_past_the_send_time_sends_once_when_it_resumes(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    env = daemon_env(tmp_path, smtp_server.port)
    add_subscribers(tmp_path, env, 3)
    daemon = start(daemons, tmp_path, env, now="2026-01-27T06:59:57+01:00")
    daemon.wait_for("next send: edition 2026-01-27 at 2026-01-27 07:00 +0100")
    # SIGSTOP past the send time and past a lease renewal (every 10 s), within the lease (25 s).
    daemon.process.send_signal(signal.SIGSTOP)
    time.sleep(13)
    assert smtp_server.log() == []
    daemon.process.send_signal(signal.SIGCONT)
    daemon.wait_for("(complete)")
    daemon.wait_for("next send: edition 2026-01-28")
    time.sleep(1)
    daemon.stop()
    assert sorted(Counter(smtp_server.recipients()).values()) == [1, 1, 1]
    # Run once, late: within the on-time tolerance it is a send, not a catch-up.
    assert daemon.output.count("edition 2026-01-27: sending") == 1
    assert "catching up" not in daemon.output and "lock lost" not in daemon.output
    assert "missed by" not in daemon.output and "maximum number" not in daemon.output
    assert_clean(daemon)


def test_past_the_deadline_the_edition_is_recorded_skipped_late_and_nothing_is_sent(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    env = daemon_env(tmp_path, smtp_server.port)
    add_subscribers(tmp_path, env, 3)
    daemon = start(daemons, tmp_path, env, now="2026-01-27T14:00:00+01:00")
    daemon.wait_for("next send: edition 2026-01-28")
    daemon.stop()
    assert "WARNING edition 2026-01-27: recorded as skipped-late" in daemon.output
    assert smtp_server.log() == []
    status = run_cli("status", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert "skipped-late" in status.stdout
    assert_clean(daemon)


def test_a_held_edition_waits_and_goes_out_once_released(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    env = daemon_env(tmp_path, smtp_server.port)
    add_subscribers(tmp_path, env, 3)
    hold = run_cli("hold", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert hold.returncode == 0 and "held" in hold.stdout, hold.stderr
    status = run_cli("status", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert "held" in status.stdout

    daemon = start(daemons, tmp_path, env)
    daemon.wait_for("held by an editor, not sent")
    daemon.wait_for("next send")
    daemon.stop()
    assert smtp_server.log() == []

    release = run_cli("release", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert release.returncode == 0 and "released" in release.stdout, release.stderr
    daemon = start(daemons, tmp_path, env)
    daemon.wait_for("(complete)")
    daemon.stop()
    assert len(smtp_server.recipients()) == 3
    assert_clean(*daemons)


def test_editors_get_the_preview_once_before_the_send_time(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    env = daemon_env(tmp_path, smtp_server.port, NEWSLETTER_EDITORS="redaction@exemple.ma")
    add_subscribers(tmp_path, env, 3)
    for _ in range(2):  # a restart must not mail the editors again
        daemon = start(daemons, tmp_path, env, now="2026-01-27T06:30:00+01:00")
        daemon.wait_for("next send: edition 2026-01-27 at 2026-01-27 07:00 +0100")
        daemon.stop()
    assert smtp_server.recipients() == ["redaction@exemple.ma"]
    assert "editors' preview sent to 1 address;" in daemons[0].output
    assert "preview sent" not in daemons[1].output
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.preview_sent_at(DAY) is not None
        # The previous day was never sent: recorded, not silently ignored.
        previous = store.edition_record(date(2026, 1, 26))
        assert previous is not None and previous.status is EditionStatus.SKIPPED_LATE
    assert_clean(*daemons)


def test_the_editors_preview_and_the_scheduled_send_carry_the_curated_edition(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    """What the editors decided (issue 14) is what the preview mail and the send carry."""
    env = daemon_env(tmp_path, smtp_server.port, NEWSLETTER_EDITORS="redaction@exemple.ma")
    add_subscribers(tmp_path, env, 1)
    excluded = (
        "https://www.example.com/2026/01/26/decentralisation-projet-de-loi-adopte-en-commission/"
    )
    for args in (("exclude", excluded), ("subject", "Le choix de la rédaction")):
        proc = run_cli("edition", *args, "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    # five seconds before the send time: the preview first, then the send
    daemon = start(daemons, tmp_path, env, now="2026-01-27T06:59:55+01:00")
    daemon.wait_for("editors' preview sent to 1 address;")
    daemon.wait_for("(complete)", timeout=60)
    daemon.stop()
    messages = {str(m["To"].addresses[0].addr_spec): m for m in smtp_server.messages()}
    assert sorted(messages) == ["lecteur0@exemple.ma", "redaction@exemple.ma"]
    assert str(messages["lecteur0@exemple.ma"]["Subject"]) == "Le choix de la rédaction"
    assert str(messages["redaction@exemple.ma"]["Subject"]).endswith("Le choix de la rédaction")
    for message in messages.values():
        assert excluded not in message.as_string()
    assert_clean(*daemons)


def test_sigint_stops_a_standby_cleanly_too(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    env = daemon_env(tmp_path, smtp_server.port)
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.acquire_lock("scheduler", "elsewhere:1:other", 300)
    daemon = start(daemons, tmp_path, env)
    daemon.wait_for("standby: the scheduler lock is held by elsewhere:1:other")
    daemon.stop(signal.SIGINT)
    assert_clean(daemon)


def test_a_signal_while_the_daemon_starts_up_stops_it_cleanly(
    tmp_path: Path, smtp_server: SmtpServer, daemons: list[Daemon]
) -> None:
    # The handler may run while the main thread is anywhere in start-up, holding any lock.
    env = daemon_env(tmp_path, smtp_server.port, NEWSLETTER_EDITORS="redaction@exemple.ma")
    for text in ("newsletter run: started", "lock taken", "next send"):
        daemon = start(daemons, tmp_path, env, now="2026-01-27T06:30:00+01:00")
        daemon.wait_for(text)
        daemon.stop()
        assert_clean(daemon)


def test_run_refuses_to_start_without_what_sending_needs(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    proc = run_cli("run", env=env, cwd=tmp_path, timeout=30)
    assert proc.returncode == 2
    assert "NEWSLETTER_FROM is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = run_cli("run", "--now", "07:05", env=env, cwd=tmp_path, timeout=30)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_hold_defaults_to_the_next_edition(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    proc = run_cli("hold", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("edition ") and "held" in proc.stdout
    again = run_cli("release", env=env, cwd=tmp_path)
    assert "released" in again.stdout
    assert os.environ.get("NEWSLETTER_NOW") is None  # the testing aid is a flag, not a setting


@pytest.mark.parametrize("status", [EditionStatus.SENT, EditionStatus.EMPTY])
def test_hold_refuses_a_finished_edition_and_changes_nothing(
    tmp_path: Path, status: EditionStatus
) -> None:
    env = base_env(tmp_path)
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        if status is EditionStatus.SENT:
            store.freeze_edition(DAY, [])
            store.mark_edition_sent(DAY)
        else:
            store.record_edition_status(DAY, status, "no article in its window")
        before = store.edition_record(DAY)
    proc = run_cli("hold", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: edition {SAMPLE_DATE} is already {status}: it cannot be held (nothing was changed)"
    ]
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        after = store.edition_record(DAY)
    assert after is not None and before is not None and not after.held
    assert after == before  # nothing recorded
