"""The store on real SQLite files: migrations, transactions, subscriber states, suppressions."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_mock_engine, inspect, text

from newsletter.adapters.store import (
    LATEST_VERSION,
    METADATA,
    MIGRATIONS,
    Store,
    StoreError,
    create_store_engine,
    migrate,
    open_store,
)
from newsletter.domain import ConsentSource, SubscriberStatus
from newsletter.domain.addresses import normalise_address, suppression_hash
from tests.factories import FakeClock, make_store, new_subscriber, sqlite_url

# A row in the oldest shape that has a subscribers table (migration 1). Later migrations may add
# columns and tables but must keep such rows.
V1_ROW = {
    "email": "Old.Reader@example.com",
    "email_key": "old.reader@example.com",
    "name": "Aïcha Ouédraogo",
    "locale": "fr",
    "categories": "Économie|Sport",
    "status": "unsubscribed",
    "created_at": "2025-01-01 08:00:00.000000",
    "updated_at": "2025-01-02 08:00:00.000000",
    "status_changed_at": "2025-01-02 08:00:00.000000",
    "consent_source": "import",
    "consent_detail": "old.csv",
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Store:
    with make_store(tmp_path, clock) as opened:
        yield opened


def test_open_creates_the_folder_and_a_wal_database(tmp_path: Path) -> None:
    with make_store(tmp_path) as store:
        assert store.schema_version() == LATEST_VERSION
    database = tmp_path / "db" / "newsletter.db"
    assert database.is_file()
    with sqlite3.connect(database) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_every_connection_has_foreign_keys_and_busy_timeout(store: Store) -> None:
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_migrated_schema_matches_the_declared_tables(tmp_path: Path) -> None:
    # Guards against a table changed in METADATA without a migration that makes the change.
    with make_store(tmp_path) as store:
        inspector = inspect(store.engine)
        for table in METADATA.tables.values():
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name


@pytest.mark.parametrize("version", range(1, LATEST_VERSION + 1))
def test_upgrade_from_every_version_keeps_rows(tmp_path: Path, version: int) -> None:
    url = sqlite_url(tmp_path)
    engine = create_store_engine(url)
    assert migrate(engine, target=version) == version
    with engine.begin() as conn:
        columns = ", ".join(V1_ROW)
        conn.execute(
            text(
                f"INSERT INTO subscribers ({columns}) VALUES ({', '.join(':' + k for k in V1_ROW)})"
            ),
            V1_ROW,
        )
        conn.execute(
            text("INSERT INTO suppressions VALUES (:h, 'forgotten', '2025-01-03 00:00:00')"),
            {"h": suppression_hash("gone@example.com")},
        )
    engine.dispose()

    with open_store(url) as store:
        assert store.schema_version() == LATEST_VERSION
        kept = store.find_by_email("old.reader@example.com")
        assert kept is not None
        assert kept.name == "Aïcha Ouédraogo"
        assert kept.categories == ("Économie", "Sport")
        assert kept.status is SubscriberStatus.UNSUBSCRIBED
        assert kept.created_at.tzinfo is UTC
        assert store.is_suppressed(suppression_hash("gone@example.com"))


def test_migrations_are_recorded_and_reopening_is_a_no_op(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    open_store(url).close()
    open_store(url).close()
    with sqlite3.connect(tmp_path / "db" / "newsletter.db") as raw:
        versions = [v for (v,) in raw.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    open_store(url).close()
    with sqlite3.connect(tmp_path / "db" / "newsletter.db") as raw:
        raw.execute(
            "INSERT INTO schema_version VALUES (?, '2030-01-01 00:00:00')", (LATEST_VERSION + 1,)
        )
    with pytest.raises(StoreError, match="newer than this program"):
        open_store(url)


def test_a_failing_migration_leaves_the_database_untouched(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    engine = create_store_engine(url)

    def broken(conn: Connection) -> None:  # creates a table, then fails: both must roll back
        conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("boom")

    import newsletter.adapters.store.migrations as store_module

    original = store_module.MIGRATIONS
    store_module.MIGRATIONS = (*original, broken)
    store_module.LATEST_VERSION = len(store_module.MIGRATIONS)
    try:
        with pytest.raises(RuntimeError):
            migrate(engine)
    finally:
        store_module.MIGRATIONS = original
        store_module.LATEST_VERSION = len(original)
    assert "half_done" not in inspect(engine).get_table_names()
    assert "subscribers" not in inspect(engine).get_table_names()
    engine.dispose()


def test_write_transactions_take_the_lock_up_front(tmp_path: Path) -> None:
    # BEGIN IMMEDIATE: a second writer waits for the first instead of failing half-way.
    url = sqlite_url(tmp_path)
    with open_store(url) as first, open_store(url) as second:
        order: list[str] = []
        entered = threading.Event()

        def other_writer() -> None:
            entered.wait()
            with second.write():
                order.append("second")

        thread = threading.Thread(target=other_writer)
        thread.start()
        with first.write() as conn:
            conn.exec_driver_sql("SELECT 1")
            entered.set()
            thread.join(0.3)  # the second writer is blocked on busy_timeout meanwhile
            order.append("first")
        thread.join(10)
        assert order == ["first", "second"]


def test_timestamps_are_aware_utc(store: Store, clock: FakeClock) -> None:
    sub = store.add(new_subscriber("a@example.com"))
    assert sub.created_at == clock.now
    assert sub.created_at.tzinfo is UTC


def test_add_normalises_and_finds_by_key(store: Store) -> None:
    sub = store.add(new_subscriber("Karim.Benali@ÉXAMPLE.com", categories=["Économie", "Sport"]))
    assert sub.email == "Karim.Benali@xn--xample-9ua.com"
    assert store.find_by_email("karim.benali@xn--xample-9ua.com") == sub
    assert store.get(sub.id) == sub
    assert sub.categories == ("Économie", "Sport")
    assert sub.category_keys == {"economie", "sport"}
    assert store.get(sub.id + 1) is None


def test_add_many_skips_addresses_already_listed(store: Store) -> None:
    store.add(new_subscriber("a@example.com", name="first"))
    inserted = store.add_many(
        [new_subscriber("A@example.com", name="second"), new_subscriber("b@example.com")]
    )
    assert inserted == 1
    assert store.find_by_email("a@example.com").name == "first"


def test_create_pending_then_confirm(store: Store, clock: FakeClock) -> None:
    address = normalise_address("web@example.com")
    pending = store.create_pending(
        address, "Web", ["Sport"], "fr", ConsentSource.WEB, "203.0.113.9"
    )
    assert pending.status is SubscriberStatus.PENDING
    assert pending.consent_at is None and pending.consent_detail == "203.0.113.9"

    # A second form post before confirming refreshes the preferences.
    again = store.create_pending(
        address, "Web 2", ["Culture"], "ar", ConsentSource.WEB, "203.0.113.10"
    )
    assert again.id == pending.id
    assert (again.name, again.categories, again.locale) == ("Web 2", ("Culture",), "ar")

    when = clock.advance(hours=1)
    confirmed = store.confirm(pending.id, ConsentSource.WEB, "203.0.113.10")
    assert confirmed.status is SubscriberStatus.ACTIVE
    assert confirmed.confirmed_at == confirmed.consent_at == confirmed.status_changed_at == when


def test_create_pending_never_changes_an_active_or_stopped_address(store: Store) -> None:
    for status in (
        SubscriberStatus.ACTIVE,
        SubscriberStatus.UNSUBSCRIBED,
        SubscriberStatus.BOUNCED,
        SubscriberStatus.COMPLAINED,
    ):
        email = f"{status}@example.com"
        before = store.add(new_subscriber(email, name="kept", status=status))
        after = store.create_pending(normalise_address(email), "other", ["X"], "en")
        assert after == before
        assert store.get(before.id) == before


def test_an_unsubscribed_owner_can_come_back_by_confirming(store: Store) -> None:
    sub = store.add(new_subscriber("back@example.com", status=SubscriberStatus.UNSUBSCRIBED))
    store.create_pending(normalise_address("back@example.com"), "", [], "")
    assert store.get(sub.id).status is SubscriberStatus.UNSUBSCRIBED
    assert store.confirm(sub.id).status is SubscriberStatus.ACTIVE


def test_a_forgotten_address_may_sign_up_again_and_confirming_lifts_the_suppression(
    store: Store,
) -> None:
    store.add(new_subscriber("gone@example.com"))
    assert store.forget("gone@example.com") is True
    address = normalise_address("gone@example.com")
    pending = store.create_pending(address, "", [], "")
    assert pending.status is SubscriberStatus.PENDING
    assert store.is_suppressed(address.suppression_hash)  # not until its owner confirms
    store.confirm(pending.id)
    assert not store.is_suppressed(address.suppression_hash)


def test_status_changes_follow_the_rules(store: Store, clock: FakeClock) -> None:
    sub = store.add(new_subscriber("s@example.com"))
    when = clock.advance(minutes=5)
    assert store.mark_bounced(sub.id) is True
    assert store.get(sub.id).status_changed_at == when
    assert store.unsubscribe(sub.id) is True
    assert store.get(sub.id).unsubscribed_at == when
    assert store.unsubscribe(sub.id) is False  # idempotent
    assert store.mark_bounced(sub.id) is False  # a bounce never overwrites an unsubscribe
    assert store.mark_complained(sub.id) is True
    assert store.unsubscribe(sub.id) is False  # nor does anything overwrite a complaint
    assert store.get(sub.id).status is SubscriberStatus.COMPLAINED
    assert store.unsubscribe(9999) is False


def test_set_preferences(store: Store) -> None:
    sub = store.add(new_subscriber("p@example.com", categories=["Sport"], locale="fr"))
    assert store.set_preferences(sub.id, ["Économie", "Culture"], "ar") is True
    changed = store.get(sub.id)
    assert (changed.categories, changed.locale) == (("Économie", "Culture"), "ar")
    assert store.set_preferences(9999, [], "") is False


def test_iter_active_streams_only_active_in_id_order(store: Store) -> None:
    statuses = [SubscriberStatus.ACTIVE, SubscriberStatus.PENDING, SubscriberStatus.ACTIVE]
    statuses += [SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.ACTIVE]
    for number, status in enumerate(statuses):
        store.add(new_subscriber(f"n{number}@example.com", status=status))
    active = store.iter_active(batch_size=2)
    assert next(active).email == "n0@example.com"
    # Writing while a read is streaming must not deadlock (WAL: readers do not block writers).
    store.add(new_subscriber("late@example.com", status=SubscriberStatus.PENDING))
    assert [s.email for s in active] == ["n2@example.com", "n4@example.com"]
    counts = store.count_by_status()
    assert counts[SubscriberStatus.ACTIVE] == 3 and counts[SubscriberStatus.PENDING] == 2


def test_forget_erases_the_row_and_keeps_only_a_hash(tmp_path: Path) -> None:
    with make_store(tmp_path) as store:
        store.add(new_subscriber("Private.Person@example.com", name="Private Person"))
        assert store.forget("private.person@example.com") is True
        assert store.forget("private.person@example.com") is False
        assert store.find_by_email("private.person@example.com") is None
    dump = "\n".join(sqlite3.connect(tmp_path / "db" / "newsletter.db").iterdump())
    assert "private" not in dump.lower()
    assert suppression_hash("private.person@example.com") in dump


def test_suppression_lookups(store: Store) -> None:
    hashes = [suppression_hash(f"x{i}@example.com") for i in range(2000)]
    for h in hashes[::500]:
        assert store.add_suppression(h, "forgotten") is True
    assert store.add_suppression(hashes[0], "forgotten") is False
    assert store.suppressed_among(hashes) == set(hashes[::500])
    assert store.remove_suppression(hashes[0]) is True
    assert not store.is_suppressed(hashes[0])


def test_statuses_by_key_in_chunks(store: Store) -> None:
    store.add_many([new_subscriber(f"k{i}@example.com") for i in range(1500)])
    keys = [f"k{i}@example.com" for i in range(0, 3000, 3)]
    found = store.statuses_by_key(keys)
    assert set(found) == {k for k in keys if int(k[1:].split("@")[0]) < 1500}


def test_an_unsupported_url_is_a_usage_error() -> None:
    from newsletter.domain.errors import UsageError

    with pytest.raises(UsageError):
        open_store("mysql://nobody@localhost/x")
    with pytest.raises(UsageError):
        open_store("not a url")


def test_the_insert_switch_speaks_postgresql() -> None:
    # Every statement compiles for PostgreSQL too (the dialect switch picks the right INSERT).
    from sqlalchemy.dialects import postgresql

    engine = create_mock_engine("postgresql://", executor=lambda *_: None)  # never connects
    pg_store = Store(engine)  # type: ignore[arg-type]
    statement = pg_store._insert(METADATA.tables["subscribers"]).on_conflict_do_nothing(
        index_elements=["email_key"]
    )
    assert "ON CONFLICT (email_key) DO NOTHING" in str(
        statement.compile(dialect=postgresql.dialect())
    )


def test_an_editions_curation_round_trips_and_logs_its_changes(store: Store) -> None:
    from datetime import date

    from newsletter.adapters.store import CurationChanged, ExcludedArticle, StoredCuration
    from newsletter.domain.curation import AddedItem, Curation

    day, other = date(2026, 1, 27), date(2026, 1, 28)
    assert store.edition_curation(day) == StoredCuration()  # never curated: the empty one
    added = AddedItem("https://exemple.ma/a", "Un lien ajouté", "Culture", "Résumé", "")
    with store.write():
        current = store.lock_curation(day)
        assert current.revision == 0
        store.save_curation(
            day,
            StoredCuration(
                excluded=(ExcludedArticle("guid-1", "Titre « un »", "https://x.ma/1", "Sport"),),
                lead="guid-2",
                intro="Bonjour\n\n<b>gras</b>",
                subject="Sujet choisi",
                added=(added,),
                revision=1,
            ),
        )
        store.record_change(day, "cli:aicha", "exclude", "abc123 « un »")
    stored = store.edition_curation(day)
    assert stored.revision == 1 and stored.updated_at is not None
    assert stored.curation == Curation(
        excluded=frozenset({"guid-1"}),
        lead="guid-2",
        intro="Bonjour\n\n<b>gras</b>",
        subject="Sujet choisi",
        added=(added,),
    )
    assert stored.excluded[0].title == "Titre « un »"
    assert store.curations_of([day, other]) == {day: stored.curation}
    [change] = store.curation_changes(day)
    assert (change.who, change.action, change.detail) == ("cli:aicha", "exclude", "abc123 « un »")
    assert change.at.tzinfo is not None and store.curation_changes(other) == []

    # A transaction that fails writes nothing, the lock's empty row included.
    with pytest.raises(RuntimeError), store.write():
        store.lock_curation(other)
        raise RuntimeError("refused")
    assert store.curations_of([other]) == {}

    # The freeze compares the revision the send composed with, and freezes nothing when stale.
    with pytest.raises(CurationChanged):
        store.freeze_edition(day, [], curation_revision=0)
    assert store.frozen_articles(day) is None
    store.freeze_edition(day, [], curation_revision=1)
    assert store.frozen_articles(day) == []
