"""The per-subscriber URLs every email and page carries, built from signed tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from newsletter.adapters.tokens import ClickSigner, Purpose, TokenSigner, confirm_binding
from newsletter.config import Settings

# Route paths of the web app; newsletter/web/app.py mounts its handlers on the same constants.
UNSUBSCRIBE_PATH = "/unsubscribe/"
PREFERENCES_PATH = "/preferences/"
CONFIRM_PATH = "/confirm/"
CLICK_PATH = "/c/"  # the click redirect (issue 15)
OPEN_PATH = "/o/"  # the open pixel: OPEN_PATH + token + OPEN_SUFFIX
OPEN_SUFFIX = ".gif"

# The longest click token: date, 6-hex-digit ref, a 10-digit subscriber id, the signature (an
# open token is shorter). Signed with a throwaway key: only its length matters.
_LONGEST_CLICK_TOKEN = len(ClickSigner("measure").click(date(2026, 1, 27), "f" * 6, 10**10 - 1))


def tracked_url_length(base_url: str) -> int:
    """What a click or open URL of this site measures at most (render.Renderer.measure)."""
    return len(base_url) + len(CLICK_PATH) + _LONGEST_CLICK_TOKEN + len(OPEN_SUFFIX)


@dataclass(frozen=True, slots=True)
class SubscriberLinks:
    unsubscribe_url: str
    preferences_url: str
    unsubscribe_mailto: str


@dataclass(frozen=True, slots=True)
class Links:
    base_url: str
    signer: TokenSigner
    mailto_address: str  # where mailto: unsubscribes go

    def unsubscribe_url(self, subscriber_id: int, email_key: str) -> str:
        return self._url(UNSUBSCRIBE_PATH, Purpose.UNSUBSCRIBE, subscriber_id, email_key)

    def preferences_url(self, subscriber_id: int, email_key: str) -> str:
        return self._url(PREFERENCES_PATH, Purpose.PREFERENCES, subscriber_id, email_key)

    def confirm_url(self, subscriber_id: int, email_key: str, nonce: str | None = None) -> str:
        """The link of one sign-up: bound to its nonce as well as the address (tokens.py)."""
        binding = confirm_binding(email_key, nonce)
        return self._url(CONFIRM_PATH, Purpose.CONFIRM, subscriber_id, binding)

    def unsubscribe_mailto(self, subscriber_id: int, email_key: str) -> str:
        """A mailto: URL whose subject carries the unsubscribe token (see the README's mailto section)."""
        return self._mailto(self.signer.sign(Purpose.UNSUBSCRIBE, subscriber_id, email_key))

    def for_subscriber(self, subscriber_id: int, email_key: str) -> SubscriberLinks:
        """The three links of one email: two tokens, the unsubscribe one used twice."""
        unsubscribe, preferences = self.signer.sign_many(
            (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES), subscriber_id, email_key
        )
        return SubscriberLinks(
            unsubscribe_url=f"{self.base_url}{UNSUBSCRIBE_PATH}{unsubscribe}",
            preferences_url=f"{self.base_url}{PREFERENCES_PATH}{preferences}",
            unsubscribe_mailto=self._mailto(unsubscribe),
        )

    def for_test(self, email_key: str) -> SubscriberLinks:
        """The links of a test message to ``email_key``: test tokens (tokens.py), which open the
        page that says it was a test and unsubscribe or change nobody."""
        unsubscribe, preferences = self.signer.sign_test(
            (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES), email_key
        )
        return SubscriberLinks(
            unsubscribe_url=f"{self.base_url}{UNSUBSCRIBE_PATH}{unsubscribe}",
            preferences_url=f"{self.base_url}{PREFERENCES_PATH}{preferences}",
            unsubscribe_mailto=self._mailto(unsubscribe),
        )

    def _mailto(self, token: str) -> str:
        # Tokens are URL-safe (digits, hex, base64url, dots): only the space needs escaping.
        return f"mailto:{self.mailto_address}?subject=unsubscribe%20{token}"

    @classmethod
    def from_settings(cls, settings: Settings, sender_domain: str) -> Links:
        """The links of this site: its base URL, its secret, its unsubscribe mailbox."""
        return cls(
            base_url=settings.base_url,
            signer=TokenSigner(settings.secret_key, settings.confirm_days * 86400),
            mailto_address=settings.unsubscribe_mailto or f"unsubscribe@{sender_domain}",
        )

    def _url(self, path: str, purpose: Purpose, subscriber_id: int, email_key: str) -> str:
        return f"{self.base_url}{path}{self.signer.sign(purpose, subscriber_id, email_key)}"


@dataclass(frozen=True, slots=True)
class TrackedLinks:
    """A tracked message's own URLs: ``{base}/c/TOKEN`` per article, ``{base}/o/TOKEN.gif``.

    The tokens hold the edition, the article's ref and the subscriber's id, never the address
    (tokens.ClickSigner)."""

    base_url: str
    signer: ClickSigner

    def click_urls(self, day: date, refs: Sequence[str], subscriber_id: int) -> list[str]:
        """One URL per ref, each token signed once however many links point at the article."""
        prefix = f"{self.base_url}{CLICK_PATH}"
        return [prefix + token for token in self.signer.clicks(day, refs, subscriber_id)]

    def open_url(self, day: date, subscriber_id: int) -> str:
        return f"{self.base_url}{OPEN_PATH}{self.signer.open(day, subscriber_id)}{OPEN_SUFFIX}"

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackedLinks:
        return cls(base_url=settings.base_url, signer=ClickSigner(settings.secret_key))
