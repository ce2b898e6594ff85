"""Property tests: whatever dialect a spreadsheet writes, the rows come back exactly."""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from newsletter.adapters.csvfile import CsvError, CsvReader, MissingEmailColumn, unescape_formula
from newsletter.domain import SubscriberStatus
from newsletter.domain.addresses import AddressParser, InvalidAddress, normalise_address
from newsletter.services.subscribers import export_csv, import_csv
from tests.factories import make_store

LOCALES = ["", "fr", "en", "ar", "fr_FR", "ar_MA"]
CATEGORIES = ["Économie", "Sport", "Sécurité", "Culture", "Politique", "À la une"]
# Names people have: accents, Arabic, apostrophes, the delimiters, quotes and line breaks.
NAME_TEXT = st.lists(
    st.sampled_from([*list("abcXYZ éèçÏà’«»عربي,;\t\"' -\n"), "Benali, Karim"]), max_size=20
).map("".join)


@dataclass(frozen=True)
class Record:
    email: str
    name: str
    categories: tuple[str, ...]
    locale: str
    status: str


@st.composite
def records(draw: st.DrawFn) -> list[Record]:
    count = draw(st.integers(0, 12))
    locals_ = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9._+-]{0,12}[a-z0-9]", fullmatch=True),
            min_size=count,
            max_size=count,
            unique_by=str.lower,
        )
    )
    out = []
    for number, local in enumerate(locals_):
        assume(".." not in local)
        domain = draw(
            st.sampled_from(["example.com", "exemple.fr", "ÉXAMPLE.ma", "sub.example.org"])
        )
        out.append(
            Record(
                email=f"{local}{number}@{domain}",
                name=" ".join(draw(NAME_TEXT).split()),
                categories=tuple(
                    draw(st.lists(st.sampled_from(CATEGORIES), unique=True, max_size=3))
                ),
                locale=draw(st.sampled_from(LOCALES)),
                status=draw(st.sampled_from([s.value for s in SubscriberStatus])),
            )
        )
    return out


@st.composite
def dialects(draw: st.DrawFn) -> dict[str, object]:
    return {
        "delimiter": draw(st.sampled_from([",", ";", "\t"])),
        "lineterminator": draw(st.sampled_from(["\r\n", "\n"])),
        "quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
    }


def render(
    rows: list[list[str]], dialect: dict[str, object], blank_after: set[int], bom: bool
) -> tuple[bytes, list[int]]:
    """The file's bytes and the physical line where each data row starts."""
    out = io.StringIO()
    writer = csv.writer(out, **dialect)  # type: ignore[arg-type]
    starts = []
    for index, row in enumerate(rows):
        if index > 0:
            starts.append(out.getvalue().count("\n") + 1)
        writer.writerow(row)
        if index in blank_after:
            out.write(str(dialect["lineterminator"]))
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8"), starts


def read_back(data: bytes) -> CsvReader:
    return CsvReader(io.StringIO(data.decode("utf-8-sig"), newline=""))


@settings(max_examples=100, deadline=None)
@given(
    records(),
    dialects(),
    st.sets(st.integers(0, 15)),
    st.booleans(),
    st.permutations(["email", "name", "categories", "locale", "status", "notes"]),
    # A huge field in an ignored column. Without a lone CR: render() counts lines by "\n" only,
    # the reader also counts a CR (see the test after this one).
    st.text(max_size=3).filter(lambda s: "\r" not in s).map(lambda s: s * 70_000),
)
def test_any_dialect_reads_back_exactly(
    recs: list[Record],
    dialect: dict[str, object],
    blanks: set[int],
    bom: bool,
    columns: list[str],
    huge: str,
) -> None:
    header = [c.upper() if i % 2 else f" {c} " for i, c in enumerate(columns)]  # case, spaces

    def cell(rec: Record, column: str) -> str:
        values = {
            "email": f"  {rec.email} ",
            "name": rec.name,
            "categories": "|".join(rec.categories),
            "locale": rec.locale,
            "status": rec.status,
            "notes": huge,
        }
        return values[column]

    rows = [header] + [[cell(r, c) for c in columns] for r in recs]
    data, starts = render(rows, dialect, blanks, bom)

    got = list(read_back(data))

    assert [r.line for r in got] == starts
    assert [r.values["email"].strip() for r in got] == [r.email for r in recs]
    assert [r.values["name"] for r in got] == [r.name for r in recs]
    assert [r.values["categories"] for r in got] == ["|".join(r.categories) for r in recs]
    assert [(r.values["locale"], r.values["status"]) for r in got] == [
        (r.locale, r.status) for r in recs
    ]


def test_a_lone_cr_inside_a_quoted_field_counts_as_a_line_for_the_reader() -> None:
    # Found by Hypothesis (huge='\r' * 70000 above): a row after a field of lone CRs is reported
    # at the line that counts each CR as a line break, where render() counts only "\n". Pinned
    # (not judged) here; it changes only the line numbers quoted in import messages.
    rows = [["email", "notes"], ["a@example.com", "\r" * 3], ["b@example.com", ""]]
    data, starts = render(rows, {"lineterminator": "\r\n"}, set(), False)
    assert starts == [2, 3]
    assert [r.line for r in read_back(data)] == [2, 6]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), dialects(), st.booleans())
def test_import_then_export_round_trips(
    recs: list[Record], dialect: dict[str, object], bom: bool
) -> None:
    rows = [["email", "name", "categories", "locale", "status"]]
    rows += [[r.email, r.name, "|".join(r.categories), r.locale, r.status] for r in recs]
    data, _ = render(rows, dialect, set(), bom)
    with tempfile.TemporaryDirectory() as folder:
        with make_store(Path(folder), name="a.db") as first:
            report = import_csv(first, io.StringIO(data.decode("utf-8-sig"), newline=""), "in.csv")
            assert report.rejected == [] and report.added == len(recs)
            exported = io.StringIO(newline="")
            export_csv(first, exported)
        with make_store(Path(folder), name="b.db") as second:
            again = import_csv(second, io.StringIO(exported.getvalue(), newline=""), "out.csv")
            assert again.added == len(recs)
            second_export = io.StringIO(newline="")
            export_csv(second, second_export)
    assert second_export.getvalue() == exported.getvalue()
    lines = list(csv.reader(io.StringIO(exported.getvalue(), newline="")))[1:]
    assert [line[0] for line in lines] == [normalise_address(r.email).normalized for r in recs]
    # A name a spreadsheet would run as a formula ("-", "=...") is written with a leading '.
    # The generated input is written raw, so an input name such as "'-" already reads as the
    # escaped "-" (import drops that one '): the stored name is unescape_formula(input).
    assert [(unescape_formula(line[1]), line[2], line[4]) for line in lines] == [
        (unescape_formula(r.name), "|".join(r.categories), r.status) for r in recs
    ]
    assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for line in lines for cell in line)


ADDRESS_TEXT = st.lists(
    st.sampled_from([*list('aZ09._+-@"! é ÉX.Com[]'), "xn--"]), max_size=20
).map("".join)


@settings(max_examples=400, deadline=None)
@given(ADDRESS_TEXT | st.emails().map(str))
def test_the_fast_address_path_agrees_with_email_validator(text: str) -> None:
    try:
        valid = validate_email(text.strip(), check_deliverability=False)
        expected = f"{valid.local_part}@{valid.ascii_domain}"
    except EmailNotValidError:
        expected = None
    try:
        got = AddressParser().parse(text).normalized
    except InvalidAddress:
        got = None
    assert got == expected
    if got is not None:
        assert normalise_address(text).normalized == got


def test_domain_is_lowercased_and_idna_encoded_local_part_kept() -> None:
    address = normalise_address("  Karim.BENALI@Ouédraogo.EXAMPLE.com ")
    assert address.normalized == "Karim.BENALI@xn--oudraogo-c1a.example.com"
    assert address.key == "karim.benali@xn--oudraogo-c1a.example.com"


def test_invalid_address_says_why() -> None:
    with pytest.raises(InvalidAddress, match="must have an @-sign"):
        normalise_address("not-an-address")


def test_one_column_file_without_delimiters() -> None:
    rows = list(read_back(b"email\r\na@example.com\r\n\r\nb@example.com"))
    assert [(r.line, r.values["email"]) for r in rows] == [
        (2, "a@example.com"),
        (4, "b@example.com"),
    ]


def test_the_header_decides_when_the_sniffer_is_fooled() -> None:
    # Semicolons inside names outnumber the real delimiter (comma) in the data.
    data = b'email,name\na@example.com,"x;y;z;w"\nb@example.com,"p;q;r"\n'
    reader = read_back(data)
    assert reader.delimiter == ","
    assert [r.values["name"] for r in reader] == ["x;y;z;w", "p;q;r"]


def test_rows_of_only_delimiters_are_blank() -> None:
    rows = list(read_back(b"email;name\n;;\n a@example.com ;A\n"))
    assert [(r.line, r.values["name"]) for r in rows] == [(3, "A")]


def test_a_file_without_an_email_column_is_refused() -> None:
    with pytest.raises(MissingEmailColumn, match="no 'email' column"):
        read_back(b"name;phone\nA;1\n")
    with pytest.raises(MissingEmailColumn):
        read_back(b"")


def test_a_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(CsvError, match="not UTF-8"):
        read_back_bytes = CsvReader(
            io.TextIOWrapper(
                io.BytesIO("email\nzoé@example.com\n".encode("latin-1")),
                encoding="utf-8-sig",
                newline="",
            )
        )
        list(read_back_bytes)


def test_a_field_over_the_limit_is_an_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    import newsletter.adapters.csvfile as csvfile

    monkeypatch.setattr(csvfile, "FIELD_SIZE_LIMIT", 1000)
    previous = csv.field_size_limit(1000)
    try:
        with pytest.raises(CsvError, match="line 2"):
            list(read_back(f"email,notes\na@example.com,{'x' * 5000}\n".encode()))
    finally:
        csv.field_size_limit(previous)
