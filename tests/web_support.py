"""The web app over real HTTP, for test_web, test_web_hardening and test_browser.

``running_app`` serves create_app(settings) with uvicorn on a free port, in a thread, with the
configuration `newsletter serve` uses; the confirmation emails go through the aiosmtpd process.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import httpx
import uvicorn

from newsletter.adapters.links import Links
from newsletter.adapters.store import NewSubscriber, Store, open_store
from newsletter.adapters.tokens import Purpose, TokenSigner
from newsletter.config import Settings, load_settings
from newsletter.domain import ConsentSource, SubscriberStatus
from newsletter.domain.addresses import normalise_address
from newsletter.domain.ratelimit import Rule
from newsletter.web import WebLimits, create_app
from newsletter.web.server import ServerLimits, server_config
from tests.support import SAMPLE_DATE, TEST_SECRET, SmtpServer, base_env, free_port

ADMIN_PASSWORD = "correct horse battery staple"
SAMPLE_DAY = date.fromisoformat(SAMPLE_DATE)
ROOMY = WebLimits(signups_per_client=Rule(1000, 600.0), failed_logins_per_client=Rule(1000, 600.0))


@dataclass
class LiveApp:
    url: str
    settings: Settings
    store: Store  # a second Store on the same file, as another process would have
    smtp: SmtpServer | None

    @property
    def links(self) -> Links:
        signer = TokenSigner(self.settings.secret_key, self.settings.confirm_days * 86400)
        return Links(self.url, signer, "unsubscribe@example.com")

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30, **kwargs)  # type: ignore[arg-type]

    def add(self, address: str, status: SubscriberStatus = SubscriberStatus.ACTIVE) -> int:
        new = NewSubscriber(
            address=normalise_address(address),
            name="",
            locale="",
            categories=(),
            status=status,
            consent_source=ConsentSource.CLI,
            consent_detail="test",
        )
        return self.store.add(new).id

    def status(self, address: str) -> SubscriberStatus | None:
        found = self.store.find_by_email(normalise_address(address).key)
        return found.status if found else None

    def token(self, purpose: Purpose, address: str) -> str:
        found = self.store.find_by_email(normalise_address(address).key)
        assert found is not None
        return self.links.signer.sign(purpose, found.id, found.email_key)


def app_settings(tmp_path: Path, port: int, smtp: SmtpServer | None, **env: str) -> Settings:
    values = base_env(
        tmp_path,
        NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}",
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        NEWSLETTER_FROM="La Lettre <lettre@example.com>",
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(smtp.port if smtp else 9),
        NEWSLETTER_SMTP_SECURITY="none",
        NEWSLETTER_SMTP_TIMEOUT="5",
        NEWSLETTER_SOURCES="",
        NEWSLETTER_TITLE="La Lettre",
    )
    values.update(env)
    return load_settings(env_file=tmp_path / "absent.env", environ=values)


@contextmanager
def running_app(
    tmp_path: Path,
    smtp: SmtpServer | None,
    *,
    limits: WebLimits | None = ROOMY,
    server_limits: ServerLimits | None = None,
    **env: str,
) -> Iterator[LiveApp]:
    """uvicorn serving create_app(settings) in a thread, on a free port, until the block ends."""
    port = free_port()
    settings = app_settings(tmp_path, port, smtp, **env)
    app = create_app(settings, limits=limits)
    # The configuration `newsletter serve` uses: its protocol, limits and proxy trust.
    config = server_config(
        app, settings, "127.0.0.1", port, limits=server_limits, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    store = open_store(settings.database_url)
    try:
        yield LiveApp(f"http://127.0.0.1:{port}", settings, store, smtp)
    finally:
        store.close()
        server.should_exit = True
        thread.join(15)


def confirmation_link(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(r"https?://\S+/confirm/\S+", body.get_content())
    assert match, body.get_content()
    return match.group(0)


def confirm_with_button(http: httpx.Client, live: LiveApp, link: str) -> httpx.Response:
    """Open a confirmation link and press its button, as a person in a browser does."""
    path = link.removeprefix(live.url)
    page = http.get(path)
    assert page.status_code == 200, page.text[:300]
    token = form_token_of(page.text)
    return http.post(path, data={"form_token": token}, headers={"Origin": live.url})


def mails(live: LiveApp) -> list[EmailMessage]:
    assert live.smtp is not None
    return live.smtp.messages()


def wait_mails(live: LiveApp, count: int) -> list[EmailMessage]:
    assert live.smtp is not None
    live.smtp.wait_for(count, timeout=15)
    return mails(live)


def no_5xx(response: httpx.Response) -> httpx.Response:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    return response


def form_token_of(html: str) -> str:
    match = re.search(r'name="form_token" value="([^"]+)"', html)
    assert match
    return match.group(1)
