"""Issue 16: NEWSLETTER_SEND_PROCESSES, several sender processes on one edition.

Through the real CLI (a fork is only made by a single-threaded process, which the test runner is
not): every reader gets the edition exactly once, a kill -9 of `newsletter send` takes its
children with it and costs what it costs one process, the rate cap holds over all processes,
and a relay that takes fewer connections than asked for still gets the whole edition.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from datetime import date
from pathlib import Path

from newsletter.adapters.store import open_store
from newsletter.domain import DeliveryStatus
from testkit.processes import kill_9, spawn_cli, wait_until
from tests.factories import import_addresses, readers
from tests.support import SAMPLE_DATE, run_cli, send_env
from tests.test_crash import CONNECTIONS, check_after_crash

DAY = date.fromisoformat(SAMPLE_DATE)


def import_readers(tmp_path: Path, env: dict[str, str], count: int) -> list[str]:
    addresses = readers(count)
    import_addresses(tmp_path, env, addresses)
    return addresses


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_two_processes_send_the_edition_exactly_once(tmp_path, smtp_factory):
    server = smtp_factory()
    env = send_env(
        tmp_path, server.port, NEWSLETTER_SMTP_CONNECTIONS="4", NEWSLETTER_SEND_PROCESSES="2"
    )
    addresses = import_readers(tmp_path, env, 300)
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "300 sent this run" in proc.stdout and "(complete)" in proc.stdout
    assert proc.stderr == ""
    received = Counter(server.recipients())
    assert received == Counter(addresses)  # everyone, once
    ids = [message["Message-ID"] for message in server.messages()]
    assert len(set(ids)) == len(addresses)
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.delivery_counts(DAY) == {DeliveryStatus.SENT: len(addresses)}
    again = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "0 sent this run" in again.stdout
    assert len(server.log()) == len(addresses)


def test_a_kill_9_of_the_send_stops_its_children_and_a_rerun_completes(tmp_path, smtp_factory):
    server = smtp_factory("--delay", "0.03")
    env = send_env(
        tmp_path,
        server.port,
        NEWSLETTER_SMTP_CONNECTIONS=str(CONNECTIONS),
        NEWSLETTER_SEND_PROCESSES="2",
    )
    addresses = import_readers(tmp_path, env, 300)
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
        wait_until(lambda: len(server.log()) >= 100, 60, "100 messages at the relay")
        children = children_of(victim.pid)
        assert len(children) == 1, children  # NEWSLETTER_SEND_PROCESSES=2: one child
        kill_9(victim)
    finally:
        if victim.poll() is None:
            victim.kill()
    wait_until(lambda: not any(alive(pid) for pid in children), 10, "the child to die")
    before = len(server.log())
    assert before < len(addresses), "the send finished before the kill: nothing was tested"

    started = time.monotonic()
    rerun = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=90)
    took = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "(complete)" in rerun.stdout
    assert took < 25.0  # the dead owners' rows come back at once, not after the 30 s lease
    # Nobody missed, at most 2 x connections repeated, each repeat with its original's
    # Message-ID, the ledger all sent: the same checks as one process's kill -9 trials.
    duplicates = check_after_crash(server, env, addresses)
    print(f"\nkill -9 with 2 processes: {before} at the relay, duplicates {duplicates}")


def test_the_rate_cap_holds_over_every_process(tmp_path, smtp_factory):
    server = smtp_factory()
    env = send_env(
        tmp_path,
        server.port,
        NEWSLETTER_SMTP_CONNECTIONS="4",
        NEWSLETTER_SEND_PROCESSES="2",
        NEWSLETTER_SMTP_RATE="40",
    )
    import_readers(tmp_path, env, 80)
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stamps = sorted(entry["data_at"] for entry in server.log())
    assert len(stamps) == 80
    # Each process paces its share at 40 / 2 = 20 a second: however the 80 rows are shared,
    # one process sends at least 40 of them, 39 intervals of 50 ms apart.
    assert stamps[-1] - stamps[0] >= 39 / 20 - 0.1, stamps[-1] - stamps[0]


def test_a_relay_taking_fewer_connections_still_gets_everything_once(tmp_path, smtp_factory):
    server = smtp_factory("--max-connections", "2")
    env = send_env(
        tmp_path, server.port, NEWSLETTER_SMTP_CONNECTIONS="6", NEWSLETTER_SEND_PROCESSES="2"
    )
    addresses = import_readers(tmp_path, env, 120)
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(complete)" in proc.stdout
    assert Counter(server.recipients()) == Counter(addresses)
    # This process opened both sessions the relay takes before the fork: the child gets none,
    # says so in one line, and the others sent its share.
    assert "a sender process could not open a connection" in proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr


def test_more_processes_than_connections_is_refused_in_one_line(tmp_path, smtp_factory):
    server = smtp_factory()
    import_readers(tmp_path, send_env(tmp_path, server.port), 3)
    env = send_env(
        tmp_path, server.port, NEWSLETTER_SMTP_CONNECTIONS="2", NEWSLETTER_SEND_PROCESSES="3"
    )
    # send: a usage error (2); check: a problem found (1), named in the same words.
    for command, code in ((["send", "--date", SAMPLE_DATE], 2), (["check"], 1)):
        proc = run_cli(*command, env=env, cwd=tmp_path)
        assert proc.returncode == code, command
        assert "Traceback" not in proc.stderr
        message = "NEWSLETTER_SEND_PROCESSES=3 is more than NEWSLETTER_SMTP_CONNECTIONS=2"
        assert message in proc.stdout + proc.stderr, command
    assert server.log() == []
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.delivery_counts(DAY) == {}  # nothing frozen


def test_a_misconfigured_relay_stops_every_process_with_exit_2(tmp_path, smtp_factory):
    server = smtp_factory("--auth", "lettre:secret")
    env = send_env(
        tmp_path,
        server.port,
        NEWSLETTER_SMTP_CONNECTIONS="4",
        NEWSLETTER_SEND_PROCESSES="2",
        NEWSLETTER_SMTP_USERNAME="lettre",
        NEWSLETTER_SMTP_PASSWORD="secret-not-logged",
    )
    import_readers(tmp_path, env, 20)
    started = time.monotonic()
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert time.monotonic() - started < 30
    assert "Traceback" not in proc.stderr
    assert "refusing to send the SMTP password without TLS" in proc.stderr
    assert "secret-not-logged" not in proc.stdout + proc.stderr
    assert server.log() == []
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert DeliveryStatus.SENDING not in store.delivery_counts(DAY)  # all released
    assert not [
        p for p in os.listdir("/proc") if p.isdigit() and _is_orphan_sender(int(p), tmp_path)
    ]


def _is_orphan_sender(pid: int, tmp_path: Path) -> bool:
    """A `newsletter send` process still running in this test's directory."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cwd == str(tmp_path) and b"send" in cmdline and alive(pid)


def test_check_says_how_a_send_uses_the_relay_and_the_cores(tmp_path, monkeypatch):
    from newsletter.services.check import Level, check_sending
    from tests.support import settings_for

    one = check_sending(settings_for(tmp_path, NEWSLETTER_SMTP_CONNECTIONS="4"))
    assert (one.level, one.text) == (Level.OK, "4 connection(s) in one process")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    two = check_sending(
        settings_for(
            tmp_path,
            NEWSLETTER_SMTP_CONNECTIONS="4",
            NEWSLETTER_SEND_PROCESSES="2",
            NEWSLETTER_SMTP_RATE="100",
        )
    )
    assert two.level is Level.OK
    assert "4 connections over 2 processes, at most 100 messages a second" in two.text
    four = check_sending(
        settings_for(tmp_path, NEWSLETTER_SMTP_CONNECTIONS="8", NEWSLETTER_SEND_PROCESSES="4")
    )
    assert four.level is Level.WARNING and "this machine has 2 core(s)" in four.text
