"""Signed link tokens: bound to a purpose and an address, refusing anything tampered with."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.adapters.tokens import InvalidToken, Purpose, TokenSigner

SIGNER = TokenSigner("a-long-test-secret-0123456789")


def test_round_trip_and_no_address_in_clear():
    token = SIGNER.sign(Purpose.UNSUBSCRIBE, 42, "aicha@exemple.ma")
    claim = SIGNER.read(Purpose.UNSUBSCRIBE, token)
    assert claim.subscriber_id == 42
    assert SIGNER.matches(claim, "aicha@exemple.ma")
    assert not SIGNER.matches(claim, "someone@exemple.ma")
    assert "aicha" not in token and "exemple" not in token
    assert token == SIGNER.sign(
        Purpose.UNSUBSCRIBE, 42, "aicha@exemple.ma"
    )  # stable for old emails


@pytest.mark.parametrize("other", [Purpose.PREFERENCES, Purpose.CONFIRM])
def test_wrong_purpose_is_refused(other):
    token = SIGNER.sign(Purpose.UNSUBSCRIBE, 42, "a@b.ma")
    with pytest.raises(InvalidToken):
        SIGNER.read(other, token)


def test_another_secret_is_refused():
    token = TokenSigner("another-secret-entirely-xyz").sign(Purpose.UNSUBSCRIBE, 42, "a@b.ma")
    with pytest.raises(InvalidToken):
        SIGNER.read(Purpose.UNSUBSCRIBE, token)


def test_confirmation_tokens_expire():
    short = TokenSigner("a-long-test-secret-0123456789", confirm_max_age_seconds=1)
    token = short.sign(Purpose.CONFIRM, 7, "a@b.ma")
    assert short.read(Purpose.CONFIRM, token).subscriber_id == 7
    time.sleep(2.1)
    with pytest.raises(InvalidToken):
        short.read(Purpose.CONFIRM, token)


@given(st.integers(min_value=0, max_value=10**12), st.data())
def test_any_single_character_change_or_truncation_is_refused(subscriber_id, data):
    token = SIGNER.sign(Purpose.UNSUBSCRIBE, subscriber_id, "a@b.ma")
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.characters(codec="utf-8"))
    tampered = token[:index] + replacement + token[index + 1 :]
    truncated = token[: data.draw(st.integers(min_value=0, max_value=len(token) - 1))]
    for bad in {tampered, truncated} - {token}:
        try:
            claim = SIGNER.read(Purpose.UNSUBSCRIBE, bad)
        except InvalidToken:
            continue
        # the only tolerated change is one that decodes to the very same claim
        assert claim.subscriber_id == subscriber_id and SIGNER.matches(claim, "a@b.ma")


@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_cleanly(text):
    with pytest.raises(InvalidToken):
        SIGNER.read(Purpose.UNSUBSCRIBE, text)


def test_test_tokens_are_told_apart_and_never_pass_for_a_subscribers():
    unsubscribe, preferences = SIGNER.sign_test(
        (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES), "redaction@exemple.ma"
    )
    assert SIGNER.is_test(Purpose.UNSUBSCRIBE, unsubscribe)
    assert SIGNER.is_test(Purpose.PREFERENCES, preferences)
    assert not SIGNER.is_test(Purpose.PREFERENCES, unsubscribe)  # one purpose each
    assert not SIGNER.is_test(Purpose.UNSUBSCRIBE, preferences)
    assert "redaction" not in unsubscribe
    for purpose in Purpose:  # no test token reads as a subscriber's token of any purpose
        for token in (unsubscribe, preferences):
            with pytest.raises(InvalidToken):
                SIGNER.read(purpose, token)
    real = SIGNER.sign(Purpose.UNSUBSCRIBE, 0, "redaction@exemple.ma")
    assert not SIGNER.is_test(Purpose.UNSUBSCRIBE, real)
    other = TokenSigner("another-secret-entirely-xyz")
    [forged] = other.sign_test((Purpose.UNSUBSCRIBE,), "redaction@exemple.ma")
    assert not SIGNER.is_test(Purpose.UNSUBSCRIBE, forged)
    assert not SIGNER.is_test(Purpose.UNSUBSCRIBE, unsubscribe[:-1])
    assert not SIGNER.is_test(Purpose.CONFIRM, unsubscribe)
