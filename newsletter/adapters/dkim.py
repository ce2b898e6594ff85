"""DKIM signatures (RFC 6376; Ed25519 per RFC 8463), relaxed/relaxed, with ``cryptography``.

dkimpy, the reference library, takes about 12 ms a message here (it parses the whole message
and computes RSA in pure Python), more than a whole send of one message costs. So the signature
is computed here, with the two canonicalisations written out, and dkimpy verifies every message
the tests send. Signing costs one SHA-256 of the body and one RSA (about 0.45 ms for 2048 bits)
or Ed25519 (0.05 ms) signature.

Two entry points:
- ``DkimSigner.sign(message)`` signs any message (the sign-up confirmation): it finds the
  signed header fields and canonicalises the whole body;
- ``DkimSigner.body_hasher(pieces)`` + ``DkimSigner.signature_header(...)`` serve
  ``MessageTemplate``, which knows its header fields already and whose body is the same static
  pieces around a few per-subscriber links: the static pieces are canonicalised once per
  variant, and the hash state of everything before the first link is kept, so per message only
  the links and what follows them are hashed.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.config import Settings, load_dkim_key

if TYPE_CHECKING:
    from newsletter.config import DkimPrivateKey

CRLF = b"\r\n"

#: The header fields signed when present, in the order of h=. RFC 8058 needs both
#: List-Unsubscribe fields signed; Feedback-ID is signed so that Gmail trusts its identifiers.
SIGNED_FIELDS = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
#: Named once more in h= ("over-signed"): a second instance added on the way (a forged From, a
#: relay's own List-Unsubscribe) then breaks the signature instead of riding on it. Feedback-ID
#: is not: Amazon SES adds its own, and that must not break ours.
OVERSIGNED = frozenset(SIGNED_FIELDS) - {"feedback-id"}

_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_EOL = re.compile(rb" \r\n")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


def relaxed_header(field: bytes) -> bytes:
    """One header field, ``Name: value`` with CRLF and any folding, relaxed (RFC 6376 3.4.2)."""
    name, _, value = field.partition(b":")
    value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value)).strip(b" \r\n")
    return name.strip(b" \t").lower() + b":" + value + CRLF


def relaxed_lines(text: bytes) -> bytes:
    """Whole CRLF-ended lines, relaxed (RFC 6376 3.4.4) except for the end-of-body rule."""
    return _WSP_EOL.sub(CRLF, _WSP_RUN.sub(b" ", text))


def relaxed_body(body: bytes) -> bytes:
    """A whole body, relaxed: lines as above, empty lines at the end dropped."""
    body = relaxed_lines(body)
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    return b"" if body == CRLF else body


class BodyHasher:
    """The body hash of a ``MessageTemplate``'s messages: static pieces hashed once per variant.

    ``pieces`` is the body as the message holds it (not dot-stuffed), static bytes and slot
    names; every piece is whole lines, so each canonicalises on its own. The last piece is
    static and closes the body.
    """

    def __init__(self, pieces: Sequence[bytes | str]) -> None:
        canonical: list[bytes | str] = [
            relaxed_lines(piece) if isinstance(piece, bytes) else piece for piece in pieces
        ]
        last = pieces[-1]
        assert isinstance(last, bytes), "a template's body ends with static bytes"
        canonical[-1] = relaxed_body(last)
        prefix = hashlib.sha256()
        index = 0
        while index < len(canonical) and isinstance(canonical[index], bytes):
            prefix.update(canonical[index])  # type: ignore[arg-type]
            index += 1
        self._prefix = prefix
        self._rest = tuple(canonical[index:])

    def digest(self, values: Mapping[str, bytes]) -> bytes:
        """The body hash with each slot replaced by its (encoded) value."""
        state = self._prefix.copy()
        for piece in self._rest:
            if isinstance(piece, bytes):
                state.update(piece)
            else:
                value = values[piece]
                state.update(relaxed_lines(value) if b" " in value or b"\t" in value else value)
        return state.digest()


@dataclass(frozen=True, slots=True)
class DkimSigner:
    """Signs with one key as ``s=selector`` of ``d=domain``."""

    key: DkimPrivateKey
    selector: str
    domain: str

    @classmethod
    def from_settings(cls, settings: Settings, from_domain: str) -> DkimSigner | None:
        """The site's signer, or None when DKIM is off. Raises ``ConfigError`` for a bad key."""
        if not (settings.dkim_selector and settings.dkim_private_key):
            return None
        return cls(
            key=load_dkim_key(settings.dkim_private_key),
            selector=settings.dkim_selector,
            domain=settings.dkim_domain or from_domain,
        )

    @property
    def algorithm(self) -> str:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        return "ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "rsa-sha256"

    def body_hasher(self, pieces: Sequence[bytes | str]) -> BodyHasher:
        return BodyHasher(pieces)

    def signature_header(self, fields: Mapping[str, bytes], body_hash: bytes) -> bytes:
        """The ``DKIM-Signature`` field (CRLF-ended) for these header fields and body hash.

        ``fields`` maps a lower-case name to that field's canonical form (``relaxed_header``);
        the fields are signed in ``SIGNED_FIELDS`` order, each present one, plus the over-signed
        names once more (a name with no instance left adds nothing to the hash: RFC 6376 5.4.2).
        """
        names = [name for name in SIGNED_FIELDS if name in fields]
        listed = names + [name for name in names if name in OVERSIGNED]
        tags = (
            f"DKIM-Signature: v=1; a={self.algorithm}; c=relaxed/relaxed; d={self.domain};\r\n"
            f" s={self.selector}; t={int(time.time())};\r\n"
            f" h={_fold_names(listed)};\r\n"
            f" bh={base64.b64encode(body_hash).decode('ascii')};\r\n"
            " b="
        ).encode("ascii")
        signed = b"".join(fields[name] for name in names) + relaxed_header(tags)[:-2]
        signature = base64.b64encode(self._sign(signed))
        # b= on lines of at most 76 characters (folding whitespace is ignored in a tag value).
        folded = b"\r\n ".join(signature[i : i + 72] for i in range(0, len(signature), 72))
        return tags + folded + CRLF

    def _sign(self, data: bytes) -> bytes:
        # cryptography is imported where it is used: only a site that signs loads it.
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        # RFC 8463: Ed25519 (pure) over the SHA-256 hash of the canonicalised header fields.
        return self.key.sign(hashlib.sha256(data).digest())

    def sign(self, message: bytes) -> bytes:
        """``message`` (CRLF line ends, not dot-stuffed) with its ``DKIM-Signature`` in front."""
        head, separator, body = message.partition(b"\r\n\r\n")
        head += CRLF
        fields: dict[str, bytes] = {}
        # Bottom-up, the first instance of a name found is the one signed (RFC 6376 5.4.2).
        for field in reversed(_header_fields(head)):
            name = field.partition(b":")[0].strip().lower().decode("ascii", "replace")
            if name in SIGNED_FIELDS and name not in fields:
                fields[name] = relaxed_header(field)
        body_hash = hashlib.sha256(relaxed_body(body) if separator else b"").digest()
        return self.signature_header(fields, body_hash) + message

    def dns_record(self) -> str:
        """The TXT record to publish at ``selector._domainkey.domain``."""
        return dns_record(self.key)

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def public_key_data(key: DkimPrivateKey) -> bytes:
    """What ``p=`` carries: SubjectPublicKeyInfo DER for RSA, the raw 32 bytes for Ed25519."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def dns_record(key: DkimPrivateKey) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    kind = "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa"
    return f"v=DKIM1; k={kind}; p={base64.b64encode(public_key_data(key)).decode('ascii')}"


def _fold_names(names: Sequence[str]) -> str:
    """h='s colon-separated names, folded before a name that would pass 76 columns."""
    lines = [""]
    for name in names:
        if lines[-1] and len(lines[-1]) + len(name) > 72:
            lines.append("")
        lines[-1] += f"{name}:"
    return "\r\n ".join(lines)[:-1]


def _header_fields(head: bytes) -> list[bytes]:
    """The header block split into fields, each with its folded continuation lines."""
    fields: list[bytes] = []
    for line in head.split(CRLF)[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += CRLF + line
        else:
            fields.append(line)
    return [field + CRLF for field in fields]
