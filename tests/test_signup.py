"""The sign-up service, on a real SQLite store (no web server)."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.adapters.store import Store
from newsletter.adapters.tokens import InvalidToken, Purpose
from newsletter.domain import ConsentSource, SubscriberStatus
from newsletter.domain.addresses import InvalidAddress
from newsletter.services.signup import (
    Subscriptions,
    UnknownLink,
    known_sections,
    mask_address,
    page_locale,
    parse_signup,
    signup_promise,
)
from newsletter.services.subscribers import InvalidValue
from tests.factories import make_store, new_subscriber
from tests.support import settings_for


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return make_store(tmp_path)


@pytest.fixture
def service(tmp_path: Path, store: Store) -> Subscriptions:
    return Subscriptions(store, settings_for(tmp_path))


@given(st.lists(st.text(max_size=20), max_size=10))
def test_known_sections_keeps_only_offered(chosen: list[str]) -> None:
    offered = ("Économie", "Sport", "Culture")
    kept = known_sections(chosen, offered)
    assert set(kept) <= set(offered)
    assert list(kept) == [s for s in offered if s in kept]


def test_known_sections_folds_case_and_accents() -> None:
    assert known_sections(["economie", " SPORT ", "Tech"], ("Économie", "Sport")) == (
        "Économie",
        "Sport",
    )


@given(st.text(max_size=40))
def test_page_locale_only_known_languages(text: str) -> None:
    assert page_locale(text) in ("", "fr", "en", "ar")


def test_mask_address() -> None:
    assert mask_address("karim@example.com") == "k…@example.com"
    assert "karim" not in mask_address("karim@example.com")


def test_parse_signup_reports_what_is_wrong(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(InvalidAddress, match="not a valid email address"):
        parse_signup(settings, "karim at example.com", "", [])
    with pytest.raises(InvalidValue, match="name"):
        parse_signup(settings, "k@example.com", "x" * 300, [])
    form = parse_signup(settings, " K@Example.COM ", "  Karim   B. ", ["sport", "x"], "AR")
    assert form.address.normalized == "K@example.com"
    assert form.name == "Karim B."
    assert form.categories == ("Sport",)
    assert form.locale == "ar"


def test_sign_up_builds_a_confirmation_in_the_readers_language(
    tmp_path: Path, service: Subscriptions, store: Store
) -> None:
    form = parse_signup(service.settings, "reader@example.com", "", [], "en")
    mail = service.sign_up(form, "192.0.2.1")
    assert mail is not None
    assert b"\r\n" in mail.data and b"\n" not in mail.data.replace(b"\r\n", b"")
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert message["Subject"] == "Confirm your subscription to La Lettre"
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "https://lettre.example.com/confirm/" in text
    assert "7 days" in text
    subscriber = store.find_by_email("reader@example.com")
    assert subscriber is not None and subscriber.status is SubscriberStatus.PENDING
    assert subscriber.locale == "en" and subscriber.consent_detail == "192.0.2.1"


def test_confirmations_per_address_are_capped(service: Subscriptions) -> None:
    form = parse_signup(service.settings, "bomb@example.com", "", [])
    mails = [service.sign_up(form, "x") for _ in range(5)]
    assert [m is not None for m in mails] == [True, True, True, False, False]


def test_confirm_unsubscribe_and_bindings(service: Subscriptions, store: Store) -> None:
    subscriber = store.add(new_subscriber("c@example.com", status=SubscriberStatus.UNSUBSCRIBED))
    links = service.links
    unsubscribe = links.unsubscribe_url(subscriber.id, subscriber.email_key).rsplit("/", 1)[1]
    with pytest.raises(InvalidToken):
        service.confirm(unsubscribe, "x")  # wrong purpose
    # No sign-up since it left: no confirmation link can bring the address back.
    without_signup = links.confirm_url(subscriber.id, subscriber.email_key).rsplit("/", 1)[1]
    with pytest.raises(UnknownLink):
        service.confirm(without_signup, "x")
    service.sign_up(parse_signup(service.settings, "c@example.com", "", []), "x")
    nonce = store.confirm_nonce(subscriber.id)
    confirm = links.confirm_url(subscriber.id, subscriber.email_key, nonce).rsplit("/", 1)[1]
    confirmed, activated = service.confirm(confirm, "198.51.100.7")
    assert activated and confirmed.status is SubscriberStatus.ACTIVE
    assert confirmed.consent_source is ConsentSource.WEB
    assert confirmed.consent_detail == "198.51.100.7"
    for _ in range(2):  # idempotent
        service.unsubscribe(unsubscribe)
        assert store.get(subscriber.id).status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
    store.forget(subscriber.email_key)
    with pytest.raises(UnknownLink):
        service.unsubscribe(unsubscribe)
    with pytest.raises(InvalidToken):
        service.subscriber_for(Purpose.UNSUBSCRIBE, "A" * 1000)


def test_save_preferences(service: Subscriptions, store: Store) -> None:
    subscriber = store.add(new_subscriber("p@example.com", categories=["Tech"]))
    assert service.offered_sections(subscriber)[-1] == "Tech"  # an imported section stays offered
    updated = service.save_preferences(subscriber, ["Tech", "sport", "nope"], "en")
    assert updated.categories == ("Sport", "Tech") and updated.locale == "en"
    assert service.save_preferences(updated, [], "").categories == ()
    with pytest.raises(InvalidValue):
        service.save_preferences(updated, [], "klingon")


NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("send_time", "locale", "expected"),
    [
        ("07:00", "fr", f"Chaque matin vers 7{NBSP}h, "),
        ("18:00", "fr", f"Chaque soir vers 18{NBSP}h, "),
        ("18:30", "fr", f"Chaque soir vers 18{NBSP}h{NBSP}30, "),
        ("12:15", "fr", f"Chaque jour à l’heure du déjeuner, vers 12{NBSP}h{NBSP}15, "),
        ("15:00", "fr", f"Chaque après-midi vers 15{NBSP}h, "),
        ("23:30", "fr", f"Chaque nuit vers 23{NBSP}h{NBSP}30, "),
        ("04:59", "fr", f"Chaque nuit vers 4{NBSP}h{NBSP}59, "),
        ("05:00", "fr", f"Chaque matin vers 5{NBSP}h, "),
        ("11:59", "en", "Every morning around 11:59, "),
        ("18:00", "en", "Every evening around 18:00, "),
        ("18:00", "ar", "كل مساء نحو الساعة 18:00، "),
    ],
)
def test_the_signup_promise_follows_the_send_time(
    tmp_path: Path, send_time: str, locale: str, expected: str
) -> None:
    settings = settings_for(tmp_path, NEWSLETTER_SEND_TIME=send_time)
    assert signup_promise(settings, locale).startswith(expected)


def test_the_signup_promise_setting_is_used_as_written(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, NEWSLETTER_SEND_TIME="18:00", NEWSLETTER_SIGNUP_PROMISE="Du lundi au vendredi"
    )
    for locale in ("fr", "en", "ar"):
        assert signup_promise(settings, locale) == "Du lundi au vendredi"
