"""Polling the bounce mailbox against a real IMAP server: Debian's dovecot, started by the fixture.

The handler is the tests' own (the bounce service's classification has its own tests): these
tests are about what reaches it, what is marked and what is never deleted.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from newsletter.adapters.imap import (
    ImapConfig,
    ImapMailbox,
    MailboxLoginRefused,
    MailboxUnreachable,
)
from newsletter.adapters.store import DatabaseBusy, open_store
from newsletter.daemon import Daemon, shifted_clock
from newsletter.daemon import jobs as daemon_jobs
from newsletter.services import mailbox as mailbox_service
from newsletter.services.mailbox import MAX_MESSAGE_BYTES, poll_bounce_mailbox
from testkit.imap import HANDLED, Dovecot, start_dovecot
from tests.daemon_support import local, settings_for
from tests.support import base_env, run_cli

# One dovecot for the whole file, on one xdist worker; each test starts from an empty INBOX.
pytestmark = pytest.mark.xdist_group("dovecot")

SEEN = b"\\Seen"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def empty_inbox(dovecot: Dovecot) -> None:
    dovecot.clear()


def dsn(n: int) -> bytes:
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.exemple.ma>\r\n"
        f"To: bounces@exemple.ma\r\n"
        f"Subject: Undelivered Mail Returned to Sender {n}\r\n"
        f"Message-ID: <dsn-{n}@mx.exemple.ma>\r\n"
        f"\r\n"
        f"This is message {n}.\r\n"
    ).encode()


@dataclass(frozen=True)
class Result:
    acted: bool
    line: str


class Recorder:
    """A handler that keeps what it was given; it acts on every other message."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.raws: list[bytes] = []
        self.fail_with = fail_with

    def __call__(self, raw: bytes) -> Result:
        if self.fail_with is not None:
            raise self.fail_with
        self.raws.append(raw)
        acted = len(self.raws) % 2 == 1
        return Result(acted, "bounced" if acted else "ignored: not a report")


def imap_settings(tmp_path: Path, dovecot: Dovecot, password: str | None = None, **extra: str):
    return settings_for(
        tmp_path,
        NEWSLETTER_BOUNCE_IMAP_URL=dovecot.url(),
        NEWSLETTER_BOUNCE_IMAP_PASSWORD=dovecot.password if password is None else password,
        **extra,
    )


def poll(tmp_path: Path, dovecot: Dovecot, handler: Recorder, **kwargs):
    settings = imap_settings(tmp_path, dovecot)
    with open_store(settings.database_url) as store:
        return poll_bounce_mailbox(store, settings, handler, cafile=str(dovecot.cert), **kwargs)


def test_each_message_is_handed_once_then_flagged_and_kept(tmp_path: Path, dovecot: Dovecot):
    uids = [dovecot.append(dsn(n)) for n in range(3)]
    handler = Recorder()

    report = poll(tmp_path, dovecot, handler)

    assert handler.raws == [dsn(n) for n in range(3)]  # byte for byte, oldest first
    assert (report.acted, report.ignored, report.left, report.error) == (2, 1, 0, None)
    assert report.lines == [
        f"message {uids[0]}: bounced",
        f"message {uids[1]}: ignored: not a report",
        f"message {uids[2]}: bounced",
    ]
    assert report.summary().endswith(": 3 handled (2 acted on, 1 ignored)")
    assert f"bounces@127.0.0.1:{dovecot.port}/INBOX" in report.summary()
    flags = dovecot.flags()
    assert sorted(flags) == uids  # nothing deleted, nothing expunged
    assert all(flags[uid] == {HANDLED, SEEN} for uid in uids)

    again = poll(tmp_path, dovecot, handler)
    assert len(handler.raws) == 3 and again.lines == [] and again.handled == 0

    # A message arriving later is the only one handed over by the next poll.
    late = dovecot.append(dsn(9))
    third = poll(tmp_path, dovecot, handler)
    assert handler.raws[3:] == [dsn(9)]
    assert third.lines == [f"message {late}: ignored: not a report"]
    assert len(dovecot.flags()) == 4


def test_a_long_backlog_is_read_in_batches(
    tmp_path: Path, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(mailbox_service, "BATCH", 2)
    uids = [dovecot.append(dsn(n)) for n in range(5)]
    handler = Recorder()
    report = poll(tmp_path, dovecot, handler)
    assert handler.raws == [dsn(n) for n in range(5)]
    assert [line.split(":")[0] for line in report.lines] == [f"message {uid}" for uid in uids]


def test_a_silent_server_costs_the_connect_timeout_once(tmp_path: Path):
    # Accepts the connection (the kernel's backlog) and never says a word: no TLS handshake.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        config = dataclasses.replace(
            ImapConfig.from_url(f"imaps://bounces@127.0.0.1:{port}/INBOX", "pw"),
            connect_timeout=0.5,
        )
        began = time.monotonic()
        with pytest.raises(MailboxUnreachable) as caught:
            ImapMailbox(config).open()
        assert time.monotonic() - began < 3
    assert str(caught.value).startswith(
        f"cannot reach the mailbox imaps://bounces@127.0.0.1:{port}/INBOX: no answer within 0.5 s"
    )


def test_a_message_over_the_size_limit_is_marked_without_being_read(
    tmp_path: Path, dovecot: Dovecot
):
    big = dsn(1) + b"x" * (MAX_MESSAGE_BYTES + 1) + b"\r\n"
    big_uid = dovecot.append(big)
    small_uid = dovecot.append(dsn(2))
    handler = Recorder()

    report = poll(tmp_path, dovecot, handler)

    assert handler.raws == [dsn(2)]
    assert report.lines[0] == (
        f"message {big_uid}: ignored, {len(big)} bytes is over the {MAX_MESSAGE_BYTES} byte "
        "limit (not read; marked handled)"
    )
    assert report.lines[1] == f"message {small_uid}: bounced"
    assert dovecot.flags() == {big_uid: {HANDLED, SEEN}, small_uid: {HANDLED, SEEN}}


def test_a_database_error_leaves_the_message_for_the_next_poll(tmp_path: Path, dovecot: Dovecot):
    uids = [dovecot.append(dsn(n)) for n in range(2)]
    failing = Recorder(fail_with=DatabaseBusy("the database is busy"))

    report = poll(tmp_path, dovecot, failing)

    assert report.handled == 0 and report.left == 2
    assert report.error is not None and "the database failed" in report.error
    assert f"message {uids[0]} and the rest stay unhandled" in report.error
    assert dovecot.flags() == {uids[0]: set(), uids[1]: set()}  # not even \Seen

    handler = Recorder()  # the database is back
    assert poll(tmp_path, dovecot, handler).handled == 2
    assert handler.raws == [dsn(0), dsn(1)]


def test_a_handler_bug_leaves_that_message_and_goes_on(tmp_path: Path, dovecot: Dovecot):
    uid = dovecot.append(dsn(0))
    report = poll(tmp_path, dovecot, Recorder(fail_with=ValueError("boom")))
    assert report.lines == [
        f"message {uid}: left for the next poll, handling failed: ValueError: boom"
    ]
    assert report.error is None and dovecot.flags() == {uid: set()}


def test_the_certificate_is_verified(tmp_path: Path, dovecot: Dovecot):
    config = ImapConfig.from_url(dovecot.url(), dovecot.password)  # the system's trust store
    with pytest.raises(MailboxUnreachable) as caught:
        ImapMailbox(config).open()
    assert str(caught.value).startswith(
        f"cannot reach the mailbox imaps://bounces@127.0.0.1:{dovecot.port}/INBOX: "
        "its certificate does not verify (self-signed certificate"
    )


def test_wrong_password_and_missing_folder_are_one_line(tmp_path: Path, dovecot: Dovecot):
    wrong = ImapConfig.from_url(dovecot.url(), "not-the-password", cafile=str(dovecot.cert))
    with pytest.raises(MailboxLoginRefused) as caught:
        ImapMailbox(wrong).open()
    assert "login refused" in str(caught.value)
    assert "not-the-password" not in str(caught.value)

    missing = ImapConfig.from_url(
        dovecot.url("Nowhere"), dovecot.password, cafile=str(dovecot.cert)
    )
    with pytest.raises(MailboxUnreachable, match="cannot open folder 'Nowhere'"):
        ImapMailbox(missing).open()


def cli_env(tmp_path: Path, dovecot: Dovecot, password: str, *, trusted: bool = True):
    env = base_env(
        tmp_path,
        NEWSLETTER_BOUNCE_IMAP_URL=dovecot.url(),
        NEWSLETTER_BOUNCE_IMAP_PASSWORD=password,
    )
    if trusted:
        env["SSL_CERT_FILE"] = str(dovecot.cert)  # the process trusts the test server
    return env


def test_bounces_fetch_through_the_real_cli(tmp_path: Path, dovecot: Dovecot):
    ok = run_cli("bounces", "fetch", env=cli_env(tmp_path, dovecot, dovecot.password), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (
        f"mailbox imaps://bounces@127.0.0.1:{dovecot.port}/INBOX: 0 handled "
        "(0 acted on, 0 ignored)\n"
    )

    uid = dovecot.append(dsn(0))
    wrong = run_cli("bounces", "fetch", env=cli_env(tmp_path, dovecot, "wrong-pw"), cwd=tmp_path)
    assert wrong.returncode == 1
    assert wrong.stdout == ""
    assert wrong.stderr.startswith(
        f"error: mailbox imaps://bounces@127.0.0.1:{dovecot.port}/INBOX: login refused ("
    )
    assert wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr
    assert "wrong-pw" not in wrong.stderr

    untrusted = run_cli(
        "bounces",
        "fetch",
        env=cli_env(tmp_path, dovecot, dovecot.password, trusted=False),
        cwd=tmp_path,
    )
    assert untrusted.returncode == 1
    assert "its certificate does not verify" in untrusted.stderr
    assert untrusted.stderr.count("\n") == 1
    assert dovecot.flags() == {uid: set()}  # neither touched the message

    unset = run_cli("bounces", "fetch", env=base_env(tmp_path), cwd=tmp_path)
    assert unset.returncode == 2
    assert unset.stderr.startswith(
        "error: no bounce mailbox to poll: NEWSLETTER_BOUNCE_IMAP_URL is not set"
    )


def test_a_server_refusing_the_keyword_gets_seen_alone(tmp_path: Path):
    # Our keyword is longer than this server allows: STORE answers NO [CANNOT].
    strict = start_dovecot(extra_config="mail_max_keyword_length = 8")
    try:
        uids = [strict.append(dsn(n)) for n in range(2)]
        handler = Recorder()
        assert poll(tmp_path, strict, handler).handled == 2
        assert strict.flags() == {uid: {SEEN} for uid in uids}
        assert poll(tmp_path, strict, handler).handled == 0  # \Seen says handled
        assert len(handler.raws) == 2
    finally:
        strict.stop()


def test_run_polls_the_mailbox_every_few_minutes(
    tmp_path: Path,
    dovecot: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.INFO, "newsletter")
    uid = dovecot.append(dsn(0))
    handler = Recorder()
    monkeypatch.setattr(
        daemon_jobs,
        "poll_bounce_mailbox",
        functools.partial(
            mailbox_service.poll_bounce_mailbox, handle=handler, cafile=str(dovecot.cert)
        ),
    )
    settings = imap_settings(tmp_path, dovecot, NEWSLETTER_BOUNCE_POLL_MINUTES="7")
    with open_store(settings.database_url) as store:
        daemon = Daemon(settings, store, clock=shifted_clock(local("2026-01-27T05:00:00")))
        daemon.start()
        try:
            assert "polls the bounce mailbox every 7 min" in caplog.text
            wait_until(lambda: handler.raws == [dsn(0)])
            wait_until(lambda: "0 ignored)" in caplog.text)
            assert f"bounce mailbox: message {uid}: bounced" in caplog.text
            wait_until(lambda: daemon.scheduler.get_job("bounces") is not None)
            job = daemon.scheduler.get_job("bounces")
            # The next poll is planned 7 minutes on (in real time: the clock is only shifted).
            delay = (job.next_run_time.timestamp() - time.time()) / 60
            assert 6.5 < delay <= 7.0
        finally:
            daemon.request_stop("test end")
            daemon.shutdown()
    assert dovecot.flags() == {uid: {HANDLED, SEEN}}


def test_a_failed_poll_is_one_warning_and_the_daemon_goes_on(
    tmp_path: Path, dovecot: Dovecot, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "newsletter")
    # The system's trust store: the test server's certificate does not verify.
    settings = imap_settings(tmp_path, dovecot)
    with open_store(settings.database_url) as store:
        daemon = Daemon(settings, store, clock=shifted_clock(local("2026-01-27T05:00:00")))
        daemon.start()
        try:
            wait_until(lambda: "bounce mailbox: poll failed" in caplog.text)
            failures = [r for r in caplog.records if "poll failed" in r.getMessage()]
            assert len(failures) == 1 and failures[0].levelno == logging.WARNING
            assert "its certificate does not verify" in failures[0].getMessage()
            assert "next poll in 5 min" in failures[0].getMessage()
            wait_until(lambda: daemon.scheduler.get_job("bounces") is not None)
            assert daemon.lease.holds() and not daemon.stopping.is_set()
        finally:
            daemon.request_stop("test end")
            daemon.shutdown()


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_returned_mail_in_the_mailbox_is_classified_and_tied_as_bounce_mail_does(
    tmp_path: Path, dovecot: Dovecot, smtp_server
) -> None:
    """Issue 12's cases through IMAP: the real send, the real dovecot, the real `bounces fetch`."""
    from newsletter.domain import SubscriberStatus
    from tests.test_bounces import DOMAIN, Site, arf, dsn, original_headers

    site = Site(tmp_path, smtp_server, count=5)
    hard, soft, plain, forged, complained = site.readers
    genuine = site.envelope_of(forged)
    local, _, domain = genuine.partition("@")
    bad_token = f"{local[:-4]}{'bbbb' if local.endswith('aaaa') else 'aaaa'}@{domain}"
    auto_reply = (
        f"From: {forged}\r\nTo: {genuine}\r\nSubject: Absence du bureau\r\n"
        "Auto-Submitted: auto-replied\r\n\r\nJe suis absent jusqu'au 3 février.\r\n"
    ).encode()
    messages = [
        dsn(hard, "5.1.1", to=site.envelope_of(hard)),
        dsn(soft, "4.2.2", to=site.envelope_of(soft), action="delayed"),
        dsn(plain, "5.1.1", to=f"bounces@{DOMAIN}", original=original_headers(smtp_server, plain)),
        dsn(forged, "5.1.1", to=bad_token),
        auto_reply,
        arf(original_headers(smtp_server, complained), to=f"bounces@{DOMAIN}", recipient=None),
    ]
    uids = [dovecot.append(raw) for raw in messages]
    env = {
        **site.env,
        "NEWSLETTER_BOUNCE_IMAP_URL": dovecot.url(),
        "NEWSLETTER_BOUNCE_IMAP_PASSWORD": dovecot.password,
        "SSL_CERT_FILE": str(dovecot.cert),
    }
    first = run_cli("bounces", "fetch", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "6 handled (4 acted on, 2 ignored)" in first.stdout, (
        first.stdout
    )  # a soft one is counted
    assert site.statuses() == {
        hard: SubscriberStatus.BOUNCED,
        soft: SubscriberStatus.ACTIVE,
        plain: SubscriberStatus.BOUNCED,
        forged: SubscriberStatus.ACTIVE,
        complained: SubscriberStatus.COMPLAINED,
    }
    flags = dovecot.flags()
    assert sorted(flags) == uids  # every message kept
    assert all(HANDLED in f and SEEN in f for f in flags.values()), flags
    again = run_cli("bounces", "fetch", env=env, cwd=tmp_path)
    assert again.returncode == 0 and "0 handled" in again.stdout
