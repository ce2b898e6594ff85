"""Delivery against a real SMTP server (aiosmtpd in its own process) and a real SQLite ledger."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from newsletter.adapters.store import open_store
from newsletter.adapters.tokens import Purpose, TokenSigner
from newsletter.config import load_settings
from newsletter.domain import DeliveryStatus, SubscriberStatus
from newsletter.services.delivery import send_edition
from testkit.processes import kill_9, spawn_cli
from tests.support import (
    SAMPLE_DATE,
    TEST_SECRET,
    base_env,
    free_port,
    invoke_cli,
    run_cli,
    send_env,
    start_smtp_server,
)

DAY = date.fromisoformat(SAMPLE_DATE)


def import_subscribers(tmp_path: Path, env: dict[str, str], rows: list[str]) -> None:
    csv = tmp_path / "subs.csv"
    csv.write_text("email;name;categories\n" + "\n".join(rows) + "\n", encoding="utf-8")
    proc = invoke_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def many(n: int, domain: str = "exemple.ma") -> list[str]:
    return [f"lecteur{i}@{domain};Lecteur {i};" for i in range(n)]


def test_one_message_per_active_subscriber_with_correct_headers(tmp_path, smtp_server):
    env = send_env(tmp_path, smtp_server.port)
    import_subscribers(
        tmp_path,
        env,
        [
            "aicha@exemple.ma;Aïcha Ouédraogo;",
            "sport@exemple.ma;Karim;Sport",
            "culture@exemple.ma;;culture",
        ],
    )
    # a pending and an unsubscribed address must get nothing
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        from newsletter.domain import ConsentSource
        from newsletter.domain.addresses import normalise_address

        store.create_pending(
            normalise_address("pending@exemple.ma"), "", (), "", ConsentSource.WEB, ""
        )
        left = store.find_by_email("culture@exemple.ma")
        store.unsubscribe(left.id)

    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 sent this run" in proc.stdout and "complete" in proc.stdout
    assert sorted(smtp_server.recipients()) == ["aicha@exemple.ma", "sport@exemple.ma"]

    by_rcpt = {m["To"].addresses[0].addr_spec: m for m in smtp_server.messages()}
    full, sport = by_rcpt["aicha@exemple.ma"], by_rcpt["sport@exemple.ma"]
    assert full["To"].addresses[0].display_name == "Aïcha Ouédraogo"
    assert full["From"].addresses[0].addr_spec == "lettre@exemple.ma"
    assert full["Message-ID"].endswith("@exemple.ma>")
    assert full["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<http://localhost:8000/unsubscribe/" in str(full["List-Unsubscribe"])
    assert "mailto:unsubscribe@exemple.ma" in str(full["List-Unsubscribe"])
    assert full["List-Id"] is not None and full["Date"] is not None

    def text_of(msg) -> str:
        part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/plain")
        return part.get_content().replace("\r\n", "\n")

    sport_text, full_text = text_of(sport), text_of(full)
    assert "Sport\n-----" in sport_text and "Culture\n-------" not in sport_text
    assert "Économie\n--------" not in sport_text
    assert "Culture\n-------" in full_text and "Sport\n-----" in full_text
    # each subscriber's own, distinct unsubscribe link in the body
    signer = TokenSigner(TEST_SECRET)
    token = str(sport["List-Unsubscribe"]).split("/unsubscribe/")[1].split(">")[0]
    claim = signer.read(Purpose.UNSUBSCRIBE, token)
    assert signer.matches(claim, "sport@exemple.ma")
    assert f"/unsubscribe/{token}" in sport_text

    again = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "0 sent this run" in again.stdout
    assert len(smtp_server.log()) == 2

    status = invoke_cli("status", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert status.returncode == 0
    assert "2 sent, 0 failed, 0 pending" in status.stdout


def test_subscriber_whose_sections_are_empty_gets_nothing(tmp_path, smtp_server):
    env = send_env(tmp_path, smtp_server.port)
    import_subscribers(tmp_path, env, ["meteo@exemple.ma;;Météo", "all@exemple.ma;;"])
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert smtp_server.recipients() == ["all@exemple.ma"]
    assert "1 skipped" in proc.stdout


def test_hard_bounces_fail_at_once_and_are_never_retried(tmp_path, smtp_factory):
    server = smtp_factory("--reject-rcpt", "bad")
    env = send_env(tmp_path, server.port)
    import_subscribers(tmp_path, env, [*many(10), "bad1@exemple.ma;;", "bad2@exemple.ma;;"])
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # failed is final
    assert "10 sent" in proc.stdout and "2 failed" in proc.stdout
    assert "bad1@exemple.ma" in proc.stderr
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.find_by_email("bad1@exemple.ma").status is SubscriberStatus.BOUNCED
        assert store.find_by_email("lecteur1@exemple.ma").status is SubscriberStatus.ACTIVE
    rerun = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert "0 sent this run" in rerun.stdout
    assert len(server.log()) == 10
    status = invoke_cli("status", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert "failed: bad1@exemple.ma: 550" in status.stdout


def test_deferrals_and_dropped_connections_are_retried_and_delivered_once(tmp_path, smtp_factory):
    server = smtp_factory("--defer-fraction", "0.2", "--drop-every", "7")
    # The retry backoff at a tenth: the real one runs in test_faults.py's acceptance test.
    env = send_env(tmp_path, server.port, NEWSLETTER_TEST_BACKOFF_SCALE="0.1")
    import_subscribers(tmp_path, env, many(60))
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    counts = Counter(server.recipients())
    assert len(counts) == 60 and set(counts.values()) == {1}


def test_relay_down_gives_one_clear_line_and_the_next_run_completes(tmp_path, smtp_factory):
    port = free_port()
    # The reconnect backoff at a tenth: the real one runs in test_faults.py's black-hole test.
    env = send_env(tmp_path, port, NEWSLETTER_TEST_BACKOFF_SCALE="0.1")
    import_subscribers(tmp_path, env, many(5))
    started = time.monotonic()
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert time.monotonic() - started < 60
    assert proc.returncode == 1
    assert "cannot reach the SMTP relay 127.0.0.1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "0 sent this run" in proc.stdout and "5 pending" in proc.stdout
    server = smtp_factory(port=port)
    rerun = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(server.recipients()) == sorted(f"lecteur{i}@exemple.ma" for i in range(5))


def test_kill_9_mid_send_then_rerun_completes_with_bounded_duplicates(tmp_path, smtp_factory):
    server = smtp_factory("--delay", "0.02")
    env = send_env(tmp_path, server.port, NEWSLETTER_SMTP_CONNECTIONS="4")
    import_subscribers(tmp_path, env, many(300))
    victim = spawn_cli(
        "send",
        "--date",
        SAMPLE_DATE,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.wait_for(60, timeout=60)
    kill_9(victim)
    before = len(server.log())
    assert 0 < before < 300
    started = time.monotonic()
    rerun = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    # dead-owner detection: the rerun does not wait out the 30 s lease
    assert time.monotonic() - started < 25
    counts = Counter(server.recipients())
    assert len(counts) == 300
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= 2 * 4
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.delivery_counts(DAY) == {DeliveryStatus.SENT: 300}


def test_unsubscribe_mid_send_is_honoured_for_rows_not_yet_sent(tmp_path, smtp_server):
    env = send_env(tmp_path, smtp_server.port)
    import_subscribers(tmp_path, env, many(20))
    settings = load_settings(env_file=tmp_path / "absent", environ=env)
    with open_store(settings.database_url) as store:
        from newsletter.services.editions import frozen_edition

        store.freeze_edition(DAY, frozen_edition(store, settings, DAY).articles)
        leaving = store.find_by_email("lecteur7@exemple.ma")
        store.unsubscribe(leaving.id)
        report = send_edition(store, settings, DAY)
    assert report.complete
    assert report.counts == {DeliveryStatus.SENT: 19, DeliveryStatus.SKIPPED: 1}
    assert "lecteur7@exemple.ma" not in smtp_server.recipients()


def test_edition_is_frozen_at_first_send(tmp_path, smtp_server):
    """A re-run sends the articles of the first run, whatever the sources say by then."""
    env = send_env(tmp_path, smtp_server.port)
    import_subscribers(tmp_path, env, many(2))
    settings = load_settings(env_file=tmp_path / "absent", environ=env)
    with open_store(settings.database_url) as store:
        from newsletter.services.editions import frozen_edition

        first = frozen_edition(store, settings, DAY)
        store.freeze_edition(DAY, first.articles)
    env["NEWSLETTER_SOURCES"] = str(tmp_path / "gone.xml")  # the feed disappeared
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(smtp_server.log()) == 2


def test_send_without_from_is_a_configuration_error(tmp_path, smtp_server):
    env = send_env(tmp_path, smtp_server.port)
    env.pop("NEWSLETTER_FROM")
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "NEWSLETTER_FROM" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("bad", ["27/01/2026", "2026-1-27", "tomorrow", "2026-02-30"])
def test_date_must_be_iso(tmp_path, bad):
    proc = invoke_cli("send", "--date", bad, env=base_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "YYYY-MM-DD" in proc.stderr


def test_test_send_goes_only_to_the_given_addresses_and_leaves_the_ledger(tmp_path, smtp_server):
    env = send_env(tmp_path, smtp_server.port)
    import_subscribers(tmp_path, env, many(3))
    proc = invoke_cli(
        "send", "--date", SAMPLE_DATE, "--test", "editor@exemple.ma", env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert smtp_server.recipients() == ["editor@exemple.ma"]
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.edition_record(DAY) is None


def test_dry_run_sends_and_records_nothing(tmp_path, smtp_server):
    env = send_env(tmp_path, smtp_server.port)
    import_subscribers(tmp_path, env, [*many(3), "s@exemple.ma;;Sport"])
    proc = invoke_cli("send", "--date", SAMPLE_DATE, "--dry-run", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "would send 4 messages in 2 content variants" in proc.stdout
    assert smtp_server.log() == []
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.edition_record(DAY) is None


def test_empty_edition_sends_nothing(tmp_path, smtp_server):
    env = send_env(tmp_path, smtp_server.port)
    import_subscribers(tmp_path, env, many(2))
    proc = invoke_cli("send", "--date", "2026-03-01", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to send" in proc.stdout + proc.stderr
    assert smtp_server.log() == []


def test_a_failed_source_is_named_and_the_edition_goes_out_from_the_others(tmp_path, smtp_server):
    from newsletter.adapters.resources import sample_dir

    missing = tmp_path / "missing-feed.xml"
    env = send_env(
        tmp_path, smtp_server.port, NEWSLETTER_SOURCES=f"{sample_dir() / 'feed.xml'},{missing}"
    )
    import_subscribers(tmp_path, env, many(2))
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "missing-feed.xml" in proc.stderr
    assert len(smtp_server.log()) == 2


def test_a_non_ascii_local_part_fails_without_being_marked_bounced(tmp_path, smtp_server):
    # Imported while the relay offered SMTPUTF8 (smtp_server); sent through one that does not:
    # the address cannot be sent, and did not bounce.
    import_subscribers(
        tmp_path,
        send_env(tmp_path, smtp_server.port),
        ["aïcha@exemple.ma;Aïcha;", "plain@exemple.ma;;"],
    )
    server = start_smtp_server(tmp_path / "ascii-only", "--no-smtputf8")
    try:
        env = send_env(tmp_path, server.port)
        proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert server.recipients() == ["plain@exemple.ma"]
        assert (
            "failed: aïcha@exemple.ma: aïcha@exemple.ma: a non-ASCII address needs SMTPUTF8, "
            f"which the relay 127.0.0.1:{server.port} (none) does not offer"
        ) in proc.stderr
        with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
            assert store.find_by_email("aïcha@exemple.ma").status is SubscriberStatus.ACTIVE
            counts = store.delivery_counts(date.fromisoformat(SAMPLE_DATE))
        # Failed for good in this edition (a permanent failure is not retried), not a bounce.
        assert counts[DeliveryStatus.FAILED] == 1 and counts[DeliveryStatus.SENT] == 1
    finally:
        server.stop()


def test_a_non_ascii_local_part_goes_out_with_smtputf8_when_the_relay_offers_it(tmp_path):
    server = start_smtp_server(tmp_path / "smtputf8")  # offers SMTPUTF8
    try:
        env = send_env(tmp_path, server.port)
        import_subscribers(
            tmp_path, env, ["élodie@exemple.ma;Élodie Benali;", "plain@exemple.ma;;"]
        )
        proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        by_rcpt = {entry["rcpt_tos"][0]: entry for entry in server.log()}
        assert sorted(by_rcpt) == ["plain@exemple.ma", "élodie@exemple.ma"]
        # SMTPUTF8 on MAIL only for the message that needs it.
        assert by_rcpt["élodie@exemple.ma"]["smtputf8"] is True
        assert by_rcpt["plain@exemple.ma"]["smtputf8"] is False
        raw = (server.out / by_rcpt["élodie@exemple.ma"]["file"]).read_bytes()
        to = next(line for line in raw.split(b"\r\n") if line.startswith(b"To: "))
        # The address in UTF-8 as is (RFC 6532), the name in encoded words.
        assert to == b"To: =?utf-8?q?=C3=89lodie_Benali?= <\xc3\xa9lodie@exemple.ma>"
        plain = (server.out / by_rcpt["plain@exemple.ma"]["file"]).read_bytes()
        assert plain.isascii()
    finally:
        server.stop()


def test_a_wordpress_feed_with_media_goes_out_as_the_sites_own_product(tmp_path, smtp_server):
    """Issue 13's "done when", through the real CLI and SMTP: pictures, logo, footer, web version."""
    env = send_env(
        tmp_path,
        smtp_server.port,
        NEWSLETTER_LOGO_URL="https://www.example.com/wp-content/uploads/logo.png",
        NEWSLETTER_PUBLISHER="L’Observateur africain SA",
        NEWSLETTER_POSTAL_ADDRESS="12 avenue Hassan II, 10000 Rabat, Maroc",
    )
    import_subscribers(tmp_path, env, ["aicha@exemple.ma;Aïcha;"])
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [message] = smtp_server.messages()
    html = message.get_body(preferencelist=("html",)).get_content()
    text = message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    import lxml.html

    tree = lxml.html.document_fromstring(html)
    pictures = tree.xpath("//img[@class='thumb' or @class='lead-image']")
    assert len(pictures) >= 8  # every sample article with a picture (all but the editors' note)
    for img in pictures:
        assert img.get("src").startswith("https://picsum.photos/seed/"), img.get("src")
        assert img.get("alt") and img.get("width") in ("552", "112")
    srcs = tree.xpath("//img/@src")
    assert not any("pixel" in src or not src.startswith("https://") for src in srcs)
    # the logo, linked to the site: the feed's own <link>
    [logo] = tree.find_class("logo")
    assert logo.getparent().get("href") == "https://www.example.com"
    # the publisher and the web version, in both parts
    publisher = "L’Observateur africain SA · 12 avenue Hassan II, 10000 Rabat, Maroc"
    assert publisher in tree.find_class("footer")[0].text_content() and publisher in text
    web_version = f"http://localhost:8000/archive/{SAMPLE_DATE}"
    assert web_version in tree.xpath("//a/@href") and web_version in text.split("\n")
    # the Subject is the lead headline, short; the HTML is far from Gmail's clip
    subject = str(message["Subject"])
    assert len(subject) <= 100 and subject == tree.find_class("article-title")[0].text_content()
    assert len(html.encode("utf-8")) < 102_400
