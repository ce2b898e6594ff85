"""The second attack round against the web app, each break replayed through the real server.

Same harness as test_web.py (uvicorn on a free port, a real SQLite file, the aiosmtpd process):
out-of-range dates, a locked database, spoofed X-Forwarded-For, replayed confirmation links,
and oversized or slow request headers.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from newsletter.adapters.tokens import Purpose
from newsletter.domain import SubscriberStatus
from newsletter.web import WebLimits
from newsletter.web.server import ServerLimits
from tests.support import (
    TEST_SECRET,
    SmtpServer,
    base_env,
    free_port,
    run_cli,
    wait_for_port,
)
from tests.web_support import (
    ADMIN_PASSWORD,
    SAMPLE_DATE,
    LiveApp,
    confirm_with_button,
    confirmation_link,
    form_token_of,
    running_app,
    wait_mails,
)


class Records(logging.Handler):
    """Every log record of the loggers it is attached to (uvicorn's and ours)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.exc_info or r.stack_info]

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR]


@contextmanager
def log_records() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "newsletter")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture
def live(tmp_path: Path, smtp_factory: Callable[..., SmtpServer]) -> Iterator[LiveApp]:
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD) as app:
        yield app


# ---------------------------------------------------------------------------------------------
# Dates out of range on the editors' pages
# ---------------------------------------------------------------------------------------------

FAR_DAYS = ("0001-01-01", "0001-01-02", "1969-12-31", "9999-12-31", "9999-12-30")


def test_editor_routes_refuse_dates_out_of_range_without_a_traceback(live: LiveApp) -> None:
    with live.client(auth=("editor", ADMIN_PASSWORD)) as http, log_records() as logs:
        token = form_token_of(http.get(f"/preview/{SAMPLE_DATE}").text)
        for day in FAR_DAYS:
            preview = http.get(f"/preview/{day}")
            assert preview.status_code == 404, (day, preview.status_code)
            assert "Page introuvable" in preview.text
            for action in ("test", "hold", "release"):
                answer = http.post(
                    f"/editor/{day}/{action}",
                    data={"form_token": token, "address": "redaction@example.com"},
                )
                assert answer.status_code == 404, (day, action, answer.status_code)
                assert "Page introuvable" in answer.text
        # The edges of the accepted range still work.
        for day in ("1970-01-01", "9998-12-31"):
            assert http.get(f"/preview/{day}").status_code == 200
    assert logs.tracebacks() == [] and logs.errors() == []


# ---------------------------------------------------------------------------------------------
# A busy database: 503 with Retry-After, never 500
# ---------------------------------------------------------------------------------------------


@contextmanager
def write_lock_held(live: LiveApp) -> Iterator[None]:
    """Another process's writer: BEGIN IMMEDIATE on the same SQLite file, held for the block."""
    database = live.store.engine.url.database
    assert database
    holder = sqlite3.connect(database, isolation_level=None, timeout=5)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_locked_database_gets_503_with_retry_after(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_TEST_BUSY_TIMEOUT_MS", "300")  # the store's bounded wait
    with running_app(tmp_path, smtp_factory(), NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD) as live:
        live.add("busy@example.com")
        token = live.token(Purpose.UNSUBSCRIBE, "busy@example.com")
        with live.client() as http, log_records() as logs:
            preview = http.get(f"/preview/{SAMPLE_DATE}", auth=("editor", ADMIN_PASSWORD))
            editor_token = form_token_of(preview.text)
            with write_lock_held(live):
                answers = [
                    http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}),
                    http.post("/subscribe", data={"email": "new@example.com"}),
                    http.post(
                        f"/editor/{SAMPLE_DATE}/hold",
                        data={"form_token": editor_token},
                        auth=("editor", ADMIN_PASSWORD),
                    ),
                ]
            for answer in answers:
                assert answer.status_code == 503, (answer.request.url.path, answer.status_code)
                assert answer.headers["retry-after"].isdigit()
                assert "Service momentanément indisponible" in answer.text
                assert answer.headers["content-security-policy"]  # the normal page
            assert live.status("busy@example.com") is SubscriberStatus.ACTIVE
            # The lock gone, the mail client's retry goes through.
            retried = http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
            assert retried.status_code == 200
        assert live.status("busy@example.com") is SubscriberStatus.UNSUBSCRIBED
        assert logs.tracebacks() == []


@pytest.mark.slow  # about 6 s: the web app's real bounded wait, no test knob
def test_queued_one_click_posts_all_get_503_within_the_web_wait(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    """A long import holds the lock: each of 6 one-click POSTs at once answers 503 in ~5 s.

    Commands wait up to two minutes for the lock; the web app waits one 5 s busy timeout, and
    requests queued behind each other in this process do not add their waits up.
    """
    with running_app(tmp_path, smtp_factory()) as live:
        addresses = [f"busy{i}@example.com" for i in range(6)]
        tokens = []
        for address in addresses:
            live.add(address)
            tokens.append(live.token(Purpose.UNSUBSCRIBE, address))
        answers: list[tuple[int, float]] = []

        def one_click(token: str) -> None:
            started = time.monotonic()
            with live.client() as http:
                answer = http.post(
                    f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=60
                )
            answers.append((answer.status_code, time.monotonic() - started))

        with write_lock_held(live):
            posts = [threading.Thread(target=one_click, args=(t,)) for t in tokens]
            for post in posts:
                post.start()
            for post in posts:
                post.join(60)
        print(f"\none-click POSTs under a held write lock: {sorted(answers)}")
        assert [code for code, _ in answers] == [503] * 6
        assert max(took for _, took in answers) < 12  # before: the 6th waited 6 busy timeouts
        assert all(live.status(a) is SubscriberStatus.ACTIVE for a in addresses)


# ---------------------------------------------------------------------------------------------
# X-Forwarded-For: believed only from NEWSLETTER_TRUSTED_PROXIES
# ---------------------------------------------------------------------------------------------


def spoofed(i: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{i}", "X-Forwarded-Proto": "https"}


def test_forwarded_for_from_an_untrusted_peer_changes_nothing(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn's own variable must not bring back the trust it used to give the loopback.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    with (
        running_app(
            tmp_path, smtp_factory(), limits=None, NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD
        ) as live,
        live.client() as http,
    ):
        logins = [
            http.get("/editor", auth=("editor", f"guess{i}"), headers=spoofed(i)).status_code
            for i in range(12)
        ]
        assert logins[:10] == [401] * 10 and logins[10:] == [429, 429]
        signups = [
            http.post(
                "/subscribe", data={"email": f"s{i}@example.com"}, headers=spoofed(i)
            ).status_code
            for i in range(12)
        ]
        assert signups[:10] == [200] * 10 and signups[10:] == [429, 429]
        subscriber = live.store.find_by_email("s0@example.com")
        assert subscriber is not None and subscriber.consent_detail == "127.0.0.1"


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
) -> None:
    with (
        running_app(
            tmp_path,
            smtp_factory(),
            limits=None,
            NEWSLETTER_ADMIN_PASSWORD=ADMIN_PASSWORD,
            NEWSLETTER_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1",
        ) as live,
        live.client() as http,
    ):
        logins = [
            http.get("/editor", auth=("editor", "guess"), headers=spoofed(i)).status_code
            for i in range(12)
        ]
        assert logins == [401] * 12  # twelve clients, one guess each
        answer = http.post("/subscribe", data={"email": "p@example.com"}, headers=spoofed(7))
        assert answer.status_code == 200
        subscriber = live.store.find_by_email("p@example.com")
        assert subscriber is not None and subscriber.consent_detail == "203.0.113.7"


@pytest.mark.parametrize("value", ["proxy.example.com", "127.0.0.1/33", "*", "10.0.0.1;10.0.0.2"])
def test_a_bad_trusted_proxies_value_is_a_one_line_config_error(tmp_path: Path, value: str) -> None:
    env = base_env(
        tmp_path,
        NEWSLETTER_BASE_URL="http://127.0.0.1:8000",
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
        NEWSLETTER_TRUSTED_PROXIES=value,
    )
    result = run_cli("serve", "--port", str(free_port()), env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "NEWSLETTER_TRUSTED_PROXIES" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


# ---------------------------------------------------------------------------------------------
# Request headers: 16 KB a line, 64 KB in all, 10 s to send them; bodies bounded in time too
# ---------------------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        return read_until_closed(conn)


def read_until_closed(conn: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def port_of(live: LiveApp) -> int:
    return int(live.url.rsplit(":", 1)[1])


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def test_oversized_headers_get_431_and_normal_requests_still_work(live: LiveApp) -> None:
    port = port_of(live)
    one_line = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    many = b"".join(b"X-Part-%d: " % i + b"b" * 10_000 + b"\r\n" for i in range(7))
    in_all = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    for request in (one_line, in_all):
        answer = raw_exchange(port, request)
        assert status_of(answer) == 431
        assert b"connection: close" in answer.lower()
    # Just under the limits: served.
    fine = b"".join(b"X-Part-%d: " % i + b"c" * 15_000 + b"\r\n" for i in range(4))
    answer = raw_exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fine + b"\r\n"
    )
    assert status_of(answer) == 200 and answer.endswith(b"ok")
    with live.client() as http:
        assert http.get("/healthz").status_code == 200
        assert http.post("/subscribe", data={"email": "fine@example.com"}).status_code == 200


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_a_50_mb_header_stream_gets_431_at_once_without_growing_the_server(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = base_env(
        tmp_path,
        NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}",
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        assert (
            status_of(raw_exchange(port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"))
            == 200
        )
        before = rss_kib(server.pid)
        started = time.monotonic()
        answer, sent = header_flood(port, 50 * 1024 * 1024)
        elapsed = time.monotonic() - started
        assert status_of(answer) == 431
        assert elapsed < 10, elapsed
        assert sent < 50 * 1024 * 1024  # cut off well before the end
        peak = rss_kib(server.pid, "VmHWM")
        assert peak - before < 20 * 1024, (before, peak)  # KiB: no 50 MB buffer, not even once
        assert (
            status_of(raw_exchange(port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"))
            == 200
        )
    finally:
        server.terminate()
        server.wait(15)


def header_flood(port: int, size: int) -> tuple[bytes, int]:
    """One header of ``size`` bytes, streamed; (what the server answered, bytes we got out)."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0
    answer: list[bytes] = []

    def read() -> None:
        answer.append(read_until_closed(conn))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        chunk = b"a" * 65536
        while sent < size:
            conn.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server closed: what we wanted
    reader.join(30)
    conn.close()
    return answer[0] if answer else b"", sent


def trickle(port: int, opening: bytes, drip: bytes, seconds: float = 8.0) -> tuple[bytes, float]:
    """Send ``opening``, then ``drip`` every 0.2 s; (the answer, seconds until the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        started = time.monotonic()
        conn.sendall(opening)
        conn.settimeout(0.2)
        answer = b""
        while time.monotonic() - started < seconds:
            try:
                if drip:
                    conn.sendall(drip)
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        return answer, time.monotonic() - started


def test_a_slow_header_client_is_cut_off(tmp_path: Path) -> None:
    limits = ServerLimits(header_timeout=1.0)
    with running_app(tmp_path, None, server_limits=limits) as live:
        port = port_of(live)
        # Silent after connecting, or trickling a header: cut off after the deadline.
        for opening, drip in ((b"", b""), (b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"a")):
            answer, elapsed = trickle(port, opening, drip)
            assert status_of(answer) == 408
            assert elapsed < 1.0 + 2.0 + 1.5, elapsed  # the deadline, the linger, some slack
        with live.client() as http:
            assert http.get("/healthz").status_code == 200


def test_a_slow_body_is_cut_off(tmp_path: Path) -> None:
    with running_app(
        tmp_path,
        None,
        limits=WebLimits(body_timeout=1.0),
        server_limits=ServerLimits(body_timeout=1.0),
    ) as live:
        port = port_of(live)
        head = (
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            "\r\nContent-Length: 1000\r\n\r\nemail=slow"
        )
        # A body the app reads (sign-up): a 408 page. One it does not read (healthz is GET
        # only: 405 at once): the connection is closed all the same while the client trickles.
        for path, status in (("/subscribe", 408), ("/healthz", 405)):
            answer, elapsed = trickle(port, head.format(path=path).encode(), b"x")
            assert status_of(answer) == status, answer[:300]
            assert elapsed < 1.0 + 1.5, (path, elapsed)
        assert live.status("slow@example.com") is None


# ---------------------------------------------------------------------------------------------
# Confirmation: a page with a button; an old link never brings back an address that left
# ---------------------------------------------------------------------------------------------


def sign_up(live: LiveApp, http: httpx.Client, address: str, mails_before: int) -> str:
    """Sign ``address`` up through the form; the confirmation link of the mail it got."""
    assert http.post("/subscribe", data={"email": address}).status_code == 200
    return confirmation_link(wait_mails(live, mails_before + 1)[-1])


def stop(live: LiveApp, http: httpx.Client, address: str, how: str) -> None:
    subscriber = live.store.find_by_email(address)
    assert subscriber is not None
    if how == "unsubscribed":  # the RFC 8058 one-click POST, as a mail client sends it
        token = live.token(Purpose.UNSUBSCRIBE, address)
        answer = http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
    elif how == "complained":
        assert live.store.mark_complained(subscriber.id)
    else:
        assert live.store.mark_bounced(subscriber.id)
    assert live.status(address) is SubscriberStatus(how)


@pytest.mark.parametrize("how", ["unsubscribed", "complained", "bounced"])
def test_an_old_confirmation_link_never_brings_back_an_address_that_left(
    live: LiveApp, how: str
) -> None:
    address = "leaver@example.com"
    with live.client() as http:
        link = sign_up(live, http, address, 0)
        path = link.removeprefix(live.url)
        page = http.get(path)
        old_form_token = form_token_of(page.text)
        assert confirm_with_button(http, live, link).status_code == 200
        assert live.status(address) is SubscriberStatus.ACTIVE
        stop(live, http, address, how)

        # A link scanner re-reading the old mail, or its owner: nothing changes.
        replay = http.get(path)
        assert replay.status_code == 404, replay.status_code
        assert "/subscribe" in replay.text  # how to get a new link
        posted = http.post(path, data={"form_token": old_form_token}, headers={"Origin": live.url})
        assert posted.status_code == 404
        assert live.status(address) is SubscriberStatus(how)

        # Only a new sign-up, confirmed with its own new link, brings the address back.
        new_link = sign_up(live, http, address, 1)
        assert new_link != link
        assert http.get(path).status_code == 404  # the old link stays dead
        assert live.status(address) is SubscriberStatus(how)
        confirmed = confirm_with_button(http, live, new_link)
        assert confirmed.status_code == 200 and "Abonnement confirmé" in confirmed.text
    assert live.status(address) is SubscriberStatus.ACTIVE


def test_confirming_takes_the_button_and_a_good_link_later_says_already_confirmed(
    live: LiveApp,
) -> None:
    address = "button@example.com"
    with live.client() as http:
        link = sign_up(live, http, address, 0)
        path = link.removeprefix(live.url)
        for _ in range(3):  # scanners fetch links, sometimes more than once
            page = http.get(path)
            assert page.status_code == 200 and "Confirmer l’abonnement" in page.text
        assert live.status(address) is SubscriberStatus.PENDING
        token = form_token_of(page.text)
        for data, headers in (
            ({}, {}),  # a scanner that also posts: no form token
            ({"form_token": "forged"}, {}),
            ({"form_token": token}, {"Origin": "https://evil.example"}),  # cross-site
        ):
            refused = http.post(path, data=data, headers=headers)
            assert refused.status_code == 403, refused.status_code
        assert live.status(address) is SubscriberStatus.PENDING

        assert confirm_with_button(http, live, link).status_code == 200
        subscriber = live.store.find_by_email(address)
        assert subscriber is not None and subscriber.status is SubscriberStatus.ACTIVE
        assert subscriber.consent_detail == "127.0.0.1"
        # The same link once more (the owner clicks again): a friendly answer, not an error.
        again = http.get(path)
        assert again.status_code == 200 and "Abonnement déjà confirmé" in again.text
        pressed_again = http.post(path, data={"form_token": token}, headers={"Origin": live.url})
        assert pressed_again.status_code == 200 and "déjà confirmé" in pressed_again.text
    after = live.store.find_by_email(address)
    assert after is not None and after.consent_at == subscriber.consent_at  # not re-recorded


def test_a_client_hanging_up_mid_body_is_not_an_error(live: LiveApp) -> None:
    with log_records() as logs:
        with socket.create_connection(("127.0.0.1", port_of(live)), timeout=10) as conn:
            conn.sendall(
                b"POST /subscribe HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\nemail=gone%40example.com"
            )
            time.sleep(0.3)
        time.sleep(0.5)
        with live.client() as http:
            assert http.get("/healthz").status_code == 200
    assert logs.tracebacks() == [] and logs.errors() == []
    assert live.status("gone@example.com") is None
