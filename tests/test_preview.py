"""`newsletter preview` says what it left out and why, counts what the previewed subscriber gets,
names the general section as the email does, and says when it shows the bundled sample
(issue 11, problem 8 and part of 3). The first test runs the real command in a process of its
own; the others run it in this process (click's runner)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from newsletter.adapters.sources import merge_noting_duplicates
from newsletter.domain import Article, LeftOutReason
from newsletter.domain.edition import build_edition
from tests.factories import import_addresses, readers
from tests.support import base_env, invoke_cli, run_cli, send_env

DAY = "2026-01-27"  # the site sends at 18:00 Casablanca (UTC+1): its window ends 17:00 UTC
CASA = ZoneInfo("Africa/Casablanca")
SAMPLE_NOTE = "NEWSLETTER_SOURCES is empty, so this preview shows the bundled sample articles"


def item(title: str, guid: str, when: str, category: str | None = None) -> str:
    """One RSS item; ``when`` is the site's local time, 2026-01-DD HH:MM."""
    moment = datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=CASA)
    category_xml = f"<category>{category}</category>" if category else ""
    return (
        f"<item><title>{title}</title><link>https://exemple.ma/{guid}</link>"
        f"<pubDate>{moment.strftime('%a, %d %b %Y %H:%M:%S %z')}</pubDate>"
        f'<guid isPermaLink="false">{guid}</guid>{category_xml}</item>'
    )


def feed(path: Path, *items: str) -> Path:
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>T</title>'
        "<link>https://exemple.ma/</link>" + "".join(items) + "</channel></rss>",
        encoding="utf-8",
    )
    return path


def site_env(tmp_path: Path, *sources: Path, **overrides: str) -> dict[str, str]:
    return base_env(
        tmp_path,
        NEWSLETTER_SOURCES=",".join(str(s) for s in sources),
        NEWSLETTER_SEND_TIME="18:00",
        NEWSLETTER_MAX_PER_SECTION="2",
        **overrides,
    )


def left_out(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("left out: ")]


def the_line(lines: list[str], title: str) -> str:
    found = [line for line in lines if f"'{title}'" in line]
    assert len(found) == 1, lines
    return found[0]


def test_preview_names_each_article_it_left_out_and_why(tmp_path: Path) -> None:
    first = feed(
        tmp_path / "une.xml",
        item("Publié après la clôture", "tard", "2026-01-27 18:42", "Sport"),
        item("Conseil des ministres", "p3", "2026-01-27 12:00", "Politique"),
        item("Budget voté", "p2", "2026-01-27 11:00", "Politique"),
        item("Motion rejetée", "p1", "2026-01-27 10:00", "Politique"),  # the oldest of three
        item("Le port s’agrandit", "meme", "2026-01-27 09:00", "Économie"),
        item("Hier soir au stade", "hier", "2026-01-26 17:30", "Sport"),
        item("Archives de la semaine dernière", "vieux", "2026-01-19 09:00", "Culture"),
        item("Après-demain déjà", "futur", "2026-01-28 18:30", "Culture"),
    )
    second = feed(
        tmp_path / "deux.xml",
        item("Le port s’agrandit", "meme", "2026-01-27 09:00", "Économie"),  # the same article
        item("Marché couvert", "marche", "2026-01-27 08:00", "Économie"),
        item("Marché couvert", "marche", "2026-01-27 08:00", "Économie"),  # twice in one feed
    )
    missing = tmp_path / "absent.xml"
    env = site_env(tmp_path, first, second, missing)

    proc = run_cli("preview", "--date", DAY, "--out", "out", env=env, cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert "edition 2026-01-27: 4 articles in 2 sections" in proc.stdout
    lines = left_out(proc.stdout)
    late = the_line(lines, "Publié après la clôture")
    assert "(Sport, published 2026-01-27 18:42)" in late
    assert "after the cut-off; goes to the edition of 2026-01-28" in late
    duplicate = the_line(lines, "Le port s’agrandit")
    assert f", from {second} — a duplicate (same guid or link)" in duplicate
    assert f"of the copy from {first}, which was kept" in duplicate
    twice = the_line(lines, "Marché couvert")
    assert f"appears twice in {second} (same guid or link); kept the copy published" in twice
    capped = the_line(lines, "Motion rejetée")
    assert "over the cap (NEWSLETTER_MAX_PER_SECTION=2)" in capped
    early = the_line(lines, "Hier soir au stade")
    assert "before this edition's window; belongs to the edition of 2026-01-26" in early
    (failed,) = [line for line in lines if "source" in line and "every article" in line]
    assert str(missing) in failed and "could not be read (file not found)" in failed
    # Only the neighbouring editions' windows: the feed's history and future are not near misses.
    assert "Archives de la semaine dernière" not in proc.stdout
    assert "Après-demain déjà" not in proc.stdout
    assert len(lines) == 6, lines
    # The left-out lines come after the summary and before the files written.
    kinds = [line.split(":")[0].split(" ")[0] for line in proc.stdout.splitlines()]
    assert kinds.index("left") > kinds.index("HTML")
    assert kinds.index("wrote") > len(kinds) - 1 - kinds[::-1].index("left")
    assert SAMPLE_NOTE not in proc.stdout + proc.stderr


def test_an_empty_edition_still_says_where_the_late_article_went(tmp_path: Path) -> None:
    source = feed(tmp_path / "f.xml", item("Trop tard", "tard", "2026-01-27 18:01", "Sport"))
    proc = invoke_cli(
        "preview", "--date", DAY, "--out", "out", env=site_env(tmp_path, source), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "edition 2026-01-27: no article in its window, nothing to send" in proc.stdout
    (late,) = left_out(proc.stdout)
    assert "'Trop tard'" in late and "goes to the edition of 2026-01-28" in late


def test_an_article_an_earlier_edition_carried_is_left_out_as_already_sent(
    tmp_path: Path, smtp_server
) -> None:
    # Sent on the 26th; then the site re-dates it (an Atom entry dated by <updated>, say) into
    # the 27th's window. The send of the 27th leaves it out; the preview must say so.
    source = tmp_path / "f.xml"
    feed(
        source,
        item("Déjà parti", "deja", "2026-01-26 10:00", "Sport"),
        item("Parti hier", "hier", "2026-01-26 11:00", "Sport"),
    )
    env = send_env(
        tmp_path,
        smtp_server.port,
        NEWSLETTER_SOURCES=str(source),
        NEWSLETTER_SEND_TIME="18:00",
    )
    import_addresses(tmp_path, env, readers(1))
    sent = invoke_cli("send", "--date", "2026-01-26", env=env, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    feed(
        source,
        item("Déjà parti", "deja", "2026-01-27 10:00", "Sport"),
        item("Nouveau", "neuf", "2026-01-27 11:00", "Sport"),
        item("Parti hier", "hier", "2026-01-26 11:00", "Sport"),
        item("Publié en retard pour hier", "retard", "2026-01-26 12:00", "Sport"),
    )

    proc = invoke_cli("preview", "--date", DAY, "--out", "out", env=env, cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert "edition 2026-01-27: 1 article in 1 section" in proc.stdout
    sent_again, missed = left_out(proc.stdout)
    assert "'Déjà parti'" in sent_again and "already sent in an earlier edition" in sent_again
    # Yesterday's window: what yesterday's edition carried is not listed again; what it missed
    # (added to the feed after it went out, dated back) is.
    assert "'Publié en retard pour hier'" in missed
    assert "belongs to the edition of 2026-01-26" in missed
    assert "Parti hier" not in proc.stdout
    dry = invoke_cli("send", "--date", DAY, "--dry-run", env=env, cwd=tmp_path)
    assert "1 article in 1 section" in dry.stdout  # the preview counts what a send would send


def test_a_database_that_cannot_be_opened_is_a_warning_for_a_preview(tmp_path: Path) -> None:
    source = feed(tmp_path / "f.xml", item("À nous", "a", "2026-01-27 12:00", "Sport"))
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database, " * 256)
    env = site_env(tmp_path, source, NEWSLETTER_DATABASE_URL=f"sqlite:///{broken}")
    proc = invoke_cli("preview", "--date", DAY, "--out", "out", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "edition 2026-01-27: 1 article in 1 section" in proc.stdout
    (warning,) = proc.stderr.splitlines()
    assert warning.startswith("warning: cannot read the database, so articles sent in earlier")
    assert "broken.db" in warning and "Traceback" not in proc.stderr


def test_preview_email_counts_that_subscribers_variant(tmp_path: Path) -> None:
    source = feed(
        tmp_path / "f.xml",
        item("Conseil des ministres", "p2", "2026-01-27 12:00", "Politique"),
        item("Budget voté", "p1", "2026-01-27 11:00", "Politique"),
        item("Victoire à domicile", "s1", "2026-01-27 10:00", "Sport"),
        item("Marché couvert", "e1", "2026-01-27 09:00", "Économie"),
        item("Au stade ce soir", "tard", "2026-01-27 19:00", "Sport"),
        item("Vote demain", "tard2", "2026-01-27 19:30", "Politique"),
    )
    env = site_env(tmp_path, source)
    added = invoke_cli(
        "subscribers", "add", "amina@exemple.ma", "--categories", "politique", env=env, cwd=tmp_path
    )
    assert added.returncode == 0, added.stderr

    proc = invoke_cli(
        "preview", "--date", DAY, "--email", "amina@exemple.ma", env=env, cwd=tmp_path
    )

    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == (
        "edition 2026-01-27 for amina@exemple.ma: 2 articles in 1 section "
        "(the whole edition: 4 articles in 3 sections)"
    )
    assert out[1] == "  Politique: 2"
    assert out[2].startswith("HTML size: ")
    # What was left out of her sections only: the late Sport article is not hers.
    assert [line for line in out if line.startswith("left out: ")] == [
        line for line in out if "'Vote demain'" in line
    ]
    text = (tmp_path / "out" / "digest.txt").read_text(encoding="utf-8")
    assert "Budget voté" in text and "Victoire à domicile" not in text

    everyone = invoke_cli("preview", "--date", DAY, env=env, cwd=tmp_path)
    assert everyone.stdout.splitlines()[0] == "edition 2026-01-27: 4 articles in 3 sections"
    assert len(left_out(everyone.stdout)) == 2


def test_the_general_section_has_its_real_name_in_the_cli(tmp_path: Path, smtp_server) -> None:
    source = feed(
        tmp_path / "f.xml",
        item("Sans rubrique", "g1", "2026-01-27 12:00"),
        item("Dans les temps", "s1", "2026-01-27 11:00", "Sport"),
        item("Sans rubrique, trop tard", "g2", "2026-01-27 19:00"),
    )
    env = send_env(
        tmp_path, smtp_server.port, NEWSLETTER_SOURCES=str(source), NEWSLETTER_SEND_TIME="18:00"
    )
    import_addresses(tmp_path, env, readers(1))

    proc = invoke_cli("preview", "--date", DAY, "--out", "out", env=env, cwd=tmp_path)
    dry = invoke_cli("send", "--date", DAY, "--dry-run", env=env, cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    # The name the email itself gives the section (French, the site's language).
    assert "Autres actualités" in (tmp_path / "out" / "digest.txt").read_text(encoding="utf-8")
    assert "  Autres actualités: 1" in proc.stdout.splitlines()
    assert "(Autres actualités, published 2026-01-27 19:00)" in proc.stdout
    assert "Autres actualités" in dry.stdout
    assert "(general)" not in proc.stdout + dry.stdout


def test_preview_says_when_it_shows_the_bundled_sample(tmp_path: Path) -> None:
    env = base_env(tmp_path, NEWSLETTER_SOURCES="")
    sample = invoke_cli("preview", "--date", DAY, "--out", "out", env=env, cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert sample.stderr.count(SAMPLE_NOTE) == 1

    own = feed(tmp_path / "f.xml", item("À nous", "a", "2026-01-27 12:00", "Sport"))
    site = invoke_cli(
        "preview", "--date", DAY, "--out", "out", env=site_env(tmp_path, own), cwd=tmp_path
    )
    assert site.returncode == 0, site.stderr
    assert SAMPLE_NOTE not in site.stdout + site.stderr


# -- the pure rules, on hand-built articles ------------------------------------------------------


def article(uid: str, when: datetime, *categories: str, source: str = "a") -> Article:
    return Article(uid, uid, f"https://exemple.ma/{uid}", when, categories, source=source)


def test_the_domain_decides_what_is_left_out_without_touching_anything() -> None:
    t = datetime(2026, 1, 27, 10, tzinfo=UTC)
    merged, duplicates = merge_noting_duplicates(
        [
            article("x", t, "Sport", source="a"),
            article("x", t, "Sport", source="b"),
            article("y", t.replace(hour=11), "Sport"),
            article("z", t.replace(hour=12), "Sport"),
            article("sent", t, "Culture"),
            article("late", datetime(2026, 1, 27, 17, 1, tzinfo=UTC), "Culture"),
        ]
    )
    edition = build_edition(
        merged,
        day=date(2026, 1, 27),
        send_time=time(18, 0),
        zone=CASA,
        order=(),
        max_per_section=2,
        title="T",
        locale="fr",
        exclude_uids=frozenset({"sent"}),
        duplicates=duplicates,
        failed_sources=[("c.xml", "file not found")],
    )
    reasons = [
        (item.reason, item.article.uid if item.article else item.source)
        for item in edition.left_out
    ]
    assert reasons == [
        (LeftOutReason.SOURCE_FAILED, "c.xml"),
        (LeftOutReason.DUPLICATE, "x"),
        (LeftOutReason.ALREADY_SENT, "sent"),
        (LeftOutReason.OVER_CAP, "x"),
        (LeftOutReason.AFTER_CUTOFF, "late"),
    ]
    duplicate = edition.left_out[1]
    assert duplicate.article.source == "b" and duplicate.kept.source == "a"  # type: ignore[union-attr]
    assert edition.left_out[4].edition == date(2026, 1, 28)
    # A subscriber of Culture only is not concerned by Sport's duplicate or cap.
    assert [i.reason for i in edition.left_out_for(["culture"])] == [
        LeftOutReason.SOURCE_FAILED,
        LeftOutReason.ALREADY_SENT,
        LeftOutReason.AFTER_CUTOFF,
    ]


def test_preview_creates_no_database(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    proc = invoke_cli("preview", "--date", DAY, "--out", "out", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "digest.html").is_file()
    assert not (tmp_path / "newsletter.db").exists()
