"""Issue 7, part 3: hostile input. Fuzzed (hypothesis) and hand-made feeds, CSV files, tokens,
dates and paths. Every case gets a clear error or a safe result, never a traceback, and nothing
is half-written.

What tests/test_sources.py already covers is not repeated here: an HTML page, a server that never
answers or trickles, redirect loops, billion laughs (UTF-8 and UTF-16), external entities and
DTDs, the 20 MB cap and gzip bombs.
"""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.adapters.csvfile import CsvError
from newsletter.adapters.sources import _BadItem, _SourceFailure, json_article, parse_feed
from newsletter.adapters.store import open_store
from newsletter.adapters.tokens import InvalidToken, Purpose, TokenSigner
from newsletter.domain.errors import NewsletterError
from newsletter.services import subscribers as service
from tests.support import SAMPLE_DATE, TEST_SECRET, base_env, invoke_cli, run_cli

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

RSS_ITEM = """<item><title>{title}</title><link>{link}</link><guid>{guid}</guid>
<category>{category}</category><dc:creator>{author}</dc:creator>
<pubDate>Tue, 27 Jan 2026 06:00:00 +0100</pubDate><description>{summary}</description></item>"""
RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>t</title>
{items}</channel></rss>"""
RSS_ITEM_FIELDS = ("title", "link", "guid", "category", "author", "summary")


# ---------------------------------------------------------------------------------------------
# Feeds
# ---------------------------------------------------------------------------------------------


def assert_feed_safe(data: bytes) -> None:
    """parse_feed either refuses the source (one reason) or returns articles and warnings."""
    try:
        articles, warnings = parse_feed(data, "fuzz.xml")
    except _SourceFailure as failure:
        assert failure.reason and "\n" not in failure.reason
        return
    assert all(isinstance(w, str) and "\n" not in w for w in warnings)
    for article in articles:
        assert article.link.startswith(("http://", "https://"))
        for text in (article.title, article.author, *article.categories):
            assert "\n" not in text and "\r" not in text


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_feed_reader(data: bytes) -> None:
    assert_feed_safe(data)


xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80
) | st.sampled_from(
    [
        "<![CDATA[x]]>",
        "&amp;lt;script&amp;gt;",
        "&#0;",
        "&#xD;&#xA;Bcc: x@y.ma",
        "]]>",
        "<b>",
        "&unknown;",
        "\x00",
        "<!--",
        "\u2028\u2029",
        "javascript:alert(1)",
    ]
)


@FUZZ
@given(st.lists(st.fixed_dictionaries({k: xml_text for k in RSS_ITEM_FIELDS}), max_size=4))
def test_fuzzed_rss_fields_never_crash_the_feed_reader(items: list[dict[str, str]]) -> None:
    body = "".join(RSS_ITEM.format(**item) for item in items)
    assert_feed_safe(RSS.format(items=body).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=4000))
def test_a_valid_feed_cut_or_spliced_with_garbage_never_crashes(junk: bytes, cut: int) -> None:
    valid = RSS.format(
        items=RSS_ITEM.format(
            title="Titre",
            link="https://exemple.ma/a",
            guid="g1",
            category="Sport",
            author="A",
            summary="<p>x</p>",
        )
    ).encode()
    assert_feed_safe(valid[:cut] + junk + valid[cut:])


@pytest.mark.parametrize("link", ["https://[exemple.ma/a", "https://exemple.ma]/a", "http://[::1"])
def test_a_link_with_a_broken_ipv6_literal_is_refused_not_raised(link: str) -> None:
    """Found by the fuzzer above: urllib raises ValueError on an unclosed '[' in a host."""
    item = RSS_ITEM.format(
        title="Titre", link=link, guid="g1", category="Sport", author="A", summary="<p>x</p>"
    )
    assert_feed_safe(RSS.format(items=item).encode())


@pytest.mark.parametrize("encoding", ["utf-7", "cp500"])
def test_entities_in_exotic_encodings_never_expand(encoding: str) -> None:
    """Billion laughs declared in encodings the prolog check cannot read as ASCII."""
    lol = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol;" if i == 1 else f"&lol{i - 1};") * 10}">' for i in range(1, 9)
    )
    doc = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<!DOCTYPE rss [{lol}]>\n'
        '<rss version="2.0"><channel><title>t</title><item><title>&lol8;</title>'
        "<link>http://x.ma/a</link><pubDate>Tue, 27 Jan 2026 06:00:00 +0100</pubDate>"
        "</item></channel></rss>"
    )
    started = time.monotonic()
    try:
        articles, _ = parse_feed(doc.encode(encoding), "lol.xml")
    except _SourceFailure as failure:
        assert "entities" in failure.reason or "feed" in failure.reason
        articles = []
    assert time.monotonic() - started < 1.0
    assert all(len(a.title) < 100 for a in articles)  # 10**8 "lol"s never materialise


def test_an_item_of_64k_nested_divs_previews_in_seconds_with_its_text(tmp_path: Path) -> None:
    """700 KB of nested <div> in one item, through the real CLI: was 40 s and more (quadratic)."""
    deep = "<div>" * 64_000 + "Le texte enfoui de l’article." + "</div>" * 64_000
    items = RSS_ITEM.format(
        title="Article profond",
        link="https://exemple.ma/profond",
        guid="profond",
        category="Société",
        author="A",
        summary=f"<![CDATA[{deep}]]>",
    ) + RSS_ITEM.format(
        title="Article ordinaire",
        link="https://exemple.ma/ordinaire",
        guid="ordinaire",
        category="Sport",
        author="B",
        summary="<p>Un résumé ordinaire.</p>",
    )
    feed = tmp_path / "deep.xml"
    feed.write_text(RSS.format(items=items), encoding="utf-8")
    env = base_env(tmp_path, NEWSLETTER_SOURCES=str(feed))
    started = time.monotonic()
    proc = run_cli(
        "preview", "--date", SAMPLE_DATE, "--out", str(tmp_path / "out"), env=env, cwd=tmp_path
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    # About 1 s here, start-up included; loose enough for a loaded 2-core machine.
    assert elapsed < 10, f"preview took {elapsed:.1f} s"
    digest = (tmp_path / "out" / "digest.txt").read_text(encoding="utf-8")
    assert "Le texte enfoui de l’article." in digest
    assert "Un résumé ordinaire." in digest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            k: json_values | st.text(max_size=40)
            for k in (
                "id",
                "title",
                "url",
                "published",
                "updated",
                "categories",
                "author",
                "summary",
                "content",
            )
        },
    )
    | json_values
)
def test_any_json_article_is_taken_or_refused_with_a_reason(item: object) -> None:
    try:
        article = json_article(item, "folder")
    except _BadItem as bad:
        assert bad.reason
        return
    assert article.link.startswith(("http://", "https://")) and article.title
    assert article.published.tzinfo is not None
    assert "\n" not in article.title + article.author


# ---------------------------------------------------------------------------------------------
# CSV files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    with open_store(f"sqlite:///{tmp_path / 'fuzz.db'}") as opened:
        yield opened


@FUZZ
@given(data=st.binary(max_size=1500), strict=st.booleans())
def test_random_bytes_as_csv_are_refused_or_reported_never_raised(
    store, data: bytes, strict: bool
) -> None:
    before = store.count_by_status()
    try:
        stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
        report = service.import_csv(store, stream, "fuzz.csv", strict=strict)
    except NewsletterError as err:
        assert str(err) and "\n" not in str(err)
        assert store.count_by_status() == before  # a refused file writes nothing
        return
    if strict and report.rejected:
        assert store.count_by_status() == before
    for row in report.rejected:
        assert row.line >= 1 and row.reason


csv_cell = st.text(max_size=30) | st.sampled_from(
    ["a@exemple.ma", "A@EXEMPLE.MA ", "x@y", '"', '"a@b.ma', "=cmd|' /C calc'!A0", "\x00", "@"]
)


@FUZZ
@given(
    rows=st.lists(st.lists(csv_cell, min_size=1, max_size=4), max_size=8),
    delimiter=st.sampled_from([",", ";", "\t"]),
)
def test_fuzzed_csv_rows_import_or_report_every_row(store, rows, delimiter) -> None:
    text = "email" + delimiter + "name\n" + "\n".join(delimiter.join(r) for r in rows)
    before = sum(store.count_by_status().values())
    try:
        report = service.import_csv(store, io.StringIO(text, newline=""), "f.csv", strict=False)
    except CsvError as err:
        assert "\n" not in str(err)
        return
    after = sum(store.count_by_status().values())
    assert after - before == report.added
    assert report.taken + len(report.rejected) <= text.count("\n") + text.count("\r")
    for row in report.rejected:
        assert row.reason and row.line >= 2


def cli_env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path)


def db_rows(tmp_path: Path) -> list[tuple]:
    path = tmp_path / "newsletter.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute("SELECT email, status FROM subscribers").fetchall())


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("latin1.csv", "email;name\nelodie@exemple.ma;Élodie\n".encode("latin-1")),
        ("utf16.csv", "email;name\nelodie@exemple.ma;Élodie\n".encode("utf-16")),
        ("binary.csv", bytes(range(256)) * 4),
        ("zip.csv", b"PK\x03\x04" + b"\x00" * 40),
        ("nul-in-utf8.csv", b"email\nok@exemple.ma\nx\x00y@exemple.ma\n"),
        ("empty.csv", b""),
        ("header-only-garbage.csv", b";;;;\n,,,\n"),
    ],
)
def test_unreadable_csv_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, name: str, content: bytes
) -> None:
    env = cli_env(tmp_path)
    seed = tmp_path / "seed.csv"
    seed.write_text("email\nalready@exemple.ma\n")
    assert invoke_cli("subscribers", "import", str(seed), env=env, cwd=tmp_path).returncode == 0
    before = db_rows(tmp_path)
    path = tmp_path / name
    path.write_bytes(content)
    for extra in (["--strict"], []):
        proc = invoke_cli("subscribers", "import", str(path), *extra, env=env, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode == 2:
            errors = proc.stderr.strip().splitlines()
            assert len(errors) == 1 and errors[0].startswith("error:"), proc.stderr
            assert db_rows(tmp_path) == before
        else:  # read as CSV: the bad rows are reported with their line
            assert proc.returncode in (0, 1), proc.stderr
            assert all(line.startswith("line ") for line in proc.stderr.splitlines())
            if extra and proc.returncode == 1:
                assert db_rows(tmp_path) == before


def test_strict_import_of_a_file_broken_halfway_writes_nothing(tmp_path: Path) -> None:
    """Thousands of good rows, then one invalid byte sequence: --strict leaves the DB unchanged."""
    env = cli_env(tmp_path)
    seed = tmp_path / "seed.csv"
    seed.write_text("email\nalready@exemple.ma\n")
    assert invoke_cli("subscribers", "import", str(seed), env=env, cwd=tmp_path).returncode == 0
    before = db_rows(tmp_path)
    good = "".join(f"r{i}@exemple.ma\n" for i in range(5000)).encode()
    path = tmp_path / "half.csv"
    path.write_bytes(b"email\n" + good + b"\xe9t\xe9@exemple.ma\n" + good.replace(b"r", b"s"))
    for extra in ([], ["--strict"]):
        proc = invoke_cli("subscribers", "import", str(path), *extra, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr
        assert db_rows(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------

SIGNER = TokenSigner(TEST_SECRET)


@FUZZ
@given(
    purpose=st.sampled_from(list(Purpose)),
    subscriber_id=st.integers(min_value=1, max_value=10**9),
    position=st.integers(min_value=0),
    replacement=st.characters(min_codepoint=33, max_codepoint=126),
)
def test_a_tampered_token_is_refused_or_reads_the_same_claim(
    purpose, subscriber_id, position, replacement
) -> None:
    token = SIGNER.sign(purpose, subscriber_id, "a@exemple.ma")
    index = position % len(token)
    tampered = token[:index] + replacement + token[index + 1 :]
    try:
        claim = SIGNER.read(purpose, tampered)
    except InvalidToken:
        return
    # Only a change base64 ignores (padding bits) can pass, and then nothing changed.
    assert claim == SIGNER.read(purpose, token)


@FUZZ
@given(purpose=st.sampled_from(list(Purpose)), cut=st.integers(min_value=0))
def test_a_truncated_token_is_refused(purpose, cut) -> None:
    token = SIGNER.sign(purpose, 42, "a@exemple.ma")
    with pytest.raises(InvalidToken):
        SIGNER.read(purpose, token[: cut % len(token)])


@FUZZ
@given(st.text(max_size=200))
def test_any_string_is_a_token_or_invalid_never_an_exception(text: str) -> None:
    for purpose in Purpose:
        try:
            claim = SIGNER.read(purpose, text)
        except InvalidToken:
            continue
        raise AssertionError(f"{text!r} read as {claim}")


@pytest.mark.parametrize("signed", list(Purpose))
@pytest.mark.parametrize("read", list(Purpose))
def test_a_token_for_one_purpose_is_refused_for_every_other(signed, read) -> None:
    token = SIGNER.sign(signed, 7, "a@exemple.ma")
    if signed is read:
        assert SIGNER.read(read, token).subscriber_id == 7
    else:
        with pytest.raises(InvalidToken):
            SIGNER.read(read, token)


def test_another_key_or_an_expired_confirmation_is_refused() -> None:
    token = SIGNER.sign(Purpose.UNSUBSCRIBE, 7, "a@exemple.ma")
    with pytest.raises(InvalidToken):
        TokenSigner("another-secret-key-0123456789abcdef").read(Purpose.UNSUBSCRIBE, token)
    confirm = TokenSigner(TEST_SECRET, confirm_max_age_seconds=-1).sign(Purpose.CONFIRM, 7, "a")
    with pytest.raises(InvalidToken):
        TokenSigner(TEST_SECRET, confirm_max_age_seconds=-1).read(Purpose.CONFIRM, confirm)


def test_a_token_replayed_after_forget_matches_nobody(store) -> None:
    """Forget erases the row; if SQLite hands its id to a new subscriber, old links stay dead."""
    first = service.add(store, "partie@exemple.ma", "", "", "").subscriber
    token = SIGNER.sign(Purpose.UNSUBSCRIBE, first.id, first.email_key)
    assert service.forget(store, "partie@exemple.ma")
    assert store.get(first.id) is None
    claim = SIGNER.read(Purpose.UNSUBSCRIBE, token)  # the signature itself is still genuine
    newcomer = service.add(store, "nouvelle@exemple.ma", "", "", "").subscriber
    holder = store.get(claim.subscriber_id)
    # Either the id is gone, or it now belongs to someone the token was not made for.
    assert holder is None or not SIGNER.matches(claim, holder.email_key)
    assert not SIGNER.matches(claim, newcomer.email_key)
    # And the forgotten address can never come back through an import or add.
    with pytest.raises(NewsletterError):
        service.add(store, "Partie@Exemple.ma", "", "", "")


# ---------------------------------------------------------------------------------------------
# Dates, paths and the command line in general
# ---------------------------------------------------------------------------------------------


def assert_one_line_error(proc, code: int = 2) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    error_lines = [
        line for line in proc.stderr.splitlines() if line.lower().startswith(("error", "usage"))
    ]
    assert error_lines, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) <= 1


HOSTILE_DATES = [
    "../../etc/passwd",
    "/etc/passwd",
    "2026-01-27/../x",
    "",
    "2026-01-27\n",
    "9999-12-31",
]


@pytest.mark.parametrize(
    ("command", "value"),
    [("send", v) for v in HOSTILE_DATES]
    + [(c, "0001-01-01") for c in ("preview", "send", "status", "hold")],
)
def test_hostile_dates_are_usage_errors(tmp_path: Path, command: str, value: str) -> None:
    proc = invoke_cli(command, "--date", value, env=cli_env(tmp_path), cwd=tmp_path)
    assert_one_line_error(proc, 2)
    assert "--date" in proc.stderr


@pytest.mark.parametrize(
    ("out", "fails"),
    [
        ("/proc/newsletter-preview", True),  # cannot be created
        ("/dev/null/preview", True),  # a parent is not a folder
        ("a-file", True),  # exists and is a file
        ("../outside/preview", False),  # relative paths are the operator's own choice
        ("deep/new/folder", False),  # created
    ],
)
def test_preview_out_folders(tmp_path: Path, out: str, fails: bool) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "a-file").write_text("keep me")
    proc = invoke_cli(
        "preview", "--date", SAMPLE_DATE, "--out", out, env=cli_env(tmp_path), cwd=work
    )
    if fails:
        assert_one_line_error(proc, 2)
        assert (work / "a-file").read_text() == "keep me"
    else:
        assert proc.returncode == 0, proc.stderr
        folder = (work / out).resolve()
        assert sorted(p.name for p in folder.iterdir()) == [
            "digest.eml",
            "digest.html",
            "digest.txt",
        ]  # no temporary file left behind


@pytest.mark.parametrize(
    ("args", "env_extra", "code"),
    [
        (["nonsense"], {}, 2),
        (["send", "--no-such-flag"], {}, 2),
        (["subscribers", "add"], {}, 2),
        (["subscribers", "add", "pas-une-adresse"], {}, 2),
        (["subscribers", "add", "a@b.ma\r\nBcc: victim@x.ma"], {}, 2),
        (["subscribers", "add", "a@exemple.ma", "--locale", "../../etc"], {}, 2),
        (["subscribers", "import", "/nonexistent/file.csv"], {}, 2),
        (["subscribers", "import", "/"], {}, 2),
        (["subscribers", "list", "--status", "everyone"], {}, 2),
        (["subscribers", "unsubscribe", "ghost@exemple.ma"], {}, 1),
        (["preview", "--date", SAMPLE_DATE, "--email", "ghost@exemple.ma"], {}, 1),
        (["status"], {"NEWSLETTER_DATABASE_URL": "sqlite:////proc/nope/x.db"}, 2),
        (["status"], {"NEWSLETTER_DATABASE_URL": "oracle://scott:tiger@x/db"}, 2),
        (["status"], {"NEWSLETTER_TIMEZONE": "../../etc/localtime"}, 2),
        (["status"], {"NEWSLETTER_SEND_TIME": "7h"}, 2),
        (["send", "--date", SAMPLE_DATE], {"NEWSLETTER_SMTP_PORT": "99999"}, 2),
        (["send", "--date", SAMPLE_DATE], {"NEWSLETTER_FROM": "x\r\nBcc: v@x.ma"}, 2),
        (["send", "--date", SAMPLE_DATE], {"NEWSLETTER_SOURCES": "file:///etc/passwd"}, 1),
        (["send", "--date", SAMPLE_DATE], {"NEWSLETTER_SMTP_RATE": "nan"}, 2),
        (["preview", "--date", SAMPLE_DATE], {"NEWSLETTER_SOURCES": "/etc/passwd"}, 1),
        (["preview", "--date", SAMPLE_DATE], {"NEWSLETTER_SOURCES": "/nonexistent"}, 1),
    ],
)
def test_user_mistakes_give_one_line_and_a_non_zero_exit(
    tmp_path: Path, args: list[str], env_extra: dict[str, str], code: int
) -> None:
    env = cli_env(tmp_path)
    if args[0] == "send":
        env.update(
            NEWSLETTER_FROM="Lettre <lettre@exemple.ma>",
            NEWSLETTER_BASE_URL="http://localhost:8000",
            NEWSLETTER_SECRET_KEY=TEST_SECRET,
        )
    env.update(env_extra)
    proc = invoke_cli(*args, env=env, cwd=tmp_path)
    assert_one_line_error(proc, code)


def test_forgotten_then_reimported_address_stays_out(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert invoke_cli("subscribers", "add", "moi@exemple.ma", env=env, cwd=tmp_path).returncode == 0
    assert (
        invoke_cli("subscribers", "forget", "moi@exemple.ma", env=env, cwd=tmp_path).returncode == 0
    )
    csv = tmp_path / "back.csv"
    csv.write_text("email\nMOI@exemple.ma\n")
    proc = invoke_cli("subscribers", "import", str(csv), "--strict", env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert db_rows(tmp_path) == []
