"""`newsletter status` on SQLite without SQLAlchemy (issue 16): the glance (adapters/glance.py)
reads what the store reads, `status` says the same through either, and every database the glance
is not sure about goes the store's way as before. Real SQLite files throughout."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from newsletter.adapters import glance as glance_module
from newsletter.adapters.glance import (
    LATEST_SCHEMA_VERSION,
    GlanceFailed,
    SqliteGlance,
    open_glance,
    sqlite_file,
)
from newsletter.adapters.store import MIGRATIONS, create_store_engine, migrate, open_store
from newsletter.domain import EditionStatus
from newsletter.domain.returned import ReturnedKind
from tests.factories import FakeClock, new_subscriber
from tests.support import ROOT, base_env, invoke_cli, run_cli

SENT_DAY = date(2026, 1, 27)  # sent: sent, failed, uncertain and pending rows; mail came back
HELD_DAY = date(2026, 1, 28)  # held by an editor, never frozen, one editorial change
EMPTY_DAY = date(2026, 1, 26)  # recorded empty, with its note
NEVER_DAY = date(2026, 1, 29)  # never recorded
DAYS = (SENT_DAY, HELD_DAY, EMPTY_DAY, NEVER_DAY)
OWNER = "test-sender"
# Modules `status` has no use for: any of them loaded means the glance was not what answered.
HEAVY = ("sqlalchemy", "premailer", "jinja2", "httpx", "feedparser", "cryptography", "psycopg")


def build_database(tmp_path: Path) -> str:
    """A database at the latest schema holding every case `status` prints; returns its URL."""
    url = f"sqlite:///{tmp_path / 'newsletter.db'}"
    # Microseconds in the clock: the glance must read UTCDateTime's stored fraction as the store.
    clock = FakeClock(datetime(2026, 1, 27, 6, 59, 30, 123456, tzinfo=UTC))
    with open_store(url, clock) as store:
        ids = [store.add(new_subscriber(f"lecteur{i}@exemple.ma")).id for i in range(9)]
        store.freeze_edition(SENT_DAY, [])
        claimed = store.claim_deliveries(SENT_DAY, OWNER, 9, 60)
        assert [c.reader.subscriber_id for c in claimed] == ids
        rows = [c.delivery_id for c in claimed]
        assert store.mark_sent(rows[:4], OWNER) == set()
        store.mark_failed(
            rows[4], OWNER, "550 5.1.1 <lecteur4@exemple.ma>: no such user", bounce=True
        )
        store.mark_failed(rows[5], OWNER, "554 5.7.1 refused by policy", bounce=False)
        store.mark_uncertain(rows[6], OWNER, "the relay never answered the end of data")
        store.release(rows[7:], OWNER, "421 try again later")  # back to pending
        for index, kind, status in (
            (0, ReturnedKind.SOFT, "4.2.2"),
            (1, ReturnedKind.COMPLAINT, ""),
        ):
            target = store.mailed_delivery(SENT_DAY, ids[index])
            assert target is not None
            store.record_returned(target, kind, status, "came back")
        clock.advance(minutes=3, microseconds=7)
        store.record_change(SENT_DAY, "cli:ed", "subject", "Les nouvelles du jour")
        clock.advance(hours=1)
        store.record_change(SENT_DAY, "web:admin", "lead", "")  # empty detail: the line is cut
        store.mark_edition_sent(SENT_DAY)
        store.set_held(HELD_DAY, True)
        store.record_change(HELD_DAY, "web:admin", "intro", "Bonjour à toutes et à tous")
        store.record_edition_status(EMPTY_DAY, EditionStatus.EMPTY, "no article in its window")
    return url


@pytest.fixture
def database(tmp_path: Path) -> str:
    return build_database(tmp_path)


def test_the_glance_reads_what_the_store_reads(database: str) -> None:
    glance = open_glance(database)
    assert isinstance(glance, SqliteGlance)
    with glance, open_store(database) as store:
        assert glance.latest_edition_date() == store.latest_edition_date() == HELD_DAY
        for day in DAYS:
            assert glance.edition_record(day) == store.edition_record(day), day
            assert glance.delivery_counts(day) == store.delivery_counts(day), day
            assert glance.delivery_failures(day) == store.delivery_failures(day), day
            assert glance.delivery_failures(day, limit=1) == store.delivery_failures(day, limit=1)
            assert glance.curation_changes(day) == store.curation_changes(day), day
        assert glance.returned_counts(DAYS) == store.returned_counts(DAYS)
        assert glance.returned_counts([]) == store.returned_counts([])

        # Not only equal, but what was recorded: the test cannot pass on two empty answers.
        record = glance.edition_record(SENT_DAY)
        assert record is not None and record.status is EditionStatus.SENT
        assert record.frozen_at == datetime(2026, 1, 27, 6, 59, 30, 123456, tzinfo=UTC)
        assert record.finished_at is not None and record.finished_at.tzinfo is UTC
        assert glance.delivery_counts(SENT_DAY) == {
            "sent": 4,
            "failed": 2,
            "uncertain": 1,
            "pending": 2,
        }
        assert [email for email, _ in glance.delivery_failures(SENT_DAY)] == [
            "lecteur4@exemple.ma",
            "lecteur5@exemple.ma",
        ]
        assert glance.returned_counts([SENT_DAY])[SENT_DAY] == {
            "soft": 1,
            "complaint": 1,
            "hard": 1,
            "mailed": 7,
        }
        changes = glance.curation_changes(SENT_DAY)
        assert [(c.who, c.action, c.detail) for c in changes] == [
            ("cli:ed", "subject", "Les nouvelles du jour"),
            ("web:admin", "lead", ""),
        ]
        assert changes[0].at == datetime(2026, 1, 27, 7, 2, 30, 123463, tzinfo=UTC)
        held = glance.edition_record(HELD_DAY)
        assert held is not None and held.held and held.frozen_at is None
        assert glance.edition_record(NEVER_DAY) is None


def _status(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return invoke_cli("status", *args, env=env, cwd=cwd)


@pytest.mark.parametrize("command", [("status",), ("bounces", "list")])
@pytest.mark.parametrize("day", [None, *DAYS])
def test_status_says_the_same_through_the_glance_and_the_store(
    tmp_path: Path,
    database: str,
    command: tuple[str, ...],
    day: date | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = base_env(tmp_path, NEWSLETTER_DATABASE_URL=database)
    args = (*command, *(() if day is None else ("--date", day.isoformat())))
    opened: list[SqliteGlance | None] = []
    real_open = glance_module.open_glance

    def spy(url: str) -> SqliteGlance | None:
        opened.append(real_open(url))
        return opened[-1]

    monkeypatch.setattr(glance_module, "open_glance", spy)
    through_glance = invoke_cli(*args, env=env, cwd=tmp_path)
    assert len(opened) == 1 and isinstance(opened[0], SqliteGlance)

    monkeypatch.setattr(glance_module, "open_glance", lambda url: None)  # the store's way
    through_store = invoke_cli(*args, env=env, cwd=tmp_path)

    assert through_glance.returncode == through_store.returncode == 0, through_glance.stderr
    assert through_glance.stdout == through_store.stdout
    assert through_glance.stderr == through_store.stderr == ""
    if command == ("bounces", "list"):
        if day == SENT_DAY:
            assert through_glance.stdout.startswith("returned: 1 hard bounced (14.29%)")
        elif day is None:  # the latest edition recorded: the held one, nothing mailed
            assert through_glance.stdout.startswith("returned: 0 hard bounced (0.00%)")
    elif day is None or day == HELD_DAY:  # the latest edition recorded is the held one
        assert through_glance.stdout.startswith("edition 2026-01-28: open, held\n")
        # Changed on the 27th at 08:02 UTC, 09:02 in Casablanca.
        assert "    2026-01-27 09:02  web:admin  intro Bonjour à toutes et à tous\n" in (
            through_glance.stdout
        )


def test_the_sent_edition_reads_in_full(tmp_path: Path, database: str) -> None:
    env = base_env(tmp_path, NEWSLETTER_DATABASE_URL=database)
    out = _status(env, tmp_path, "--date", SENT_DAY.isoformat()).stdout
    assert out.splitlines() == [
        "edition 2026-01-27: sent",
        "  4 sent, 2 failed, 2 pending, 0 sending, 0 skipped, 1 uncertain; 9 recipients",
        "  uncertain: the relay took these messages whole but never answered; the next send "
        "sends them again (same Message-ID, so a receiver can fold a duplicate)",
        "  failed: lecteur4@exemple.ma: 550 5.1.1 <lecteur4@exemple.ma>: no such user",
        "  failed: lecteur5@exemple.ma: 554 5.7.1 refused by policy",
        "  returned: 1 hard bounced (14.29%), 1 soft bounced (14.29%), 1 complained (14.29%) "
        "of 7 mailed",
        "  warning: the bounce rate 14.29% is over 2.00%: mailbox providers throttle senders "
        "past it; clean the list (old imports, typos) before the next edition",
        "  warning: the complaint rate 14.29% is over 0.10%: Gmail and Yahoo filter senders "
        "past 0.3%; check consent and that the unsubscribe link is easy to find",
        "  editorial changes: 2",
        # Africa/Casablanca is UTC+1: the site's time, from the UTC the store keeps.
        "    2026-01-27 08:02  cli:ed  subject Les nouvelles du jour",
        "    2026-01-27 09:02  web:admin  lead",
    ]


_NO_SQLALCHEMY = textwrap.dedent(
    """
    import sys
    from newsletter.cli import cli
    cli(sys.argv[1:], prog_name="newsletter", standalone_mode=False)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
    print("loaded:", heavy)
    """
)


@pytest.mark.parametrize("args", [(), ("--date", SENT_DAY.isoformat())])
def test_status_on_a_current_sqlite_file_never_imports_sqlalchemy(
    tmp_path: Path, database: str, args: tuple[str, ...]
) -> None:
    env = base_env(tmp_path, NEWSLETTER_DATABASE_URL=database)
    code = _NO_SQLALCHEMY.format(heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code, "status", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("edition 2026-01-2"), proc.stdout
    assert proc.stdout.splitlines()[-1] == "loaded: []", proc.stdout


def test_the_real_command_reads_a_relative_url_from_its_folder(
    tmp_path: Path, database: str
) -> None:
    # SQLAlchemy reads sqlite:///newsletter.db relative to the working folder; so does the glance.
    env = base_env(tmp_path, NEWSLETTER_DATABASE_URL="sqlite:///newsletter.db")
    proc = run_cli("status", "--date", SENT_DAY.isoformat(), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("edition 2026-01-27: sent\n  4 sent, 2 failed"), proc.stdout


# -- what the glance leaves to the store ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///subscribers/newsletter.db", "subscribers/newsletter.db"),
        ("sqlite:////srv/lettre/newsletter.db", "/srv/lettre/newsletter.db"),
        ("sqlite+pysqlite:////srv/lettre/newsletter.db", "/srv/lettre/newsletter.db"),
        ("sqlite:////srv/lettre #1/news.db", "/srv/lettre #1/news.db"),
        ("sqlite://", None),  # in memory
        ("sqlite:///", None),
        ("sqlite:///:memory:", None),
        ("sqlite://host/newsletter.db", None),
        ("sqlite:///newsletter.db?timeout=5", None),  # options: the store's business
        ("sqlite:///file:newsletter.db?mode=ro&uri=true", None),
        ("sqlite:///news%20letter.db", None),  # SQLAlchemy decodes escapes
        ("SQLITE:///newsletter.db", None),
        ("sqlite+aiosqlite:///newsletter.db", None),
        ("postgresql+psycopg://lettre:secret@db.example.com/lettre", None),
        ("postgresql://lettre@/lettre?host=/run/postgresql", None),
        ("", None),
    ],
)
def test_only_plain_sqlite_file_urls_are_glanced(url: str, path: str | None) -> None:
    assert sqlite_file(url) == (Path(path) if path is not None else None)
    if path is None:
        assert open_glance(url) is None


def test_a_missing_file_is_created_and_migrated_as_before(tmp_path: Path) -> None:
    database = tmp_path / "sub" / "newsletter.db"
    env = base_env(tmp_path, NEWSLETTER_DATABASE_URL=f"sqlite:///{database}")
    assert open_glance(env["NEWSLETTER_DATABASE_URL"]) is None and not database.exists()
    proc = _status(env, tmp_path, "--date", SENT_DAY.isoformat())
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        "edition 2026-01-27: not sent yet\n",
        "",
    )
    assert _version(database) == LATEST_SCHEMA_VERSION
    # Now current, the next status glances.
    glance = open_glance(env["NEWSLETTER_DATABASE_URL"])
    assert glance is not None
    glance.close()


def test_an_older_schema_is_migrated_by_the_store_as_before(tmp_path: Path) -> None:
    database = tmp_path / "newsletter.db"
    url = f"sqlite:///{database}"
    engine = create_store_engine(url)
    migrate(engine, target=LATEST_SCHEMA_VERSION - 1)
    engine.dispose()
    assert open_glance(url) is None
    proc = _status(base_env(tmp_path, NEWSLETTER_DATABASE_URL=url), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(": not sent yet\n"), proc.stdout
    assert _version(database) == LATEST_SCHEMA_VERSION


def test_a_newer_schema_is_refused_by_the_store_as_before(tmp_path: Path, database: str) -> None:
    path = tmp_path / "newsletter.db"
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO schema_version VALUES (?, '2030-01-01 00:00:00')",
            (LATEST_SCHEMA_VERSION + 1,),
        )
    raw.close()
    assert open_glance(database) is None
    proc = _status(base_env(tmp_path, NEWSLETTER_DATABASE_URL=database), tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: the database is at schema version 9, newer than")


def test_a_file_that_is_not_a_database_gets_the_stores_message(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.db"
    path.write_bytes(b"not a database, only some text long enough to hold a header" * 20)
    url = f"sqlite:///{path}"
    assert open_glance(url) is None
    proc = _status(base_env(tmp_path, NEWSLETTER_DATABASE_URL=url), tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: cannot open the database {url}: file is not a database")
    assert "Traceback" not in proc.stderr


def test_the_glance_never_writes(tmp_path: Path, database: str) -> None:
    glance = open_glance(database)
    assert glance is not None
    with glance, pytest.raises(sqlite3.OperationalError, match="readonly"):
        glance._conn.execute("DELETE FROM deliveries")  # query_only
    with open_store(database) as store:
        assert sum(store.delivery_counts(SENT_DAY).values()) == 9


def test_a_database_failing_mid_glance_is_one_line_worth_a_retry(database: str) -> None:
    glance = open_glance(database)
    assert glance is not None
    glance._conn.close()  # what a vanished or damaged file looks like to the next statement
    with pytest.raises(GlanceFailed) as failed:
        glance.delivery_counts(SENT_DAY)
    glance.close()  # closing again is harmless
    assert failed.value.exit_code == 75  # as the commands' other database failures
    assert str(failed.value) == (
        "the database failed: Cannot operate on a closed database. (check "
        "NEWSLETTER_DATABASE_URL and the database server, then run the command again)"
    )


# -- during a send ----------------------------------------------------------------------------


def test_a_held_write_transaction_neither_blocks_nor_shows(tmp_path: Path, database: str) -> None:
    """A send's writer holds the write lock with rows not yet committed: `status` answers at
    once with what is committed. The store's way would first wait for that lock (open_store
    migrates under BEGIN IMMEDIATE), for up to two minutes."""
    writer = sqlite3.connect(tmp_path / "newsletter.db", isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE deliveries SET status = 'sent' WHERE status = 'pending'")
        writer.execute(
            "INSERT INTO edition_changes (edition_date, at, who, action, detail) "
            "VALUES ('2026-01-27', '2026-01-27 09:00:00.000000', 'cli:x', 'intro', 'x')"
        )
        started = time.monotonic()
        glance = open_glance(database)
        assert glance is not None
        with glance:
            assert glance.delivery_counts(SENT_DAY)["pending"] == 2
            assert len(glance.curation_changes(SENT_DAY)) == 2
        assert time.monotonic() - started < 2

        env = base_env(tmp_path, NEWSLETTER_DATABASE_URL=database)
        proc = run_cli("status", "--date", SENT_DAY.isoformat(), env=env, cwd=tmp_path, timeout=20)
        assert proc.returncode == 0, proc.stderr
        assert "  4 sent, 2 failed, 2 pending," in proc.stdout
        assert "  editorial changes: 2\n" in proc.stdout
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# -- the latest schema version, known twice ---------------------------------------------------------


def test_the_glance_knows_the_latest_schema_version() -> None:
    from newsletter.adapters.store import LATEST_VERSION

    assert LATEST_VERSION == len(MIGRATIONS) == LATEST_SCHEMA_VERSION


def test_a_migration_added_without_the_glance_stops_the_store_from_loading() -> None:
    code = (
        "import newsletter.adapters.glance as glance\n"
        "glance.LATEST_SCHEMA_VERSION += 1\n"
        "import newsletter.adapters.store\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 1
    assert (
        f"RuntimeError: {len(MIGRATIONS)} migrations but adapters/glance.py says the latest "
        f"schema version is {len(MIGRATIONS) + 1}"
    ) in proc.stderr


def _version(path: Path) -> int:
    with sqlite3.connect(path) as raw:
        (version,) = raw.execute("SELECT max(version) FROM schema_version").fetchone()
    raw.close()
    return version
