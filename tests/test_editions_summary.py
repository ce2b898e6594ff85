"""The editors' summary: every recent edition's counts and first failures in one statement."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import event

from newsletter.domain import Article, EditionStatus
from tests.factories import make_store, new_subscriber

OWNER = "test-owner"


def article(day: date) -> Article:
    return Article(
        uid=f"a-{day}",
        title="Titre",
        link="https://example.com/a",
        published=datetime(day.year, day.month, day.day, 5, tzinfo=UTC),
    )


def test_the_summary_matches_the_per_edition_queries_and_costs_one_statement(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path)
    store.add_many([new_subscriber(f"r{i}@example.com") for i in range(7)])
    days = [date(2026, 1, d) for d in (24, 25, 26, 27)]
    for n, day in enumerate(days):
        store.freeze_edition(day, [article(day)])
        claimed = store.claim_deliveries(day, OWNER, limit=7, lease_seconds=30)
        for row in claimed[: n + 2]:  # n + 2 failures on edition n: more than are shown
            store.mark_failed(
                row.delivery_id, OWNER, f"550 no such user {row.reader.email}", bounce=False
            )
        store.mark_sent([row.delivery_id for row in claimed[n + 2 :]], OWNER)
    store.record_edition_status(date(2026, 1, 28), EditionStatus.EMPTY, "no article")  # no rows
    store.set_held(date(2026, 1, 27), True)

    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    summary = store.editions_summary(limit=4, failures_shown=3)
    event.remove(store.engine, "before_cursor_execute", seen)

    queries = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(queries) == 1, queries
    assert [s.record.edition_date for s in summary] == [date(2026, 1, d) for d in (28, 27, 26, 25)]
    empty = summary[0]
    assert empty.record.status is EditionStatus.EMPTY and not empty.counts and not empty.failures
    assert summary[1].record.held
    for line in summary[1:]:
        day = line.record.edition_date
        assert line.counts == store.delivery_counts(day)
        assert line.failures == store.delivery_failures(day, 3)
        assert len(line.failures) == 3
