"""Consent and subscriber status rules, pure: which status may become which, and what a sign-up
or a confirmation does to an address already on the list.

The store carries these decisions out in one transaction each; the rules live here so that they
read in one place and are tested without a database.
"""

from __future__ import annotations

import enum

from newsletter.domain import SubscriberStatus

# Which statuses may move into each stopped status. An unsubscribe or a bounce never overwrites
# a complaint (the strongest signal, and the one mailbox providers hold against the sender);
# a bounce never overwrites an unsubscribe (the owner's own word outranks a relay's).
_MAY_STOP_FROM: dict[SubscriberStatus, frozenset[SubscriberStatus]] = {
    SubscriberStatus.UNSUBSCRIBED: frozenset(
        {SubscriberStatus.PENDING, SubscriberStatus.ACTIVE, SubscriberStatus.BOUNCED}
    ),
    SubscriberStatus.BOUNCED: frozenset({SubscriberStatus.PENDING, SubscriberStatus.ACTIVE}),
    SubscriberStatus.COMPLAINED: frozenset(
        {
            SubscriberStatus.PENDING,
            SubscriberStatus.ACTIVE,
            SubscriberStatus.UNSUBSCRIBED,
            SubscriberStatus.BOUNCED,
        }
    ),
}


def may_stop_from(stopped: SubscriberStatus) -> frozenset[SubscriberStatus]:
    """The statuses an address may be in for ``stopped`` (unsubscribed, bounced, complained)
    to replace it; ValueError for a status that is not a stop."""
    try:
        return _MAY_STOP_FROM[stopped]
    except KeyError:
        raise ValueError(f"{stopped} is not a stopped status") from None


def may_stop(current: SubscriberStatus, stopped: SubscriberStatus) -> bool:
    return current in may_stop_from(stopped)


class SignupEffect(enum.Enum):
    """What a sign-up form does to the address it names."""

    CREATE = "create"  # not on the list: a new pending address, awaiting its owner's click
    TAKE_LATEST_FORM = "take-latest-form"  # pending: the latest form's name, sections, locale win
    NEW_LINK_ONLY = "new-link-only"  # anything else: status unchanged, only a fresh link


def signup_effect(existing: SubscriberStatus | None) -> SignupEffect:
    """A form must never change the status of someone else's address: active stays active, and
    a stopped address stays stopped until its owner follows the new sign-up's own link."""
    if existing is None:
        return SignupEffect.CREATE
    if existing is SubscriberStatus.PENDING:
        return SignupEffect.TAKE_LATEST_FORM
    return SignupEffect.NEW_LINK_ONLY


class ConfirmEffect(enum.Enum):
    """What following a confirmation link does."""

    REFUSED = "refused"  # a stale, replaced or forged link: nothing changes
    ALREADY_ACTIVE = "already-active"  # nothing to do; the page says "already confirmed"
    ACTIVATE = "activate"  # active, consent recorded, any suppression of the address lifted


def confirm_effect(
    current: SubscriberStatus | None, stored_nonce: str | None, presented_nonce: str | None
) -> ConfirmEffect:
    """A link activates only the address whose current sign-up it was mailed for.

    Every sign-up binds a random nonce into its link; a newer sign-up replaces it and a stop
    (unsubscribe, bounce, complaint) clears it, so an old link cannot undo a later "no".
    ``None`` as the presented nonce stands for links mailed before nonces existed: they only
    ever activate a pending address.
    """
    if current is None or stored_nonce != presented_nonce:
        return ConfirmEffect.REFUSED
    if current is SubscriberStatus.ACTIVE:
        return ConfirmEffect.ALREADY_ACTIVE
    if presented_nonce is None and current is not SubscriberStatus.PENDING:
        return ConfirmEffect.REFUSED
    return ConfirmEffect.ACTIVATE
