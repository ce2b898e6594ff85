"""Returned mail (issue 12): VERP envelope senders on a real send, and bounces and complaints
read by the real `newsletter bounce-mail` process, built with the email package as MTAs and
mailbox providers send them."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from newsletter.adapters.store import open_store
from newsletter.adapters.tokens import VERP_TOKEN_MAX, VerpSigner
from newsletter.domain import SubscriberStatus
from newsletter.domain.addresses import suppression_hash
from tests.factories import import_addresses, readers
from tests.support import (
    SAMPLE_DATE,
    TEST_SECRET,
    SmtpServer,
    free_port,
    invoke_cli,
    invoke_cli_bytes,
    send_env,
)

DOMAIN = "exemple.ma"
VERP = re.compile(rf"^bounces\+d20260127-(\d+)-[a-z2-7]{{16}}@{re.escape(DOMAIN)}$")

# -- building returned mail ------------------------------------------------------------------


def original_headers(server: SmtpServer, address: str) -> EmailMessage:
    """The message the test SMTP server received for ``address``, as an MTA attaches it."""
    for message in server.messages():
        if message["To"].addresses[0].addr_spec == address:
            return message
    raise AssertionError(f"nothing was sent to {address}")


def dsn(
    recipient: str,
    status: str,
    *,
    to: str,
    action: str = "failed",
    original: Message | None = None,
    headers_only: bool = True,
    per_recipient: bool = True,
) -> bytes:
    """An RFC 3464 report as Postfix writes one: text, message/delivery-status, the original."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.exemple.net (Mail Delivery System)"
    report["To"] = to
    report["Delivered-To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Auto-Submitted"] = "auto-replied"  # as Postfix marks its bounces
    report.attach(
        MIMEText(
            f"I'm sorry to have to inform you that your message could not\n"
            f"be delivered to {recipient}.\n"
        )
    )
    status_part = Message()
    status_part.set_type("message/delivery-status")
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.exemple.net"
    blocks = [per_message]
    if per_recipient:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {recipient}"
        block["Original-Recipient"] = f"rfc822;{recipient}"
        block["Action"] = action
        block["Status"] = status
        block["Diagnostic-Code"] = f"smtp; {status[0]}50 {status} <{recipient}>: mailbox\n unknown"
        blocks.append(block)
    status_part.set_payload(blocks)
    report.attach(status_part)
    if original is not None:
        if headers_only:
            head = "".join(f"{k}: {v}\n" for k, v in original.items())
            report.attach(MIMEText(head, "rfc822-headers"))
        else:
            report.attach(MIMEMessage(original))
    return report.as_bytes()


def arf(original: Message, *, to: str, recipient: str | None) -> bytes:
    """An RFC 5965 complaint as a mailbox provider's feedback loop sends one."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "fbl@fbl.exemple.net"
    report["To"] = to
    report["Subject"] = "Complaint about message"
    report.attach(MIMEText("This is an email abuse report for an email message received.\n"))
    feedback = Message()
    feedback.set_type("message/feedback-report")
    fields = Message()
    fields["Feedback-Type"] = "abuse"
    fields["User-Agent"] = "ExempleFBL/1.0"
    fields["Version"] = "1"
    if recipient:
        fields["Original-Rcpt-To"] = recipient
    feedback.set_payload([fields])
    report.attach(feedback)
    head = "".join(f"{k}: {v}\n" for k, v in original.items())
    report.attach(MIMEText(head, "rfc822-headers"))
    return report.as_bytes()


# -- the real command ------------------------------------------------------------------------


def bounce_mail(
    env: dict[str, str], cwd: Path, raw: bytes, *args: str, process: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """`newsletter bounce-mail` with the message on its stdin, as an MTA pipes it: in this
    process (click's runner), or with ``process=True`` in a process of its own."""
    if process:
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", "bounce-mail", *args],
            input=raw,
            capture_output=True,
            env=env,
            cwd=cwd,
            timeout=120,
        )
    else:
        proc = invoke_cli_bytes("bounce-mail", *args, env=env, cwd=cwd, input=raw)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


def statuses(env: dict[str, str]) -> dict[str, SubscriberStatus]:
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        return {s.email: s.status for s in store.iter_subscribers()}


class Site:
    """A list of three readers who got the sample edition through the test SMTP server."""

    def __init__(self, tmp_path: Path, server: SmtpServer, count: int = 3) -> None:
        self.tmp_path = tmp_path
        self.server = server
        self.env = send_env(tmp_path, server.port)
        self.readers = readers(count)
        import_addresses(tmp_path, self.env, self.readers)
        proc = invoke_cli("send", "--date", SAMPLE_DATE, env=self.env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        server.wait_for(count)

    def envelope_of(self, address: str) -> str:
        [sender] = [e["mail_from"] for e in self.server.log() if e["rcpt_tos"] == [address]]
        return sender

    def run(
        self, raw: bytes, *args: str, process: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        return bounce_mail(self.env, self.tmp_path, raw, *args, process=process)

    def statuses(self) -> dict[str, SubscriberStatus]:
        return statuses(self.env)


@pytest.fixture
def site(tmp_path: Path, smtp_server: SmtpServer) -> Site:
    return Site(tmp_path, smtp_server)


ACTIVE = SubscriberStatus.ACTIVE

# -- VERP ----------------------------------------------------------------------------------------


def test_a_sends_envelope_senders_are_signed_per_delivery_addresses_without_the_reader(
    site: Site,
) -> None:
    senders = [entry["mail_from"] for entry in site.server.log()]
    assert len(senders) == 3 and len(set(senders)) == 3, senders
    for entry in site.server.log():
        sender = entry["mail_from"]
        assert VERP.match(sender), sender
        local = entry["rcpt_tos"][0].partition("@")[0]
        assert local not in sender and len(sender.partition("@")[0]) <= 64
        # The token is all lowercase: a relay folding the local part's case keeps it valid.
        assert sender == sender.lower()
    # The From header is untouched: only the envelope names the delivery.
    assert all("lettre@exemple.ma" in m["From"] for m in site.server.messages())


def test_the_verp_token_survives_case_folding_and_binds_the_address() -> None:
    signer = VerpSigner(TEST_SECRET)
    token = signer.sign("20260127", 4_294_967_295, "lecteur@exemple.ma")
    assert len(token) <= VERP_TOKEN_MAX and len(f"bounces+{token}") <= 64
    assert signer.verify(token.upper(), "lecteur@exemple.ma")
    assert not signer.verify(token, "autre@exemple.ma")
    tampered = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert not signer.verify(tampered, "lecteur@exemple.ma")
    # Another secret, or a test token passed for a delivery's, never verifies.
    assert not VerpSigner(TEST_SECRET + "x").verify(token, "lecteur@exemple.ma")
    test = signer.sign_test("20260127", "abc")
    found = signer.find(f"bounces+{test.upper()}@exemple.ma")
    assert found is not None and found[1].test
    assert not signer.verify(test.replace("t2026", "d2026"), "")


def test_a_bounce_address_too_long_for_a_token_is_refused_before_anything_is_sent(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    env = send_env(tmp_path, smtp_server.port, NEWSLETTER_BOUNCE_ADDRESS=f"{'r' * 40}@{DOMAIN}")
    import_addresses(tmp_path, env, readers(1))
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "NEWSLETTER_BOUNCE_ADDRESS" in proc.stderr and "too long for VERP" in proc.stderr
    assert smtp_server.log() == []


def test_the_bounce_address_setting_names_the_mailbox(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    env = send_env(tmp_path, smtp_server.port, NEWSLETTER_BOUNCE_ADDRESS="retours@Mail.Exemple.MA")
    import_addresses(tmp_path, env, readers(1))
    assert invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path).returncode == 0
    [entry] = smtp_server.log()
    assert re.fullmatch(r"retours\+d20260127-1-[a-z2-7]{16}@mail\.exemple\.ma", entry["mail_from"])


# -- bounces through `newsletter bounce-mail` ----------------------------------------------------


def test_a_hard_dsn_to_the_verp_address_bounces_its_subscriber_and_status_counts_it(
    site: Site,
) -> None:
    victim, *others = site.readers
    proc = site.run(dsn(victim, "5.1.1", to=site.envelope_of(victim)), process=True)
    assert proc.returncode == 0, proc.stderr
    assert b"5.1.1" in proc.stdout and b"stopped as bounced" in proc.stdout
    after = site.statuses()
    assert after[victim] is SubscriberStatus.BOUNCED
    assert all(after[o] is ACTIVE for o in others)
    with open_store(site.env["NEWSLETTER_DATABASE_URL"]) as store:
        counts = store.returned_counts([date.fromisoformat(SAMPLE_DATE)])
    assert counts[date.fromisoformat(SAMPLE_DATE)] == {"hard": 1, "mailed": 3}

    status = invoke_cli("status", "--date", SAMPLE_DATE, env=site.env, cwd=site.tmp_path)
    assert status.returncode == 0, status.stderr
    assert (
        "returned: 1 hard bounced (33.33%), 0 soft bounced (0.00%), 0 complained (0.00%) of 3 mailed"
        in status.stdout
    )
    assert "warning: the bounce rate 33.33% is over 2.00%" in status.stdout

    # The same report again changes nothing more and still exits 0.
    again = site.run(dsn(victim, "5.1.1", to=site.envelope_of(victim)))
    assert again.returncode == 0 and b"already recorded" in again.stderr


def test_the_envelope_recipient_may_come_from_the_option_or_postfix(site: Site) -> None:
    """No Delivered-To in the message: --recipient, or Postfix's ORIGINAL_RECIPIENT, carries it."""
    first, second, _ = site.readers
    raw = dsn(first, "5.2.1", to=f"bounces@{DOMAIN}")
    assert site.run(raw, "--recipient", site.envelope_of(first)).returncode == 0
    env = {**site.env, "ORIGINAL_RECIPIENT": site.envelope_of(second).upper()}
    assert (
        bounce_mail(
            env, site.tmp_path, dsn(second, "5.2.1", to=f"bounces@{DOMAIN}"), process=True
        ).returncode
        == 0
    )
    after = site.statuses()
    assert after[first] is after[second] is SubscriberStatus.BOUNCED


def test_one_soft_dsn_is_counted_and_changes_no_subscriber(site: Site) -> None:
    reader = site.readers[0]
    proc = site.run(dsn(reader, "4.2.2", action="delayed", to=site.envelope_of(reader)))
    assert proc.returncode == 0
    assert b"soft 4.2.2" in proc.stdout and b"counted" in proc.stdout
    assert site.statuses()[reader] is ACTIVE
    status = invoke_cli("status", "--date", SAMPLE_DATE, env=site.env, cwd=site.tmp_path)
    assert "1 soft bounced (33.33%)" in status.stdout and "0 hard bounced" in status.stdout


def _feed(path: Path, days: list[str]) -> Path:
    items = "".join(
        f"<item><title>Article du {day}</title><link>https://exemple.ma/{day}</link>"
        f"<pubDate>{date.fromisoformat(day):%a, %d %b %Y} 10:00:00 +0000</pubDate>"
        f'<guid isPermaLink="false">{day}</guid></item>'
        for day in days
    )
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>T</title>'
        f"<link>https://exemple.ma/</link>{items}</channel></rss>",
        encoding="utf-8",
    )
    return path


def test_soft_bounces_on_three_editions_make_a_hard_one(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    editions = ["2026-01-10", "2026-01-11", "2026-01-12"]
    feed = _feed(tmp_path / "feed.xml", ["2026-01-09", "2026-01-10", "2026-01-11"])
    env = send_env(tmp_path, smtp_server.port, NEWSLETTER_SOURCES=str(feed))
    reader, other = readers(2)
    import_addresses(tmp_path, env, [reader, other])
    for number, day in enumerate(editions, start=1):
        proc = invoke_cli("send", "--date", day, env=env, cwd=tmp_path)
        assert proc.returncode == 0 and "2 sent" in proc.stdout, (proc.stdout, proc.stderr)
        smtp_server.wait_for(2 * number)
    senders = [e["mail_from"] for e in smtp_server.log() if e["rcpt_tos"] == [reader]]
    assert len(senders) == 3

    def soft(sender: str) -> bytes:
        return dsn(reader, "4.2.2", action="delayed", to=sender)

    # Twice for the same edition is still one edition.
    for sender in (senders[0], senders[0], senders[1]):
        assert bounce_mail(env, tmp_path, soft(sender)).returncode == 0
        assert statuses(env)[reader] is ACTIVE
    last = bounce_mail(env, tmp_path, soft(senders[2]))
    assert last.returncode == 0 and b"stopped as bounced" in last.stdout, last
    after = statuses(env)
    assert after[reader] is SubscriberStatus.BOUNCED and after[other] is ACTIVE


def test_a_dsn_to_the_plain_address_tied_by_the_returned_message_id_bounces(site: Site) -> None:
    reader = site.readers[1]
    original = original_headers(site.server, reader)
    for headers_only in (True, False):
        raw = dsn(
            reader, "5.1.1", to=f"bounces@{DOMAIN}", original=original, headers_only=headers_only
        )
        proc = site.run(raw)
        assert proc.returncode == 0
    assert b"tied by Message-ID" in proc.stdout or b"already recorded" in proc.stderr
    after = site.statuses()
    assert after[reader] is SubscriberStatus.BOUNCED
    assert [s for s in after.values() if s is not ACTIVE] == [SubscriberStatus.BOUNCED]


def test_forged_reports_change_nothing(site: Site) -> None:
    victim, other, _ = site.readers
    before = site.statuses()
    genuine = site.envelope_of(victim)
    # A token with another signature.
    local, _, domain = genuine.partition("@")
    forged = (
        f"{local[:-4]}aaaa@{domain}" if not local.endswith("aaaa") else f"{local[:-4]}bbbb@{domain}"
    )
    # A token of one subscriber with the id of another.
    other_id = VERP.match(site.envelope_of(other)).group(1)  # type: ignore[union-attr]
    swapped = re.sub(r"-(\d+)-", f"-{other_id}-", genuine, count=1)
    # Our Message-ID of the victim, but the report names another recipient.
    original = original_headers(site.server, victim)
    cases = [
        dsn(victim, "5.1.1", to=forged),
        dsn(other, "5.1.1", to=swapped),
        dsn(other, "5.1.1", to=f"bounces@{DOMAIN}", original=original),
        # A Message-ID of ours for an address never mailed.
        dsn("inconnu@exemple.ma", "5.1.1", to=f"bounces@{DOMAIN}", original=original),
        # A Message-ID at another domain.
        dsn(victim, "5.1.1", to=f"bounces@{DOMAIN}", original=_with_id(original, "autre.example")),
    ]
    for raw in cases:
        proc = site.run(raw)
        assert proc.returncode == 0 and proc.stdout == b"", proc
        assert proc.stderr.startswith(b"ignored: ") and proc.stderr.count(b"\n") == 1, proc.stderr
    assert site.statuses() == before


def _with_id(original: EmailMessage, domain: str) -> EmailMessage:
    """The original's headers with its Message-ID at ``domain`` and no unsubscribe token."""
    copy = EmailMessage()
    for name, value in original.items():
        if name == "Message-ID":
            copy[name] = value.replace(f"@{DOMAIN}>", f"@{domain}>")
        elif name != "List-Unsubscribe":
            copy[name] = value
    return copy


def test_a_bounce_that_is_no_dsn_goes_through_the_mailman_detectors(site: Site) -> None:
    """Exim's classic bounce: plain text, X-Failed-Recipients, Auto-Submitted like a reply."""
    reader = site.readers[1]
    bounce = EmailMessage()
    bounce["From"] = "Mail Delivery System <Mailer-Daemon@mx.exemple.net>"
    bounce["To"] = site.envelope_of(reader)
    bounce["Subject"] = "Mail delivery failed: returning message to sender"
    bounce["Auto-Submitted"] = "auto-replied"
    bounce["X-Failed-Recipients"] = reader
    bounce.set_content(
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        f"  {reader}\n    SMTP error from remote mail server after RCPT TO:<{reader}>:\n"
        "    550 5.1.1 User unknown\n"
    )
    proc = site.run(bounce.as_bytes())
    assert proc.returncode == 0 and b"hard 5.1.1" in proc.stdout, proc
    assert site.statuses()[reader] is SubscriberStatus.BOUNCED


def test_an_auto_reply_to_the_verp_address_changes_nothing(site: Site) -> None:
    reader = site.readers[0]
    before = site.statuses()
    replies = []
    for headers in (
        {"Auto-Submitted": "auto-replied", "Subject": "Absence du bureau"},
        {"X-Autoreply": "yes", "Subject": "Re: la lettre"},
        {"Precedence": "auto_reply", "Subject": "Re: la lettre"},
        {"Subject": "Please confirm your message (challenge-response)"},
    ):
        reply = EmailMessage()
        reply["From"] = reader
        reply["To"] = site.envelope_of(reader)
        for name, value in headers.items():
            reply[name] = value
        reply.set_content(
            "Je suis absent jusqu'au 3 février. Your message to "
            f"{reader} could not be read: mailbox unavailable 5.1.1\n"
        )
        replies.append(reply.as_bytes())
    for raw in replies:
        proc = site.run(raw)
        assert proc.returncode == 0 and proc.stderr.startswith(b"ignored: an auto-reply"), proc
    assert site.statuses() == before


def test_an_arf_complaint_marks_complained_and_suppresses_the_address(site: Site) -> None:
    reader = site.readers[2]
    original = original_headers(site.server, reader)
    # Many feedback loops withhold the recipient: the signed unsubscribe token in the returned
    # List-Unsubscribe header ties it alone.
    proc = site.run(arf(original, to=f"bounces@{DOMAIN}", recipient=None))
    assert proc.returncode == 0, proc
    assert (
        b"complaint" in proc.stdout and b"stopped as complained, address suppressed" in proc.stdout
    )
    after = site.statuses()
    assert after[reader] is SubscriberStatus.COMPLAINED
    assert sum(s is ACTIVE for s in after.values()) == 2
    with open_store(site.env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.is_suppressed(suppression_hash(reader))
    status = invoke_cli("status", "--date", SAMPLE_DATE, env=site.env, cwd=site.tmp_path)
    assert "1 complained (33.33%)" in status.stdout
    assert "warning: the complaint rate 33.33% is over 0.10%" in status.stdout


def test_a_complaint_naming_another_recipient_changes_nothing(site: Site) -> None:
    victim, other, _ = site.readers
    before = site.statuses()
    proc = site.run(
        arf(original_headers(site.server, victim), to=f"bounces@{DOMAIN}", recipient=other)
    )
    assert proc.returncode == 0 and proc.stderr.startswith(b"ignored: ")
    assert site.statuses() == before


def test_bad_input_is_one_line_and_exit_0_and_changes_nobody(site: Site) -> None:
    reader = site.readers[0]
    envelope = site.envelope_of(reader)
    before = site.statuses()
    no_recipient = dsn(reader, "5.1.1", to=envelope, per_recipient=False)
    huge = dsn(reader, "5.1.1", to=f"bounces@{DOMAIN}") + b"x" * (10 * 1024 * 1024)
    cases: dict[str, bytes] = {
        "malformed": b"\x00\x01 not: mail\r\n--\r\n" + bytes(range(256)) * 10,
        "broken MIME": (
            b'Content-Type: multipart/report; boundary="zz"; report-type=delivery-status\r\n'
            b"To: " + envelope.encode() + b"\r\n\r\n--zz\r\nContent-Type: message/delivery-status"
            b"\r\n\r\nFinal-Recipient: rfc822;\r\n--zz"
        ),
        "no per-recipient part": no_recipient,
        "never mailed": dsn("jamais@exemple.ma", "5.1.1", to=f"bounces@{DOMAIN}"),
        "10 MB": huge,
        "UTF-16": dsn(reader, "5.1.1", to=envelope).decode("ascii").encode("utf-16"),
        "empty": b"",
    }
    for name, raw in cases.items():
        proc = site.run(raw)
        assert proc.returncode == 0, (name, proc)
        assert proc.stdout == b"", (name, proc)
        assert proc.stderr.startswith(b"ignored: ") and proc.stderr.count(b"\n") == 1, (name, proc)
    assert b"without a per-recipient part" in site.run(no_recipient).stderr
    assert site.statuses() == before


def test_an_unreachable_database_exits_75_so_the_mta_retries(site: Site) -> None:
    port = free_port()  # nothing listens there
    env = {
        **site.env,
        "NEWSLETTER_DATABASE_URL": f"postgresql+psycopg://nl:secret@127.0.0.1:{port}/nl",
    }
    reader = site.readers[0]
    proc = bounce_mail(
        env, site.tmp_path, dsn(reader, "5.1.1", to=site.envelope_of(reader)), process=True
    )
    assert proc.returncode == 75, proc
    assert proc.stderr.startswith(b"error: ") and b"secret" not in proc.stderr
    assert site.statuses()[reader] is ACTIVE


def test_a_bounce_of_a_test_send_changes_nobody(site: Site) -> None:
    editor = site.readers[0]  # an editor who is also a subscriber
    proc = invoke_cli(
        "send", "--date", SAMPLE_DATE, "--test", editor, env=site.env, cwd=site.tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    site.server.wait_for(4)
    test_entry = site.server.log()[-1]
    assert re.fullmatch(
        rf"bounces\+t20260127-[0-9a-f]+-[a-z2-7]{{16}}@{re.escape(DOMAIN)}", test_entry["mail_from"]
    )
    test_message = site.server.messages()[-1]
    before = site.statuses()
    for raw in (
        dsn(editor, "5.1.1", to=test_entry["mail_from"]),
        dsn(editor, "5.1.1", to=f"bounces@{DOMAIN}", original=test_message),
        arf(test_message, to=f"bounces@{DOMAIN}", recipient=editor),
    ):
        done = site.run(raw)
        assert done.returncode == 0 and b"test send" in done.stderr, done
    assert site.statuses() == before


def test_bounces_list_prints_an_editions_counts(site: Site) -> None:
    reader = site.readers[0]
    assert site.run(dsn(reader, "5.1.1", to=site.envelope_of(reader))).returncode == 0
    proc = invoke_cli("bounces", "list", env=site.env, cwd=site.tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("returned: 1 hard bounced (33.33%)")


# -- the editors' page, and the report API the SES webhook uses ----------------------------------


def test_the_editors_page_shows_bounces_complaints_rates_and_warnings(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    from newsletter.services.bounces import ReturnedReport, apply_report
    from tests.web_support import ADMIN_PASSWORD, running_app

    day = date.fromisoformat(SAMPLE_DATE)
    with running_app(
        tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD, NEWSLETTER_LOCALE="fr"
    ) as live:
        ids = [live.add(f"lecteur{i}@example.com") for i in range(4)]
        live.store.freeze_edition(day, [])
        claimed = live.store.claim_deliveries(day, "test-owner", 10, 60)
        assert live.store.mark_sent([c.delivery_id for c in claimed], "test-owner") == set()
        signer = VerpSigner(live.settings.secret_key)

        def report(kind: str, index: int, **fields: str) -> ReturnedReport:
            token = signer.sign("20260127", ids[index], f"lecteur{index}@example.com")
            values = {"recipient": f"lecteur{index}@example.com", "status": "", "diagnostic": ""}
            return ReturnedReport(
                kind=kind, verp_token=token, message_ids=(), **{**values, **fields}
            )

        done = [
            apply_report(live.store, live.settings, report("hard", 0, status="5.1.1")),
            apply_report(live.store, live.settings, report("soft", 1, status="4.2.2")),
            apply_report(live.store, live.settings, report("complaint", 2)),
        ]
        assert [r.acted for r in done] == [True, True, True], done
        # A webhook's report with a forged token changes nothing.
        genuine = report("hard", 3)
        assert genuine.verp_token is not None
        tampered = genuine.verp_token[:-2] + (
            "aa" if not genuine.verp_token.endswith("aa") else "bb"
        )
        forged = dataclasses.replace(genuine, verp_token=tampered)
        assert not apply_report(live.store, live.settings, forged).acted
        assert live.status("lecteur3@example.com") is SubscriberStatus.ACTIVE

        with live.client(auth=("editor", ADMIN_PASSWORD)) as http:
            page = http.get("/editor")
        assert page.status_code == 200
        text = " ".join(page.text.replace("\u202f", " ").replace("\xa0", " ").split())
        assert "Rebonds et plaintes" in text
        assert "1 rebond définitif (25,00 %)" in text
        assert "1 rebond temporaire (25,00 %)" in text
        assert "1 plainte (25,00 %)" in text
        assert "Taux de rebonds au-delà de 2,00 %" in text
        assert "Taux de plaintes au-delà de 0,10 %" in text


def test_the_soft_rule_counts_different_editions_within_the_window() -> None:
    from datetime import timedelta

    from newsletter.domain.returned import soft_bounces_make_hard

    day = date(2026, 1, 1)
    within = [day, day + timedelta(days=10), day + timedelta(days=29)]
    assert soft_bounces_make_hard(within, 3, 30)
    assert not soft_bounces_make_hard(within[:2], 3, 30)
    assert not soft_bounces_make_hard(
        [day, day, day + timedelta(days=1)], 3, 30
    )  # one edition twice
    spread = [day, day + timedelta(days=20), day + timedelta(days=40)]
    assert not soft_bounces_make_hard(spread, 3, 30)
    assert soft_bounces_make_hard([*spread, day + timedelta(days=45)], 3, 30)  # days 20, 40, 45
