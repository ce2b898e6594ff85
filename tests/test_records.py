"""One record for what a message needs of a subscriber (``Reader``), built by keyword only."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from newsletter.adapters.store import NewSubscriber
from newsletter.domain import Article, ConsentSource, Reader, SubscriberStatus
from newsletter.domain.addresses import normalise_address
from newsletter.services.preview import PLACEHOLDER
from newsletter.services.subscribers import SubscriberInput
from tests.factories import make_store, new_subscriber

DAY = date(2026, 1, 27)


def test_a_stored_subscriber_and_its_claimed_row_give_the_same_reader(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    try:
        added = store.add(
            new_subscriber("Awa.Diallo@Exemple.SN", name="Awa", locale="fr", categories=["Sport"])
        )
        assert added.reader == Reader(
            subscriber_id=added.id,
            email=added.email,
            email_key=added.email_key,
            name="Awa",
            locale="fr",
            categories=("Sport",),
        )
        published = datetime(2026, 1, 26, 12, 0, tzinfo=UTC)
        store.freeze_edition(
            DAY, [Article(uid="a", title="A", link="https://x.sn/a", published=published)]
        )
        [claimed] = store.claim_deliveries(DAY, "test:1:owner", 10, 30.0)
        assert claimed.reader == added.reader
    finally:
        store.close()


def test_the_preview_placeholder_is_a_reader_that_is_no_subscriber() -> None:
    assert PLACEHOLDER.subscriber_id == 0
    assert PLACEHOLDER.email_key == PLACEHOLDER.email.lower()
    assert PLACEHOLDER.categories == () and PLACEHOLDER.locale == ""


def test_subscriber_inputs_are_built_by_keyword_only() -> None:
    address = normalise_address("a@exemple.sn")
    with pytest.raises(TypeError):
        NewSubscriber(address, "", "", (), SubscriberStatus.ACTIVE, ConsentSource.CLI, "")  # type: ignore[misc]
    with pytest.raises(TypeError):
        SubscriberInput(address, "", (), "", SubscriberStatus.ACTIVE)  # type: ignore[misc]
    given = SubscriberInput(
        address=address,
        name="A",
        categories=("Sport",),
        locale="fr",
        status=SubscriberStatus.ACTIVE,
    )
    new = given.new(ConsentSource.IMPORT, "list.csv")
    assert (new.address, new.name, new.locale, new.categories, new.status) == (
        address,
        "A",
        "fr",
        ("Sport",),
        SubscriberStatus.ACTIVE,
    )
    assert (new.consent_source, new.consent_detail) == (ConsentSource.IMPORT, "list.csv")
