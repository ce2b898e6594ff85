"""The same code on a real PostgreSQL server (started here, on loopback, for this module).

Needs PostgreSQL's server binaries (`initdb`, `pg_ctl`; Debian's postgresql package) and psycopg
(the `postgres` extra, installed by `make test`). PostgreSQL refuses to run as root, so as root the
server runs as `nobody`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import pytest

from newsletter.adapters.store import CurationChanged, open_store, utc_now
from newsletter.config import load_settings
from newsletter.domain import DeliveryStatus, SubscriberStatus
from newsletter.services.delivery import send_edition
from newsletter.services.editions import frozen_edition
from testkit.postgres import create_database, server_binaries_installed, throwaway_postgres
from testkit.processes import spawn_cli
from tests.support import (
    SAMPLE_DATE,
    base_env,
    free_port,
    invoke_cli,
    send_env,
)

DAY = date.fromisoformat(SAMPLE_DATE)
# Under `make test` (pytest-xdist, --dist loadgroup) the whole module runs on one worker, so its
# throwaway server is started once. Each worker would otherwise start its own, which is safe too:
# its folder comes from mkdtemp, its port from free_port, and each test's database name holds the
# worker's pid.
pytestmark = pytest.mark.xdist_group("postgres")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if not server_binaries_installed():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("psycopg")
    with throwaway_postgres() as url:  # testkit/postgres.py, shared with bench/bench_send.py
        yield url


@pytest.fixture
def database(postgres: str) -> str:
    """A fresh database per test."""
    return create_database(postgres, f"t{os.getpid()}_{free_port()}")


def test_import_export_round_trip_on_postgres(tmp_path, database):
    env = send_env(tmp_path, 25, NEWSLETTER_DATABASE_URL=database)
    csv = tmp_path / "liste.csv"
    csv.write_text(
        "\ufeffemail;name;categories;status\r\n"
        "Aicha@Exemple.MA;Aïcha Ouédraogo;Économie|Sport;\r\n"
        'karim@exemple.ma;"Benali, Karim";;unsubscribed\r\n'
        "pas-une-adresse;X;;\r\n",
        encoding="utf-8",
    )
    proc = invoke_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "line 4" in proc.stderr
    first = invoke_cli("subscribers", "export", env=env, cwd=tmp_path)
    again = invoke_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path)
    assert "0 added" in again.stdout
    assert first.stdout == invoke_cli("subscribers", "export", env=env, cwd=tmp_path).stdout
    assert "Aicha@exemple.ma,Aïcha Ouédraogo,Économie|Sport,,active" in first.stdout
    assert 'karim@exemple.ma,"Benali, Karim",,,unsubscribed' in first.stdout


def test_two_senders_at_once_share_the_edition_without_a_duplicate(
    tmp_path, database, smtp_factory
):
    server = smtp_factory("--delay", "0.01")
    env = send_env(tmp_path, server.port, NEWSLETTER_DATABASE_URL=database)
    csv = tmp_path / "s.csv"
    csv.write_text("email\n" + "\n".join(f"lecteur{i}@exemple.ma" for i in range(150)) + "\n")
    assert invoke_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path).returncode == 0
    senders = [spawn_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path) for _ in range(2)]
    outputs = [s.communicate(timeout=120) for s in senders]
    assert all(s.returncode == 0 for s in senders), outputs
    counts = Counter(server.recipients())
    assert len(counts) == 150 and set(counts.values()) == {1}
    with open_store(database) as store:
        assert store.delivery_counts(DAY) == {DeliveryStatus.SENT: 150}


def test_a_sender_whose_clock_runs_a_minute_fast_takes_no_row_another_holds(
    tmp_path, database, smtp_factory
):
    """Leases are written and compared in the server's time, not each sender's own clock."""
    server = smtp_factory("--delay", "0.02")
    env = send_env(
        tmp_path, server.port, NEWSLETTER_DATABASE_URL=database, NEWSLETTER_SMTP_CONNECTIONS="2"
    )
    csv = tmp_path / "s.csv"
    csv.write_text("email\n" + "\n".join(f"lecteur{i}@exemple.ma" for i in range(300)) + "\n")
    assert invoke_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path).returncode == 0
    honest = spawn_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    server.wait_for(30, timeout=60)
    settings = load_settings(env_file=tmp_path / "absent", environ=env)

    def a_minute_fast() -> datetime:
        return utc_now() + timedelta(seconds=60)

    with open_store(database, clock=a_minute_fast) as store:
        report = send_edition(store, settings, DAY)
    _out, err = honest.communicate(timeout=120)
    assert honest.returncode == 0, err
    assert report.complete
    counts = Counter(server.recipients())
    print(f"\nclock 60 s fast beside an honest sender: {sum(counts.values()) - 300} duplicate(s)")
    assert len(counts) == 300 and set(counts.values()) == {1}
    with open_store(database) as store:
        assert store.delivery_counts(DAY) == {DeliveryStatus.SENT: 300}


def test_forget_erases_the_delivery_history_and_blocks_reimport(tmp_path, database, smtp_server):
    env = send_env(tmp_path, smtp_server.port, NEWSLETTER_DATABASE_URL=database)
    for address in ("a@exemple.ma", "b@exemple.ma"):
        assert invoke_cli("subscribers", "add", address, env=env, cwd=tmp_path).returncode == 0
    assert invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path).returncode == 0
    assert (
        invoke_cli("subscribers", "forget", "a@exemple.ma", env=env, cwd=tmp_path).returncode == 0
    )
    with open_store(database) as store:
        assert store.find_by_email("a@exemple.ma") is None
        assert store.delivery_counts(DAY) == {DeliveryStatus.SENT: 1}
    readd = invoke_cli("subscribers", "add", "a@exemple.ma", env=env, cwd=tmp_path)
    assert readd.returncode == 1 and "forgotten" in readd.stderr


def test_scheduler_lock_and_unsubscribe_on_postgres(database):
    from newsletter.domain import ConsentSource
    from newsletter.domain.addresses import normalise_address

    with open_store(database) as store:
        assert store.acquire_lock("scheduler", "host:1:a", 30)
        assert not store.acquire_lock("scheduler", "host:2:b", 30)
        assert store.acquire_lock("scheduler", "host:1:a", 30)  # renewal
        store.release_lock("scheduler", "host:1:a")
        assert store.acquire_lock("scheduler", "host:2:b", 30)
        pending = store.create_pending(
            normalise_address("c@exemple.ma"), "", (), "", ConsentSource.WEB, ""
        )
        assert (
            store.confirm(pending.id, ConsentSource.WEB, "127.0.0.1").status
            is SubscriberStatus.ACTIVE
        )
        assert store.unsubscribe(pending.id)
        assert store.get(pending.id).status is SubscriberStatus.UNSUBSCRIBED


def test_bounces_and_complaints_on_postgres(tmp_path, database, smtp_server):
    """Migration 5 and the returned-mail queries on PostgreSQL, through `bounce-mail`."""
    from newsletter.domain.addresses import suppression_hash
    from tests.test_bounces import arf, bounce_mail, dsn, original_headers

    env = send_env(tmp_path, smtp_server.port, NEWSLETTER_DATABASE_URL=database)
    readers = ["a@exemple.ma", "b@exemple.ma", "c@exemple.ma"]
    for address in readers:
        assert invoke_cli("subscribers", "add", address, env=env, cwd=tmp_path).returncode == 0
    assert invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path).returncode == 0
    smtp_server.wait_for(3)
    sender = {e["rcpt_tos"][0]: e["mail_from"] for e in smtp_server.log()}
    hard = bounce_mail(env, tmp_path, dsn("a@exemple.ma", "5.1.1", to=sender["a@exemple.ma"]))
    soft = bounce_mail(
        env, tmp_path, dsn("b@exemple.ma", "4.2.2", action="delayed", to=sender["b@exemple.ma"])
    )
    complaint = bounce_mail(
        env,
        tmp_path,
        arf(original_headers(smtp_server, "c@exemple.ma"), to="bounces@exemple.ma", recipient=None),
    )
    assert [p.returncode for p in (hard, soft, complaint)] == [0, 0, 0]
    with open_store(database) as store:
        found = {s.email: s.status for s in store.iter_subscribers()}
        assert found == {
            "a@exemple.ma": SubscriberStatus.BOUNCED,
            "b@exemple.ma": SubscriberStatus.ACTIVE,
            "c@exemple.ma": SubscriberStatus.COMPLAINED,
        }
        assert store.is_suppressed(suppression_hash("c@exemple.ma"))
        assert store.returned_counts([DAY])[DAY] == {
            "hard": 1,
            "soft": 1,
            "complaint": 1,
            "mailed": 3,
        }
    status = invoke_cli("status", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert (
        "returned: 1 hard bounced (33.33%), 1 soft bounced (33.33%), 1 complained" in status.stdout
    )


def test_the_archive_queries_on_postgres(database):
    """Which editions the public archive holds, and their frozen articles, on PostgreSQL."""
    from datetime import UTC

    from newsletter.domain import Article
    from tests.factories import new_subscriber

    def article(day: date) -> Article:
        return Article(
            uid=f"u-{day}",
            title=f"Titre {day}",
            link=f"https://example.com/{day}",
            published=datetime(day.year, day.month, day.day, 5, tzinfo=UTC),
        )

    sent, partly, held = DAY, DAY + timedelta(days=1), DAY + timedelta(days=2)
    with open_store(database) as store:
        store.add_many([new_subscriber("a@exemple.ma"), new_subscriber("b@exemple.ma")])
        for day in (sent, partly, held):
            store.freeze_edition(day, [article(day)])
        store.mark_edition_sent(sent)
        [first, *_] = store.claim_deliveries(partly, "owner", 1, 30)
        store.mark_sent([first.delivery_id], "owner")
        store.set_held(held, True)
        assert [e.edition_date for e in store.archived_editions(10)] == [partly, sent]
        assert [e.edition_date for e in store.archived_editions(10, before=partly)] == [sent]
        assert store.archived_edition(held) is None and store.archived_edition(sent) is not None
        found = store.frozen_articles_of([sent, held, DAY - timedelta(days=9)])
        assert {d: [a.title for a in found[d]] for d in found} == {
            sent: [f"Titre {sent}"],
            held: [f"Titre {held}"],
        }


def test_curation_and_its_freeze_on_postgres(tmp_path, database):
    """The editors' changes on PostgreSQL: stored, logged, and refused once the send started."""
    from newsletter.services import curation
    from tests.factories import new_subscriber

    env = base_env(tmp_path, NEWSLETTER_DATABASE_URL=database)
    settings = load_settings(env_file=tmp_path / "absent.env", environ=env)
    with open_store(database) as store:
        store.add_many([new_subscriber("a@exemple.ma")])
        url = "https://www.example.com/2026/01/26/cacao-cooperatives-transformation-locale/"
        assert "excluded" in curation.exclude(store, settings, DAY, url, "cli:pg")
        assert "intro set" in curation.set_intro(store, settings, DAY, "Bonjour", "web:ed")
        with pytest.raises(curation.CurationRefused):
            curation.choose_lead(store, settings, DAY, url, "cli:pg")
        stale = store.edition_curation(DAY).revision - 1
        with pytest.raises(CurationChanged):
            store.freeze_edition(DAY, [], curation_revision=stale)
        edition = frozen_edition(store, settings, DAY)
        assert url not in {a.link for a in edition.articles} and edition.intro == "Bonjour"
        store.freeze_edition(DAY, edition.articles, curation_revision=stale + 1)
        with pytest.raises(curation.EditionFrozen):
            curation.include(store, settings, DAY, url, "cli:pg")
        assert [c.who for c in curation.editorial_changes(store, DAY)] == ["cli:pg", "web:ed"]


def test_click_counts_fold_and_forget_on_postgres(tmp_path, database):
    """Clicks on PostgreSQL: a batch, the counts (scanner rule), the fold, forgetting a reader."""
    from datetime import UTC

    from newsletter.domain import Article
    from newsletter.domain.clicks import Click, Tally
    from newsletter.domain.curation import article_ref
    from tests.factories import new_subscriber

    articles = [
        Article(
            uid=f"u-{n}",
            title=f"Titre {n}",
            link=f"https://example.com/{n}",
            published=datetime(2026, 1, 27, 5, tzinfo=UTC),
        )
        for n in range(3)
    ]
    refs = [article_ref(a.uid) for a in articles]
    with open_store(database) as store:
        store.add_many([new_subscriber("a@exemple.ma"), new_subscriber("b@exemple.ma")])
        store.freeze_edition(DAY, articles)
        store.mark_edition_sent(DAY)
        reader, scanner = (store.find_by_email(f"{n}@exemple.ma").id for n in "ab")
        old = utc_now() - timedelta(days=40)
        stored = store.record_clicks(
            [
                Click(DAY, refs[0], reader, old),
                Click(DAY, refs[0], reader, old + timedelta(minutes=3)),
                *(Click(DAY, r, scanner, old + timedelta(seconds=1)) for r in refs),
                Click(DAY, refs[1], 999_999, old),  # no such subscriber: dropped
            ]
        )
        assert stored == 5
        assert store.record_opens([(DAY, reader, old), (DAY, reader, old)]) == 1
        assert store.sent_edition_dates() == [DAY]
        assert store.messages_sent([DAY]) == {}  # marked sent without deliveries going out
        expected = {(DAY, refs[0]): Tally(2, 1)}
        assert store.article_tallies([DAY]) == expected
        assert store.fold_clicks(utc_now() - timedelta(days=30)) == 5
        assert store.article_tallies([DAY]) == expected
        store.record_clicks([Click(DAY, refs[0], reader, utc_now())])
        assert store.article_tallies([DAY]) == {(DAY, refs[0]): Tally(3, 2)}
        assert store.forget(store.find_by_email("a@exemple.ma").email_key)
        assert store.click_rows(DAY) == [] and store.open_count(DAY) == 0
