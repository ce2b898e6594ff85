"""Returned mail: bounces (RFC 3464 DSNs and the odd formats) and complaints (RFC 5965 ARF), tied
to the delivery they are about, recorded on its ledger row, and the subscriber stopped.

What happens to a report:

* **Tied to a delivery, or ignored.** A report is acted on only when it names a real delivery of
  ours: by the VERP token of the envelope sender it came back to (``bounces+TOKEN@DOMAIN``, see
  ``tokens.VerpSigner``: signed, and bound to the subscriber's address), or by one of our
  Message-IDs (``<YYYYMMDD.ID.digest@DOMAIN>``) in the returned headers *for that same
  recipient*, or by a genuine unsubscribe token of the subscriber in the returned headers.
  Anything else (a forged DSN, a report about an address we never mailed, a test send) is
  ignored: one log line, exit 0, no reply to anyone (a reply would be backscatter to a forged
  sender).
* **Classified.** The ``Status:`` code of each per-recipient part of a DSN decides: 5.x.x is
  hard, 4.x.x soft; without a code, its ``Action:`` (failed or delayed). Mail that is not a DSN
  goes through Mailman's bounce detectors (flufl.bounce), which know the formats of qmail,
  Exim, Exchange, Yahoo and the rest, after the auto-replies (out-of-office, challenge-response)
  were set aside. An ARF report (``multipart/report; report-type=feedback-report``) is a
  complaint.
* **Acted on.** Hard: the subscriber stops as bounced. Soft: counted; soft bounces on
  NEWSLETTER_SOFT_BOUNCE_LIMIT different editions within NEWSLETTER_SOFT_BOUNCE_DAYS days make a
  hard one. Complaint: the subscriber stops as complained and the address is suppressed. The
  consent rules apply (a bounce never overwrites an unsubscribe, nothing overwrites a complaint).

``handle_returned_mail`` takes one raw message (``newsletter bounce-mail``, the IMAP poller);
``apply_report`` takes a report already read (the SES webhook builds one from a notification).
Neither raises for bad input; both raise the store's errors when the database is unreachable.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from flufl.bounce import all_failures

from newsletter.adapters.message import Sender
from newsletter.adapters.store import ReturnedTarget, Store
from newsletter.adapters.tokens import InvalidToken, Purpose, TokenSigner, VerpSigner
from newsletter.config import Settings
from newsletter.domain import SubscriberStatus
from newsletter.domain.addresses import InvalidAddress, normalise_address
from newsletter.domain.returned import ReturnedKind, kind_of_status, soft_bounces_make_hard
from newsletter.domain.text import one_line

log = logging.getLogger("newsletter.services.bounces")

#: Read at most this much of a returned message: the report and the returned headers come first;
#: a bounce that attaches a 10 MB original needs none of its body.
MAX_RETURNED_BYTES = 1_000_000
DIAGNOSTIC_CHARS = 300

# The headers of the message as delivered to us that may carry the address it was sent to, in the
# order an MTA is most trustworthy about them (Postfix writes Delivered-To and X-Original-To).
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
# One of our Message-IDs (adapters/message.py message_id) and a test send's.
_MESSAGE_ID = re.compile(r"<(\d{8})\.(\d{1,10})\.digest@([A-Za-z0-9.-]+)>")
_TEST_MESSAGE_ID = re.compile(r"<\d{8}\.test-[0-9a-f-]+\.\d+\.digest@[A-Za-z0-9.-]+>")
# Our unsubscribe tokens as the returned List-Unsubscribe header or body carries them.
_UNSUBSCRIBE_TOKEN = re.compile(
    r"(?:/unsubscribe/|unsubscribe%20)([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+)"
)
_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")
# Subjects of out-of-office and challenge-response mail, in the languages of our readers.
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|absen(t|ce)|"
    r"r[ée]ponse automatique|message d'absence|vacation|please confirm|confirm your|"
    r"challenge|رد تلقائي)",
    re.IGNORECASE,
)
_COMPLAINT_TYPES = {"abuse", "fraud", "virus", "other", ""}


@dataclass(frozen=True, slots=True)
class ReturnedReport:
    """One report about one recipient, however it arrived (a DSN, an ARF report, SES)."""

    kind: str  # "hard" | "soft" | "complaint" (domain.returned.ReturnedKind)
    recipient: str  # the address the report is about ("" when the report withholds it)
    status: str  # RFC 3463 code, "5.1.1"; "" when none was given
    diagnostic: str  # what the remote server said, one line
    verp_token: str | None  # from the address the report came back to, if any
    message_ids: tuple[str, ...]  # Message-IDs found in the returned headers
    unsubscribe_tokens: tuple[str, ...] = ()  # our unsubscribe tokens in the returned headers


@dataclass(frozen=True, slots=True)
class BounceResult:
    """What handling one returned message did: ``acted`` when a delivery or a subscriber
    changed; ``line`` says what, or why nothing was done, on one line for the log."""

    acted: bool
    line: str
    subscriber_id: int | None = None
    kind: str | None = None


# -- reading a returned message ------------------------------------------------------------------


@dataclass
class _Reading:
    """What was read from one message: its reports, or why there are none."""

    reports: list[ReturnedReport] = field(default_factory=list)
    ignored: str = ""


def handle_returned_mail(
    store: Store, settings: Settings, raw: bytes, *, recipients: Sequence[str] = ()
) -> BounceResult:
    """Read one returned message and act on what it reports; never raises for bad input.

    ``recipients``: the envelope recipient(s) the MTA delivered it to, when it says them
    (``bounce-mail --recipient``, Postfix's ORIGINAL_RECIPIENT); the message's own
    Delivered-To, X-Original-To and To headers are looked at too.
    """
    try:
        reading = read_returned_mail(raw[:MAX_RETURNED_BYTES], recipients, settings.secret_key)
    except Exception as err:  # a parser or detector choking on hostile input: ignore the message
        return BounceResult(False, f"ignored: unreadable message ({type(err).__name__})")
    if not reading.reports:
        return BounceResult(False, f"ignored: {reading.ignored}")
    results = [apply_report(store, settings, report) for report in reading.reports]
    acted = [r for r in results if r.acted]
    if len(results) == 1:
        return results[0]
    first = acted[0] if acted else results[0]
    return BounceResult(
        bool(acted), "; ".join(r.line for r in results), first.subscriber_id, first.kind
    )


def read_returned_mail(raw: bytes, recipients: Sequence[str], secret_key: str) -> _Reading:
    """The reports in one raw message, each with what may tie it to a delivery."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:1000]:
        return _Reading(ignored="not a mail message (UTF-16 or binary)")
    if not raw.strip():
        return _Reading(ignored="empty message")
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if not message.keys():
        return _Reading(ignored="malformed message: no header")
    text = _all_text(message, raw)
    verp = _verp_token(message, recipients, VerpSigner(secret_key))
    found = [*_MESSAGE_ID.finditer(text), *_TEST_MESSAGE_ID.finditer(text)]
    ids = tuple(dict.fromkeys(m.group(0) for m in found))
    unsubscribe = tuple(dict.fromkeys(_UNSUBSCRIBE_TOKEN.findall(text)))

    def report(kind: ReturnedKind, recipient: str, status: str, diagnostic: str) -> ReturnedReport:
        return ReturnedReport(
            kind=kind.value,
            recipient=recipient,
            status=status,
            diagnostic=_one_line(diagnostic),
            verp_token=verp,
            message_ids=ids,
            unsubscribe_tokens=unsubscribe,
        )

    feedback = list(_parts(message, "message/feedback-report"))
    if feedback and message.get_content_type() == "multipart/report":
        fields = _fields(feedback[0])
        feedback_type = fields.get("feedback-type", "").strip().lower()
        if feedback_type not in _COMPLAINT_TYPES:
            return _Reading(ignored=f"a feedback report of type {feedback_type!r}, not a complaint")
        recipient = _address(fields.get("original-rcpt-to", "")) or _returned_to(message)
        diagnostic = f"feedback report: {feedback_type or 'abuse'}"
        agent = fields.get("user-agent", "")
        if agent:
            diagnostic += f" from {agent}"
        return _Reading([report(ReturnedKind.COMPLAINT, recipient, "", diagnostic)])

    statuses = list(_parts(message, "message/delivery-status"))
    if statuses:
        temporary, permanent = _flufl(message)
        reports = []
        blocks = [b for part in statuses for b in _recipient_blocks(part)]
        if not blocks:
            return _Reading(ignored="a DSN without a per-recipient part")
        for block in blocks:
            recipient = _address(
                block.get("original-recipient", "") or block.get("final-recipient", "")
            )
            status_match = _STATUS.search(block.get("status", ""))
            status = status_match.group(0) if status_match else ""
            action = block.get("action", "").strip().lower()
            kind = kind_of_status(status)
            if kind is None and not status:
                if action.startswith(("failed", "error")) or recipient in permanent:
                    kind = ReturnedKind.HARD
                elif action.startswith("delayed") or recipient in temporary:
                    kind = ReturnedKind.SOFT
            if kind is None:
                continue  # delivered, relayed, expanded: nothing went wrong
            reports.append(report(kind, recipient, status, block.get("diagnostic-code", "")))
        if not reports:
            return _Reading(ignored="a DSN that reports no failure (delivered, relayed)")
        return _Reading(reports)

    if _is_auto_reply(message) and not _from_mail_system(message):
        return _Reading(ignored="an auto-reply (out-of-office or challenge-response)")
    temporary, permanent = _flufl(message)
    status_match = _STATUS.search(text)
    status = status_match.group(0) if status_match else ""
    reports = [report(ReturnedKind.HARD, r, status, "") for r in sorted(permanent)]
    reports += [report(ReturnedKind.SOFT, r, status, "") for r in sorted(temporary - permanent)]
    if not reports:
        return _Reading(ignored="neither a bounce nor a complaint")
    return _Reading(reports)


def _parts(message: email.message.Message, content_type: str) -> Iterator[email.message.Message]:
    for part in message.walk():
        if part.get_content_type() == content_type:
            yield part


def _recipient_blocks(part: email.message.Message) -> list[dict[str, str]]:
    """The per-recipient field blocks of a message/delivery-status part (the first block is
    the per-message one, and is skipped: only blocks naming a recipient are kept)."""
    payload = part.get_payload()
    if isinstance(payload, str):  # a part the parser left as text (a broken DSN): parse it here
        chunks = re.split(r"\r?\n\s*\r?\n", payload)
        blocks = [_fields(email.message_from_string(c.strip() + "\n\n")) for c in chunks]
    else:
        blocks = [_fields(b) for b in payload if isinstance(b, email.message.Message)]
    return [b for b in blocks if b.get("final-recipient") or b.get("original-recipient")]


def _fields(block: email.message.Message) -> dict[str, str]:
    """A header block as lower-case name -> one-line value (the first of each name)."""
    if block.get_content_type() == "message/feedback-report" and block.is_multipart():
        inner = block.get_payload(0)
        block = inner if isinstance(inner, email.message.Message) else block
    fields: dict[str, str] = {}
    for name, value in block.items():
        fields.setdefault(name.lower(), _one_line(str(value)))
    return fields


def _address(field_value: str) -> str:
    """The address of a DSN recipient field: ``rfc822; a@b`` or ``<a@b>`` gives ``a@b``."""
    value = field_value.partition(";")[2] if ";" in field_value else field_value
    return value.strip().strip("<>").strip()


def _returned_to(message: email.message.Message) -> str:
    """The To of the returned original (an ARF report that withholds Original-Rcpt-To)."""
    for part in message.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            inner = part.get_payload(0) if part.is_multipart() else None
            if isinstance(inner, email.message.Message):
                return email.utils.parseaddr(str(inner.get("To", "")))[1]
            if isinstance(part.get_payload(), str):
                headers = email.message_from_string(str(part.get_payload()))
                return email.utils.parseaddr(str(headers.get("To", "")))[1]
    return ""


def _flufl(message: email.message.Message) -> tuple[set[str], set[str]]:
    """Mailman's detectors: (temporary, permanent) failing addresses, as text."""
    temporary, permanent = all_failures(message)
    return (
        {a.decode("ascii", "replace") for a in temporary},
        {a.decode("ascii", "replace") for a in permanent},
    )


def _is_auto_reply(message: email.message.Message) -> bool:
    """Out-of-office, vacation and challenge-response mail (RFC 3834 and what is seen in use)."""
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        return True
    if any(message.get(name) for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Reply")):
        return True
    precedence = str(message.get("Precedence", "")).strip().lower()
    if precedence in ("auto_reply", "auto-reply"):
        return True
    return bool(_AUTO_SUBJECT.search(str(message.get("Subject", ""))))


def _from_mail_system(message: email.message.Message) -> bool:
    """A bounce that is no DSN but says it comes from a mail server: Exim's (X-Failed-Recipients)
    and qmail's carry Auto-Submitted too, and are bounces all the same."""
    if message.get("X-Failed-Recipients"):
        return True
    sender = email.utils.parseaddr(str(message.get("From", "")))[1].lower()
    return sender.partition("@")[0] in ("mailer-daemon", "postmaster", "mail-daemon")


def _verp_token(
    message: email.message.Message, recipients: Iterable[str], verp: VerpSigner
) -> str | None:
    """The first VERP token in the envelope recipient or the delivered-to headers."""
    candidates = [*recipients]
    for name in ENVELOPE_HEADERS:
        candidates.extend(str(v) for v in message.get_all(name, []))
    for candidate in candidates:
        found = verp.find(candidate)
        if found is not None:
            return found[0]
    return None


def _all_text(message: email.message.Message, raw: bytes) -> str:
    """Every header and text of the message, decoded, to look for our ids and tokens in: the
    raw bytes (headers, 7bit parts) and each decoded part (a base64 or QP returned original)."""
    pieces = [raw.decode("latin-1")]
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            pieces.append(payload[:MAX_RETURNED_BYTES].decode("latin-1"))
    return "\n".join(pieces)


def _one_line(text: str) -> str:
    return one_line(text)[:DIAGNOSTIC_CHARS]


# -- acting on a report --------------------------------------------------------------------------


def apply_report(store: Store, settings: Settings, report: ReturnedReport) -> BounceResult:
    """Act on one report when it is tied to a delivery of ours; never raises for bad input."""
    try:
        kind = ReturnedKind(report.kind)
    except ValueError:
        return BounceResult(False, f"ignored: unknown report kind {report.kind!r}")
    target, test, how = _tie(store, settings, report)
    if target is None:
        if test:
            return BounceResult(False, "ignored: it is about a test send; nothing changes")
        if report.verp_token:
            return BounceResult(
                False,
                f"ignored: a {kind.value} report whose VERP token does not verify (forged, or "
                "for a delivery no longer recorded), and nothing else ties it to a delivery",
            )
        return BounceResult(
            False,
            f"ignored: a {kind.value} report not tied to a delivery of ours (no VERP token, "
            "nor our Message-ID or unsubscribe token for that recipient)",
        )
    return _act(store, settings, target, kind, report, how)


def _tie(
    store: Store, settings: Settings, report: ReturnedReport
) -> tuple[ReturnedTarget | None, bool, str]:
    """The delivery the report is about, whether it names a test send, and how it was tied."""
    test = False
    if report.verp_token:
        verp = VerpSigner(settings.secret_key)
        found = verp.find(report.verp_token)
        if found is not None:
            token, claim = found
            if claim.test:
                return None, True, ""
            day = _day(claim.day_text)
            target = store.mailed_delivery(day, claim.subscriber_id) if day else None
            if target is not None and verp.verify(token, target.email_key):
                return target, False, "VERP"
    domain = _sender_domain(settings)
    recipient_key = _key(report.recipient)
    for message_id in report.message_ids:
        if _TEST_MESSAGE_ID.fullmatch(message_id):
            test = True
            continue
        match = _MESSAGE_ID.fullmatch(message_id)
        if match is None or match.group(3).lower() != domain:
            continue
        day = _day(match.group(1))
        if day is None:
            continue
        target = store.mailed_delivery(day, int(match.group(2)))
        # A Message-ID is guessable (a date and a number): it ties only for the recipient
        # the report names, and that must be the address the delivery went to.
        if target is not None and recipient_key and recipient_key == target.email_key:
            return target, False, "Message-ID"
    if report.unsubscribe_tokens:
        signer = TokenSigner(settings.secret_key, settings.confirm_days * 86400)
        for token in report.unsubscribe_tokens:
            if signer.is_test(Purpose.UNSUBSCRIBE, token):
                test = True
                continue
            try:
                claim_u = signer.read(Purpose.UNSUBSCRIBE, token)
            except InvalidToken:
                continue
            target = _edition_of(store, report, domain, claim_u.subscriber_id)
            # The token is signed and bound to the address: it names its subscriber alone,
            # unless the report names another recipient.
            if (
                target is not None
                and signer.matches(claim_u, target.email_key)
                and recipient_key in ("", target.email_key)
            ):
                return target, False, "unsubscribe token"
    return None, test, ""


def _edition_of(
    store: Store, report: ReturnedReport, domain: str, subscriber_id: int
) -> ReturnedTarget | None:
    """The delivery to ``subscriber_id`` the report's Message-IDs name, else their latest."""
    for message_id in report.message_ids:
        match = _MESSAGE_ID.fullmatch(message_id)
        if match and match.group(3).lower() == domain and int(match.group(2)) == subscriber_id:
            day = _day(match.group(1))
            target = store.mailed_delivery(day, subscriber_id) if day else None
            if target is not None:
                return target
    return store.latest_mailed_delivery(subscriber_id)


def _act(
    store: Store,
    settings: Settings,
    target: ReturnedTarget,
    kind: ReturnedKind,
    report: ReturnedReport,
    how: str,
) -> BounceResult:
    where = f"subscriber {target.subscriber_id}, edition {target.edition_date.isoformat()}"
    code = f" {report.status}" if report.status else ""
    said = f"{kind.value}{code} (tied by {how})"
    diagnostic = _one_line(report.diagnostic)
    if kind is ReturnedKind.COMPLAINT:
        recorded, moved = store.record_returned(
            target, kind, report.status, diagnostic, stop=SubscriberStatus.COMPLAINED, suppress=True
        )
        outcome = (
            "stopped as complained, address suppressed" if moved else _unchanged(target, recorded)
        )
        return BounceResult(
            recorded or moved, f"{where}: {said}: {outcome}", target.subscriber_id, kind.value
        )
    if kind is ReturnedKind.HARD:
        recorded, moved = store.record_returned(
            target, kind, report.status, diagnostic, stop=SubscriberStatus.BOUNCED
        )
        outcome = "stopped as bounced" if moved else _unchanged(target, recorded)
        return BounceResult(
            recorded or moved, f"{where}: {said}: {outcome}", target.subscriber_id, kind.value
        )
    recorded, _ = store.record_returned(target, kind, report.status, diagnostic)
    days = store.soft_returned_days(target.subscriber_id)
    limit, window = settings.soft_bounce_limit, settings.soft_bounce_days
    counted = f"soft bounces on {len(days)} edition(s)"
    if soft_bounces_make_hard(days, limit, window):
        moved = store.mark_bounced(target.subscriber_id)
        outcome = (
            f"{counted}, {limit} within {window} days: stopped as bounced"
            if moved
            else f"{counted}; {_unchanged(target, recorded)}"
        )
        return BounceResult(
            recorded or moved, f"{where}: {said}: {outcome}", target.subscriber_id, kind.value
        )
    outcome = f"{counted}, counted (stops at {limit} within {window} days)"
    return BounceResult(recorded, f"{where}: {said}: {outcome}", target.subscriber_id, kind.value)


def _unchanged(target: ReturnedTarget, recorded: bool) -> str:
    done = "recorded" if recorded else "already recorded"
    return f"{done}; the subscriber stays {target.subscriber_status.value}"


def _day(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def _key(address: str) -> str:
    if not address:
        return ""
    try:
        return normalise_address(address).key
    except InvalidAddress:
        return address.strip().lower()


def _sender_domain(settings: Settings) -> str:
    try:
        return Sender.parse(settings.from_address).domain
    except Exception:  # no usable From: no Message-ID of ours can be recognised
        return ""
