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

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass

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
    mac = hmac.new(secret_key.encode(), email_key.encode(), hashlib.sha256)
    return mac.hexdigest()[:8]


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
            (self._timed if p is Purpose.CONFIRM else self._signers[p])
            .sign(payload)
            .decode("ascii")
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
