"""Signed link tokens (itsdangerous): unsubscribe, preferences, confirm.

A token carries the subscriber's id and a short keyed digest of their address, never the address
itself. The digest binds the token to that address: if the row is forgotten and the id is ever
reused, old links stop working. Each purpose has its own salt, so a preferences token cannot
unsubscribe and an unsubscribe token cannot confirm. Unsubscribe and preferences tokens never
expire (people read old emails); confirmation tokens expire after NEWSLETTER_CONFIRM_DAYS, and
their digest also covers the sign-up's nonce (``confirm_binding``), so that one sign-up's link
cannot confirm after the address unsubscribed, bounced or complained.

Test sends (editors' test messages) carry test tokens: the same form, signed under salts of their
own (``newsletter.test.<purpose>``), so no test token can pass for a subscriber's token and the
web app can tell a test message's link from a forged one (``is_test``) and say it was a test.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from itsdangerous import BadData, Signer, TimestampSigner

from newsletter.domain.errors import NewsletterError


class Purpose(enum.StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"


# The links a test message carries (a test send has no confirmation link).
TEST_PURPOSES = (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES)


class InvalidToken(NewsletterError):
    """A token that is forged, tampered with, truncated, for another purpose, or expired."""


@dataclass(frozen=True, slots=True)
class TokenClaim:
    subscriber_id: int
    address_digest: str


def confirm_binding(email_key: str, nonce: str | None) -> str:
    """What a confirmation token is bound to: the address and the sign-up's nonce.

    The nonce changes with each sign-up of a stopped address and is cleared when an address
    stops, so a link mailed before either no longer matches (store.confirm_signup). No nonce
    gives the address alone: the links mailed before nonces existed.
    """
    return f"{email_key}\n{nonce}" if nonce else email_key


def address_digest(secret_key: str, email_key: str) -> str:
    """Eight hex characters of HMAC-SHA256(secret, address): binds a token to one address."""
    return hmac.digest(secret_key.encode(), email_key.encode(), "sha256").hex()[:8]


_URL_SAFE = bytes.maketrans(b"+/", b"-_")  # base64 to base64url, as itsdangerous writes it


class _KeyedSigner:
    """``signer.sign(value)`` exactly, at a third of the cost, for the send path.

    itsdangerous derives the signer's key (one more hash) and builds an HMAC object at each
    call; here the key is derived once and each signature is one ``hmac.digest`` (OpenSSL's
    one-shot HMAC). tests/test_tokens.py checks both give the same tokens.
    """

    __slots__ = ("_digest", "_key", "_sep")

    def __init__(self, signer: Signer) -> None:
        self._key = signer.derive_key()
        self._digest = signer.digest_method().name
        self._sep = signer.sep.decode("ascii")

    def signature(self, value: str) -> str:
        raw = hmac.digest(self._key, value.encode("ascii"), self._digest)
        return binascii.b2a_base64(raw, newline=False).translate(_URL_SAFE).rstrip(b"=").decode()

    def sign(self, value: str) -> str:
        return f"{value}{self._sep}{self.signature(value)}"


class TokenSigner:
    """Tokens ``<id>.<digest>.<signature>``: itsdangerous Signers, one salt per purpose.

    A plain Signer rather than a Serializer: the payload is two short ASCII fields, so JSON,
    zlib and base64 would only cost time (a send signs two tokens per message) and length.
    """

    def __init__(self, secret_key: str, confirm_max_age_seconds: int = 7 * 86400) -> None:
        if not secret_key:
            raise NewsletterError(
                "NEWSLETTER_SECRET_KEY is not set", "links cannot be signed without it"
            )
        self._secret = secret_key
        self._confirm_max_age = confirm_max_age_seconds
        self._signers = {p: Signer(secret_key, salt=f"newsletter.{p}") for p in Purpose}
        self._keyed = {
            p: _KeyedSigner(self._signers[p]) for p in Purpose if p is not Purpose.CONFIRM
        }
        self._timed = TimestampSigner(secret_key, salt=f"newsletter.{Purpose.CONFIRM}")
        self._test_signers = {
            p: Signer(secret_key, salt=f"newsletter.test.{p}") for p in TEST_PURPOSES
        }

    def sign(self, purpose: Purpose, subscriber_id: int, email_key: str) -> str:
        return self.sign_many((purpose,), subscriber_id, email_key)[0]

    def sign_many(
        self, purposes: tuple[Purpose, ...], subscriber_id: int, email_key: str
    ) -> list[str]:
        """One token per purpose for one subscriber; the address digest is computed once."""
        payload = f"{subscriber_id}.{address_digest(self._secret, email_key)}"
        return [
            self._timed.sign(payload).decode("ascii")
            if p is Purpose.CONFIRM
            else self._keyed[p].sign(payload)
            for p in purposes
        ]

    def sign_test(self, purposes: tuple[Purpose, ...], email_key: str) -> list[str]:
        """The tokens of a test message to ``email_key``: one per purpose, none a subscriber's.

        Subscriber id 0 (never a subscriber) and the test address's digest, under the test
        salts: a test token opens the "this was a test" page and changes nothing.
        """
        payload = f"0.{address_digest(self._secret, email_key)}"
        return [self._test_signers[p].sign(payload).decode("ascii") for p in purposes]

    def is_test(self, purpose: Purpose, token: str) -> bool:
        """Whether ``token`` is a genuine test token of ``purpose`` (a test message's link)."""
        signer = self._test_signers.get(purpose)
        if signer is None:
            return False
        try:
            signer.unsign(token)
        except (BadData, UnicodeError):
            return False
        return True

    def read(self, purpose: Purpose, token: str) -> TokenClaim:
        """The claim inside ``token``; InvalidToken for anything that is not a valid token of ``purpose``."""
        try:
            if purpose is Purpose.CONFIRM:
                payload = self._timed.unsign(token, max_age=self._confirm_max_age)
            else:
                payload = self._signers[purpose].unsign(token)
        except (BadData, UnicodeError):
            raise InvalidToken(
                "this link is not valid", "it may be incomplete or too old"
            ) from None
        id_text, _, digest = payload.decode("ascii", "replace").partition(".")
        if not id_text.isdigit() or len(id_text) > 18 or not _DIGEST.fullmatch(digest):
            raise InvalidToken("this link is not valid", "it may be incomplete or too old")
        return TokenClaim(int(id_text), digest)

    def matches(self, claim: TokenClaim, email_key: str) -> bool:
        """Whether the claim was made for this address (constant-time)."""
        return hmac.compare_digest(claim.address_digest, address_digest(self._secret, email_key))


_DIGEST = re.compile(r"[0-9a-f]{8}")


# -- VERP: the envelope sender of each message names its delivery ---------------------------------

#: The local part's ceiling (RFC 5321 4.5.3.1.1): the VERP address must stay within it.
MAX_LOCAL_PART = 64
# Lowercase base32 of the MAC, cut to this many characters (16 x 5 = 80 bits): long enough that a
# forger cannot guess one, short enough to leave room for the mailbox's own local part.
_VERP_MAC_CHARS = 16
# d<YYYYMMDD>-<subscriber id>-<mac>, or t<YYYYMMDD>-<run>-<mac> for a test send. Only digits,
# lowercase letters and "-": atext (RFC 5322) that survives an MTA lower-casing the local part.
# Subscriber ids are 32-bit integers in the schema: ten digits at most; a test run is as long.
_VERP_ID_CHARS = 10
#: The longest token: "d", 8 digits, "-", the id (or a test run), "-", the MAC: 37 characters.
VERP_TOKEN_MAX = 1 + 8 + 1 + _VERP_ID_CHARS + 1 + _VERP_MAC_CHARS
_VERP_SEPARATOR = "\n"  # between the token's head and the address key it is bound to
_VERP = re.compile(r"([dt])(\d{8})-([0-9a-z]{1,10})-([a-z2-7]{16})")


@dataclass(frozen=True, slots=True)
class VerpClaim:
    """What a VERP token names: a delivery (edition day, subscriber id), or a test send."""

    day_text: str  # YYYYMMDD
    subscriber_id: int  # 0 for a test send
    test: bool


class VerpSigner:
    """VERP tokens: ``d20260127-42-<mac>`` for a delivery, ``t20260127-<run>-<mac>`` for a test.

    The MAC is itsdangerous's HMAC-SHA256 under a salt of its own (``newsletter.verp``, and
    ``newsletter.test.verp`` for test sends): no link token can pass for a VERP token or the
    reverse. For a delivery it covers the subscriber's address key as well, so the token names
    one address without carrying it: a token is only valid for the subscriber it was made for,
    and a reused id never matches. The MAC is written in lowercase base32 because relays may
    fold the local part's case; reading lower-cases first.
    """

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise NewsletterError(
                "NEWSLETTER_SECRET_KEY is not set", "envelope senders cannot be signed without it"
            )
        self._signers = {
            False: Signer(secret_key, salt="newsletter.verp", digest_method=hashlib.sha256),
            True: Signer(secret_key, salt="newsletter.test.verp", digest_method=hashlib.sha256),
        }
        # itsdangerous derives one key per salt; derived once, as every message signs one token.
        self._keys = {test: signer.derive_key() for test, signer in self._signers.items()}

    def _mac(self, test: bool, payload: str) -> str:
        # itsdangerous's HMAC-SHA256 of the payload (HMACAlgorithm.get_signature), in one call.
        raw = hmac.digest(self._keys[test], payload.encode(), "sha256")
        return base64.b32encode(raw).decode("ascii").lower()[:_VERP_MAC_CHARS]

    def sign(self, day_text: str, subscriber_id: int, email_key: str) -> str:
        """The token of one delivery; ``day_text`` is the edition's YYYYMMDD."""
        if not 0 < subscriber_id < 10**_VERP_ID_CHARS:
            raise ValueError(f"subscriber id {subscriber_id} does not fit a VERP token")
        head = f"d{day_text}-{subscriber_id}"
        return f"{head}-{self._mac(False, head + _VERP_SEPARATOR + email_key)}"

    def sign_test(self, day_text: str, run: str) -> str:
        """The token of one test message; ``run`` is 1 to 10 lowercase letters and digits."""
        if not re.fullmatch(r"[0-9a-z]{1,10}", run):
            raise ValueError(f"a test run is 1 to 10 lowercase letters and digits, not {run!r}")
        head = f"t{day_text}-{run}"
        return f"{head}-{self._mac(True, head)}"

    def find(self, text: str) -> tuple[str, VerpClaim] | None:
        """The first VERP-shaped token in ``text`` (an address, a header) and what it claims.

        The claim is not verified yet: a delivery's MAC needs the subscriber's address key
        (``verify``); a test token is checked here, and a forged one gives None.
        """
        for match in _VERP.finditer(text.lower()):
            kind, day_text, ident, _mac = match.groups()
            if kind == "t":
                if self.verify(match.group(0), ""):
                    return match.group(0), VerpClaim(day_text, 0, test=True)
                continue
            if ident.isdigit():
                return match.group(0), VerpClaim(day_text, int(ident), test=False)
        return None

    def verify(self, token: str, email_key: str) -> bool:
        """Whether ``token`` is genuine: for a delivery, made for ``email_key`` (constant-time)."""
        match = _VERP.fullmatch(token.lower())
        if match is None:
            return False
        kind, day_text, ident, mac = match.groups()
        head = f"{kind}{day_text}-{ident}"
        test = kind == "t"
        expected = self._mac(test, head if test else head + _VERP_SEPARATOR + email_key)
        return hmac.compare_digest(expected, mac)


# -- click counts (issue 15) -------------------------------------------------------------------

_REF = re.compile(r"[0-9a-f]{6,16}")


@dataclass(frozen=True, slots=True)
class ClickClaim:
    """What a click (or open) token says: which edition, which article, which reader.

    ``subscriber_id`` 0 is an editors' test message: its links redirect but are never counted.
    ``article_ref`` is "" in an open token. Never the address: the token is in a URL, and URLs
    end up in proxy and browser logs.
    """

    edition_date: date
    article_ref: str
    subscriber_id: int


class ClickSigner:
    """Tokens ``YYYYMMDD.<ref>.<id>.<signature>`` of the click redirect (``/c/TOKEN``) and
    ``YYYYMMDD.<id>.<signature>`` of the open pixel (``/o/TOKEN.gif``).

    itsdangerous Signers with salts of their own (``newsletter.click``, ``newsletter.open``): a
    click token cannot unsubscribe and an unsubscribe token cannot count a click. Any change to
    a token (another article, another reader, a cut) breaks its signature: the redirect then
    answers 404, so it can never be turned into an open redirect.
    """

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise NewsletterError(
                "NEWSLETTER_SECRET_KEY is not set", "links cannot be signed without it"
            )
        self._click = Signer(secret_key, salt="newsletter.click")
        self._open = Signer(secret_key, salt="newsletter.open")
        self._keyed_click = _KeyedSigner(self._click)

    def click(self, day: date, article_ref: str, subscriber_id: int) -> str:
        return self._click.sign(f"{day:%Y%m%d}.{article_ref}.{subscriber_id}").decode("ascii")

    def clicks(self, day: date, article_refs: Sequence[str], subscriber_id: int) -> list[str]:
        """``click(day, ref, subscriber_id)`` for each ref, exactly, at a third of the cost:
        what one message of the send path needs (tests/test_tokens.py checks they agree)."""
        head = f"{day:%Y%m%d}."
        tail = f".{subscriber_id}"
        return [self._keyed_click.sign(f"{head}{ref}{tail}") for ref in article_refs]

    def open(self, day: date, subscriber_id: int) -> str:
        return self._open.sign(f"{day:%Y%m%d}.{subscriber_id}").decode("ascii")

    def read_click(self, token: str) -> ClickClaim:
        """The claim of a click token; InvalidToken for anything else."""
        fields = _unsigned(self._click, token).split(".")
        if len(fields) != 3 or not _REF.fullmatch(fields[1]):
            raise _invalid()
        return ClickClaim(_day(fields[0]), fields[1], _subscriber(fields[2]))

    def read_open(self, token: str) -> ClickClaim:
        fields = _unsigned(self._open, token).split(".")
        if len(fields) != 2:
            raise _invalid()
        return ClickClaim(_day(fields[0]), "", _subscriber(fields[1]))


def _unsigned(signer: Signer, token: str) -> str:
    try:
        return signer.unsign(token).decode("ascii")
    except (BadData, UnicodeError):
        raise _invalid() from None


def _invalid() -> InvalidToken:
    return InvalidToken("this link is not valid", "it may be incomplete or too old")


def _day(text: str) -> date:
    if len(text) != 8:
        raise _invalid()
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise _invalid() from None


def _subscriber(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise _invalid()
    return int(text)
