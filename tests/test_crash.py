"""Issue 7, part 2: kill -9 the sender at several moments, then run `send` again at once.

A slow relay (``--delay``) keeps messages in flight; the test waits for K messages at the relay,
kills the sending process with SIGKILL, and starts a new `send` straight away. That run must
complete the edition (exit 0) without waiting out the 30 s lease, miss nobody, repeat at most
what was in flight (at most 2 x connections), and every repeated message must carry its
original's Message-ID. The same trial is run against the scheduler daemon (`newsletter run`).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import pytest

from newsletter.adapters.store import open_store
from newsletter.domain import DeliveryStatus
from testkit.processes import LoggedCli, kill_9, spawn_cli, wait_until
from tests.support import SAMPLE_DATE, SmtpServer, invoke_cli, run_cli
from tests.support import send_env as shared_send_env

DAY = date.fromisoformat(SAMPLE_DATE)
SUBSCRIBERS = 300
CONNECTIONS = 4
MAX_DUPLICATES = 2 * CONNECTIONS
RERUN_WITHIN = 25.0  # well under the 30 s lease: the dead owner is detected, not waited out


def send_env(tmp_path: Path, port: int) -> dict[str, str]:
    return shared_send_env(tmp_path, port, NEWSLETTER_SMTP_CONNECTIONS=str(CONNECTIONS))


def import_readers(tmp_path: Path, env: dict[str, str]) -> list[str]:
    addresses = [f"lecteur{i}@exemple.ma" for i in range(SUBSCRIBERS)]
    csv = tmp_path / "subs.csv"
    csv.write_text("email;name\n" + "\n".join(f"{a};Lecteur {i}" for i, a in enumerate(addresses)))
    proc = invoke_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return addresses


def claimed_rows(env: dict[str, str]) -> int:
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        return store.delivery_counts(DAY).get(DeliveryStatus.SENDING, 0)


def check_after_crash(server: SmtpServer, env: dict[str, str], addresses: list[str]) -> int:
    """The edition complete and consistent after the crash; returns the number of duplicates."""
    received = Counter(server.recipients())
    assert set(received) == set(addresses), "a recipient was missed"
    duplicates = sum(received.values()) - len(addresses)
    assert duplicates <= MAX_DUPLICATES, received.most_common(10)

    # Each duplicate carries its original's Message-ID, and ids are distinct between recipients.
    ids: dict[str, set[str]] = defaultdict(set)
    for message in server.messages():
        ids[message["To"].addresses[0].addr_spec].add(message["Message-ID"])
    assert all(len(found) == 1 for found in ids.values()), {
        k: v for k, v in ids.items() if len(v) > 1
    }
    assert len({next(iter(found)) for found in ids.values()}) == len(addresses)

    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.delivery_counts(DAY) == {DeliveryStatus.SENT: len(addresses)}
        record = store.edition_record(DAY)
        assert record is not None and record.recipients == len(addresses)
    return duplicates


# Moments to kill at: messages already at the relay (0 = rows claimed, nothing sent yet).
MOMENTS = {"before-first-message": 0, "early": 10, "middle": 150, "late": 285}


@pytest.mark.parametrize(
    "moment",
    [pytest.param("before-first-message", marks=pytest.mark.slow), "early", "middle", "late"],
)
def test_kill_9_of_send_then_an_immediate_rerun_completes(tmp_path, smtp_factory, moment):
    at = MOMENTS[moment]
    server = smtp_factory("--delay", "0.03")
    env = send_env(tmp_path, server.port)
    addresses = import_readers(tmp_path, env)
    victim = spawn_cli(
        "send",
        "--date",
        SAMPLE_DATE,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if at == 0:
            wait_until(lambda: claimed_rows(env) > 0, 30, "claimed rows")
        else:
            wait_until(lambda: len(server.log()) >= at, 60, f"{at} messages at the relay")
        kill_9(victim)
    finally:
        if victim.poll() is None:
            victim.kill()
    before = len(server.log())
    assert before < SUBSCRIBERS, "the send finished before the kill: nothing was tested"

    started = time.monotonic()
    rerun = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=90)
    took = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert "(complete)" in rerun.stdout
    assert took < RERUN_WITHIN
    duplicates = check_after_crash(server, env, addresses)
    print(
        f"\nkill -9 {moment}: {before} at the relay when killed, rerun {took:.1f}s, "
        f"duplicates {duplicates} (max {MAX_DUPLICATES})"
    )
    again = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "0 sent this run" in again.stdout
    assert len(server.log()) == SUBSCRIBERS + duplicates


# ---------------------------------------------------------------------------------------------
# The scheduler daemon: kill -9 mid-send, start it again at once
# ---------------------------------------------------------------------------------------------

AFTER_SEND_TIME = "2026-01-27T07:05:00+01:00"  # 5 minutes after the sample edition's send time


def daemon(tmp_path: Path, env: dict[str, str], name: str) -> LoggedCli:
    return LoggedCli(tmp_path, env, name, "run", "--now", AFTER_SEND_TIME)


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param("early", marks=pytest.mark.slow),
        "middle",
        pytest.param("late", marks=pytest.mark.slow),
    ],
)
def test_kill_9_of_the_daemon_then_a_restart_completes(tmp_path, smtp_factory, moment):
    at = MOMENTS[moment]
    server = smtp_factory("--delay", "0.03")
    env = send_env(tmp_path, server.port)
    addresses = import_readers(tmp_path, env)
    first = daemon(tmp_path, env, "first")
    second: LoggedCli | None = None
    try:
        wait_until(lambda: len(server.log()) >= at, 60, f"{at} messages at the relay")
        kill_9(first.process)
        before = len(server.log())
        assert before < SUBSCRIBERS, "the send finished before the kill: nothing was tested"
        started = time.monotonic()
        second = daemon(tmp_path, env, "second")
        wait_until(lambda: "(complete)" in second.output, 60, "complete edition")
        took = time.monotonic() - started
        assert took < RERUN_WITHIN + 10, second.output
    finally:
        first.close()
        if second is not None:
            second.close()
    assert second.process.returncode == 0, second.output
    assert "Traceback" not in second.output, second.output
    duplicates = check_after_crash(server, env, addresses)
    print(
        f"\ndaemon kill -9 {moment}: {before} at the relay when killed, restart completed in "
        f"{took:.1f}s, duplicates {duplicates} (max {MAX_DUPLICATES})"
    )
