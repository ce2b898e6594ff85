"""newsletter.domain.consent: the status and consent rules, pure, without a database."""

from __future__ import annotations

import itertools

import pytest

from newsletter.domain import SubscriberStatus as S
from newsletter.domain.consent import (
    ConfirmEffect,
    SignupEffect,
    confirm_effect,
    may_stop,
    may_stop_from,
    signup_effect,
)

STOPS = (S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED)


def test_a_complaint_is_never_overwritten_by_another_stop() -> None:
    for stop in STOPS:
        assert not may_stop(S.COMPLAINED, stop)


def test_a_bounce_never_overwrites_an_unsubscribe_but_an_unsubscribe_overwrites_a_bounce() -> None:
    assert not may_stop(S.UNSUBSCRIBED, S.BOUNCED)
    assert may_stop(S.BOUNCED, S.UNSUBSCRIBED)


def test_every_stop_applies_to_pending_and_active_and_never_to_itself() -> None:
    for stop in STOPS:
        assert may_stop(S.PENDING, stop) and may_stop(S.ACTIVE, stop)
        assert not may_stop(stop, stop)


def test_only_stopped_statuses_are_stops() -> None:
    for status in (S.PENDING, S.ACTIVE):
        with pytest.raises(ValueError, match="not a stopped status"):
            may_stop_from(status)


def test_stops_form_a_strict_order_so_no_two_stops_can_flip_flop() -> None:
    for a, b in itertools.permutations(STOPS, 2):
        assert not (may_stop(a, b) and may_stop(b, a)), (a, b)


@pytest.mark.parametrize(
    ("existing", "effect"),
    [
        (None, SignupEffect.CREATE),
        (S.PENDING, SignupEffect.TAKE_LATEST_FORM),
        (S.ACTIVE, SignupEffect.NEW_LINK_ONLY),
        (S.UNSUBSCRIBED, SignupEffect.NEW_LINK_ONLY),
        (S.BOUNCED, SignupEffect.NEW_LINK_ONLY),
        (S.COMPLAINED, SignupEffect.NEW_LINK_ONLY),
    ],
)
def test_a_signup_form_never_changes_the_status_of_an_address_on_the_list(
    existing: S | None, effect: SignupEffect
) -> None:
    assert signup_effect(existing) is effect


def test_a_link_activates_only_with_the_nonce_of_the_current_signup() -> None:
    assert confirm_effect(S.PENDING, "n1", "n1") is ConfirmEffect.ACTIVATE
    assert confirm_effect(S.PENDING, "n2", "n1") is ConfirmEffect.REFUSED  # replaced
    assert confirm_effect(S.UNSUBSCRIBED, None, "n1") is ConfirmEffect.REFUSED  # cleared by a stop
    assert confirm_effect(None, None, "n1") is ConfirmEffect.REFUSED  # forgotten


def test_the_owner_of_a_stopped_address_comes_back_through_their_new_signups_link() -> None:
    for stop in STOPS:
        assert confirm_effect(stop, "fresh", "fresh") is ConfirmEffect.ACTIVATE


def test_an_active_address_is_already_confirmed() -> None:
    assert confirm_effect(S.ACTIVE, "n1", "n1") is ConfirmEffect.ALREADY_ACTIVE


def test_links_from_before_nonces_only_activate_a_pending_address() -> None:
    assert confirm_effect(S.PENDING, None, None) is ConfirmEffect.ACTIVATE
    for stop in STOPS:
        assert confirm_effect(stop, None, None) is ConfirmEffect.REFUSED
