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

* An import commits every IMPORT_BATCH rows, so that a send or an unsubscribe gets the database
  between batches. A killed import leaves whole batches written; running it again finishes the
  job (the rows already written are listed, so they are skipped). ``--strict`` validates the whole
  file before writing anything: a file with a bad row writes nothing.

CSV fields: ``categories`` holds the category names separated by ``|`` (a comma is accepted too
on input, so a hand-typed "Économie, Sport" works); export writes ``|``. A category name therefore
cannot contain ``|`` or ``,``. Names have their whitespace runs collapsed to one space and their
control characters dropped (``clean_name``): they end up in email headers and terminals. Export
protects spreadsheets from formula injection and import undoes it (see csvfile.escape_formula).
"""

from __future__ import annotations

import io
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from newsletter.adapters.csvfile import (
    COLUMNS,
    CsvReader,
    CsvRow,
    FirstLines,
    csv_writer,
    unescape_formula,
)
from newsletter.adapters.store import CATEGORY_SEPARATOR, NewSubscriber, Store
from newsletter.domain import ConsentSource, Subscriber, SubscriberStatus, category_key
from newsletter.domain.addresses import Address, AddressParser, InvalidAddress, normalise_address
from newsletter.domain.errors import NewsletterError, UsageError
from newsletter.domain.locales import canonical_locale

MAX_NAME_CHARS = 256
MAX_CATEGORIES_CHARS = 1000
MAX_LOCALE_CHARS = 35
# Rows per import transaction: big enough for executemany and the commit to pay off, small
# enough that a batch holds SQLite's write lock for well under a second, so that other writers
# (a send, a one-click unsubscribe) wait a moment at most instead of failing.
IMPORT_BATCH = 10_000
# A rejected value is echoed to the operator up to this many characters.
ECHO_CHARS = 80
_CATEGORY_SPLIT = re.compile(r"[|,]")
# Control characters that are not whitespace (NUL, BEL, ESC, DEL, C1) and lone surrogates:
# dropped from names. Whitespace controls (tab, line breaks) become a space through str.split.
_NAME_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ud800-\udfff]")


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


# Says why an address cannot be sent to (None: it can); adapters.smtp.Smtputf8Gate is the one
# the commands pass, for addresses with a non-ASCII local part.
AddressGate = Callable[[str], str | None]


def _gate_refusal(gate: AddressGate | None, address: Address) -> str | None:
    if gate is None or address.normalized.isascii():  # the domain is IDNA: only the local part
        return None
    return gate(address.normalized)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberInput:
    """One validated subscriber as typed by the operator or read from a CSV row."""

    address: Address
    name: str
    categories: tuple[str, ...]
    locale: str
    status: SubscriberStatus

    def new(self, source: ConsentSource, detail: str) -> NewSubscriber:
        return NewSubscriber(
            address=self.address,
            name=self.name,
            locale=self.locale,
            categories=self.categories,
            status=self.status,
            consent_source=source,
            consent_detail=detail,
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
        self.rejected.append(RejectedRow(line, shorten(value), reason))

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
        self._statuses: dict[str, SubscriberStatus] = {}

    def parse(
        self, email: str, name: str = "", categories: str = "", locale: str = "", status: str = ""
    ) -> SubscriberInput:
        try:
            address = self._addresses.parse(email)
        except InvalidAddress as err:
            raise InvalidValue(err.reason) from None
        return SubscriberInput(
            address=address,
            name=parse_name(name),
            categories=self._parse_categories(categories),
            locale=self._locale(locale),
            status=self._status(status),
        )

    def parse_new(
        self,
        source: ConsentSource,
        detail: str,
        email: str,
        name: str,
        categories: str,
        locale: str,
        status: str,
    ) -> NewSubscriber:
        """``parse(...).new(source, detail)`` in one record: an import makes one per row."""
        try:
            address = self._addresses.parse(email)
        except InvalidAddress as err:
            raise InvalidValue(err.reason) from None
        return NewSubscriber(
            address=address,
            name=parse_name(name),
            categories=self._parse_categories(categories),
            locale=self._locale(locale),
            status=self._status(status),
            consent_source=source,
            consent_detail=detail,
        )

    def _status(self, text: str) -> SubscriberStatus:
        found = self._statuses.get(text)
        if found is None:
            found = self._statuses[text] = parse_status(text)  # InvalidValue is not cached
        return found

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
            raise InvalidValue(
                f"unknown locale {shorten(key)!r} (expected a code such as fr, en or ar_MA)"
            )
        return found


def parse_name(text: str) -> str:
    """A display name from any input path (import, ``add``, the web form): see clean_name."""
    name = clean_name(text)
    if len(name) > MAX_NAME_CHARS:
        raise InvalidValue(f"name longer than {MAX_NAME_CHARS} characters")
    return name


def clean_name(text: str) -> str:
    """``text`` on one line without control characters: it reaches headers and terminals.

    Tabs and line breaks become one space (they separate words); NUL, BEL, ESC, DEL and the C1
    controls are dropped; whitespace runs collapse to one space.
    """
    # Nearly every name is already clean, and isprintable (in C) proves most of it: it is False
    # for every character _NAME_CONTROLS drops and every whitespace but the ASCII space, so
    # only the spaces remain to check (tests compare both paths).
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return " ".join(_NAME_CONTROLS.sub("", text).split())


def shorten(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters (ellipsis included) for echoing it in a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        raise InvalidValue(
            f"unknown status {shorten(text.strip())!r} (expected {expected})"
        ) from None


def _known_locale(text: str) -> str | None:
    """The locale in babel's spelling (fr, fr_FR, ar_MA), "" for none, None if unknown."""
    if not text:
        return ""
    if len(text) > MAX_LOCALE_CHARS:
        return None
    return canonical_locale(text)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def add(
    store: Store,
    email: str,
    name: str = "",
    categories: str = "",
    locale: str = "",
    *,
    gate: AddressGate | None = None,
) -> AddResult:
    """Put one address on the list as active (the operator vouches; consent source cli).

    ``gate`` refuses an address that cannot be sent to (a non-ASCII local part without SMTPUTF8).
    """
    item = _parse_or_raise(email, name, categories, locale)
    if reason := _gate_refusal(gate, item.address):
        raise AddressRefused(f"{item.address.normalized} cannot be added: {reason}")
    with store.write():  # one transaction: the checks and the change see the same list
        if store.is_suppressed(item.address.suppression_hash):
            raise _forgotten(item.address.normalized)
        existing = store.find_by_email(item.address.key)
        if existing is None:
            return AddResult(store.add(item.new(ConsentSource.CLI, "")), "added")
        if existing.status is SubscriberStatus.ACTIVE:
            return AddResult(existing, "already active")
        if existing.status is SubscriberStatus.PENDING:
            activated = store.vouch(existing.id, ConsentSource.CLI, "")
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


def export_csv(
    store: Store, out: TextIO, status: SubscriberStatus | None = None, *, delimiter: str = ","
) -> int:
    """Write the list as CSV (the columns import reads), streaming; returns the row count."""
    writer = csv_writer(out, delimiter=delimiter)
    writer.writerow(COLUMNS)
    count = 0
    for sub in store.iter_subscribers(status):
        categories = CATEGORY_SEPARATOR.join(sub.categories)
        # Rows written before names were cleaned on input may hold controls (isprintable is the
        # fast test: it is False for every character clean_name would change in a stored name).
        name = sub.name if sub.name.isprintable() else clean_name(sub.name)
        writer.writerow((sub.email, name, categories, sub.locale, sub.status.value))
        count += 1
    return count


def import_csv(
    store: Store,
    stream: Iterable[str],
    source: str,
    strict: bool = False,
    *,
    gate: AddressGate | None = None,
) -> ImportReport:
    """Import a CSV text stream, one transaction per IMPORT_BATCH rows; see the module's rules.

    ``source`` (the file name) is recorded as the consent detail and heads the report. A row
    ``gate`` refuses (an address that cannot be sent to) is rejected with its reason, unless it
    only records a stop (an unsubscribed address is kept out whatever its spelling).
    Raises CsvError (before writing anything) when the file is not usable at all. The stream is
    read twice: first to find where it is unusable as CSV (and, with ``strict``, every rejected
    row), so that a bad file writes nothing; then to import.
    """
    read_again = _rereadable(stream)
    if strict:
        check = ImportReport(source, written=False)
        with _ImportBatch(store, check, source, gate) as batch:
            for rows in _chunked(CsvReader(read_again()), IMPORT_BATCH):
                batch.check(rows)
        if check.rejected:
            return check
    else:
        # Cheap (no row is built, nothing validated): a file that is not UTF-8 or not CSV at
        # line 300,000 must not leave the batches before it written.
        CsvReader(read_again()).check_rest()
    return _import(store, read_again(), source, gate)


def _import(
    store: Store, stream: Iterable[str], source: str, gate: AddressGate | None
) -> ImportReport:
    reader = CsvReader(stream)
    report = ImportReport(source)
    with _ImportBatch(store, report, source, gate) as batch:
        for rows in _chunked(reader, IMPORT_BATCH):
            batch.run(rows)
    return report


def _rereadable(stream: Iterable[str]) -> Callable[[], Iterable[str]]:
    """A function giving the stream's lines from its start again at each call."""
    if isinstance(stream, io.IOBase) and stream.seekable():
        start = stream.tell()

        def rewind() -> Iterable[str]:
            stream.seek(start)  # type: ignore[attr-defined]
            return stream

        return rewind
    lines = list(stream)  # not seekable (a pipe): keep the lines for the second pass
    return lambda: lines


class _ImportBatch:
    """The per-batch work of an import: validate, de-duplicate, then look up and write."""

    def __init__(
        self, store: Store, report: ImportReport, source: str, gate: AddressGate | None = None
    ) -> None:
        self.store = store
        self.report = report
        self.source = source
        self.gate = gate
        self.parser = InputParser()
        # Where each address first came (duplicates), on disk: memory stays flat with the file.
        self.first_lines = FirstLines()

    def __enter__(self) -> _ImportBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.first_lines.close()

    def run(self, rows: Sequence[CsvRow]) -> None:
        # Validation (the slow part) runs before the write lock is taken, so the lock is held
        # only for the lookups and the inserts of one batch.
        with self._in_line_order():
            items = self._valid(rows)
            self._apply(items)

    def _apply(self, items: list[tuple[int, NewSubscriber]]) -> None:
        with self.store.write():
            items = self._not_forgotten(items)
            listed = self.store.statuses_by_key([i.address.key for _, i in items])
            new: list[NewSubscriber] = []
            stops: dict[str, SubscriberStatus] = {}
            for _, item in items:
                if item.address.key not in listed:
                    new.append(item)
                elif item.status.is_suppressed:
                    stops[item.address.key] = item.status
                else:
                    self.report.unchanged += 1
            self._write(new, stops)

    def check(self, rows: Sequence[CsvRow]) -> None:
        # --strict's first pass: the rejections run() would report, writing nothing
        with self._in_line_order():
            self._not_forgotten(self._valid(rows))

    @contextmanager
    def _in_line_order(self) -> Iterator[None]:
        """Sort the rejections of one batch by line: each check reports on its own pass over
        the batch (validation, duplicates, forgotten), and the operator reads them in order."""
        rejected = self.report.rejected
        before = len(rejected)
        yield
        if len(rejected) > before + 1:
            rejected[before:] = sorted(rejected[before:], key=operator.attrgetter("line"))

    def _valid(self, rows: Sequence[CsvRow]) -> list[tuple[int, NewSubscriber]]:
        """The rows that are valid and the first of their address in the file, in file order."""
        valid = [found for found in map(self._validate, rows) if found is not None]
        # The first row of an address in the file wins: its first row in this batch, unless an
        # earlier batch had it (first_lines).
        firsts: dict[str, int] = {}
        for line, _, item in valid:
            firsts.setdefault(item.address.key, line)
        firsts.update(self.first_lines.record(firsts))
        kept: list[tuple[int, NewSubscriber]] = []
        for line, value, item in valid:
            first = firsts[item.address.key]
            if first == line:
                kept.append((line, item))
            else:
                self.report.reject(line, value.strip(), f"duplicate of line {first}")
        return kept

    def _not_forgotten(
        self, items: list[tuple[int, NewSubscriber]]
    ) -> list[tuple[int, NewSubscriber]]:
        forgotten = self.store.suppressed_among([i.address.suppression_hash for _, i in items])
        if not forgotten:
            return items
        kept = []
        for line, item in items:
            if item.address.suppression_hash in forgotten:
                self.report.reject(line, item.address.normalized, _FORGOTTEN_REASON)
            else:
                kept.append((line, item))
        return kept

    def _write(self, new: list[NewSubscriber], stops: dict[str, SubscriberStatus]) -> None:
        inserted = self.store.add_many(new)
        self.report.added += inserted if inserted >= 0 else len(new)
        changed = self.store.suppress_many(stops)
        self.report.updated += changed
        self.report.unchanged += len(stops) - changed

    def _validate(self, row: CsvRow) -> tuple[int, str, NewSubscriber] | None:
        """(line, the email field as written, the subscriber), or None once rejected."""
        email, name, categories, locale, status = row.fields
        # Undo export's formula escaping first: the leading ' is not part of the value. (One
        # test in C spares the five calls for the rows without any.)
        if "'" in (email[:1], name[:1], categories[:1], locale[:1], status[:1]):
            email, name, categories, locale, status = map(unescape_formula, row.fields)
        try:
            item = self.parser.parse_new(
                ConsentSource.IMPORT, self.source, email, name, categories, locale, status
            )
        except InvalidValue as err:
            self.report.reject(row.line, email.strip(), err.reason)
            return None
        # The gate refuses only non-ASCII addresses (see _gate_refusal): the test in C spares the
        # rest for nearly every row, and the identity test the is_suppressed property.
        if (
            not item.address.normalized.isascii()
            and (item.status is SubscriberStatus.ACTIVE or not item.status.is_suppressed)
            and (reason := _gate_refusal(self.gate, item.address))
        ):
            self.report.reject(row.line, email.strip(), reason)
            return None
        return row.line, email, item


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
