"""mailto: unsubscribes: one raw email in, the subscriber its token names unsubscribed.

Every message carries ``List-Unsubscribe: <https://...>, <mailto:unsubscribe@DOMAIN?subject=
unsubscribe%20TOKEN>`` (see links.py). Mail clients that use the mailto: form send an email to
that mailbox with the subject "unsubscribe TOKEN"; some put it in the body instead, or prefix the
subject ("Re: ", "TR: "). ``unsubscribe_from_mail`` looks for the token in the Subject, then in the
first non-empty lines of the plain-text body, checks it exactly as the web link is checked
(purpose, signature, address binding) and unsubscribes. The From address is not required to match:
the token is the proof, as for the https link, and forwarding or aliases often change the From.

How a site routes that mailbox to us (``newsletter unsubscribe-mail`` reads one message on stdin):

* Postfix, in /etc/aliases (then run ``newaliases``); the command runs as the alias owner, in a
  directory holding the .env (or with NEWSLETTER_* in its environment)::

      unsubscribe: "|/srv/newsletter/.venv/bin/newsletter unsubscribe-mail"

* procmail, in the mailbox owner's ~/.procmailrc::

      :0
      | /srv/newsletter/.venv/bin/newsletter unsubscribe-mail

* Sieve (Dovecot with the extprograms plugin, ``vnd.dovecot.pipe``)::

      require ["vnd.dovecot.pipe"];
      pipe "newsletter-unsubscribe-mail";

Exit status, chosen for mail delivery agents: 0 when the message was handled, including a message
without a valid token (ignored, with a line on stderr: bouncing it would send backscatter to a
From address that may be forged); 75 (EX_TEMPFAIL) when the database cannot be reached, so that
the MTA keeps the message and tries again later.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

from newsletter.adapters.tokens import InvalidToken
from newsletter.domain.errors import NewsletterError
from newsletter.services.signup import Subscriptions

# Refuse to parse more than this: an unsubscribe request is a few hundred bytes.
MAX_MESSAGE_BYTES = 1_000_000
BODY_LINES_SEARCHED = 5
# A token is dot-separated URL-safe words (today "<id>.<digest>.<signature>", see tokens.py);
# the signer decides whether a candidate is one, so this only has to be generous.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+")


class NoUnsubscribeToken(NewsletterError):
    """The message holds no valid unsubscribe token (not a request of ours, or a damaged one)."""


@dataclass(frozen=True, slots=True)
class MailUnsubscribe:
    subscriber_id: int
    status: str  # the subscriber's status afterwards


def parse_message(raw: bytes) -> EmailMessage:
    """The message, parsed leniently (a broken header must not stop an unsubscribe)."""
    message = email.message_from_bytes(raw[:MAX_MESSAGE_BYTES], policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def candidate_tokens(message: EmailMessage) -> Iterator[str]:
    """Token-shaped words from the Subject, then from the first lines of the text body."""
    subject = str(message.get("Subject", "") or "")
    yield from _TOKEN.findall(_url_decoded(subject))
    for line in _first_body_lines(message):
        yield from _TOKEN.findall(_url_decoded(line))


def _url_decoded(text: str) -> str:
    # Some clients leave the mailto: URL's %20 undecoded: "unsubscribe%20TOKEN".
    return text.replace("%20", " ")


def _first_body_lines(message: EmailMessage) -> list[str]:
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return []
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken transfer encoding
        return []
    lines = [line.strip() for line in str(content).splitlines() if line.strip()]
    return lines[:BODY_LINES_SEARCHED]


def unsubscribe_from_mail(subscriptions: Subscriptions, raw: bytes) -> MailUnsubscribe:
    """Unsubscribe the subscriber named by the first valid token in ``raw``; idempotent."""
    message = parse_message(raw)
    for token in candidate_tokens(message):
        try:
            subscriber = subscriptions.unsubscribe(token)
        except InvalidToken:
            continue
        after = subscriptions.store.get(subscriber.id) or subscriber
        return MailUnsubscribe(subscriber.id, after.status.value)
    raise NoUnsubscribeToken(
        "no valid unsubscribe token in this message", "it was ignored; nothing changed"
    )
