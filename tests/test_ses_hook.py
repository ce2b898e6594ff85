"""POST /hooks/ses (issue 12): Amazon SES bounces and complaints through SNS, over real HTTP.

The tests sign SNS messages with a local certificate (the private hook NEWSLETTER_TEST_SNS_CERT_DIR
stands in for the download from sns.<region>.amazonaws.com; the URL rules stay in force) and
forge others. Only a verified notification of a configured topic, tied to a real delivery of the
send that ran first, changes a subscriber.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.domain import SubscriberStatus
from tests.factories import import_addresses, readers
from tests.support import SAMPLE_DATE, invoke_cli, send_env
from tests.web_support import running_app

TOPIC = "arn:aws:sns:eu-west-1:123456789012:lettre-ses"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"


def _key_and_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


SNS_KEY, SNS_CERT = _key_and_cert()
OTHER_KEY, _ = _key_and_cert()


def sns_notification(
    message: dict[str, object],
    *,
    key: rsa.RSAPrivateKey = SNS_KEY,
    topic: str = TOPIC,
    cert_url: str = CERT_URL,
    version: str = "2",
) -> bytes:
    fields = {
        "Type": "Notification",
        "MessageId": "5c1f0f1e-0000-4000-8000-000000000001",
        "TopicArn": topic,
        "Message": json.dumps(message),
        "Timestamp": "2026-01-27T07:05:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    signed = "".join(
        f"{name}\n{fields[name]}\n"
        for name in ("Message", "MessageId", "Timestamp", "TopicArn", "Type")
    ).encode()
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    fields["Signature"] = base64.b64encode(key.sign(signed, padding.PKCS1v15(), algorithm)).decode()
    return json.dumps(fields).encode()


def ses_bounce(recipient: str, mail_from: str, message_id: str, kind: str) -> dict[str, object]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": kind,
            "bouncedRecipients": [
                {
                    "emailAddress": recipient,
                    "status": "5.1.1" if kind == "Permanent" else "4.2.2",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
        },
        "mail": {"source": mail_from, "commonHeaders": {"messageId": message_id}},
    }


def ses_complaint(recipient: str, mail_from: str, message_id: str) -> dict[str, object]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": recipient}],
            "complaintFeedbackType": "abuse",
        },
        "mail": {"source": mail_from, "commonHeaders": {"messageId": message_id}},
    }


@pytest.fixture
def sent(
    tmp_path: Path, smtp_server, monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[str, str]]:
    """Edition 2026-01-27 sent to three readers; each reader's envelope sender and Message-ID."""
    certs = tmp_path / "sns-certs"
    certs.mkdir()
    (certs / "SimpleNotificationService-test.pem").write_bytes(SNS_CERT)
    monkeypatch.setenv("NEWSLETTER_TEST_SNS_CERT_DIR", str(certs))
    env = send_env(tmp_path, smtp_server.port)
    import_addresses(tmp_path, env, readers(3))
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    by_reader = {}
    envelopes = {entry["rcpt_tos"][0]: entry["mail_from"] for entry in smtp_server.log()}
    for message in smtp_server.messages():
        to = str(message["To"]).strip("<>").rpartition("<")[2].strip(">")
        by_reader[to] = (envelopes[to], str(message["Message-ID"]))
    assert sorted(by_reader) == sorted(readers(3))
    return by_reader


def test_a_signed_permanent_bounce_stops_its_subscriber_and_a_transient_one_does_not(
    tmp_path: Path, smtp_server, sent: dict[str, tuple[str, str]]
) -> None:
    hard, soft, complained = readers(3)
    with (
        running_app(tmp_path, smtp_server, NEWSLETTER_SNS_TOPIC_ARNS=TOPIC) as live,
        live.client() as http,
    ):
        post = http.post(
            "/hooks/ses",
            content=sns_notification(ses_bounce(hard, *sent[hard], "Permanent")),
            headers={"Content-Type": "text/plain; charset=UTF-8"},
        )
        assert post.status_code == 200, post.text
        assert live.status(hard) == SubscriberStatus.BOUNCED

        post = http.post(
            "/hooks/ses", content=sns_notification(ses_bounce(soft, *sent[soft], "Transient"))
        )
        assert post.status_code == 200 and live.status(soft) == SubscriberStatus.ACTIVE

        post = http.post(
            "/hooks/ses",
            content=sns_notification(ses_complaint(complained, *sent[complained]), version="1"),
        )
        assert post.status_code == 200
        assert live.status(complained) == SubscriberStatus.COMPLAINED


@pytest.mark.parametrize(
    "forgery",
    [
        {"key": OTHER_KEY},  # signed by someone else
        {"topic": "arn:aws:sns:eu-west-1:999999999999:not-ours"},
        {"cert_url": "https://evil.example.com/SimpleNotificationService-test.pem"},
        {"cert_url": "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"},
    ],
)
def test_a_forged_notification_is_refused_and_changes_nothing(
    tmp_path: Path, smtp_server, sent: dict[str, tuple[str, str]], forgery: dict[str, object]
) -> None:
    reader = readers(3)[0]
    body = sns_notification(ses_bounce(reader, *sent[reader], "Permanent"), **forgery)  # type: ignore[arg-type]
    with running_app(tmp_path, smtp_server, NEWSLETTER_SNS_TOPIC_ARNS=TOPIC) as live:
        with live.client() as http:
            assert http.post("/hooks/ses", content=body).status_code == 403
            tampered = json.loads(sns_notification(ses_bounce(reader, *sent[reader], "Transient")))
            tampered["Message"] = tampered["Message"].replace("Transient", "Permanent")
            assert http.post("/hooks/ses", content=json.dumps(tampered)).status_code == 403
            assert http.post("/hooks/ses", content=b"\xff\xfe not json").status_code == 403
        assert live.status(reader) == SubscriberStatus.ACTIVE


def test_a_genuine_notification_for_a_delivery_we_never_made_changes_nothing(
    tmp_path: Path, smtp_server, sent: dict[str, tuple[str, str]]
) -> None:
    reader = readers(3)[0]
    # Signed by SNS, about our reader, but from no delivery of ours: no VERP token in the
    # envelope sender and a Message-ID we never used.
    never = "<20260127.999.digest@exemple.ma>"
    body = sns_notification(ses_bounce(reader, "bounces@exemple.ma", never, "Permanent"))
    with running_app(tmp_path, smtp_server, NEWSLETTER_SNS_TOPIC_ARNS=TOPIC) as live:
        with live.client() as http:
            assert http.post("/hooks/ses", content=body).status_code == 200
        assert live.status(reader) == SubscriberStatus.ACTIVE


def test_the_hook_is_off_without_topics(tmp_path: Path) -> None:
    with running_app(tmp_path, None) as live, live.client() as http:
        assert http.post("/hooks/ses", content=b"{}").status_code in (404, 405)


def test_a_subscription_confirmation_is_fetched_only_from_sns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    certs = tmp_path / "sns-certs"
    certs.mkdir()
    (certs / "SimpleNotificationService-test.pem").write_bytes(SNS_CERT)
    monkeypatch.setenv("NEWSLETTER_TEST_SNS_CERT_DIR", str(certs))
    fields = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "5c1f0f1e-0000-4000-8000-000000000002",
        "Token": "2336412f37fb687f5d51e6e2425",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": "https://evil.example.com/?Action=ConfirmSubscription",
        "Timestamp": "2026-01-27T07:05:00.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
    }
    signed = "".join(
        f"{name}\n{fields[name]}\n"
        for name in (
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        )
    ).encode()
    fields["Signature"] = base64.b64encode(
        SNS_KEY.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    ).decode()
    caplog.set_level("INFO", "newsletter")
    with (
        running_app(tmp_path, None, NEWSLETTER_SNS_TOPIC_ARNS=TOPIC) as live,
        live.client() as http,
    ):
        assert http.post("/hooks/ses", content=json.dumps(fields)).status_code == 200
    assert "SubscribeURL is not an SNS https URL" in caplog.text
