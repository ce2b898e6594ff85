"""The subscriber list service: add, import, export, list, unsubscribe, forget.

Rules that protect the people on the list (they are why this module exists):

* Import and ``add`` create ACTIVE subscribers: the operator vouches for their consent, which is
  recorded (source ``import`` with the file name, or ``cli``). Web sign-ups start pending.
* Nothing here ever reactivates an address that unsubscribed, bounced or complained, and nothing
  re-adds a forgotten one (its SHA-256 hash stays in ``suppressions``). Only the owner can undo
  either, by confirming a web sign-up (``Store.confirm``).
* An import only ever *adds* addresses. A listed address is left as it is, except that a row whose
  ``status`` says unsubscribed/bounced/complained stops it (migrating a stop list is safe; a stop
  is never undone). Importing the same file twice therefore changes nothing.
* Within one file the first row of an address wins; a later row for the same address (differing
  only in case or spaces) is reported as rejected, "duplicate of line N", so that the operator
  sees it and ``--strict`` refuses the file.

CSV fields: ``categories`` holds the category names separated by ``|`` (a comma is accepted too
on input, so a hand-typed "Économie, Sport" works); export writes ``|``. A category name therefore
cannot contain ``|`` or ``,``. Names have their whitespace runs collapsed to one space: they end
up in email headers, where line breaks have no place.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from babel import Locale, UnknownLocaleError
from sqlalchemy import Connection

from newsletter.addresses import Address, AddressParser, InvalidAddress, normalise_address
from newsletter.csvfile import COLUMNS, CsvReader, CsvRow, csv_writer
from newsletter.domain import ConsentSource, Subscriber, SubscriberStatus, category_key
from newsletter.errors import NewsletterError, UsageError
from newsletter.store import CATEGORY_SEPARATOR, NewSubscriber, Store

MAX_NAME_CHARS = 256
MAX_CATEGORIES_CHARS = 1000
MAX_LOCALE_CHARS = 35
# Rows validated, looked up and inserted together: big enough for executemany to pay off,
# small enough for the IN (...) lookups.
IMPORT_CHUNK = 2000
_CATEGORY_SPLIT = re.compile(r"[|,]")


class InvalidValue(UsageError):
    """A field of a subscriber (name, categories, locale, status) is not acceptable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownSubscriber(NewsletterError):
    """The address is not on the list. Exit status 1."""

    def __init__(self, email: str) -> None:
        super().__init__(f"{email} is not on the list", "see `newsletter subscribers list`")


class AddressRefused(NewsletterError):
    """The address stopped (unsubscribed, bounced, complained) or was forgotten. Exit status 1."""


@dataclass(frozen=True, slots=True)
class SubscriberInput:
    """One validated subscriber as typed by the operator or read from a CSV row."""

    address: Address
    name: str
    categories: tuple[str, ...]
    locale: str
    status: SubscriberStatus

    def new(self, source: ConsentSource, detail: str) -> NewSubscriber:
        return NewSubscriber(
            self.address, self.name, self.locale, self.categories, self.status, source, detail
        )


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    value: str  # the email field as written (trimmed)
    reason: str


@dataclass(slots=True)
class ImportReport:
    source: str
    added: int = 0
    updated: int = 0  # listed addresses stopped by a row's status column
    unchanged: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    written: bool = True  # False when --strict refused the whole file

    @property
    def taken(self) -> int:
        """Rows accepted (added, applied or already there): every row unless rejected."""
        return self.added + self.updated + self.unchanged

    def reject(self, line: int, value: str, reason: str) -> None:
        self.rejected.append(RejectedRow(line, value, reason))

    def summary(self) -> str:
        counts = (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.rejected)} rejected"
        )
        if not self.written:
            return (
                f"{self.source}: nothing imported (--strict and {len(self.rejected)} rejected rows)"
            )
        return f"{self.source}: {counts}"


@dataclass(frozen=True, slots=True)
class AddResult:
    subscriber: Subscriber
    outcome: str  # "added", "activated" (was pending) or "already active"


class InputParser:
    """Validates subscriber fields; keeps caches, so use one per import."""

    def __init__(self) -> None:
        self._addresses = AddressParser()
        self._locales: dict[str, str | None] = {}
        # A list has few distinct category fields; folding names (NFKD) per row is measurable.
        self._categories: dict[str, tuple[str, ...]] = {}

    def parse(
        self, email: str, name: str = "", categories: str = "", locale: str = "", status: str = ""
    ) -> SubscriberInput:
        try:
            address = self._addresses.parse(email)
        except InvalidAddress as err:
            raise InvalidValue(err.reason) from None
        return SubscriberInput(
            address,
            parse_name(name),
            self._parse_categories(categories),
            self._locale(locale),
            parse_status(status),
        )

    def _parse_categories(self, text: str) -> tuple[str, ...]:
        if text not in self._categories:
            self._categories[text] = parse_categories(text)
        return self._categories[text]

    def _locale(self, text: str) -> str:
        key = text.strip()
        if key not in self._locales:
            self._locales[key] = _known_locale(key)
        found = self._locales[key]
        if found is None:
            raise InvalidValue(f"unknown locale {key!r} (expected a code such as fr, en or ar_MA)")
        return found


def parse_name(text: str) -> str:
    name = " ".join(text.split())
    if len(name) > MAX_NAME_CHARS:
        raise InvalidValue(f"name longer than {MAX_NAME_CHARS} characters")
    return name


def parse_categories(text: str) -> tuple[str, ...]:
    """Category names as written, split on | or ','; repeats (by category_key) dropped."""
    if len(text) > MAX_CATEGORIES_CHARS:
        raise InvalidValue(f"categories longer than {MAX_CATEGORIES_CHARS} characters")
    names: dict[str, str] = {}
    for part in _CATEGORY_SPLIT.split(text):
        name = " ".join(part.split())
        if name:
            names.setdefault(category_key(name), name)
    return tuple(names.values())


def parse_status(text: str) -> SubscriberStatus:
    """Import's status column: empty means active; anything unknown is refused."""
    value = text.strip().lower()
    if not value:
        return SubscriberStatus.ACTIVE
    try:
        return SubscriberStatus(value)
    except ValueError:
        expected = ", ".join(s.value for s in SubscriberStatus)
        raise InvalidValue(f"unknown status {text.strip()!r} (expected {expected})") from None


def _known_locale(text: str) -> str | None:
    """The locale in babel's spelling (fr, fr_FR, ar_MA), "" for none, None if unknown."""
    if not text:
        return ""
    if len(text) > MAX_LOCALE_CHARS:
        return None
    try:
        return str(Locale.parse(text.replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def add(
    store: Store, email: str, name: str = "", categories: str = "", locale: str = ""
) -> AddResult:
    """Put one address on the list as active (the operator vouches; consent source cli)."""
    item = _parse_or_raise(email, name, categories, locale)
    with store.write() as conn:
        if store.is_suppressed(item.address.suppression_hash, conn):
            raise _forgotten(item.address.normalized)
        existing = store.find_by_email(item.address.key, conn)
        if existing is None:
            return AddResult(store.add(item.new(ConsentSource.CLI, ""), conn), "added")
        if existing.status is SubscriberStatus.ACTIVE:
            return AddResult(existing, "already active")
        if existing.status is SubscriberStatus.PENDING:
            activated = store.vouch(existing.id, ConsentSource.CLI, "", conn)
            return AddResult(activated or existing, "activated")
    raise AddressRefused(
        f"{existing.email} is {existing.status} (since {existing.status_changed_at:%Y-%m-%d})",
        "an address that stopped is never re-added for its owner; they can sign up again "
        "on the web form",
    )


def unsubscribe(store: Store, email: str) -> tuple[Subscriber, bool]:
    """Stop sending to an address; returns it and whether its status changed."""
    existing = _find_or_raise(store, email)
    changed = store.unsubscribe(existing.id)
    return store.get(existing.id) or existing, changed


def forget(store: Store, email: str) -> bool:
    """Erase an address and keep its hash so it is never re-added; True if it was on the list.

    An address that is not on the list is suppressed too: its owner asked not to be added.
    """
    address = normalise_address(email)
    return store.forget(address.key)


def iter_subscribers(store: Store, status: SubscriberStatus | None = None) -> Iterator[Subscriber]:
    """Every subscriber (or one status), streamed in the order they joined."""
    return store.iter_subscribers(status)


def export_csv(store: Store, out: TextIO, status: SubscriberStatus | None = None) -> int:
    """Write the list as CSV (the columns import reads), streaming; returns the row count."""
    writer = csv_writer(out)
    writer.writerow(COLUMNS)
    count = 0
    for sub in store.iter_subscribers(status):
        categories = CATEGORY_SEPARATOR.join(sub.categories)
        writer.writerow((sub.email, sub.name, categories, sub.locale, sub.status.value))
        count += 1
    return count


class _StrictRefusal(Exception):
    """Raised inside the import transaction to roll it back (--strict with rejected rows)."""


def import_csv(
    store: Store, stream: Iterable[str], source: str, strict: bool = False
) -> ImportReport:
    """Import a CSV text stream in one transaction; see the module's rules.

    ``source`` (the file name) is recorded as the consent detail and heads the report.
    Raises CsvError (before writing anything) when the file is not usable at all.
    """
    reader = CsvReader(stream)
    report = ImportReport(source)
    batch = _ImportBatch(store, report, source)
    try:
        with store.write() as conn:
            for rows in _chunked(reader, IMPORT_CHUNK):
                batch.run(rows, conn)
            if strict and report.rejected:
                raise _StrictRefusal
    except _StrictRefusal:
        report.added = report.updated = report.unchanged = 0
        report.written = False
    return report


class _ImportBatch:
    """The per-chunk work of an import: validate, de-duplicate, look up, insert."""

    def __init__(self, store: Store, report: ImportReport, source: str) -> None:
        self.store = store
        self.report = report
        self.source = source
        self.parser = InputParser()
        self.first_line: dict[str, int] = {}  # email key -> line that brought it (duplicates)

    def run(self, rows: Sequence[CsvRow], conn: Connection) -> None:
        items = [item for item in (self._validate(row) for row in rows) if item is not None]
        forgotten = self.store.suppressed_among(
            (i.address.suppression_hash for _, i in items),
            conn,
        )
        listed = self.store.statuses_by_key((i.address.key for _, i in items), conn)
        new: list[NewSubscriber] = []
        stops: dict[str, SubscriberStatus] = {}
        for line, item in items:
            if item.address.suppression_hash in forgotten:
                self.report.reject(line, item.address.normalized, _FORGOTTEN_REASON)
            elif item.address.key not in listed:
                new.append(item.new(ConsentSource.IMPORT, self.source))
            elif item.status.is_suppressed:
                stops[item.address.key] = item.status
            else:
                self.report.unchanged += 1
        self._write(new, stops, conn)

    def _write(
        self, new: list[NewSubscriber], stops: dict[str, SubscriberStatus], conn: Connection
    ) -> None:
        inserted = self.store.add_many(new, conn)
        self.report.added += inserted if inserted >= 0 else len(new)
        changed = self.store.suppress_many(stops, conn)
        self.report.updated += changed
        self.report.unchanged += len(stops) - changed

    def _validate(self, row: CsvRow) -> tuple[int, SubscriberInput] | None:
        value = row.values["email"].strip()
        try:
            item = self.parser.parse(**row.values)
        except InvalidValue as err:
            self.report.reject(row.line, value, err.reason)
            return None
        first = self.first_line.setdefault(item.address.key, row.line)
        if first != row.line:
            self.report.reject(row.line, value, f"duplicate of line {first}")
            return None
        return row.line, item


_FORGOTTEN_REASON = "forgotten at its owner's request: it cannot be re-added"


def _forgotten(email: str) -> AddressRefused:
    return AddressRefused(
        f"{email} was forgotten at its owner's request",
        "it cannot be re-added; its owner can sign up again on the web form",
    )


def _parse_or_raise(email: str, name: str, categories: str, locale: str) -> SubscriberInput:
    address = normalise_address(email)  # InvalidAddress names the address and the reason
    try:
        return InputParser().parse(address.normalized, name, categories, locale)
    except InvalidValue as err:
        raise UsageError(err.reason) from None


def _find_or_raise(store: Store, email: str) -> Subscriber:
    address = normalise_address(email)
    found = store.find_by_email(address.key)
    if found is None:
        raise UnknownSubscriber(address.normalized)
    return found


def _chunked(rows: Iterable[CsvRow], size: int) -> Iterator[list[CsvRow]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
