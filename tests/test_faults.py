"""Issue 7, part 1: real sends against a fault-injecting relay (testkit/smtp_server.py, its own process).

Every test drives the real `newsletter` command against a real SQLite file. What each one proves
is in RELIABILITY.md; the figures printed here (timings) are quoted there.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from datetime import date

import pytest

from newsletter.adapters.store import SentLedger, open_store
from newsletter.config import load_settings
from newsletter.domain import DeliveryStatus, SubscriberStatus
from newsletter.services.delivery import RECONNECT_BACKOFF, send_edition
from tests.factories import import_addresses, ledger, readers
from tests.support import SAMPLE_DATE, free_port, run_cli, send_env

DAY = date.fromisoformat(SAMPLE_DATE)
REJECTED = [f"inconnu{i}@exemple.ma" for i in range(5)]


def assert_clean(proc) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------
# The acceptance: 500 subscribers, a fifth deferred, five rejected, a drop every 25 messages
# ---------------------------------------------------------------------------------------------


def test_acceptance_defer_reject_drop_500_subscribers(tmp_path, smtp_factory):
    rejects = [arg for address in REJECTED for arg in ("--reject-rcpt", address)]
    server = smtp_factory("--defer-fraction", "0.2", "--drop-every", "25", *rejects)
    env = send_env(tmp_path, server.port)
    deliverable = readers(495)
    import_addresses(tmp_path, env, deliverable + REJECTED)

    started = time.monotonic()
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=170)
    took = time.monotonic() - started
    print(f"\nacceptance send: {took:.1f}s, {len(server.log())} messages at the relay")
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc)
    assert "495 sent this run" in proc.stdout and "(complete)" in proc.stdout
    # Every recipient final: 495 sent, 5 failed, nothing pending or claimed.
    assert ledger(env) == {DeliveryStatus.SENT: 495, DeliveryStatus.FAILED: 5}
    # The deliverable messages exactly once at the relay, the rejected ones never accepted.
    received = Counter(server.recipients())
    assert received == Counter(deliverable)
    # The faults really happened: a fifth deferred at least once, drops every 25.
    assert len(server.messages()) == 495
    # Each message's envelope sender is its own VERP address at the bounce mailbox (issue 12).
    senders = [entry["mail_from"] for entry in server.log()]
    assert all(re.fullmatch(r"bounces\+d20260127-\d+-[a-z2-7]{16}@exemple\.ma", s) for s in senders)
    assert len(set(senders)) == len(set(server.recipients()))

    status = run_cli("status", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert status.returncode == 0
    assert "495 sent, 5 failed, 0 pending" in status.stdout
    for address in REJECTED:
        assert f"failed: {address}: 550" in status.stdout
    bounced = run_cli("subscribers", "list", "--status", "bounced", env=env, cwd=tmp_path)
    assert sorted(line.split()[0] for line in bounced.stdout.splitlines()[1:-1]) == REJECTED
    assert "5 subscribers" in bounced.stdout

    rerun = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 sent this run" in rerun.stdout
    assert len(server.log()) == 495  # a re-run sends nothing, the bounced are never retried
    assert ledger(env) == {DeliveryStatus.SENT: 495, DeliveryStatus.FAILED: 5}


def test_connection_reset_mid_data_is_retried_and_delivered_once(tmp_path, smtp_factory):
    """A TCP reset after the content went out but before the reply: nothing kept, so resend."""
    server = smtp_factory("--reset-every", "9")
    env = send_env(tmp_path, server.port, NEWSLETTER_SMTP_CONNECTIONS="3")
    import_addresses(tmp_path, env, readers(80))
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc)
    assert Counter(server.recipients()) == Counter(readers(80))
    assert ledger(env) == {DeliveryStatus.SENT: 80}


# ---------------------------------------------------------------------------------------------
# A slow relay: connections work in parallel
# ---------------------------------------------------------------------------------------------


def test_slow_relay_with_eight_connections_runs_them_in_parallel(tmp_path, smtp_factory):
    delay, count, connections = 0.25, 96, 8
    server = smtp_factory("--delay", str(delay))
    env = send_env(tmp_path, server.port, NEWSLETTER_SMTP_CONNECTIONS=str(connections))
    import_addresses(tmp_path, env, readers(count))
    started = time.monotonic()
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    took = time.monotonic() - started
    serial = count * delay  # 24 s on one connection
    ideal = serial / connections  # 3 s on eight
    print(f"\nslow relay: {count} messages, {took:.1f}s (serial {serial:.0f}s, ideal {ideal:.0f}s)")
    assert proc.returncode == 0, proc.stderr
    assert Counter(server.recipients()) == Counter(readers(count))
    # Start-up (render, freeze) takes a second or two and parallel sending 3 s; serial sending
    # would take 24 s. Half of that still proves the connections overlap, with room for a
    # loaded CI machine (10.5 s measured with four other jobs on 2 cores).
    assert took < serial / 2


def test_smtp_rate_caps_the_whole_send(tmp_path, smtp_factory):
    """NEWSLETTER_SMTP_RATE is a cap over all connections together."""
    server = smtp_factory()
    env = send_env(
        tmp_path, server.port, NEWSLETTER_SMTP_RATE="20", NEWSLETTER_SMTP_CONNECTIONS="4"
    )
    import_addresses(tmp_path, env, readers(60))
    settings = load_settings(env_file=tmp_path / "absent", environ=env)
    with open_store(settings.database_url) as store:
        started = time.monotonic()
        report = send_edition(store, settings, DAY)
        took = time.monotonic() - started
    assert report.complete and report.sent_this_run == 60
    # 60 messages at 20/s: at least 59 intervals of 50 ms, whatever the four connections do.
    assert took >= 59 / 20 - 0.1
    assert Counter(server.recipients()) == Counter(readers(60))


# ---------------------------------------------------------------------------------------------
# A relay that is down, in three ways: nothing listening, a black hole, a death mid-send
# ---------------------------------------------------------------------------------------------


# The one send that runs the real, unscaled reconnect backoff end to end (the other relay-down
# tests shorten it with NEWSLETTER_TEST_BACKOFF_SCALE); RELIABILITY.md quotes its figure.
@pytest.mark.slow  # about 10 s: the reconnect backoff runs its course
def test_black_hole_relay_times_out_with_one_clear_line_then_the_next_run_completes(
    tmp_path, smtp_factory
):
    """A relay whose kernel completes the TCP handshake but that never reads nor says a word.

    The connect timeout (here 1 s; the default 10 s is run in test_relay_unreachable.py) bounds
    each attempt, the real pauses come between them, and it all ends in one line.
    """
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # the kernel completes handshakes; nobody ever reads or writes
    port = hole.getsockname()[1]
    env = send_env(
        tmp_path, port, NEWSLETTER_SMTP_CONNECT_TIMEOUT="1", NEWSLETTER_SMTP_CONNECTIONS="2"
    )
    import_addresses(tmp_path, env, readers(30))
    try:
        started = time.monotonic()
        proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=90)
        took = time.monotonic() - started
    finally:
        hole.close()
    print(f"\nblack-hole relay: failed after {took:.1f}s")
    # The real backoff was waited out (it is not scaled here), and no longer than bounded.
    assert sum(RECONNECT_BACKOFF) <= took < 60
    assert proc.returncode == 1
    assert_clean(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot reach the SMTP relay 127.0.0.1:{port}" in errors[0]
    assert "no greeting within 1 s" in errors[0]
    assert "0 sent this run" in proc.stdout
    assert ledger(env) == {DeliveryStatus.PENDING: 30}  # nothing lost, nothing left claimed

    server = smtp_factory(port=free_port())
    env["NEWSLETTER_SMTP_PORT"] = str(server.port)
    rerun = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert Counter(server.recipients()) == Counter(readers(30))


def test_relay_dying_mid_send_loses_nothing_and_the_next_run_completes(tmp_path, smtp_factory):
    port = free_port()
    out = tmp_path / "relay"
    server = smtp_factory("--delay", "0.02", port=port, out=out)
    # The reconnect backoff at a tenth (0.6 s instead of 6 s): what is proved here is what
    # the ledger holds once the run gives up, not how long it tried (the black-hole test above
    # runs the real backoff).
    env = send_env(
        tmp_path, port, NEWSLETTER_SMTP_CONNECTIONS="4", NEWSLETTER_TEST_BACKOFF_SCALE="0.1"
    )
    import_addresses(tmp_path, env, readers(300))
    result: dict[str, object] = {}

    def send() -> None:
        result["proc"] = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=90)

    sender = threading.Thread(target=send)
    started = time.monotonic()
    sender.start()
    server.wait_for(50)
    server.stop()  # the relay goes away for good while the send runs
    sender.join(90)
    took = time.monotonic() - started
    proc = result["proc"]
    print(f"\nrelay died mid-send: the run gave up after {took:.1f}s")
    assert took < 60
    assert proc.returncode == 1, proc.stdout
    assert_clean(proc)
    assert "cannot reach the SMTP relay" in proc.stderr
    first = Counter(server.recipients())
    counts = ledger(env)
    # What the relay accepted is recorded sent (at most what was in flight may be unrecorded),
    # nothing is left claimed, the rest waits.
    assert DeliveryStatus.SENDING not in counts and DeliveryStatus.FAILED not in counts
    assert len(first) - 4 <= counts[DeliveryStatus.SENT] <= len(first)
    assert counts[DeliveryStatus.SENT] + counts[DeliveryStatus.PENDING] == 300

    revived = smtp_factory(port=port, out=out)  # same folder: the log continues
    rerun = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    received = Counter(revived.recipients())
    assert set(received) == set(readers(300))
    assert sum(received.values()) - 300 <= 4  # at most one unrecorded message per connection
    assert ledger(env) == {DeliveryStatus.SENT: 300}


def test_a_login_without_tls_stops_the_run_before_any_message(tmp_path, smtp_factory):
    """AUTH only over TLS: a configuration error (exit 2), nobody marked bounced or sent."""
    server = smtp_factory()
    env = send_env(tmp_path, server.port)
    import_addresses(tmp_path, env, readers(5))
    env["NEWSLETTER_SMTP_USERNAME"] = "editor"
    env["NEWSLETTER_SMTP_PASSWORD"] = "hunter2-not-logged"
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert_clean(proc)
    assert "refusing to send the SMTP password without TLS" in proc.stderr
    assert "hunter2-not-logged" not in proc.stdout + proc.stderr
    assert server.log() == []
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.delivery_counts(DAY).get(DeliveryStatus.SENT, 0) == 0
        assert store.find_by_email("lecteur0@exemple.ma").status is SubscriberStatus.ACTIVE


# ---------------------------------------------------------------------------------------------
# The ledger itself failing mid-send: the run stops, it never hangs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mark_sent", "release", "mark_failed"])
def test_a_ledger_error_mid_send_stops_the_run_instead_of_hanging(
    tmp_path, smtp_factory, method, monkeypatch
):
    server = smtp_factory("--defer-fraction", "0.3", "--reject-rcpt", "lecteur3")
    env = send_env(tmp_path, server.port, NEWSLETTER_SMTP_CONNECTIONS="2")
    import_addresses(tmp_path, env, readers(40))
    settings = load_settings(env_file=tmp_path / "absent", environ=env)
    outcome: dict[str, object] = {}
    with open_store(settings.database_url) as store:
        # "sent" is recorded through the send's own ledger connection (store/sent.py).
        owner = SentLedger if method == "mark_sent" else store
        real = getattr(owner, method)

        def broken(*args, **kwargs):
            if len(server.log()) >= 5:
                raise RuntimeError("disk I/O error")
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, method, broken)

        def run() -> None:
            try:
                outcome["report"] = send_edition(store, settings, DAY)
            except Exception as err:
                outcome["error"] = err

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), f"send_edition hung after {method} failed"
    assert "error" in outcome, outcome
    assert "disk I/O error" in str(outcome["error"])
    with open_store(settings.database_url) as store:
        counts = store.delivery_counts(DAY)
    assert DeliveryStatus.SENDING not in counts  # released for the next run


@pytest.mark.parametrize(
    "value, scale", [(None, 1.0), ("0.1", 0.1), ("1", 1.0), ("0", 1.0), ("5", 1.0), ("x", 1.0)]
)
def test_only_a_factor_in_0_1_shortens_the_backoffs(monkeypatch, value, scale):
    """The tests' private NEWSLETTER_TEST_BACKOFF_SCALE never lengthens or breaks a backoff."""
    from newsletter.services.delivery import _TEST_BACKOFF_SCALE_ENV, _backoff_scale

    if value is None:
        monkeypatch.delenv(_TEST_BACKOFF_SCALE_ENV, raising=False)
    else:
        monkeypatch.setenv(_TEST_BACKOFF_SCALE_ENV, value)
    assert _backoff_scale() == scale
