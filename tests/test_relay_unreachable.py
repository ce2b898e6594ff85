"""A relay that cannot be used is reported within a minute, through the real `newsletter send`.

Refused, silent (accepts TCP, never says 220), or TLS on one side only: each ends with one
`error:` line and a non-zero exit well inside 60 s at the default settings, with one stderr line
per retry even though stderr is a pipe, nothing recorded as sent or failed, and every row
pending, so the next run against a working relay sends everyone exactly once. Permanent
refusals (TLS mismatch, AUTH refused) are not retried at all.

Then ``probe_relay`` (for `newsletter check`): the same opening, never a MAIL command.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from newsletter.adapters.smtp import SmtpConfig, probe_relay
from newsletter.adapters.store import open_store
from newsletter.domain import DeliveryStatus
from newsletter.services.delivery import RECONNECT_BACKOFF
from testkit.tls import self_signed
from tests.support import (
    SAMPLE_DATE,
    MisbehavingRelay,
    free_port,
    invoke_cli,
    run_cli,
    send_env,
    start_smtp_server,
)

DAY = date.fromisoformat(SAMPLE_DATE)
READERS = [f"lecteur{i}@exemple.ma" for i in range(6)]
ATTEMPTS = len(RECONNECT_BACKOFF) + 1
RETRY_LINE = re.compile(
    r"^relay 127\.0\.0\.1:(\d+): (.+); retrying in ([\d.]+) s \(attempt (\d) of (\d)\)$"
)


def import_readers(tmp_path: Path, env: dict[str, str]) -> None:
    csv = tmp_path / "subs.csv"
    csv.write_text(
        "email;name;categories\n" + "".join(f"{a};;\n" for a in READERS), encoding="utf-8"
    )
    assert invoke_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path).returncode == 0


def timed_send(tmp_path: Path, env: dict[str, str]) -> tuple[object, float]:
    started = time.monotonic()
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=90)
    return proc, time.monotonic() - started


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def retry_lines(stderr: str) -> list[re.Match[str]]:
    return [m for line in stderr.splitlines() if (m := RETRY_LINE.match(line))]


def assert_all_pending(env: dict[str, str]) -> None:
    """Nothing sent, failed or left claimed: every row waits for the next run."""
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.delivery_counts(DAY) == {DeliveryStatus.PENDING: len(READERS)}


def assert_next_run_sends_everyone_once(tmp_path: Path, env: dict[str, str]) -> None:
    good = start_smtp_server(tmp_path / "good-relay")
    try:
        fixed = {**env, "NEWSLETTER_SMTP_PORT": str(good.port), "NEWSLETTER_SMTP_SECURITY": "none"}
        rerun = run_cli("send", "--date", SAMPLE_DATE, env=fixed, cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert Counter(good.recipients()) == Counter(READERS)
    finally:
        good.stop()


# ---------------------------------------------------------------------------------------------
# Through `newsletter send`
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # about 37 s: the one run at the real defaults, 10 s a try, real pauses
def test_a_relay_that_never_greets_is_reported_within_a_minute_at_the_default_settings(
    tmp_path,
):
    """The worst case of the budget: each attempt waits the whole connect timeout (10 s)."""
    relay = MisbehavingRelay(tmp_path, "no-greeting")
    try:
        env = send_env(tmp_path, relay.port)  # default timeouts, 4 connections, real backoff
        for name in ("NEWSLETTER_SMTP_CONNECT_TIMEOUT", "NEWSLETTER_SMTP_TIMEOUT"):
            assert name not in env
        import_readers(tmp_path, env)
        proc, took = timed_send(tmp_path, env)
        connections = relay.connections()
    finally:
        relay.stop()
    print(f"\nrelay that never greets: reported after {took:.1f}s, {connections} connections")
    # Three attempts of 10 s each and the pauses between them, then the error: within a minute.
    assert ATTEMPTS * 10 + sum(RECONNECT_BACKOFF) <= took < 60
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert f"cannot reach the SMTP relay 127.0.0.1:{relay.port} (none)" in errors[0]
    assert "no greeting within 10 s" in errors[0]
    assert f"gave up after {ATTEMPTS} attempts" in errors[0]
    assert "NEWSLETTER_SMTP_SECURITY=tls" in errors[0]  # the likely cause: a TLS-only port
    # One line per retry (not one per connection), although stderr is not a terminal.
    retries = retry_lines(proc.stderr)
    assert [(m[1], m[2], m[3], m[4], m[5]) for m in retries] == [
        (str(relay.port), "no greeting within 10 s", f"{pause:g}", str(n), str(ATTEMPTS))
        for n, pause in enumerate(RECONNECT_BACKOFF, start=2)
    ]
    # Four connections, each with its own bounded budget, and nothing more (the one connection
    # over that is testkit's check that the relay listens).
    assert ATTEMPTS < connections <= 4 * ATTEMPTS + 1
    assert "0 sent this run" in proc.stdout
    assert_all_pending(env)
    assert_next_run_sends_everyone_once(tmp_path, env)


def test_a_refused_port_is_retried_briefly_then_reported(tmp_path):
    port = free_port()  # nothing listens
    # The pauses at a tenth: the test above runs them for real.
    env = send_env(tmp_path, port, NEWSLETTER_TEST_BACKOFF_SCALE="0.1")
    import_readers(tmp_path, env)
    proc, took = timed_send(tmp_path, env)
    assert took < 60
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert f"cannot reach the SMTP relay 127.0.0.1:{port} (none): connection refused" in errors[0]
    assert f"gave up after {ATTEMPTS} attempts" in errors[0]
    retries = retry_lines(proc.stderr)
    assert [(m[2], m[4]) for m in retries] == [
        ("connection refused", str(n)) for n in range(2, ATTEMPTS + 1)
    ]
    assert_all_pending(env)
    assert_next_run_sends_everyone_once(tmp_path, env)


@pytest.fixture
def plain_relay(tmp_path):
    server = start_smtp_server(tmp_path / "plain-relay")
    yield server
    server.stop()


@pytest.mark.parametrize(
    "security, expected",
    [
        # TLS from the first byte against a plain-text port: the relay's "220" is no TLS record.
        ("tls", "TLS handshake failed"),
        # STARTTLS asked of a relay that does not offer it.
        ("starttls", "STARTTLS not offered"),
    ],
)
def test_tls_against_a_plain_text_relay_stops_at_once_without_retrying(
    tmp_path, plain_relay, security, expected
):
    env = send_env(tmp_path, plain_relay.port)
    env["NEWSLETTER_SMTP_SECURITY"] = security
    import_readers(tmp_path, env)
    proc, took = timed_send(tmp_path, env)
    assert took < 60
    assert proc.returncode == 2, proc.stderr  # a setting to change, not a relay to wait for
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert f"SMTP relay 127.0.0.1:{plain_relay.port} ({security}): {expected}" in errors[0]
    assert "NEWSLETTER_SMTP_SECURITY" in errors[0]  # the fix is named
    assert retry_lines(proc.stderr) == []  # the same answer every time: never retried
    assert plain_relay.log() == []
    assert plain_relay.commands() in ([], ["QUIT"])  # no MAIL: the session never got that far
    assert_all_pending(env)
    assert_next_run_sends_everyone_once(tmp_path, env)


def test_plain_text_against_a_tls_only_port_is_a_missing_greeting(tmp_path):
    """STARTTLS against a port that expects TLS at once (465): both sides wait for the other."""
    cert, key = self_signed(tmp_path)
    tls_only = start_smtp_server(
        tmp_path / "tls-relay", "--tls-cert", str(cert), "--tls-key", str(key), "--implicit-tls"
    )
    try:
        env = send_env(
            tmp_path,
            tls_only.port,
            NEWSLETTER_SMTP_CONNECT_TIMEOUT="1",
            NEWSLETTER_TEST_BACKOFF_SCALE="0.1",
        )
        env["NEWSLETTER_SMTP_SECURITY"] = "starttls"
        import_readers(tmp_path, env)
        proc, took = timed_send(tmp_path, env)
    finally:
        tls_only.stop()
    print(f"\nTLS-only port: reported after {took:.1f}s")
    assert took < 60
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert "no greeting within 1 s" in errors[0]
    assert "usually 465, needs NEWSLETTER_SMTP_SECURITY=tls" in errors[0]
    assert len(retry_lines(proc.stderr)) == ATTEMPTS - 1
    assert tls_only.log() == []
    assert_all_pending(env)
    assert_next_run_sends_everyone_once(tmp_path, env)


def test_a_refused_login_is_not_retried_and_the_password_is_never_shown(tmp_path):
    cert, key = self_signed(tmp_path)
    relay = start_smtp_server(
        tmp_path / "auth-relay",
        *("--tls-cert", str(cert), "--tls-key", str(key), "--auth", "editor:right-password"),
    )
    try:
        env = send_env(
            tmp_path,
            relay.port,
            NEWSLETTER_SMTP_USERNAME="editor",
            NEWSLETTER_SMTP_PASSWORD="wrong-password-123",
            SSL_CERT_FILE=str(cert),  # the process trusts the relay's certificate
        )
        env["NEWSLETTER_SMTP_SECURITY"] = "starttls"
        import_readers(tmp_path, env)
        proc, took = timed_send(tmp_path, env)
        commands = relay.commands()
    finally:
        relay.stop()
    assert took < 60
    assert proc.returncode == 2, proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert "AUTH refused for 'editor' (535" in errors[0]
    assert "NEWSLETTER_SMTP_PASSWORD" in errors[0]
    assert "wrong-password-123" not in proc.stdout + proc.stderr
    assert retry_lines(proc.stderr) == []
    # The run's first connection alone tried to log in (smtplib offers PLAIN, then LOGIN), and
    # gave up at once: no second attempt, no other connection, never a MAIL.
    assert commands == ["AUTH refused editor", "AUTH refused editor", "QUIT"]
    assert_all_pending(env)


def test_a_relay_that_takes_fewer_connections_is_not_a_failure(tmp_path):
    """Two sessions at a time; NEWSLETTER_SMTP_CONNECTIONS=4: the two refused ones give up, the
    other two send everything, exactly once."""
    # Slow replies keep the two sessions busy past the others' last attempt (the connections
    # open while the edition is composed, so a quick send could end before they give up).
    relay = start_smtp_server(
        tmp_path / "limited-relay", "--max-connections", "2", "--delay", "0.3"
    )
    try:
        env = send_env(
            tmp_path,
            relay.port,
            NEWSLETTER_SMTP_CONNECTIONS="4",
            NEWSLETTER_TEST_BACKOFF_SCALE="0.1",
        )
        import_readers(tmp_path, env)
        proc, took = timed_send(tmp_path, env)
        received = Counter(relay.recipients())
    finally:
        relay.stop()
    assert took < 60
    assert proc.returncode == 0, proc.stderr
    assert error_lines(proc.stderr) == []
    assert received == Counter(READERS)
    assert "421" in proc.stderr and "going on with those open" in proc.stderr
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.delivery_counts(DAY) == {DeliveryStatus.SENT: len(READERS)}


# ---------------------------------------------------------------------------------------------
# probe_relay, for `newsletter check`
# ---------------------------------------------------------------------------------------------


def config(port: int, **fields: object) -> SmtpConfig:
    values: dict = {"host": "127.0.0.1", "port": port, "security": "none", **fields}
    return SmtpConfig(**values)


def test_probe_of_a_good_relay_finds_nothing_and_sends_no_mail(plain_relay):
    assert probe_relay(config(plain_relay.port)) == []
    assert plain_relay.commands() == ["QUIT"]
    assert plain_relay.log() == []


@pytest.fixture
def auth_relay(tmp_path):
    cert, key = self_signed(tmp_path)
    server = start_smtp_server(
        tmp_path / "auth-relay",
        *("--tls-cert", str(cert), "--tls-key", str(key), "--auth", "editor:s3cret-pw"),
    )
    yield server, cert
    server.stop()


def test_probe_logs_in_over_starttls_then_quits_without_mail(auth_relay):
    server, cert = auth_relay
    good = config(
        server.port, security="starttls", username="editor", password="s3cret-pw", cafile=str(cert)
    )
    assert probe_relay(good) == []
    assert server.commands() == ["AUTH ok editor", "QUIT"]
    assert server.log() == []


def test_probe_reports_a_refused_login_without_the_password(auth_relay):
    server, cert = auth_relay
    wrong = config(
        server.port, security="starttls", username="editor", password="not-it-42", cafile=str(cert)
    )
    problems = probe_relay(wrong)
    assert len(problems) == 1
    assert problems[0].startswith(f"relay 127.0.0.1:{server.port}: AUTH refused for 'editor' (535")
    assert "not-it-42" not in problems[0]
    # smtplib offers PLAIN, then LOGIN; then QUIT, and never a MAIL.
    assert server.commands() == ["AUTH refused editor", "AUTH refused editor", "QUIT"]


def test_probe_reports_a_certificate_that_does_not_verify(auth_relay):
    server, _cert = auth_relay
    problems = probe_relay(config(server.port, security="starttls"))  # the system's CAs only
    assert len(problems) == 1 and "certificate does not verify" in problems[0], problems
    assert not any(line.startswith("MAIL") for line in server.commands())


def test_probe_reports_a_refused_port():
    port = free_port()
    assert probe_relay(config(port)) == [
        f"relay 127.0.0.1:{port}: connection refused (check NEWSLETTER_SMTP_HOST, "
        "NEWSLETTER_SMTP_PORT and NEWSLETTER_SMTP_SECURITY)"
    ]


def test_probe_reports_a_relay_that_never_greets_within_the_connect_timeout(tmp_path):
    relay = MisbehavingRelay(tmp_path, "no-greeting")
    try:
        started = time.monotonic()
        problems = probe_relay(config(relay.port, connect_timeout=0.5, timeout=30.0))
        took = time.monotonic() - started
    finally:
        relay.stop()
    assert took < 5  # the connect timeout, not the 30 s per-step timeout
    assert len(problems) == 1
    assert problems[0].startswith(f"relay 127.0.0.1:{relay.port}: no greeting within 0.5 s")


def test_probe_names_a_password_without_tls_and_still_checks_the_relay(plain_relay):
    risky = config(plain_relay.port, username="editor", password="pw-in-clear")
    problems = probe_relay(risky)
    assert problems == [
        f"relay 127.0.0.1:{plain_relay.port}: refusing to send the password without TLS "
        "(set NEWSLETTER_SMTP_SECURITY=starttls or tls)"
    ]
    assert plain_relay.commands() == ["QUIT"]  # reached, and never given the password
