"""Amazon SNS messages: parsed, and their signature verified, before anything acts on them.

SES reports bounces and complaints through an SNS topic that POSTs JSON to ``/hooks/ses``. Anyone
can POST there, so a message counts only when:

- its ``TopicArn`` is one of NEWSLETTER_SNS_TOPIC_ARNS;
- its ``SigningCertURL`` is https on an SNS host (``sns.<region>.amazonaws.com``) and names a
  ``.pem``: the certificate is fetched from there only (never from a URL the sender chose
  elsewhere), then cached;
- its ``Signature`` verifies, with that certificate's key, over the canonical string SNS signs
  (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA).

Verification uses ``cryptography``; nothing here is hand-rolled crypto. The private test hook
``NEWSLETTER_TEST_SNS_CERT_DIR`` makes the fetch read ``<dir>/<file name of the URL>`` instead of
downloading it: the tests sign with a local certificate, the URL rules stay in force.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.domain.errors import NewsletterError

_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_TEST_CERT_DIR_ENV = "NEWSLETTER_TEST_SNS_CERT_DIR"
MAX_CERT_BYTES = 16 * 1024
CERT_TIMEOUT = 5.0

# The fields SNS signs, in the order it signs them, per message type.
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


class RejectedNotification(NewsletterError):
    """An SNS message that is malformed, from another topic, or not signed by SNS."""


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verified SNS message: its type, topic, and the payload (``Message``, SES's JSON)."""

    type: str
    topic_arn: str
    message_id: str
    message: str
    subscribe_url: str = ""


class CertificateCache:
    """SNS signing certificates by URL, fetched once each (the URL names a key, not a session)."""

    def __init__(self) -> None:
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> x509.Certificate:
        _check_cert_url(url)
        with self._lock:
            cached = self._certs.get(url)
        if cached is not None:
            return cached
        try:
            cert = x509.load_pem_x509_certificate(_fetch(url))
        except ValueError:
            raise RejectedNotification(
                f"the signing certificate at {url} is not a PEM certificate"
            ) from None
        with self._lock:
            self._certs[url] = cert
        return cert


def verify_sns_message(
    body: bytes, topics: tuple[str, ...], certificates: CertificateCache
) -> SnsMessage:
    """The SNS message in ``body`` once its topic and signature check out; RejectedNotification."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RejectedNotification("the body is not JSON") from None
    if not isinstance(data, dict):
        raise RejectedNotification("the body is not an SNS message")
    kind = _text(data, "Type")
    fields = _SIGNED_FIELDS.get(kind)
    if fields is None:
        raise RejectedNotification(f"unknown SNS message type {kind[:40]!r}")
    topic = _text(data, "TopicArn")
    if topic not in topics:
        raise RejectedNotification(f"topic {topic[:200]!r} is not in NEWSLETTER_SNS_TOPIC_ARNS")
    algorithm = _HASHES.get(_text(data, "SignatureVersion"))
    if algorithm is None:
        raise RejectedNotification("unknown SignatureVersion")
    try:
        signature = base64.b64decode(_text(data, "Signature"), validate=True)
    except (binascii.Error, ValueError):
        raise RejectedNotification("the signature is not base64") from None
    key = certificates.get(_text(data, "SigningCertURL")).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise RejectedNotification("the signing certificate's key is not RSA")
    try:
        key.verify(signature, _string_to_sign(data, fields), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise RejectedNotification("the signature does not verify") from None
    return SnsMessage(
        type=kind,
        topic_arn=topic,
        message_id=_text(data, "MessageId"),
        message=_text(data, "Message"),
        subscribe_url=_text(data, "SubscribeURL"),
    )


def is_sns_url(url: str) -> bool:
    """An https URL on an SNS host: the only kind a subscription confirmation may be fetched from."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(_SNS_HOST.match(parts.hostname or ""))


def _string_to_sign(data: dict[str, object], fields: tuple[str, ...]) -> bytes:
    # "Key\nValue\n" for each signed field present, in SNS's order (Subject only when present).
    parts = []
    for name in fields:
        if name in data:
            parts.append(f"{name}\n{_text(data, name)}\n")
    return "".join(parts).encode("utf-8")


def _text(data: dict[str, object], name: str) -> str:
    value = data.get(name, "")
    return value if isinstance(value, str) else ""


def _check_cert_url(url: str) -> None:
    if not is_sns_url(url) or not urlsplit(url).path.endswith(".pem"):
        raise RejectedNotification(
            f"SigningCertURL {url[:200]!r} is not an https .pem on an SNS host"
        )


def _fetch(url: str) -> bytes:
    folder = os.environ.get(_TEST_CERT_DIR_ENV)
    if folder:
        path = Path(folder) / Path(urlsplit(url).path).name
        try:
            return path.read_bytes()[:MAX_CERT_BYTES]
        except OSError:
            raise RejectedNotification(f"no signing certificate at {url}") from None
    try:
        response = httpx.get(url, timeout=CERT_TIMEOUT, follow_redirects=False)
    except httpx.HTTPError as err:
        raise RejectedNotification(f"cannot fetch the signing certificate {url}: {err}") from None
    if response.status_code != 200 or len(response.content) > MAX_CERT_BYTES:
        raise RejectedNotification(f"cannot fetch the signing certificate {url}")
    return response.content
