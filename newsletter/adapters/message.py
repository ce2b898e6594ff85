"""MIME messages built once per content variant and personalised by byte substitution.

Building an ``EmailMessage`` per subscriber costs about 1.8 ms; at 20,000 subscribers that alone
caps a send near 500 messages/s. So a ``MessageTemplate`` does the expensive part once per variant:
it encodes the subject, the From header and both bodies (quoted-printable, CRLF, lines of at most
76 characters), and cuts the encoded bodies at the per-subscriber link slots. ``personalise()``
then only joins bytes: the headers that differ per recipient and the subscriber's own URLs,
quoted-printable encoded on lines of their own with soft line breaks around them, so decoding
gives back the exact rendered text with the URL in place.

A tracked variant (issue 15) has more slots: one per article (``render.article_slot``), filled
with the reader's own click URL, and the open pixel's ``OPEN_SLOT``. Each article's URL is
encoded once per message however many links point at it.

With a DKIM signer, the static body pieces are also canonicalised and hashed once per variant
(``dkim.BodyHasher``) and each message gets its ``DKIM-Signature`` field in front.

``personalise()`` returns the message exactly as it goes on the wire: CRLF line ends and SMTP
dot-stuffing already applied. The wire form follows the crib in DESIGN.md: CRLF line ends, no line over 998 bytes,
multipart/alternative with text/plain first and text/html last, one recipient in To, RFC 2047
display names, List-Id, List-Unsubscribe (https and mailto) and List-Unsubscribe-Post.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from email import quoprimime
from email.header import Header
from email.headerregistry import Address
from email.utils import formataddr, formatdate
from typing import Protocol

from newsletter.adapters.dkim import DkimSigner, relaxed_header
from newsletter.adapters.render import (
    OPEN_SLOT,
    PREFERENCES_SLOT,
    UNSUBSCRIBE_SLOT,
    RenderedVariant,
    article_slot,
)
from newsletter.adapters.tokens import MAX_LOCAL_PART, VERP_TOKEN_MAX
from newsletter.config import Settings
from newsletter.domain import Reader
from newsletter.domain.addresses import InvalidMailbox, parse_mailbox
from newsletter.domain.errors import UsageError
from newsletter.domain.text import one_line

CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"
_SLOTS = (UNSUBSCRIBE_SLOT, PREFERENCES_SLOT)
_UNSAFE_IN_URL = "\r\n <>"
# A local part that needs no quoting (RFC 5322 dot-atom, ASCII): most addresses of a list.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


class SenderError(UsageError):
    """NEWSLETTER_FROM is not a usable ``Display Name <address>``."""


@dataclass(frozen=True, slots=True)
class Sender:
    display_name: str
    address: str  # ASCII form (IDNA domain)

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @classmethod
    def parse(cls, text: str) -> Sender:
        try:
            name, address = parse_mailbox(text)
        except InvalidMailbox as err:
            raise SenderError(f"NEWSLETTER_FROM: {err.message}", err.hint) from None
        local, _, domain = address.rpartition("@")
        ascii_domain = domain.encode("idna").decode("ascii").lower()
        return cls(display_name=one_line(name), address=f"{local}@{ascii_domain}")

    @property
    def header(self) -> str:
        """The From header's value: the name quoted or encoded as it needs (a comma is quoted)."""
        return formataddr((self.display_name, self.address), charset="utf-8")


# atext (RFC 5322 3.2.3) in dot-atom form: what a local part may hold without quoting.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@dataclass(frozen=True, slots=True)
class BounceMailbox:
    """Where returned mail goes: ``LOCAL@DOMAIN``, each message's envelope sender being
    ``LOCAL+TOKEN@DOMAIN`` (VERP), so that a bounce names its delivery (tokens.VerpSigner)."""

    local: str
    domain: str  # ASCII (IDNA)

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    def envelope(self, token: str) -> str:
        """The VERP envelope sender for ``token``."""
        return f"{self.local}+{token}@{self.domain}"

    @classmethod
    def from_settings(cls, settings: Settings, sender: Sender) -> BounceMailbox:
        """NEWSLETTER_BOUNCE_ADDRESS, or ``bounces@`` the From domain.

        SenderError when it is no plain ASCII address, or when its local part leaves no room
        for a token within the 64 octets a local part may have (RFC 5321 4.5.3.1.1).
        """
        text = settings.bounce_address.strip()
        if not text:
            return cls("bounces", sender.domain)
        local, _, domain = text.rpartition("@")
        if not local or not domain or not _DOT_ATOM.fullmatch(local) or "@" in local:
            raise SenderError(
                f"NEWSLETTER_BOUNCE_ADDRESS {text!r} is not a plain address",
                "write it as local@domain, e.g. bounces@example.com, ASCII local part",
            )
        try:
            ascii_domain = domain.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise SenderError(
                f"NEWSLETTER_BOUNCE_ADDRESS {text!r}: its domain is not a valid domain name",
                "write it as local@domain, e.g. bounces@example.com",
            ) from None
        if len(local) + 1 + VERP_TOKEN_MAX > MAX_LOCAL_PART:
            raise SenderError(
                f"NEWSLETTER_BOUNCE_ADDRESS {text!r}: its local part is too long for VERP",
                f"keep it to {MAX_LOCAL_PART - 1 - VERP_TOKEN_MAX} characters at most "
                "(the envelope sender adds +TOKEN to it, within 64 octets)",
            )
        return cls(local, ascii_domain)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Everything that differs from one subscriber to the next."""

    subscriber_id: int
    email: str
    name: str
    unsubscribe_url: str
    preferences_url: str
    unsubscribe_mailto: str  # full mailto: URL for List-Unsubscribe
    # A tracked variant's: the click URL of each of ``variant.article_refs``, in that order,
    # and the open pixel's URL (when ``variant.open_pixel``).
    article_urls: tuple[str, ...] = ()
    open_url: str = ""

    @classmethod
    def with_links(
        cls,
        reader: Reader,
        links: RecipientLinks,
        article_urls: Sequence[str] = (),
        open_url: str = "",
    ) -> Recipient:
        return cls(
            subscriber_id=reader.subscriber_id,
            email=reader.email,
            name=reader.name,
            unsubscribe_url=links.unsubscribe_url,
            preferences_url=links.preferences_url,
            unsubscribe_mailto=links.unsubscribe_mailto,
            article_urls=tuple(article_urls),
            open_url=open_url,
        )


class RecipientLinks(Protocol):
    """The three per-subscriber links (links.SubscriberLinks has this shape)."""

    @property
    def unsubscribe_url(self) -> str: ...
    @property
    def preferences_url(self) -> str: ...
    @property
    def unsubscribe_mailto(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ListIdentity:
    """The list's fixed headers: who sends, under which List-Id."""

    sender: Sender
    list_name: str
    reply_to: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, fallback_from: str = "") -> ListIdentity:
        return cls(
            sender=Sender.parse(settings.from_address or fallback_from),
            list_name=settings.title,
            reply_to=settings.reply_to,
        )

    @property
    def list_id(self) -> str:
        # RFC 2919: a dot-atom under a domain the sender controls.
        return f"daily.{self.sender.domain}"


def date_value(moment: float | None = None) -> str:
    """A Date header's value in UTC with a numeric zone (RFC 5322 3.3): "+0000", not the
    obsolete "GMT" some filters score, nor "-0000" ("zone unknown")."""
    return formatdate(moment).replace("-0000", "+0000")


def message_id(edition_date: date, subscriber_id: int, domain: str) -> str:
    """Stable per (edition, subscriber): a duplicate after a crash carries its original's id."""
    prefix, suffix = _message_id_parts(edition_date, domain)
    return f"{prefix}{subscriber_id}{suffix}"


def _message_id_parts(edition_date: date, domain: str) -> tuple[str, str]:
    return f"<{edition_date:%Y%m%d}.", f".digest@{domain}>"


def _header(name: str, value: str) -> bytes:
    return f"{name}: {value}".encode("ascii") + CRLF


def feedback_id(edition_date: date, kind: str, identity: ListIdentity) -> str:
    """``Feedback-ID`` as Gmail's feedback loop reads it: up to three identifiers, then ours.

    Edition date, kind of mail and list name, then the List-Id as the sender id: Gmail's
    Postmaster Tools reports complaint rates per identifier, so a bad edition shows by its date.
    Nothing in it is per subscriber.
    """
    local = identity.sender.address.rpartition("@")[0]
    parts = (f"{edition_date:%Y%m%d}", kind, local, identity.list_id)
    return ":".join(_FEEDBACK_UNSAFE.sub("-", part) for part in parts)


#: Colons separate the fields; anything but these is replaced, so a From local part such as
#: "la.lettre+fr" or a non-ASCII one cannot break the form.
_FEEDBACK_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _encoded_words(text: str) -> str:
    """``text`` as a header value: ASCII as is, else RFC 2047 encoded-words of at most 75 chars."""
    if text.isascii():
        return text
    return Header(text, "utf-8", maxlinelen=76, header_name="Subject").encode(linesep="\r\n")


def _qp(text: str) -> bytes:
    """Quoted-printable body encoding of UTF-8 text, CRLF line ends, 76-column lines."""
    # quoprimime works on one character per byte: hand it the UTF-8 bytes spelled as latin-1.
    octets = text.encode("utf-8").decode("latin-1")
    return quoprimime.body_encode(octets, maxlinelen=76, eol="\r\n").encode("ascii")


def _qp_url(url: str) -> bytes:
    """A plain ASCII URL, quoted-printable on lines of at most 76 characters, then a soft break.

    The per-subscriber hot path: only ``=`` needs encoding in a URL that is printable ASCII
    without spaces, so this is a replace and a slice instead of quoprimime's character loop.
    A continuation line that would start with "." starts with "=2E" instead: these lines are not
    dot-stuffed, and a relay drops the first dot of a line that starts with one.
    """
    if "=" not in url and "." not in url[::75]:
        # The common case (a signed link has no "="): lines of 75, none starting with ".".
        cuts = range(0, len(url), 75)
        return ("=\r\n".join([url[i : i + 75] for i in cuts]) + "=\r\n").encode("ascii")
    rest = url.replace("=", "=3D")
    lines = []
    while True:
        head = ""
        if rest.startswith("."):
            head, rest = "=2E", rest[1:]
        room = 75 - len(head)
        if len(rest) <= room:
            lines.append(head + rest)
            break
        cut = room
        # never split an "=3D" escape across a soft line break
        if rest[cut - 1] == "=":
            cut -= 1
        elif rest[cut - 2] == "=":
            cut -= 2
        lines.append(head + rest[:cut])
        rest = rest[cut:]
    return ("=\r\n".join(lines) + "=\r\n").encode("ascii")


def _qp_segments(body: str, slots: Sequence[str] = _SLOTS) -> list[bytes | str]:
    """The encoded body as static byte chunks interleaved with slot names.

    Each static chunk that is followed by a slot ends with a soft line break, and so does the
    slot's value when it is inserted, so decoding joins them back without an added line break.
    """
    # One pass of one pattern: a tracked variant has a slot per article, each several times.
    pattern = re.compile("|".join(re.escape(slot) for slot in sorted(slots, key=len, reverse=True)))
    parts: list[bytes | str] = []
    position = 0
    for found in pattern.finditer(body):
        chunk = body[position : found.start()]
        if chunk:
            parts.append(_qp(chunk) + SOFT_BREAK)
        parts.append(found.group(0))
        position = found.end()
    parts.append(_qp(body[position:]))
    return parts


def variant_slots(variant: RenderedVariant) -> tuple[str, ...]:
    """Every slot a variant's parts hold: the subscriber's links, then a tracked variant's."""
    tracked = tuple(article_slot(ref) for ref in variant.article_refs)
    return (*_SLOTS, *tracked, *((OPEN_SLOT,) if variant.open_pixel else ()))


def _skeleton(boundary: str, variant: RenderedVariant) -> tuple[bytes | str, ...]:
    """Everything after the headers, not yet dot-stuffed, with the slot names left in place.

    Every static piece starts a line (the blank line after the headers, or right after a slot's
    value, which ends with a soft line break) and ends one, so stuffing (or DKIM's line-wise
    canonicalisation of) each piece on its own is exact and personalise() never scans the whole
    message again.
    """
    pieces: list[bytes | str] = [b"\r\nThis is a multipart message in MIME format.\r\n\r\n"]
    slots = variant_slots(variant)
    for ctype, body in (("text/plain", variant.text), ("text/html", variant.html)):
        pieces.append(
            f'--{boundary}\r\nContent-Type: {ctype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii")
        )
        pieces.extend(_qp_segments(body, slots))
        pieces.append(b"\r\n")
    pieces[-1] = f"\r\n--{boundary}--\r\n".encode("ascii")
    merged: list[bytes | str] = []
    for piece in pieces:
        if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += piece
        else:
            merged.append(piece)
    return tuple(merged)


def dot_stuff(piece: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2) for a piece that starts a line, or a whole message."""
    stuffed = piece.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


class MessageTemplate:
    """One content variant, encoded once; ``personalise()`` gives one recipient's wire bytes."""

    def __init__(
        self,
        variant: RenderedVariant,
        identity: ListIdentity,
        edition_date: date,
        *,
        test_run: str = "",
        signer: DkimSigner | None = None,
    ) -> None:
        """``test_run``: an editors' test message. Its Subject starts with "[TEST]" and its
        Message-ID carries this token, so each test is its own message (a mailbox drops a second
        message with a Message-ID it already has) and never one a subscriber could get.
        ``signer``: every message gets a DKIM signature (None: DKIM off)."""
        self.variant = variant
        self.edition_date = edition_date
        self._domain = identity.sender.domain
        self._test_run = test_run
        digest = hashlib.sha256(variant.html.encode()).hexdigest()[:24]
        self._boundary = f"=_nl_{digest}"
        fields = self._build_fixed_headers(variant, identity)
        self._fixed_headers = b"".join(fields)
        body = _skeleton(self._boundary, variant)
        self._skeleton = tuple(dot_stuff(p) if isinstance(p, bytes) else p for p in body)
        self._signer = signer
        if signer is not None:
            self._signed_fixed = {
                name.decode("ascii"): canonical
                for canonical in map(relaxed_header, fields)
                for name in [canonical.partition(b":")[0]]
            }
            first = body[0]
            assert isinstance(first, bytes) and first.startswith(CRLF)
            # The body starts after the blank line that ends the header block.
            self._body_hasher = signer.body_hasher((first[2:], *body[1:]))
        self._article_slots = tuple(article_slot(ref) for ref in variant.article_refs)
        self._open_pixel = variant.open_pixel
        self._id_prefix, self._id_suffix = _message_id_parts(edition_date, self._domain)
        if test_run:
            self._id_prefix += f"test-{test_run}."
        self._date_cache: tuple[int, bytes] = (0, b"")

    def _build_fixed_headers(self, variant: RenderedVariant, identity: ListIdentity) -> list[bytes]:
        sender = identity.sender
        kind = "test" if self._test_run else "digest"
        headers = [
            _header("From", sender.header),
            _header("Subject", _encoded_words(self._subject(variant))),
            _header("MIME-Version", "1.0"),
            _header(
                "List-Id", f"{_encoded_words(one_line(identity.list_name))} <{identity.list_id}>"
            ),
            _header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            _header("Feedback-ID", feedback_id(self.edition_date, kind, identity)),
            _header("Precedence", "bulk"),
            _header("Auto-Submitted", "auto-generated"),
        ]
        if identity.reply_to:
            headers.append(_header("Reply-To", identity.reply_to))
        headers.append(
            _header("Content-Type", f'multipart/alternative; boundary="{self._boundary}"')
        )
        return headers

    def _subject(self, variant: RenderedVariant) -> str:
        subject = one_line(variant.subject)
        return f"[TEST] {subject}" if self._test_run else subject

    def _date_header(self) -> bytes:
        now = int(time.time())
        if self._date_cache[0] != now:
            self._date_cache = (now, _header("Date", date_value(now)))
        return self._date_cache[1]

    @property
    def article_refs(self) -> tuple[str, ...]:
        """The articles whose click URLs each message needs, in ``Recipient.article_urls`` order."""
        return self.variant.article_refs

    def personalise(self, recipient: Recipient) -> bytes:
        for url in (
            recipient.unsubscribe_url,
            recipient.preferences_url,
            recipient.unsubscribe_mailto,
        ):
            if not url.isascii() or any(c in url for c in _UNSAFE_IN_URL):
                raise ValueError(
                    f"link for subscriber {recipient.subscriber_id} is not a plain URL"
                )
        fields = (
            _to_header(recipient),
            self._date_header(),
            # message_id(), with the per-template parts formatted once
            f"Message-ID: {self._id_prefix}{recipient.subscriber_id}{self._id_suffix}\r\n".encode(
                "ascii"
            ),
            # Folded after the comma: each URL stays whole on its own line, well under 998.
            f"List-Unsubscribe: <{recipient.unsubscribe_url}>,\r\n <{recipient.unsubscribe_mailto}>\r\n".encode(
                "ascii"
            ),
        )
        values = {
            UNSUBSCRIBE_SLOT: _qp_url(recipient.unsubscribe_url),
            PREFERENCES_SLOT: _qp_url(recipient.preferences_url),
        }
        if self._article_slots or self._open_pixel:
            values.update(self._tracked_values(recipient))
        pieces = [self._signature(fields, values), *fields, self._fixed_headers]
        pieces.extend(seg if isinstance(seg, bytes) else values[seg] for seg in self._skeleton)
        return b"".join(pieces)

    def _tracked_values(self, recipient: Recipient) -> dict[str, bytes]:
        """The encoded click URLs (and pixel URL) of one message: each encoded once, however
        many links of the message point at that article."""
        urls = recipient.article_urls
        if len(urls) != len(self._article_slots) or (self._open_pixel and not recipient.open_url):
            raise ValueError(
                f"tracked links for subscriber {recipient.subscriber_id} do not match the variant"
            )
        joined = "".join(urls) + recipient.open_url  # one check of all: the hot path
        if not joined.isascii() or any(c in joined for c in _UNSAFE_IN_URL):
            raise ValueError(f"link for subscriber {recipient.subscriber_id} is not a plain URL")
        values = dict(zip(self._article_slots, map(_qp_url, urls), strict=True))
        if self._open_pixel:
            values[OPEN_SLOT] = _qp_url(recipient.open_url)
        return values

    def _signature(self, fields: tuple[bytes, ...], values: dict[str, bytes]) -> bytes:
        """The ``DKIM-Signature`` field of one message, or nothing when DKIM is off."""
        if self._signer is None:
            return b""
        signed = dict(self._signed_fixed)
        for field in fields:
            canonical = relaxed_header(field)
            signed[canonical.partition(b":")[0].decode("ascii")] = canonical
        return self._signer.signature_header(signed, self._body_hasher.digest(values))


def _to_header(recipient: Recipient) -> bytes:
    """The To header; a non-ASCII local part stays UTF-8 as is (RFC 6532: such a message only
    goes out with SMTPUTF8), the display name being encoded words either way."""
    name = one_line(recipient.name)
    local, _, domain = recipient.email.rpartition("@")
    if _DOT_ATOM.fullmatch(local):
        address = recipient.email  # what Address() gives it, without building one per message
    else:
        address = str(Address(username=local, domain=domain)) if local else recipient.email
    if address.isascii():
        value = formataddr((name, address), charset="utf-8") if name else address
        return _header("To", value)
    # formataddr refuses the UTF-8 address: it encodes the name, the address goes in as is.
    named = formataddr((name, "x@x"), charset="utf-8").removesuffix("<x@x>") if name else ""
    value = f"{named}<{address}>" if name else address
    return f"To: {value}".encode() + CRLF


def unstuff(wire: bytes) -> bytes:
    """The message as a file (.eml) holds it: wire bytes without SMTP dot-stuffing."""
    return wire.replace(b"\r\n..", b"\r\n.")
