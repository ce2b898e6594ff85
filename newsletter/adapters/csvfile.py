"""CSV files in and out: the adapter between spreadsheets and the subscriber service.

Reading accepts what spreadsheet programs write: UTF-8 with or without a byte-order mark, comma,
semicolon (French Excel) or tab delimiters, CRLF or LF line ends, quoted fields with delimiters,
quotes and line breaks inside, blank lines, and a header row naming the columns in any order and
case. Every row carries the physical line of the file where it starts, so a report can point the
operator at the right line even when an earlier field spans several lines.

Writing guards against formula injection: a spreadsheet runs a cell that starts with = + - @ (or
a tab or CR before them) as a formula, so ``csv_writer`` prefixes such a cell with ' (which the
spreadsheet shows as text) and ``unescape_formula`` removes exactly that ' again on import.
"""

from __future__ import annotations

import csv
import io
import itertools
import operator
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Protocol, TextIO

from newsletter.domain.errors import NewsletterError, UsageError

#: the columns import reads (and export writes, in this order); others are ignored
COLUMNS: tuple[str, ...] = ("email", "name", "categories", "locale", "status")
DELIMITERS = ",;\t"
# Header spellings people use for the address column, mapped to ours.
_ALIASES = {"e-mail": "email", "email address": "email", "courriel": "email"}
# Sniffing looks at the start of the file only; the sniffer's regexes are slow on big samples.
_SAMPLE_CHARS = 64 * 1024
# Python's default (128 KiB) refuses a long notes column; keep a bound so a file with a stray
# quote (one "field" swallowing the rest of the file) still fails instead of eating memory.
FIELD_SIZE_LIMIT = 64 * 1024 * 1024
# A cell a spreadsheet would evaluate: it starts with a formula trigger. Leading quotes count too,
# so that a value that really starts with ' and a trigger survives the escape-unescape round trip.
_FORMULA_TRIGGERS = "=+-@\t\r"
_ESCAPE_STARTS = frozenset("'" + _FORMULA_TRIGGERS)
_NEEDS_ESCAPE = re.compile(f"'*[{re.escape(_FORMULA_TRIGGERS)}]")
_ESCAPED = re.compile(f"'+[{re.escape(_FORMULA_TRIGGERS)}]")


class CsvError(UsageError):
    """The file cannot be read as CSV at all (exit status 2); bad rows are reported, not raised."""


class MissingEmailColumn(CsvError):
    def __init__(self, header: Sequence[str]) -> None:
        super().__init__(
            f"the file has no 'email' column (header: {', '.join(header) or 'empty'})",
            "the first row must name the columns: email, and optionally name, categories, "
            "locale, status",
        )


class CsvRow(NamedTuple):
    """One row: a tuple, not a dataclass, since an import makes a million of them."""

    line: int  # physical line of the file where the row starts (1 = first line)
    fields: tuple[str, ...]  # the raw field of each name in COLUMNS, in that order ("" if absent)

    @property
    def values(self) -> dict[str, str]:
        """Every name in COLUMNS -> the raw field."""
        return dict(zip(COLUMNS, self.fields, strict=True))


@contextmanager
def open_csv(path: Path) -> Iterator[TextIO]:
    """Open a CSV file for ``CsvReader``: BOM dropped, line ends left to the csv module."""
    try:
        stream = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise CsvError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CsvError(f"{path}: is a folder, not a CSV file") from None
    except OSError as err:
        raise CsvError(f"{path}: cannot be read ({err.strerror})") from None
    with stream:
        yield stream


class CsvReader:
    """Rows of a CSV text stream; the header is read (and checked) at construction."""

    def __init__(self, stream: Iterable[str]) -> None:
        csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))
        lines = iter(stream)
        sample_lines = _take_sample(lines)
        self.delimiter = _choose_delimiter(sample_lines)
        self._reader = csv.reader(
            itertools.chain(sample_lines, lines), delimiter=self.delimiter, skipinitialspace=True
        )
        self.header = self._read_header()
        positions = _column_positions(self.header)
        if "email" not in positions:
            raise MissingEmailColumn(self.header)
        self._pick = _picker(positions)

    def __iter__(self) -> Iterator[CsvRow]:
        # The loop of a million-row import: nothing per row beyond the reader, the blank test
        # (_is_blank's, in C) and the pick.
        reader, pick, strip = self._reader, self._pick, str.strip
        line = reader.line_num + 1
        try:
            for fields in reader:
                if any(map(strip, fields)):
                    yield CsvRow(line, pick(fields))
                line = reader.line_num + 1
        except csv.Error as err:
            raise _not_csv(reader.line_num, err) from None
        except UnicodeDecodeError:
            raise _not_utf8(reader.line_num + 1) from None

    def check_rest(self) -> None:
        """Read the rest of the stream without building rows; CsvError where it is unusable."""
        while self._next_fields() is not None:
            pass

    def _read_header(self) -> list[str]:
        while (fields := self._next_fields()) is not None:
            if not _is_blank(fields):
                return fields
        return []

    def _next_fields(self) -> list[str] | None:
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except csv.Error as err:
            raise _not_csv(self._reader.line_num, err) from None
        except UnicodeDecodeError:
            raise _not_utf8(self._reader.line_num + 1) from None


def _picker(positions: dict[str, int]) -> Callable[[list[str]], tuple[str, ...]]:
    """A function from a row's fields to the COLUMNS values, "" for a column absent or cut short."""
    width = max(positions.values()) + 1
    # Index -1 is a "" appended to every row: it stands for the columns the file lacks.
    getter = operator.itemgetter(*(positions.get(name, -1) for name in COLUMNS))

    def pick(fields: list[str]) -> tuple[str, ...]:
        if len(fields) < width:
            fields.extend([""] * (width - len(fields)))
        fields.append("")
        return getter(fields)  # type: ignore[no-any-return]

    return pick


def _take_sample(lines: Iterator[str]) -> list[str]:
    sample: list[str] = []
    size = 0
    try:
        for line in lines:
            sample.append(line)
            size += len(line)
            if size >= _SAMPLE_CHARS:
                break
    except UnicodeDecodeError:
        raise _not_utf8(len(sample) + 1) from None
    return sample


def _not_csv(line: int, err: csv.Error) -> CsvError:
    return CsvError(f"line {line}: {err}", "is it a CSV file?")


def _not_utf8(line: int) -> CsvError:
    return CsvError(
        f"the file is not UTF-8 text (near line {line})",
        "save it from the spreadsheet as 'CSV UTF-8'",
    )


def _choose_delimiter(sample_lines: list[str]) -> str:
    """The delimiter that makes the most sense of the header; the sniffer's guess breaks ties.

    ``csv.Sniffer`` fails on a one-column file and can be fooled by delimiters inside names, so
    its answer is only trusted when the header it implies names our columns.
    """
    sample = "".join(sample_lines)[:_SAMPLE_CHARS]
    header_line = next((line for line in sample_lines if line.strip()), "")
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    by_count = sorted(DELIMITERS, key=header_line.count, reverse=True)
    candidates = ([sniffed] if sniffed else []) + [d for d in by_count if d != sniffed]
    return max(candidates, key=lambda d: _known_columns(header_line, d))  # first of equals wins


def _known_columns(header_line: str, delimiter: str) -> int:
    try:
        fields = next(csv.reader(io.StringIO(header_line), delimiter=delimiter), [])
    except csv.Error:
        return 0
    return len(set(_column_positions(fields)))


def _column_positions(header: Sequence[str]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = " ".join(raw.replace("\ufeff", "").split()).casefold()
        name = _ALIASES.get(name, name)
        if name in COLUMNS and name not in positions:  # a repeated column: the first one counts
            positions[name] = index
    return positions


def _is_blank(fields: Sequence[str]) -> bool:
    # Spreadsheets write empty rows as ";;;" rather than as an empty line.
    return all(not field.strip() for field in fields)


class WorkFileError(NewsletterError):
    """The import's temporary file (FirstLines) could not be written. Exit status 1."""


class FirstLines:
    """The line of a file where each key (an address) first came, for "duplicate of line N".

    Kept in a private temporary SQLite database rather than a dict: for a million addresses a
    dict holds some 150 MB, the database a few (its page cache) whatever the file's size, for
    about 2 µs a row. SQLite unlinks the file as it creates it: nothing is left behind, even by
    a killed import. Open on first use; ``close`` when done.
    """

    # Keys per SELECT ... IN: under SQLite's default limit on parameters in old versions (999).
    _CHUNK = 900

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None

    def record(self, lines: dict[str, int]) -> dict[str, int]:
        """Record the keys of ``lines`` (key -> its first line in a batch of rows, every line
        after those recorded so far); returns the keys recorded before, with their lines."""
        if not lines:
            return {}
        try:
            return self._record(lines)
        except sqlite3.Error as err:  # the temporary folder is full or not writable
            raise WorkFileError(
                f"the import's temporary file failed: {err}",
                "it is kept in TMPDIR (default /tmp), which needs free space; the batches "
                "already committed stay, running the import again finishes it",
            ) from None

    def _record(self, lines: dict[str, int]) -> dict[str, int]:
        if self._db is None:
            # ":memory:" would keep every key in RAM; "" is an on-disk temporary database.
            self._db = sqlite3.connect("", isolation_level=None)
            self._db.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        db = self._db
        before = db.total_changes
        db.execute("BEGIN")  # one transaction for the batch
        db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", lines.items())
        db.execute("COMMIT")
        if db.total_changes - before == len(lines):
            return {}  # every key is new (nearly every batch): no lookup needed
        # A key kept its earlier line: the ones whose line is not this batch's came before.
        earlier: dict[str, int] = {}
        keys = list(lines)
        for start in range(0, len(keys), self._CHUNK):
            chunk = keys[start : start + self._CHUNK]
            query = f"SELECT key, line FROM seen WHERE key IN ({','.join('?' * len(chunk))})"
            earlier.update((k, line) for k, line in db.execute(query, chunk) if line != lines[k])
        return earlier

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class RowWriter(Protocol):
    def writerow(self, row: Iterable[str], /) -> object: ...


def csv_writer(out: TextIO, delimiter: str = ",") -> RowWriter:
    """A writer in the export dialect: comma, minimal quoting, CRLF (RFC 4180, what Excel reads).

    ``delimiter=";"`` is what Excel expects in the locales whose decimal mark is a comma (French
    among them). Every cell goes through escape_formula.
    """
    return _FormulaSafeWriter(csv.writer(out, delimiter=delimiter, lineterminator="\r\n"))


class _FormulaSafeWriter:
    def __init__(self, writer: RowWriter) -> None:
        self._writer = writer

    def writerow(self, row: Iterable[str], /) -> object:
        return self._writer.writerow([escape_formula(cell) for cell in row])


def escape_formula(cell: str) -> str:
    """``cell`` with a leading ' if a spreadsheet would run it as a formula (=, +, -, @, tab, CR).

    A cell that already starts with ' followed by a trigger gets one more, so that
    unescape_formula gives back exactly the original.
    """
    # The first-character test spares the regex for almost every cell (this runs per exported cell).
    if cell and cell[0] in _ESCAPE_STARTS and _NEEDS_ESCAPE.match(cell):
        return f"'{cell}"
    return cell


def unescape_formula(cell: str) -> str:
    """Undo escape_formula: drop one leading ' when a formula trigger follows the quotes."""
    return cell[1:] if cell.startswith("'") and _ESCAPED.match(cell) else cell
