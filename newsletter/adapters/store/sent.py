"""The one write a send makes per message: "sent", in a group commit, on a connection of its own.

Every other query goes through ``StoreBase.write()``; this one runs for every message of a send,
and SQLAlchemy's per-transaction work (pool checkout and reset, the begin event, the expanding
IN list, the result wrapping) cost four times the database's own work. So ``SentLedger`` compiles
its statement once for the engine's dialect and runs it on one DBAPI connection it keeps for the
run: the same SQL, the same lease condition, a quarter of the time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Engine, Update, bindparam, update

from newsletter.adapters.store.engine import BUSY_ATTEMPTS, Clock, _database_busy, writer_turn
from newsletter.adapters.store.schema import UTCDateTime, _DriverValue, deliveries
from newsletter.domain import DeliveryStatus


def sent_update(
    rows: ColumnElement[bool], owner: BindParameter[Any], now: BindParameter[Any]
) -> Update:
    """The lease-checked "sent" of ``rows``: final, but only while ``owner`` still holds each
    row. A sender that lost a row to another (it was paused past its lease) must not overwrite
    what the other recorded. The one definition of "sent", for ``SentLedger`` below and for
    ``LedgerQueries.mark_sent``."""
    return (
        update(deliveries)
        .where(
            rows,
            deliveries.c.owner == owner,
            deliveries.c.status == DeliveryStatus.SENDING.value,
        )
        .values(
            status=DeliveryStatus.SENT.value,
            owner=None,
            lease_until=None,
            not_before=None,
            last_error="",
            sent_at=now,
            updated_at=now,
        )
    )


# One row per execution: the rowcount says whether it was still ours, which RETURNING over an
# IN list says in LedgerQueries.mark_sent.
_MARK_ONE_SENT = sent_update(
    deliveries.c.id == bindparam("s_id"),
    bindparam("s_owner"),
    bindparam("s_now", type_=_DriverValue()),
)


class SentLedger:
    """``mark_sent`` for one sender's run, on a DBAPI connection kept until ``close()``.

    Use it from one thread (the recorder's). A busy SQLite database is waited for as every
    writer waits (busy_timeout, then a few retries of the BEGIN); then ``DatabaseBusy``.
    """

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._now = clock
        self._engine = engine
        dialect = engine.dialect
        self._sqlite = dialect.name == "sqlite"
        compiled = _MARK_ONE_SENT.compile(dialect=dialect)
        self._sql = compiled.string
        self._compiled = compiled
        self._bind_time = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        # The connection's own set-up (WAL, busy timeout, foreign keys) comes with it.
        self._connection: Any = engine.raw_connection()

    def mark_sent(self, delivery_ids: Sequence[int], owner: str) -> set[int]:
        """Record these as sent in one transaction; the ids returned were no longer ``owner``'s."""
        if not delivery_ids:
            return set()
        now = self._now()
        base = self._compiled.construct_params(
            {
                "s_id": 0,
                "s_owner": owner,
                "s_now": self._bind_time(now) if self._bind_time else now,
            }
        )
        # In id order, as the claims and the lease renewal take rows.
        delivery_ids = sorted(delivery_ids)
        rows = [self._parameters({**base, "s_id": delivery_id}) for delivery_id in delivery_ids]
        cursor = self._connection.cursor()
        lost: set[int] = set()
        try:
            with writer_turn(self._engine, time.monotonic()):
                self._begin(cursor)
                try:
                    for delivery_id, parameters in zip(delivery_ids, rows, strict=True):
                        cursor.execute(self._sql, parameters)
                        if cursor.rowcount != 1:
                            lost.add(delivery_id)
                    self._commit(cursor)
                except BaseException:
                    self._connection.rollback()
                    raise
        finally:
            cursor.close()
        return lost

    def _parameters(self, values: dict[str, Any]) -> Any:
        if self._compiled.positional:
            return tuple(values[name] for name in self._compiled.positiontup or ())
        return values

    def _begin(self, cursor: Any) -> None:
        if not self._sqlite:
            return  # psycopg opens the transaction at the first statement
        started = time.monotonic()
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise
                if attempt == BUSY_ATTEMPTS:
                    raise _database_busy(started) from None
                time.sleep(0.1 * 2**attempt)

    def _commit(self, cursor: Any) -> None:
        if self._sqlite:
            cursor.execute("COMMIT")
        else:
            self._connection.commit()

    def close(self) -> None:
        self._connection.close()  # back to the engine's pool
