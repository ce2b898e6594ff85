"""Editors curate an edition (issue 14) through the real CLI, on the bundled sample feed, against
the real SMTP test server and a real SQLite file: what `newsletter edition ...` changes shows in
`preview`, in the sent message, in the archive and in `status`; once the send started, nothing
can be changed; bad input is one line, exit 1, nothing recorded."""

from __future__ import annotations

import email
import email.policy
import itertools
import sqlite3
import threading
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.adapters.store import CurationChanged, open_store
from newsletter.config import load_settings
from newsletter.domain.curation import article_ref
from newsletter.services import curation
from newsletter.services.archive import Archive
from newsletter.services.delivery import send_edition
from newsletter.services.editions import frozen_edition
from tests.support import SAMPLE_DATE, base_env, invoke_cli, run_cli, send_env

DAY = date.fromisoformat(SAMPLE_DATE)

# Three articles of the sample edition, by URL (their titles carry typographic characters the
# HTML part may write as entities; their URLs appear as they are in both parts).
ROOT = "https://www.example.com/2026/01/"
EXCLUDED = ROOT + "26/decentralisation-projet-de-loi-adopte-en-commission/"
REINCLUDED = ROOT + "26/cacao-cooperatives-transformation-locale/"
LEAD = ROOT + "26/athletisme-mariam-toure-record-800-metres/"
OTHER = ROOT + "27/province-de-walanga-securite-renforcee-marches-hebdomadaires/"
INTRO = "Bonjour, voici <b>notre</b> choix du jour.\n\nAgenda : https://exemple.ma/agenda"
SUBJECT = "Le choix de la rédaction : Mariam Touré, record du 800 m"


def cli(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    proc = invoke_cli(*args, env=env, cwd=tmp_path)
    return proc.returncode, proc.stdout, proc.stderr


def ok(env: dict[str, str], tmp_path: Path, *args: str) -> str:
    code, out, err = cli(env, tmp_path, *args)
    assert code == 0, (args, out, err)
    assert "Traceback" not in err
    return out


def refused(env: dict[str, str], tmp_path: Path, *args: str) -> str:
    """A refusal: exit 1, one ``error:`` line on stderr, nothing on stdout."""
    code, out, err = cli(env, tmp_path, *args)
    assert code == 1, (args, out, err)
    assert out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def state_of(env: dict[str, str]) -> tuple[object, ...]:
    """Everything the editors' changes write: both tables, raw."""
    path = env["NEWSLETTER_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:
        curations = raw.execute("SELECT * FROM edition_curations ORDER BY 1").fetchall()
        changes = raw.execute("SELECT * FROM edition_changes ORDER BY id").fetchall()
    return tuple(curations), tuple(changes)


def listed(shown: str) -> dict[str, tuple[str, str]]:
    """`edition show`'s articles: URL -> (reference, state)."""
    lines = shown.splitlines()
    found = {}
    for line, following in itertools.pairwise(lines):
        if line.startswith("  ") and following.startswith("          http"):
            ref, state = line.split()[:2]
            found[following.strip()] = (ref, state)
    return found


def ref(env: dict[str, str], tmp_path: Path, url: str, day: str = SAMPLE_DATE) -> str:
    return listed(ok(env, tmp_path, "edition", "show", "--date", day))[url][0]


def parts(message: EmailMessage) -> tuple[str, str]:
    html = text = ""
    for part in message.walk():
        if part.get_content_type() == "text/html":
            html = part.get_content()
        elif part.get_content_type() == "text/plain":
            text = part.get_content()
    return html, text


def article_urls(body: str) -> list[str]:
    """The sample's article URLs in the order ``body`` first shows them."""
    found = [(body.find(url), url) for url in SAMPLE_URLS if url in body]
    return [url for _, url in sorted(found)]


SAMPLE_URLS = (EXCLUDED, REINCLUDED, LEAD, OTHER)


def check_curated(html: str, text: str) -> None:
    """The lead first, the excluded article nowhere, the re-included one there, the intro
    escaped in HTML and as written in the text part."""
    for body in (html, text):
        assert EXCLUDED not in body
        assert article_urls(body)[0] == LEAD, article_urls(body)
        assert REINCLUDED in body and OTHER in body
    assert "&lt;b&gt;notre&lt;/b&gt;" in html and "<b>notre</b>" not in html
    assert 'href="https://exemple.ma/agenda"' in html
    assert "<b>notre</b> choix du jour." in text and "https://exemple.ma/agenda" in text
    # the intro sits under the masthead: before the first article
    assert html.index("notre") < html.index(LEAD) and text.index("notre") < text.index(LEAD)


def test_curating_through_the_cli_shows_in_preview_and_in_the_sent_message(tmp_path, smtp_server):
    env = send_env(tmp_path, smtp_server.port)
    ok(env, tmp_path, "subscribers", "add", "lectrice@exemple.ma", "--name", "Lectrice")
    shown = ok(env, tmp_path, "edition", "show", "--date", SAMPLE_DATE)
    assert listed(shown)[EXCLUDED][1] == "in"
    assert "Subject (default): " in shown and "intro: none" in shown

    # by URL (without its trailing slash), by short reference, back in, the lead, intro, Subject
    assert "excluded" in ok(
        env, tmp_path, "edition", "exclude", EXCLUDED.rstrip("/"), "--date", SAMPLE_DATE
    )
    ok(env, tmp_path, "edition", "exclude", ref(env, tmp_path, REINCLUDED), "--date", SAMPLE_DATE)
    assert "included" in ok(env, tmp_path, "edition", "include", REINCLUDED, "--date", SAMPLE_DATE)
    ok(env, tmp_path, "edition", "lead", ref(env, tmp_path, LEAD), "--date", SAMPLE_DATE)
    intro_file = tmp_path / "intro.txt"
    intro_file.write_text(INTRO, encoding="utf-8")
    ok(env, tmp_path, "edition", "intro", "--file", str(intro_file), "--date", SAMPLE_DATE)
    ok(env, tmp_path, "edition", "subject", SUBJECT, "--date", SAMPLE_DATE)

    shown = ok(env, tmp_path, "edition", "show", "--date", SAMPLE_DATE)
    states = {url: state for url, (_ref, state) in listed(shown).items()}
    assert (states[EXCLUDED], states[REINCLUDED], states[LEAD]) == ("excluded", "in", "lead")
    assert f"Subject (the editors'): {SUBJECT}" in shown
    assert "  Bonjour, voici <b>notre</b> choix du jour." in shown
    assert "editorial changes: 6" in shown

    # preview: the files an editor opens
    out = tmp_path / "out"
    ok(env, tmp_path, "preview", "--date", SAMPLE_DATE, "--out", str(out))
    check_curated(
        (out / "digest.html").read_text(encoding="utf-8"),
        (out / "digest.txt").read_text(encoding="utf-8"),
    )
    previewed = email.message_from_bytes(
        (out / "digest.eml").read_bytes(), policy=email.policy.default
    )
    assert str(previewed["Subject"]) == SUBJECT

    # the test send (the editors' preview mail goes the same way) and the real send
    ok(env, tmp_path, "send", "--date", SAMPLE_DATE, "--test", "redaction@exemple.ma")
    ok(env, tmp_path, "send", "--date", SAMPLE_DATE)
    smtp_server.wait_for(2)
    by_rcpt = {m["To"].addresses[0].addr_spec: m for m in smtp_server.messages()}
    test, sent = by_rcpt["redaction@exemple.ma"], by_rcpt["lectrice@exemple.ma"]
    assert str(sent["Subject"]) == SUBJECT
    assert str(test["Subject"]).endswith(SUBJECT)
    for message in (test, sent):
        check_curated(*parts(message))

    # The edition rebuilt from its frozen articles (archive, a re-run) is the same edition.
    settings = load_settings(env_file=tmp_path / "absent.env", environ=env)
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        rebuilt = frozen_edition(store, settings, DAY)
    assert rebuilt.lead_uid and rebuilt.subject == SUBJECT and rebuilt.intro == INTRO
    assert EXCLUDED not in {a.link for a in rebuilt.articles}
    # ... and the archive's web version and listing show it as sent
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        archive = Archive(store, settings)
        page = archive.web_version(DAY)
        (entry,) = archive.listing().entries
    assert page is not None
    web = page.body.decode()
    assert EXCLUDED not in web and article_urls(web)[0] == LEAD
    assert "&lt;b&gt;notre&lt;/b&gt;" in web
    assert entry.headline == next(a.title for a in rebuilt.articles if a.link == LEAD)

    # Frozen: every change is refused, with one line, and nothing is written.
    before = state_of(env)
    line = refused(env, tmp_path, "edition", "exclude", OTHER, "--date", SAMPLE_DATE)
    assert f"edition {SAMPLE_DATE} is already going out" in line and "nothing was changed" in line
    for args in (
        ("include", EXCLUDED),
        ("lead", OTHER),
        ("intro", "trop tard"),
        ("subject", "trop tard"),
        ("add", "https://exemple.ma/tard", "--title", "Tard"),
    ):
        assert "already going out" in refused(
            env, tmp_path, "edition", *args, "--date", SAMPLE_DATE
        )
    assert state_of(env) == before
    assert "(frozen: its send started" in ok(
        env, tmp_path, "edition", "show", "--date", SAMPLE_DATE
    )

    # status: who, when (the site's time), what
    status = ok(env, tmp_path, "status", "--date", SAMPLE_DATE)
    assert "editorial changes: 6" in status
    assert status.count("  cli:") == 6
    assert f"lead {listed(shown)[LEAD][0]}" in status and f"subject {SUBJECT}" in status
    assert "exclude " in status and "include " in status and "intro Bonjour" in status


def test_bad_input_is_one_line_exit_1_and_changes_nothing(tmp_path):
    env = base_env(tmp_path)
    ok(env, tmp_path, "edition", "exclude", EXCLUDED, "--date", SAMPLE_DATE)
    before = state_of(env)

    line = refused(env, tmp_path, "edition", "exclude", "abcdef", "--date", SAMPLE_DATE)
    assert "no article 'abcdef' in edition 2026-01-27" in line
    line = refused(env, tmp_path, "edition", "lead", "https://ailleurs.ma/x", "--date", SAMPLE_DATE)
    assert "'https://ailleurs.ma/x'" in line
    # an article of the previous edition's window (published before this one's)
    earlier = ROOT + "25/senatoriales-calendrier-electoral-publie/"
    earlier_ref = ref(env, tmp_path, earlier, "2026-01-26")
    for given in (earlier, earlier_ref):
        line = refused(env, tmp_path, "edition", "exclude", given, "--date", SAMPLE_DATE)
        assert f"'{given}' belongs to edition 2026-01-26, not {SAMPLE_DATE}" in line
    # a lead that is also excluded, both ways round
    line = refused(env, tmp_path, "edition", "lead", EXCLUDED, "--date", SAMPLE_DATE)
    assert "is excluded from edition 2026-01-27: it cannot lead" in line
    ok(env, tmp_path, "edition", "lead", LEAD, "--date", SAMPLE_DATE)
    before = state_of(env)
    line = refused(env, tmp_path, "edition", "exclude", LEAD, "--date", SAMPLE_DATE)
    assert "is the lead of edition 2026-01-27: it cannot be excluded" in line
    # an added URL that is not http(s)
    for url in ("javascript:alert(1)", "ftp://exemple.ma/a", "exemple.ma/a"):
        line = refused(env, tmp_path, "edition", "add", url, "--title", "T", "--date", SAMPLE_DATE)
        assert "is not an http(s) URL" in line
    # an intro over 2,000 characters, with its length
    line = refused(env, tmp_path, "edition", "intro", "x" * 2_345, "--date", SAMPLE_DATE)
    assert "the intro is 2345 characters long; the most is 2000" in line
    assert state_of(env) == before

    # idempotent: said, and nothing logged
    out = ok(env, tmp_path, "edition", "exclude", EXCLUDED, "--date", SAMPLE_DATE)
    assert "already excluded; nothing changed" in out
    out = ok(env, tmp_path, "edition", "include", OTHER, "--date", SAMPLE_DATE)
    assert "is not excluded; nothing changed" in out
    assert state_of(env) == before


def test_an_intro_with_script_is_text_and_a_subject_with_cr_lf_is_one_line(tmp_path):
    env = base_env(tmp_path)
    hostile = 'Avant <script>alert("x")</script> <img src=x onerror=alert(1)> après'
    ok(env, tmp_path, "edition", "intro", hostile, "--date", SAMPLE_DATE)
    ok(
        env,
        tmp_path,
        "edition",
        "subject",
        "Ligne une\r\nBcc: victime@exemple.ma",
        "--date",
        SAMPLE_DATE,
    )
    shown = ok(env, tmp_path, "edition", "show", "--date", SAMPLE_DATE)
    assert "Subject (the editors'): Ligne une Bcc: victime@exemple.ma" in shown

    out = tmp_path / "out"
    ok(env, tmp_path, "preview", "--date", SAMPLE_DATE, "--out", str(out))
    html = (out / "digest.html").read_text(encoding="utf-8")
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html and "onerror=alert(1)&gt;" in html
    eml = (out / "digest.eml").read_bytes()
    message = email.message_from_bytes(eml, policy=email.policy.default)
    assert str(message["Subject"]) == "Ligne une Bcc: victime@exemple.ma"
    assert message["Bcc"] is None

    # back to the default: the Subject the headlines make, the intro gone
    ok(env, tmp_path, "edition", "subject", "", "--date", SAMPLE_DATE)
    ok(env, tmp_path, "edition", "intro", "", "--date", SAMPLE_DATE)
    shown = ok(env, tmp_path, "edition", "show", "--date", SAMPLE_DATE)
    assert "Subject (default): " in shown and "intro: none" in shown
    assert "subject default restored" in shown and "intro cleared" in shown


def test_an_added_link_goes_out_in_its_section_and_can_be_excluded_again(tmp_path):
    env = base_env(tmp_path)
    url = "https://partenaire.exemple.ma/agenda/festival"
    out = ok(
        env,
        tmp_path,
        "edition",
        "add",
        url,
        "--title",
        "Festival du livre : le programme",
        "--section",
        "Culture",
        "--summary",
        "Trois jours de rencontres.",
        "--date",
        SAMPLE_DATE,
    )
    assert f"added {article_ref('added:' + url)}" in out and "to Culture" in out
    shown = ok(env, tmp_path, "edition", "show", "--date", SAMPLE_DATE)
    assert f"{article_ref('added:' + url)}  added " in shown
    culture = shown.split("Culture\n", 1)[1]
    assert url in culture.split("\n", 3)[1]  # its section's first article (the newest)
    line = refused(
        env, tmp_path, "edition", "add", EXCLUDED, "--title", "Doublon", "--date", SAMPLE_DATE
    )
    assert "is already in edition 2026-01-27" in line

    preview = tmp_path / "out"
    ok(env, tmp_path, "preview", "--date", SAMPLE_DATE, "--out", str(preview))
    html = (preview / "digest.html").read_text(encoding="utf-8")
    assert url in html and "Trois jours de rencontres." in html

    ok(env, tmp_path, "edition", "exclude", url, "--date", SAMPLE_DATE)
    ok(env, tmp_path, "preview", "--date", SAMPLE_DATE, "--out", str(preview))
    assert url not in (preview / "digest.html").read_text(encoding="utf-8")


def test_a_change_racing_the_freeze_is_either_frozen_with_it_or_refused(tmp_path, smtp_server):
    """The send composed the edition, then an editor excluded an article before the freeze:
    the freeze sees the curation changed, composes again, and sends without it."""
    env = send_env(tmp_path, smtp_server.port)
    ok(env, tmp_path, "subscribers", "add", "lectrice@exemple.ma")
    settings = load_settings(env_file=tmp_path / "absent.env", environ=env)
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        composed = frozen_edition(store, settings, DAY)
        curation.exclude(store, settings, DAY, EXCLUDED, "cli:test")
        with pytest.raises(CurationChanged):
            store.freeze_edition(DAY, composed.articles, curation_revision=0)
        assert store.frozen_articles(DAY) is None  # nothing frozen

        # send_edition composes again and freezes the curated edition
        real_freeze = store.freeze_edition
        raced = threading.Event()

        def freeze_after_a_change(day, articles, *, curation_revision=None):
            if not raced.is_set():
                raced.set()
                curation.choose_lead(store, settings, DAY, LEAD, "cli:test")
            return real_freeze(day, articles, curation_revision=curation_revision)

        store.freeze_edition = freeze_after_a_change  # type: ignore[method-assign]
        report = send_edition(store, settings, DAY)
        assert report.complete
        frozen = store.frozen_articles(DAY)
        assert frozen is not None and EXCLUDED not in {a.link for a in frozen}
        with pytest.raises(curation.EditionFrozen):
            curation.include(store, settings, DAY, EXCLUDED, "cli:test")
    (message,) = smtp_server.messages()
    html, text = parts(message)
    assert EXCLUDED not in html and article_urls(text)[0] == LEAD


def test_a_refused_change_through_a_real_process_exits_1_with_one_line(tmp_path, smtp_server):
    """The installed command, in its own process: exit status and stderr as a shell sees them."""
    env = send_env(tmp_path, smtp_server.port)
    ok(env, tmp_path, "subscribers", "add", "lectrice@exemple.ma")
    ok(env, tmp_path, "edition", "exclude", EXCLUDED, "--date", SAMPLE_DATE)
    ok(env, tmp_path, "send", "--date", SAMPLE_DATE)
    proc = run_cli("edition", "include", EXCLUDED, "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert (
        proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        and "is already going out" in proc.stderr
    )
    proc = run_cli("edition", "show", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 0
    assert listed(proc.stdout)[EXCLUDED][1] == "excluded"  # still listed, from the store
    assert "cli:" in proc.stdout
