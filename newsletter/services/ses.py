"""Amazon SES bounce and complaint notifications (through SNS) -> the bounce service's reports.

``handle_sns_post`` verifies the SNS message (adapters/sns.py), then turns each bounced or
complained recipient of the SES notification into a ``ReturnedReport`` that
``services.bounces.apply_report`` ties to a real delivery (by the VERP token of the envelope
sender SES echoes in ``mail.source``, or by our Message-ID in ``mail.commonHeaders.messageId``)
before it changes anything. Both SES formats are read: SNS notifications (``notificationType``)
and event publishing (``eventType``).
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass

import httpx

from newsletter.adapters.sns import (
    CertificateCache,
    RejectedNotification,
    is_sns_url,
    verify_sns_message,
)
from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.domain.text import one_line
from newsletter.services.bounces import ReturnedReport, apply_report

log = logging.getLogger("newsletter.services.ses")

# SES's bounceType -> our kind. "Undetermined" is counted like a soft bounce: never a stop alone.
_BOUNCE_KINDS = {"Permanent": "hard", "Transient": "soft", "Undetermined": "soft"}
CONFIRM_TIMEOUT = 5.0


class HookOutcome(enum.StrEnum):
    HANDLED = "handled"  # verified and applied (or verified and nothing to do): 200
    REJECTED = "rejected"  # not a genuine notification of our topics: 403


@dataclass(frozen=True, slots=True)
class HookResult:
    outcome: HookOutcome
    lines: tuple[str, ...]


def handle_sns_post(
    store: Store, settings: Settings, body: bytes, certificates: CertificateCache
) -> HookResult:
    """Verify one SNS POST and act on it; raises the store's errors when the database is down."""
    try:
        message = verify_sns_message(body, settings.sns_topic_arns, certificates)
    except RejectedNotification as err:
        return HookResult(HookOutcome.REJECTED, (f"SES hook: refused: {err}",))
    if message.type == "SubscriptionConfirmation":
        return HookResult(HookOutcome.HANDLED, (_confirm_subscription(message.subscribe_url),))
    if message.type != "Notification":
        return HookResult(HookOutcome.HANDLED, (f"SES hook: {message.type} noted",))
    reports = ses_reports(message.message)
    if not reports:
        return HookResult(HookOutcome.HANDLED, ("SES hook: no bounce or complaint in it",))
    lines = tuple(apply_report(store, settings, report).line for report in reports)
    return HookResult(HookOutcome.HANDLED, lines)


def ses_reports(payload: str) -> list[ReturnedReport]:
    """One report per bounced or complained recipient of an SES notification; [] otherwise."""
    try:
        data = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    kind = data.get("notificationType") or data.get("eventType")
    mail = _mapping(data.get("mail"))
    token = _verp_token(str(mail.get("source", "")))
    headers = _mapping(mail.get("commonHeaders"))
    message_ids = tuple(str(v) for v in (headers.get("messageId"),) if isinstance(v, str) and v)
    if kind == "Bounce":
        bounce = _mapping(data.get("bounce"))
        bounce_kind = _BOUNCE_KINDS.get(str(bounce.get("bounceType")), "soft")
        return [
            ReturnedReport(
                kind=bounce_kind,
                recipient=str(recipient.get("emailAddress", "")),
                status=str(recipient.get("status", "")),
                diagnostic=one_line(str(recipient.get("diagnosticCode", "")))[:500],
                verp_token=token,
                message_ids=message_ids,
            )
            for recipient in map(_mapping, _list(bounce.get("bouncedRecipients")))
            if recipient.get("emailAddress")
        ]
    if kind == "Complaint":
        complaint = _mapping(data.get("complaint"))
        if complaint.get("complaintFeedbackType") == "not-spam":
            return []  # the reader marked it as *not* spam
        return [
            ReturnedReport(
                kind="complaint",
                recipient=str(recipient.get("emailAddress", "")),
                status="",
                diagnostic=one_line(str(complaint.get("complaintFeedbackType", "abuse")))[:500],
                verp_token=token,
                message_ids=message_ids,
            )
            for recipient in map(_mapping, _list(complaint.get("complainedRecipients")))
            if recipient.get("emailAddress")
        ]
    return []


def _verp_token(envelope_sender: str) -> str | None:
    # bounces+TOKEN@domain: the token is what follows the first "+" of the local part.
    local = envelope_sender.strip("<>").rpartition("@")[0]
    _, plus, token = local.partition("+")
    return token if plus and token else None


def _confirm_subscription(url: str) -> str:
    """Confirm the topic subscription by fetching SubscribeURL (only ever an SNS https URL)."""
    if not is_sns_url(url):
        return "SES hook: subscription confirmation refused: SubscribeURL is not an SNS https URL"
    try:
        response = httpx.get(url, timeout=CONFIRM_TIMEOUT, follow_redirects=False)
    except httpx.HTTPError as err:
        return (
            f"SES hook: could not confirm the subscription ({err}); open {url} once to confirm it"
        )
    if response.status_code != 200:
        return (
            f"SES hook: SNS answered {response.status_code} to the confirmation; "
            f"open {url} once to confirm it"
        )
    return "SES hook: subscription confirmed"


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
