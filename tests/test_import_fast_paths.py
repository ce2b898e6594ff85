"""The import's fast paths (issue 16) give exactly what the slow ones give.

A million-row import takes shortcuts: addresses validated per domain once with a plain-ASCII fast
path, names passed through when already clean, duplicates remembered on disk batch by batch. Each
is compared here with the straightforward version on tricky input.
"""

from __future__ import annotations

import io
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.adapters.csvfile import FirstLines, WorkFileError
from newsletter.adapters.store import Store
from newsletter.domain import SubscriberStatus
from newsletter.domain.addresses import Address, AddressParser, InvalidAddress, normalise_address
from newsletter.services import subscribers as service
from newsletter.services.subscribers import (
    _NAME_CONTROLS,
    ImportReport,
    clean_name,
    export_csv,
    forget,
    import_csv,
)
from tests.factories import make_store, new_subscriber

# Addresses that sit on the edges of the fast path: case, mailbox names email-validator folds,
# lengths at the limits, dots, quotes, IDN, literals, reserved and odd domains.
TRICKY_ADDRESSES = [
    "lecteur1@exemple1.ma",
    "Lecteur.Un@Exemple.MA",
    "  spaced@exemple.ma  ",
    "a+tag@exemple.ma",
    "under_score@exemple.ma",
    "dash-ed@exemple.ma",
    "Postmaster@exemple.ma",
    "ABUSE@exemple.ma",
    "mailer-daemon@exemple.ma",
    "a" * 64 + "@exemple.ma",
    "a" * 65 + "@exemple.ma",
    "b@" + "c" * 63 + ".ma",
    "b@" + "c" * 64 + ".ma",
    "d@" + ".".join(["e" * 60] * 4) + ".ma",
    "x" * 60 + "@" + ".".join(["f" * 60] * 3) + ".ma",
    ".dot@exemple.ma",
    "dot.@exemple.ma",
    "do..t@exemple.ma",
    '"quoted"@exemple.ma',
    '"with space"@exemple.ma',
    "é@exemple.ma",
    "karim@Ouédraogo.example",
    "karim@xn--oudraogo-c1a.example",
    "karim@xn--zz.example",
    "a@b",
    "a@localhost",
    "a@exemple.local",
    "a@exemple.invalid",
    "a@[192.0.2.1]",
    "a@-exemple.ma",
    "a@exemple-.ma",
    "a@exemple..ma",
    "a@.exemple.ma",
    "a@exemple.ma.",
    "a@exemple_x.ma",
    "a@123.45",
    "a@exemple.123",
    "a@@exemple.ma",
    "@exemple.ma",
    "a@",
    "",
    "   ",
    "a b@exemple.ma",
    "a@exemple .ma",
    "a\t@exemple.ma",
    "a@exemple.ma\u200b",
    "a@ＥＸＡＭＰＬＥ.ma",
    "'a@exemple.ma",
    "=a@exemple.ma",
    "a,b@exemple.ma",
    "a;b@exemple.ma",
    "{a}@exemple.ma",
    "a!#$%&*/=?^`|~@exemple.ma",
]


def outcome(parse: object, text: str) -> Address | str:
    """The Address, or the rejection reason."""
    try:
        return parse(text)  # type: ignore[operator, no-any-return]
    except InvalidAddress as err:
        return f"invalid: {err.reason}"


def test_the_fast_address_path_gives_the_slow_paths_address_or_reason() -> None:
    parser = AddressParser()  # one for all: its domain cache carries from one address to the next
    for text in TRICKY_ADDRESSES * 2:  # the second round answers from the cache
        assert outcome(parser.parse, text) == outcome(normalise_address, text), text


ADDRESS_PIECES = st.sampled_from(
    [*"aZ09._+-@\"' éÉ.[]", "xn--", "Postmaster", "exemple", ".ma", "@exemple.ma", "a" * 30]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(ADDRESS_PIECES, max_size=12).map("".join), min_size=1, max_size=8))
def test_the_fast_address_path_agrees_on_random_addresses_sharing_a_cache(
    texts: list[str],
) -> None:
    parser = AddressParser()
    for text in texts:
        assert outcome(parser.parse, text) == outcome(normalise_address, text)


def slow_clean_name(text: str) -> str:
    return " ".join(_NAME_CONTROLS.sub("", text).split())


NAME_CHARACTERS = st.sampled_from(
    [
        *" a\t\n\r\x0b\x0c\x00\x07\x1b\x1c\x1f\x7f\x85\x9f\xa0",
        *("\u2028", "\u2009", "\u3000", "\ud800", "é", "ع", "Karim", "\u200b", "\u00ad"),
        "\ufeff",
    ]
)


# Mostly printable text, where the fast path answers: only the spaces can make it wrong.
PRINTABLE_NAMES = st.lists(st.sampled_from([" ", "a", "é", "ع", "-"]), max_size=8).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.lists(NAME_CHARACTERS, max_size=12).map("".join) | PRINTABLE_NAMES | st.text(max_size=30))
def test_clean_names_pass_through_unchanged_exactly_when_the_slow_path_keeps_them(
    text: str,
) -> None:
    assert clean_name(text) == slow_clean_name(text)


def test_first_lines_remembers_keys_across_batches() -> None:
    first = FirstLines()
    try:
        assert first.record({"a": 2, "b": 3}) == {}
        assert first.record({"c": 5, "a": 6}) == {"a": 2}
        assert first.record({}) == {}
        assert first.record({"b": 9, "c": 10, "d": 11}) == {"b": 3, "c": 5}
        many = {f"k{n}": 100 + n for n in range(2000)}  # more keys than one IN (...) takes
        assert first.record(many) == {}
        later = {key: line + 10_000 for key, line in many.items()}  # a later batch repeats them
        assert first.record({**later, "z": 20_000}) == many
        assert first.record({"z": 20_001, "y": 20_002}) == {"z": 20_000}
    finally:
        first.close()


# Rows for the batch-size test: a few addresses under several spellings, invalid ones, stops, and
# an address that was forgotten, so that duplicates fall within and across batches.
ROW_EMAILS = st.sampled_from(
    [
        *("a@exemple.ma", "A@Exemple.MA", " a@exemple.ma", "b@exemple.ma", "c@exemple.ma"),
        *("gone@x.ma", "pas-une-adresse", "", "'d@exemple.ma", "listed@exemple.ma"),
        "LISTED@exemple.ma",
    ]
)
ROW_STATUSES = st.sampled_from(["", "", "", "unsubscribed", "bounced", "inconnu"])


def import_with_batch(store: Store, text: str, batch: int, strict: bool) -> ImportReport:
    saved = service.IMPORT_BATCH
    service.IMPORT_BATCH = batch
    try:
        return import_csv(store, io.StringIO(text, newline=""), "list.csv", strict=strict)
    finally:
        service.IMPORT_BATCH = saved


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(ROW_EMAILS, ROW_STATUSES), min_size=1, max_size=14),
    st.integers(min_value=1, max_value=4),
    st.booleans(),
)
def test_the_report_and_the_list_do_not_depend_on_the_batch_size(
    rows: list[tuple[str, str]], batch: int, strict: bool
) -> None:
    text = "email;status\n" + "".join(f"{email};{status}\n" for email, status in rows)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size, name in ((batch, "small.db"), (10_000, "one.db")):
            with open_store_for(Path(folder), name) as store:
                report = import_with_batch(store, text, size, strict)
                out = io.StringIO(newline="")
                export_csv(store, out)
                results.append((report, out.getvalue()))
    (small, small_list), (whole, whole_list) = results
    assert small.rejected == whole.rejected
    assert [r.line for r in small.rejected] == sorted(r.line for r in small.rejected)
    counts = (small.added, small.updated, small.unchanged, small.written)
    assert counts == (whole.added, whole.updated, whole.unchanged, whole.written)
    assert small_list == whole_list


def open_store_for(folder: Path, name: str) -> Store:
    store = make_store(folder, name=name)
    store.add(new_subscriber("listed@exemple.ma"))
    forget(store, "gone@x.ma")
    return store


def test_a_duplicate_across_batches_names_the_first_line_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "IMPORT_BATCH", 2)
    text = "email\na@exemple.ma\nb@exemple.ma\nc@exemple.ma\nA@exemple.ma\nnon\nB@EXEMPLE.MA\n"
    with make_store(tmp_path) as store:
        report = import_csv(store, io.StringIO(text, newline=""), "list.csv")
    assert [(r.line, r.value, r.reason) for r in report.rejected] == [
        (5, "A@exemple.ma", "duplicate of line 2"),
        (6, "non", "An email address must have an @-sign."),
        (7, "B@EXEMPLE.MA", "duplicate of line 3"),
    ]
    assert report.added == 3


def test_the_import_memory_does_not_grow_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peak Python memory of a 6,000-row import and of a 30,000-row one (batches of 1,000):
    a dict of every address seen would add some 3 MB for the 24,000 more."""
    monkeypatch.setattr(service, "IMPORT_BATCH", 1000)

    def peak(rows: int) -> int:
        text = "email,name\n" + "".join(f"r{n}@exemple{n % 97}.ma,R {n}\n" for n in range(rows))
        stream = io.StringIO(text, newline="")  # (its buffer grows with the file, of course)
        with make_store(tmp_path, name=f"{rows}.db") as store:
            tracemalloc.start()
            try:
                report = import_csv(store, stream, "list.csv")
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
                assert report.added == rows

    small, big = peak(6000), peak(30_000)
    assert big - small < 500_000, (small, big)


def test_status_of_a_listed_address_is_not_reset_by_a_later_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "IMPORT_BATCH", 1)
    text = "email,status\nx@exemple.ma,\nx@exemple.ma,unsubscribed\n"
    with make_store(tmp_path) as store:
        report = import_csv(store, io.StringIO(text, newline=""), "list.csv")
        assert store.find_by_email("x@exemple.ma").status is SubscriberStatus.ACTIVE  # type: ignore[union-attr]
    assert [(r.line, r.reason) for r in report.rejected] == [(3, "duplicate of line 2")]


def test_a_full_temporary_folder_is_one_clear_error_and_keeps_the_committed_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "IMPORT_BATCH", 100)
    record = FirstLines._record

    def cramped(self: FirstLines, lines: dict[str, int]) -> dict[str, int]:
        if self._db is not None:  # as if the temporary folder filled up after the first batch
            self._db.execute("PRAGMA max_page_count=1")
        return record(self, lines)

    monkeypatch.setattr(FirstLines, "_record", cramped)
    text = "email\n" + "".join(f"r{n}@exemple.ma\n" for n in range(1000))
    with make_store(tmp_path) as store:
        with pytest.raises(WorkFileError) as raised:
            import_csv(store, io.StringIO(text, newline=""), "list.csv")
        assert str(raised.value).startswith(
            "the import's temporary file failed: database or disk is full (it is kept in TMPDIR"
        )
        assert store.count_by_status()[SubscriberStatus.ACTIVE] == 100
