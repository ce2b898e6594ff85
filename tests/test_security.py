"""Issue 7, part 4: security checks, end to end.

A hostile feed file (CR/LF and encoded newlines in every header-bound field, scripts, event
handlers, javascript: links, remote stylesheets, images and file:// references) is previewed and
sent for real to aiosmtpd; the received messages are parsed. A local HTTP server stands where
the hostile feed points and must never be asked for anything. TLS verification is tried against
a STARTTLS relay with a self-signed certificate, and no secret may appear in any output.
"""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import lxml.html
import pytest

from newsletter.adapters.store import open_store
from newsletter.domain import DeliveryStatus
from testkit.tls import self_signed
from tests.support import (
    SAMPLE_DATE,
    SmtpServer,
    base_env,
    free_port,
    run_cli,
    start_smtp_server,
)

# One worker under pytest-xdist (--dist loadgroup): the module-scoped hostile run (a preview, a
# send and a status through real subprocesses) is then done once, not once per worker.
pytestmark = pytest.mark.xdist_group("security-hostile-run")

SECRET = "SeCrEtKeY-7f3a9c-never-print-me-0123456789"
PASSWORD = "PaSsWoRd-b52e-never-print-me"
SUBSCRIBERS = ["aicha@exemple.ma", "karim@exemple.ma"]
EXPECTED_HEADERS = {
    "To",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "From",
    "Subject",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "Precedence",
    "Auto-Submitted",
    "Content-Type",
}


class RecordingHTTPHandler(BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.end_headers()
        self.wfile.write(b"body { background: url(http://127.0.0.1/evil) }")

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Canary:
    """A local web server the hostile feed points at; it must stay untouched."""

    port: int
    requests: list[str]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    requests: list[str] = []
    handler = type("Handler", (RecordingHTTPHandler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Canary(server.server_address[1], requests)
    server.shutdown()


def hostile_feed(canary: Canary) -> str:
    pub = "Tue, 27 Jan 2026 06:00:00 +0100"  # inside the 2026-01-27 edition's window
    fetch_bait = (
        f'&lt;link rel="stylesheet" href="{canary.url("feed.css")}"&gt;'
        f'&lt;style&gt;@import url("{canary.url("import.css")}");&lt;/style&gt;'
        f'&lt;img src="{canary.url("pixel.png")}" onerror="alert(1)"&gt;'
        '&lt;img src="file:///etc/passwd"&gt;'
        '&lt;link rel="stylesheet" href="file:///etc/hostname"&gt;'
        f'&lt;iframe src="{canary.url("frame")}"&gt;&lt;/iframe&gt;'
    )
    script_bait = (
        "&lt;script&gt;alert('x')&lt;/script&gt;"
        '&lt;a href="javascript:alert(1)" onclick="steal()"&gt;clic&lt;/a&gt;'
        "&lt;svg onload=alert(2)&gt;&lt;/svg&gt;"
        "&amp;lt;script&amp;gt;alert(3)&amp;lt;/script&amp;gt;"
    )
    items = [
        (
            "Titre\r\nBcc: victim@evil.example\r\nX-Injected: 1",
            "https://exemple.ma/a1",
            "Auteur&#13;&#10;Cc: victim2@evil.example",
            "Sport&#10;Bcc: victim3@evil.example",
            fetch_bait,
        ),
        (
            "=?utf-8?q?Encoded=0D=0ABcc:_victim4@evil.example?= &#x2028;Reply-To: x@evil.example",
            "javascript:alert(document.cookie)",
            "\u2029To: victim5@evil.example",
            "Économie\u0085Bcc: victim6@evil.example",
            script_bait,
        ),
        (
            "&lt;script&gt;alert('titre')&lt;/script&gt;Titre sûr",
            "https://exemple.ma/a3\r\nBcc: victim7@evil.example",
            "Plain",
            "Culture",
            f'&lt;a href="{canary.url("track")}" style="background:url({canary.url("bg.png")})"&gt;x&lt;/a&gt;',
        ),
    ]
    body = "".join(
        f"<item><title>{title}</title><link>{link}</link><guid>g{i}</guid>"
        f"<dc:creator>{author}</dc:creator><category>{category}</category>"
        f"<pubDate>{pub}</pubDate><description>{summary}</description>"
        f"<content:encoded>{summary}</content:encoded></item>"
        for i, (title, link, author, category, summary) in enumerate(items)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>Hostile</title>{body}</channel></rss>"
    )


def start_smtp(out: Path, *args: str) -> SmtpServer:
    return start_smtp_server(out, *args)


def env_for(tmp: Path, port: int, feed: Path, **extra: str) -> dict[str, str]:
    env = base_env(
        tmp,
        NEWSLETTER_SOURCES=str(feed),
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(port),
        NEWSLETTER_SMTP_SECURITY="none",
        NEWSLETTER_FROM="La Lettre <lettre@exemple.ma>",
        NEWSLETTER_BASE_URL="http://localhost:8000",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_SMTP_PASSWORD=PASSWORD,
    )
    env.update(extra)
    return env


@dataclass
class HostileRun:
    server: SmtpServer
    outputs: list[str]
    preview_dir: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, canary: Canary) -> Iterator[HostileRun]:
    """Preview, send and status of the hostile feed, once for every check below."""
    tmp = tmp_path_factory.mktemp("hostile")
    feed = tmp / "hostile.xml"
    feed.write_text(hostile_feed(canary), encoding="utf-8")
    server = start_smtp(tmp / "smtp")
    env = env_for(tmp, server.port, feed)
    csv = tmp / "subs.csv"
    csv.write_text("email;name\n" + "\n".join(f"{a};Lecteur" for a in SUBSCRIBERS) + "\n")
    outputs: list[str] = []
    try:
        for args in (
            ["subscribers", "import", str(csv)],
            ["preview", "--date", SAMPLE_DATE, "--out", str(tmp / "preview")],
            ["send", "--date", SAMPLE_DATE],
            ["status", "--date", SAMPLE_DATE],
        ):
            proc = run_cli(*args, env=env, cwd=tmp)
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            outputs += [proc.stdout, proc.stderr]
        yield HostileRun(server, outputs, tmp / "preview", env)
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# Header injection
# ---------------------------------------------------------------------------------------------


def test_hostile_feed_fields_never_reach_a_header(hostile_run: HostileRun) -> None:
    server = hostile_run.server
    assert sorted(server.recipients()) == SUBSCRIBERS  # nobody else, no extra envelope recipient
    messages = server.messages()
    assert len(messages) == len(SUBSCRIBERS)
    for raw, message in zip(server.raw_messages(), messages, strict=True):
        assert set(message.keys()) == EXPECTED_HEADERS, sorted(message.keys())
        assert len(message.keys()) == len(EXPECTED_HEADERS)  # no header twice
        head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
        for line in head.split("\r\n"):
            assert not line.lower().startswith(("bcc", "cc:", "x-injected", "reply-to")), line
        subject = str(message["Subject"])
        assert "\n" not in subject and "\r" not in subject
        assert [a.addr_spec for a in message["To"].addresses] in ([a] for a in SUBSCRIBERS)
        assert "evil.example" not in str(message["To"]) + str(message["From"])


def test_hostile_text_stays_text_inside_the_body(hostile_run: HostileRun) -> None:
    """What was injected is shown as harmless text (or dropped), never as structure."""
    for message in hostile_run.server.messages():
        parts = [p.get_content_type() for p in message.iter_parts()]
        assert parts == ["text/plain", "text/html"]  # no extra MIME part smuggled in


# ---------------------------------------------------------------------------------------------
# HTML / script injection
# ---------------------------------------------------------------------------------------------


def html_parts(hostile_run: HostileRun) -> list[str]:
    found = [
        next(p for p in m.iter_parts() if p.get_content_type() == "text/html").get_content()
        for m in hostile_run.server.messages()
    ]
    found.append((hostile_run.preview_dir / "digest.html").read_text(encoding="utf-8"))
    return found


def test_no_script_handler_or_javascript_link_reaches_the_email(hostile_run: HostileRun) -> None:
    for html in html_parts(hostile_run):
        tree = lxml.html.fromstring(html)
        assert tree.xpath("//script|//iframe|//object|//embed|//svg|//form") == []
        for element in tree.iter():
            if not isinstance(element.tag, str):
                continue
            for name, value in element.attrib.items():
                assert not name.lower().startswith("on"), (element.tag, name)
                if name.lower() in ("href", "src", "action", "background"):
                    assert value.startswith(("http://", "https://", "mailto:", "#")), value
        assert "javascript:" not in html.lower()
        assert "alert(" not in html
        assert "evil.example" not in "".join(tree.xpath("//a/@href"))


def test_no_remote_or_local_resource_is_referenced_by_the_email(
    hostile_run: HostileRun, canary: Canary
) -> None:
    for html in html_parts(hostile_run):
        tree = lxml.html.fromstring(html)
        assert tree.xpath("//img[@src]|//link[@href]") == [] or all(
            "127.0.0.1" not in src and not src.startswith("file:")
            for src in tree.xpath("//img/@src|//link/@href")
        )
        assert f"127.0.0.1:{canary.port}" not in html.replace(canary.url("track"), "")
        assert "file://" not in html


# ---------------------------------------------------------------------------------------------
# Nothing is fetched that was not asked for
# ---------------------------------------------------------------------------------------------


def test_premailer_and_the_feed_reader_fetch_nothing(
    hostile_run: HostileRun, canary: Canary
) -> None:
    assert hostile_run.outputs  # preview, send and status ran
    assert canary.requests == [], canary.requests


# ---------------------------------------------------------------------------------------------
# No secret in any output
# ---------------------------------------------------------------------------------------------


def test_no_secret_in_any_output_or_message(hostile_run: HostileRun) -> None:
    texts = [*hostile_run.outputs]
    texts += [raw.decode("utf-8", "replace") for raw in hostile_run.server.raw_messages()]
    texts += [p.read_text(encoding="utf-8") for p in hostile_run.preview_dir.iterdir()]
    for text in texts:
        assert SECRET not in text and PASSWORD not in text
        assert "SeCrEtKeY" not in text and "PaSsWoRd" not in text


def test_no_secret_in_error_paths(tmp_path: Path, canary: Canary) -> None:
    """Failures print settings and relays: the secrets must not ride along."""
    feed = tmp_path / "feed.xml"
    feed.write_text(hostile_feed(canary), encoding="utf-8")
    port = free_port()  # nothing listens
    env = env_for(tmp_path, port, feed, NEWSLETTER_SMTP_USERNAME="editor")
    # The relay-down run's reconnect backoff at a tenth (0.6 s, not 6 s): the output is what
    # is checked here; test_faults.py's black-hole test runs the real backoff.
    env["NEWSLETTER_TEST_BACKOFF_SCALE"] = "0.1"
    assert run_cli("subscribers", "add", "a@exemple.ma", env=env, cwd=tmp_path).returncode == 0
    runs = [
        run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path),  # relay down, login set
        run_cli("status", env={**env, "NEWSLETTER_SMTP_PORT": "x"}, cwd=tmp_path),  # bad setting
        run_cli("send", env={**env, "NEWSLETTER_BASE_URL": "ftp://x"}, cwd=tmp_path),
    ]
    assert [r.returncode for r in runs] == [1, 2, 2], [r.stderr for r in runs]
    for proc in runs:
        assert SECRET not in proc.stdout + proc.stderr
        assert PASSWORD not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# TLS verification is on by default
# ---------------------------------------------------------------------------------------------


def test_starttls_with_a_self_signed_certificate_is_refused(tmp_path: Path, canary: Canary) -> None:
    cert, key = self_signed(tmp_path)
    server = start_smtp(tmp_path / "smtp", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        feed = tmp_path / "feed.xml"
        feed.write_text(hostile_feed(canary), encoding="utf-8")
        env = env_for(
            tmp_path,
            server.port,
            feed,
            NEWSLETTER_SMTP_SECURITY="starttls",
            NEWSLETTER_SMTP_USERNAME="editor",
        )
        for address in SUBSCRIBERS:
            assert run_cli("subscribers", "add", address, env=env, cwd=tmp_path).returncode == 0
        proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
        assert proc.returncode != 0
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "certificate" in errors[0], proc.stderr
        assert "self-signed" in errors[0] or "self signed" in errors[0]
        assert PASSWORD not in proc.stdout + proc.stderr
        assert server.log() == []  # nothing went out
        with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
            counts = store.delivery_counts(date_of(SAMPLE_DATE))
        assert counts.get(DeliveryStatus.SENT, 0) == 0 and DeliveryStatus.SENDING not in counts
        # The same relay with STARTTLS but security=none still works: the server's STARTTLS is
        # required, so aiosmtpd refuses MAIL: the send must not silently fall back to plain text.
        plain = run_cli(
            "send",
            "--date",
            SAMPLE_DATE,
            env={**env, "NEWSLETTER_SMTP_SECURITY": "none", "NEWSLETTER_SMTP_USERNAME": ""},
            cwd=tmp_path,
        )
        assert plain.returncode != 0 and "Traceback" not in plain.stderr
        assert server.log() == []
    finally:
        server.stop()


def date_of(text: str):
    from datetime import date

    return date.fromisoformat(text)


def test_messages_parse_with_the_strict_policy(hostile_run: HostileRun) -> None:
    """Every received message re-parses with no defect (a smuggled header would show here)."""
    for raw in hostile_run.server.raw_messages():
        message = email.message_from_bytes(raw, policy=email.policy.strict)
        assert not message.defects
        for part in message.walk():
            assert not part.defects, part.defects
