"""mailto: unsubscribes: raw emails through the service and through `newsletter unsubscribe-mail`."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

import pytest

from newsletter.adapters.store import Store, open_store
from newsletter.domain import SubscriberStatus
from newsletter.services.inbound import NoUnsubscribeToken, unsubscribe_from_mail
from newsletter.services.signup import Subscriptions
from tests.factories import new_subscriber
from tests.support import TEST_SECRET, base_env, invoke_cli, settings_for


def raw_mail(subject: str, body: str = "", charset: str = "utf-8") -> bytes:
    message = EmailMessage()
    message["From"] = "Reader <reader@example.org>"
    message["To"] = "unsubscribe@example.com"
    message["Subject"] = subject
    message.set_content(body or "\n", charset=charset)
    return message.as_bytes()


@pytest.fixture
def service(tmp_path: Path) -> Subscriptions:
    settings = settings_for(tmp_path)
    return Subscriptions(open_store(settings.database_url), settings)


def subject_of_mailto(service: Subscriptions, subscriber_id: int, key: str) -> str:
    mailto = service.links.unsubscribe_mailto(subscriber_id, key)
    assert mailto.startswith("mailto:unsubscribe@example.com?subject=")
    return unquote(mailto.split("subject=", 1)[1])


def test_subject_token_unsubscribes(service: Subscriptions) -> None:
    store: Store = service.store
    leaving = store.add(new_subscriber("leaving@example.com"))
    staying = store.add(new_subscriber("staying@example.com"))
    subject = subject_of_mailto(service, leaving.id, leaving.email_key)
    result = unsubscribe_from_mail(service, raw_mail(subject))
    assert result.subscriber_id == leaving.id and result.status == "unsubscribed"
    assert unsubscribe_from_mail(service, raw_mail("Re: " + subject)).status == "unsubscribed"
    assert store.get(staying.id).status is SubscriberStatus.ACTIVE  # type: ignore[union-attr]


def test_token_in_body_or_still_percent_encoded(service: Subscriptions) -> None:
    store: Store = service.store
    one = store.add(new_subscriber("one@example.com"))
    two = store.add(new_subscriber("two@example.com"))
    token_one = subject_of_mailto(service, one.id, one.email_key).split()[1]
    token_two = subject_of_mailto(service, two.id, two.email_key).split()[1]
    unsubscribe_from_mail(service, raw_mail("unsubscribe", f"\n\nunsubscribe {token_one}\n"))
    unsubscribe_from_mail(service, raw_mail(f"unsubscribe%20{token_two}"))
    assert store.get(one.id).status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
    assert store.get(two.id).status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]


def test_bad_tokens_change_nothing(service: Subscriptions) -> None:
    store: Store = service.store
    reader = store.add(new_subscriber("reader@example.com"))
    good = subject_of_mailto(service, reader.id, reader.email_key).split()[1]
    preferences = service.links.preferences_url(reader.id, reader.email_key).rsplit("/", 1)[1]
    for subject in (
        "unsubscribe",
        f"unsubscribe {good[:-2]}xx",
        f"unsubscribe {preferences}",
        "hello there",
    ):
        with pytest.raises(NoUnsubscribeToken):
            unsubscribe_from_mail(service, raw_mail(subject))
    with pytest.raises(NoUnsubscribeToken):
        unsubscribe_from_mail(service, b"\xff\xfe garbage without headers")
    assert store.get(reader.id).status is SubscriberStatus.ACTIVE  # type: ignore[union-attr]


def test_cli_unsubscribe_mail(tmp_path: Path, service: Subscriptions) -> None:
    store: Store = service.store
    reader = store.add(new_subscriber("cli@example.com"))
    subject = subject_of_mailto(service, reader.id, reader.email_key)
    env = base_env(
        tmp_path,
        NEWSLETTER_BASE_URL="https://lettre.example.com",
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
    )
    done = invoke_cli("unsubscribe-mail", env=env, cwd=tmp_path, input=raw_mail(subject).decode())
    assert done.returncode == 0, done.stderr
    assert f"subscriber {reader.id}: unsubscribed" in done.stdout
    assert store.get(reader.id).status is SubscriberStatus.UNSUBSCRIBED  # type: ignore[union-attr]
    ignored = invoke_cli("unsubscribe-mail", env=env, cwd=tmp_path, input="Subject: hi\n\nhello\n")
    assert ignored.returncode == 0 and "ignored" in ignored.stderr


def test_a_test_messages_mailto_unsubscribes_nobody(service: Subscriptions) -> None:
    """The mailto: of a test message carries a test token: it names nobody, even the editor."""
    store: Store = service.store
    editor = store.add(new_subscriber("redaction@example.com"))
    mailto = service.links.for_test(editor.email_key).unsubscribe_mailto
    subject = unquote(mailto.split("subject=", 1)[1])
    with pytest.raises(NoUnsubscribeToken):
        unsubscribe_from_mail(service, raw_mail(subject))
    assert store.get(editor.id).status is SubscriberStatus.ACTIVE  # type: ignore[union-attr]
