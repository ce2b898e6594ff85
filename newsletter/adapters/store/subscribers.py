"""Subscriber and suppression queries: the list, its statuses and the forgotten addresses.

A subscriber's status changes only through these methods, and a stop never overrides a stronger
one (see ``domain.consent``); a forgotten address leaves only the SHA-256 of its key in
``suppressions``.
"""

from __future__ import annotations

import operator
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, literal, select, update
from sqlalchemy.engine import Row

from newsletter.adapters.store.engine import StoreBase
from newsletter.adapters.store.schema import UTCDateTime, _DriverValue, subscribers, suppressions
from newsletter.domain import ConsentSource, Subscriber, SubscriberStatus
from newsletter.domain.addresses import Address, suppression_hash
from newsletter.domain.consent import (
    ConfirmEffect,
    SignupEffect,
    confirm_effect,
    may_stop_from,
    signup_effect,
)

# Categories are stored in one text column, joined with this; the service never lets a category
# name contain it (it is also the separator of the CSV ``categories`` field).
CATEGORY_SEPARATOR = "|"
# Keys per IN (...) lookup: well under SQLite's bound-parameter limit (32,766).
LOOKUP_CHUNK = 900


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSubscriber:
    """What a caller supplies to create a subscriber; the store adds id and timestamps.

    Keyword-only: several fields share a type, so a call by position could swap them unseen.
    """

    address: Address
    name: str
    locale: str
    categories: tuple[str, ...]
    status: SubscriberStatus
    consent_source: ConsentSource
    consent_detail: str


class SubscriberQueries(StoreBase):
    """Subscribers and suppressions (forgotten addresses, by hash only)."""

    def get(self, subscriber_id: int) -> Subscriber | None:
        """One subscriber by id."""
        with self._using(write=False) as c:
            row = c.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
        return _subscriber(row) if row else None

    def find_by_email(self, email_key: str) -> Subscriber | None:
        """One subscriber by its comparison key (Address.key)."""
        with self._using(write=False) as c:
            row = c.execute(select(subscribers).where(subscribers.c.email_key == email_key)).first()
        return _subscriber(row) if row else None

    def statuses_by_key(self, keys: Iterable[str]) -> dict[str, SubscriberStatus]:
        """The status of each of these keys that is on the list (bulk check for an import)."""
        with self._using(write=False) as c:
            found = self._lookup(c, "statuses", keys)
        return {key: SubscriberStatus(status) for key, status in found}

    def add(self, new: NewSubscriber) -> Subscriber:
        """Insert one subscriber (the caller checked it is not on the list)."""
        with self._using(write=True) as c:
            now = self.now()
            values = dict(zip(_INSERT_COLUMNS, _new_values(new, now), strict=True))
            subscriber_id = c.execute(insert(subscribers).values(values)).inserted_primary_key[0]
            return self.get(subscriber_id)  # type: ignore[return-value]

    def add_many(self, news: Sequence[NewSubscriber]) -> int:
        """Bulk insert in the given order (one executemany); addresses already listed are skipped."""
        if not news:
            return 0
        # Every row of a batch is created at one moment, handed to the driver already in its
        # form: SQLAlchemy's per-row work (parameter processing, the datetime conversion) was
        # most of a big import's time. The statement is compiled once (see _driver_sql).
        now = self._bound_datetime(self.now())
        with self._using(write=True) as c:
            sql, convert = self._driver_sql("insert", self._bulk_insert, _INSERT_COLUMNS)
            rows = [_new_values(new, now) for new in news]
            params = rows if convert is None else [convert(row) for row in rows]
            return c.exec_driver_sql(sql, params).rowcount  # type: ignore[arg-type]

    def _bulk_insert(self) -> Any:
        """INSERT of _INSERT_COLUMNS, a listed address skipped; timestamps bound as _DriverValue
        (already converted, see _bound_datetime)."""
        values = {
            name: bindparam(name, type_=_DriverValue() if name in _TIMESTAMPS else None)
            for name in _INSERT_COLUMNS
        }
        return (
            self._insert(subscribers)
            .values(values)
            .on_conflict_do_nothing(index_elements=["email_key"])
        )

    def _driver_sql(
        self, name: str, build: Callable[[], Any], row_names: Sequence[str]
    ) -> tuple[str, Callable[[tuple[Any, ...]], Any] | None]:
        """A statement compiled once per store for its dialect, to run with exec_driver_sql.

        ``row_names`` names the values of the rows the caller will pass. Returns the SQL and
        what turns such a row into the driver's parameters: None when the row already is that
        (sqlite3 takes tuples in the statement's order), else a reordering or, for a driver
        taking named parameters (psycopg), a dict.
        """
        cache = self.__dict__.setdefault("_driver_statements", {})
        if name not in cache:
            compiled = build().compile(dialect=self.engine.dialect)
            order = tuple(compiled.positiontup or ()) if compiled.positional else ()
            wanted = order if compiled.positional else tuple(compiled.bind_names.values())
            if sorted(wanted) != sorted(row_names):  # an extra parameter (a column default)
                raise RuntimeError(f"{name}: parameters {wanted} are not the row's {row_names}")
            convert: Callable[[tuple[Any, ...]], Any] | None
            if not compiled.positional:
                names = tuple(row_names)
                convert = lambda row: dict(zip(names, row, strict=True))  # noqa: E731
            elif order == tuple(row_names):
                convert = None
            else:
                convert = operator.itemgetter(*(list(row_names).index(n) for n in order))
            cache[name] = (compiled.string, convert)
        return cache[name]  # type: ignore[no-any-return]

    def _bound_datetime(self, value: datetime) -> Any:
        """``value`` as UTCDateTime hands it to this database's driver."""
        dialect = self.engine.dialect
        processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        return processor(value) if processor else value

    def _lookup(self, c: Connection, kind: str, keys: Iterable[str]) -> list[Any]:
        """The rows of one of _LOOKUPS for these keys, LOOKUP_CHUNK keys per query.

        Each query has exactly LOOKUP_CHUNK parameters (a short chunk repeats its first key), so
        that one compiled statement serves them all.
        """
        sql, convert = self._driver_sql(kind, lambda: _LOOKUPS[kind](LOOKUP_CHUNK), _LOOKUP_NAMES)
        found: list[Any] = []
        for chunk in _chunks(list(keys), LOOKUP_CHUNK):
            padded = (*chunk, *(chunk[0],) * (LOOKUP_CHUNK - len(chunk)))
            found.extend(c.exec_driver_sql(sql, padded if convert is None else convert(padded)))
        return found

    def create_pending(
        self,
        email: Address,
        name: str,
        categories: Sequence[str],
        locale: str,
        source: ConsentSource = ConsentSource.WEB,
        detail: str = "",
    ) -> Subscriber:
        """A sign-up awaiting confirmation; an address already on the list keeps its status.
        Each sign-up gets a confirm nonce for its link (confirm_nonce): a pending address keeps
        the one it has, so that every mail it was sent works; any other gets a new one.
        """
        with self.write() as c:
            existing = self.find_by_email(email.key)
            effect = signup_effect(existing.status if existing else None)
            if existing is None or effect is SignupEffect.CREATE:
                new = NewSubscriber(
                    address=email,
                    name=name,
                    locale=locale,
                    categories=tuple(categories),
                    status=SubscriberStatus.PENDING,
                    consent_source=source,
                    consent_detail=detail,
                )
                created = self.add(new)
                c.execute(_touch(created.id, self.now()).values(confirm_nonce=new_nonce()))
                return created
            if effect is SignupEffect.TAKE_LATEST_FORM:
                # Still unconfirmed: the latest form wins (the owner may have changed their mind).
                self.set_preferences(existing.id, categories, locale)
                nonce = self.confirm_nonce(existing.id) or new_nonce()
                c.execute(
                    _touch(existing.id, self.now()).values(
                        name=name, consent_detail=detail, confirm_nonce=nonce
                    )
                )
                return self.get(existing.id)  # type: ignore[return-value]
            # Active stays active; unsubscribed/bounced/complained stay so until their owner
            # follows this sign-up's link (confirm_signup): a sign-up form must not re-enrol
            # someone else's address. Only the link of this new sign-up can do that.
            c.execute(_touch(existing.id, self.now()).values(confirm_nonce=new_nonce()))
            return existing

    def confirm_nonce(self, subscriber_id: int) -> str | None:
        """The nonce the subscriber's current confirmation link is bound to (None: no sign-up)."""
        with self._using(write=False) as c:
            query = select(subscribers.c.confirm_nonce).where(subscribers.c.id == subscriber_id)
            return c.execute(query).scalar_one_or_none()

    def confirm_signup(
        self,
        subscriber_id: int,
        nonce: str | None,
        source: ConsentSource = ConsentSource.WEB,
        detail: str = "",
    ) -> tuple[Subscriber, bool] | None:
        """The owner confirmed the sign-up whose link carries ``nonce``: (subscriber, activated).

        None when that link is no longer good: the row is gone, or the nonce changed (a newer
        sign-up) or was cleared (the address stopped since). None as ``nonce`` stands for the
        links mailed before nonces existed, which only ever activate a pending address.
        An active address stays as it is (activated False: "already confirmed").
        """
        with self.write():
            current = self.get(subscriber_id)
            stored = self.confirm_nonce(subscriber_id) if current else None
            effect = confirm_effect(current.status if current else None, stored, nonce)
            if effect is ConfirmEffect.REFUSED:
                return None
            if effect is ConfirmEffect.ALREADY_ACTIVE:
                return current, False  # type: ignore[return-value]
            confirmed = self._activate(subscriber_id, source, detail, confirmed=True)
            return (confirmed, True) if confirmed else None

    def confirm(
        self,
        subscriber_id: int,
        source: ConsentSource = ConsentSource.WEB,
        detail: str = "",
    ) -> Subscriber | None:
        """The owner confirmed (double opt-in): active, consent recorded, any suppression lifted."""
        return self._activate(subscriber_id, source, detail, confirmed=True)

    def vouch(
        self,
        subscriber_id: int,
        source: ConsentSource,
        detail: str = "",
    ) -> Subscriber | None:
        """The operator vouches for a pending address (cli add): active, consent recorded."""
        return self._activate(subscriber_id, source, detail, confirmed=False)

    def _activate(
        self,
        subscriber_id: int,
        source: ConsentSource,
        detail: str,
        *,
        confirmed: bool,
    ) -> Subscriber | None:
        now = self.now()
        with self._using(write=True) as c:
            current = self.get(subscriber_id)
            if current is None:
                return None
            values: dict[str, Any] = {
                "status": SubscriberStatus.ACTIVE.value,
                "consent_source": source.value,
                "consent_at": now,
                "consent_detail": detail,
            }
            if confirmed:
                values["confirmed_at"] = now
            if current.status is not SubscriberStatus.ACTIVE:
                values["status_changed_at"] = now
            c.execute(_touch(subscriber_id, now).values(**values))
            # Its owner asked to be back: a forget-suppression must not block them any more.
            self.remove_suppression(suppression_hash(current.email_key))
            return self.get(subscriber_id)

    def set_preferences(
        self,
        subscriber_id: int,
        categories: Sequence[str],
        locale: str,
    ) -> bool:
        """The subscriber's sections and language; False if there is no such subscriber."""
        values = {"categories": join_categories(categories), "locale": locale}
        with self._using(write=True) as c:
            return c.execute(_touch(subscriber_id, self.now()).values(**values)).rowcount == 1

    def opt_out_of_clicks(self, subscriber_id: int) -> bool:
        """The reader's clicks are no longer counted: from the next message on, its article links
        go straight to the site. The first opt-out's time is kept; False if no such subscriber."""
        return self._set_clicks_opt_out(subscriber_id, opted_out=True)

    def opt_in_to_clicks(self, subscriber_id: int) -> bool:
        """Clear the opt-out (the reader ticked the box again); False if no such subscriber."""
        return self._set_clicks_opt_out(subscriber_id, opted_out=False)

    def _set_clicks_opt_out(self, subscriber_id: int, *, opted_out: bool) -> bool:
        now = self.now()
        # Typed: a bare datetime bound inside coalesce() would skip UTCDateTime's conversion.
        first = func.coalesce(subscribers.c.clicks_opted_out_at, literal(now, UTCDateTime()))
        stamp = first if opted_out else None
        with self._using(write=True) as c:
            changed = c.execute(_touch(subscriber_id, now).values(clicks_opted_out_at=stamp))
            return changed.rowcount == 1

    def unsubscribe(self, subscriber_id: int) -> bool:
        """Stop sending; False if already unsubscribed or complained (a complaint outranks it)."""
        return self._move(subscriber_id, SubscriberStatus.UNSUBSCRIBED)

    def mark_bounced(self, subscriber_id: int) -> bool:
        """A permanent delivery failure; only an active or pending address becomes bounced."""
        return self._move(subscriber_id, SubscriberStatus.BOUNCED)

    def mark_complained(self, subscriber_id: int) -> bool:
        """A spam complaint: the strongest stop, from any other status."""
        return self._move(subscriber_id, SubscriberStatus.COMPLAINED)

    def suppress_many(self, statuses: dict[str, SubscriberStatus]) -> int:
        """Import rows that say unsubscribed/bounced/complained, applied to listed addresses."""
        changed = 0
        with self._using(write=True) as c:
            for key, status in statuses.items():
                changed += move_where(c, subscribers.c.email_key == key, status, self.now())
        return changed

    def _move(self, subscriber_id: int, status: SubscriberStatus) -> bool:
        with self._using(write=True) as c:
            return move_where(c, subscribers.c.id == subscriber_id, status, self.now()) == 1

    def iter_active(self, batch_size: int = 1000) -> Iterator[Subscriber]:
        """The active list for a send, streamed in id order (server-side cursor on PostgreSQL)."""
        return self.iter_subscribers(SubscriberStatus.ACTIVE, batch_size)

    def iter_subscribers(
        self, status: SubscriberStatus | None = None, batch_size: int = 1000
    ) -> Iterator[Subscriber]:
        """Every subscriber (or those in one status), streamed in id order, never loaded whole."""
        query = select(subscribers).order_by(subscribers.c.id)
        if status is not None:
            query = query.where(subscribers.c.status == status.value)
        with self.engine.connect() as conn:
            conn.execution_options(stream_results=True, yield_per=batch_size)
            for row in conn.execute(query):
                yield _subscriber(row)

    def has_active_subscriber(self) -> bool:
        """Whether anyone at all would get an edition frozen now (one indexed row, not a count)."""
        query = (
            select(subscribers.c.id)
            .where(subscribers.c.status == SubscriberStatus.ACTIVE.value)
            .limit(1)
        )
        with self.read() as c:
            return c.execute(query).first() is not None

    def count_by_status(self) -> dict[SubscriberStatus, int]:
        """How many subscribers are in each status (every status present, 0 if none)."""
        query = select(subscribers.c.status, func.count()).group_by(subscribers.c.status)
        counts = dict.fromkeys(SubscriberStatus, 0)
        with self.read() as c:
            counts.update((SubscriberStatus(s), n) for s, n in c.execute(query))
        return counts

    def forget(self, email_key: str, reason: str = "forgotten") -> bool:
        """Erase the subscriber's row and keep only the suppression hash; True if a row existed."""
        with self.write() as c:
            deleted = c.execute(
                delete(subscribers).where(subscribers.c.email_key == email_key)
            ).rowcount
            self.add_suppression(suppression_hash(email_key), reason)
        return deleted == 1

    # -----------------------------------------------------------------------------------------
    # Suppressions (forgotten addresses, by hash only)
    # -----------------------------------------------------------------------------------------

    def add_suppression(self, address_hash: str, reason: str) -> bool:
        """Remember a forgotten address's hash; False if it was already there."""
        statement = self._insert(suppressions).on_conflict_do_nothing(
            index_elements=["address_hash"]
        )
        values = {"address_hash": address_hash, "reason": reason, "created_at": self.now()}
        with self._using(write=True) as c:
            return c.execute(statement.values(values)).rowcount == 1

    def is_suppressed(self, address_hash: str) -> bool:
        """Whether this address was forgotten."""
        query = select(suppressions.c.address_hash).where(
            suppressions.c.address_hash == address_hash
        )
        with self._using(write=False) as c:
            return c.execute(query).first() is not None

    def suppressed_among(self, hashes: Iterable[str]) -> set[str]:
        """Which of these hashes are suppressed (bulk check for an import)."""
        with self._using(write=False) as c:
            return {address_hash for (address_hash,) in self._lookup(c, "suppressed", hashes)}

    def remove_suppression(self, address_hash: str) -> bool:
        """Lift a suppression (its owner confirmed a new sign-up); False if there was none."""
        statement = delete(suppressions).where(suppressions.c.address_hash == address_hash)
        with self._using(write=True) as c:
            return c.execute(statement).rowcount == 1


def move_where(conn: Connection, where: Any, status: SubscriberStatus, now: datetime) -> int:
    """Move the subscribers ``where`` selects into a stopped ``status``, where the domain allows
    (``consent.may_stop_from``).

    Returns how many moved. A module function, not a method: the ledger bounces with it too.
    """
    values: dict[str, Any] = {
        "status": status.value,
        "status_changed_at": now,
        "updated_at": now,
    }
    if status is SubscriberStatus.UNSUBSCRIBED:
        values["unsubscribed_at"] = now
    # Every confirmation link mailed so far dies here: only a new sign-up can bring it back.
    values["confirm_nonce"] = None
    allowed = [s.value for s in may_stop_from(status)]
    statement = update(subscribers).where(where, subscribers.c.status.in_(allowed)).values(values)
    return conn.execute(statement).rowcount


# Columns that a new row sets to its creation time.
_CREATION_STAMPS = ("created_at", "updated_at", "status_changed_at")
# The columns a new row sets, in the table's order (the order of a compiled INSERT).
_INSERT_COLUMNS = (
    "email",
    "email_key",
    "name",
    "locale",
    "categories",
    "status",
    "created_at",
    "updated_at",
    "status_changed_at",
    "confirmed_at",
    "unsubscribed_at",
    "consent_source",
    "consent_at",
    "consent_detail",
)
_TIMESTAMPS = frozenset((*_CREATION_STAMPS, "confirmed_at", "unsubscribed_at", "consent_at"))


def _new_values(new: NewSubscriber, now: Any) -> tuple[Any, ...]:
    """The _INSERT_COLUMNS of a new subscriber; ``now`` as a datetime or in the driver's form."""
    status = new.status
    # Pending sign-ups have not consented yet; everything else was vouched for now.
    consented = status is SubscriberStatus.ACTIVE or new.consent_source is not ConsentSource.WEB
    return (
        new.address.normalized,
        new.address.key,
        new.name,
        new.locale,
        join_categories(new.categories) if new.categories else "",
        status.value,
        now,
        now,
        now,
        None,
        now if status is SubscriberStatus.UNSUBSCRIBED else None,
        new.consent_source.value,
        now if consented else None,
        new.consent_detail,
    )


def _statuses_query(size: int) -> Any:
    keys = [bindparam(f"k{n}") for n in range(size)]
    return select(subscribers.c.email_key, subscribers.c.status).where(
        subscribers.c.email_key.in_(keys)
    )


def _suppressed_query(size: int) -> Any:
    hashes = [bindparam(f"k{n}") for n in range(size)]
    return select(suppressions.c.address_hash).where(suppressions.c.address_hash.in_(hashes))


# The bulk lookups of an import, by the name _lookup knows them by; their parameters are named
# k0, k1, ... in the order of the keys.
_LOOKUP_NAMES = tuple(f"k{n}" for n in range(LOOKUP_CHUNK))
_LOOKUPS: dict[str, Callable[[int], Any]] = {
    "statuses": _statuses_query,
    "suppressed": _suppressed_query,
}


def join_categories(categories: Iterable[str]) -> str:
    return CATEGORY_SEPARATOR.join(c for c in categories if c)


def split_categories(stored: str) -> tuple[str, ...]:
    return tuple(c for c in stored.split(CATEGORY_SEPARATOR) if c)


def new_nonce() -> str:
    """A fresh confirm nonce: 16 random hex characters (64 bits), unguessable and short."""
    return secrets.token_hex(8)


def _touch(subscriber_id: int, now: datetime) -> Any:
    return update(subscribers).where(subscribers.c.id == subscriber_id).values(updated_at=now)


def _subscriber(row: Row[Any]) -> Subscriber:
    m = row._mapping
    return Subscriber(
        id=m["id"],
        email=m["email"],
        email_key=m["email_key"],
        name=m["name"],
        locale=m["locale"],
        categories=split_categories(m["categories"]),
        status=SubscriberStatus(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        status_changed_at=m["status_changed_at"],
        confirmed_at=m["confirmed_at"],
        unsubscribed_at=m["unsubscribed_at"],
        consent_source=ConsentSource(m["consent_source"]),
        consent_at=m["consent_at"],
        consent_detail=m["consent_detail"],
        clicks_opted_out_at=m["clicks_opted_out_at"],
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
