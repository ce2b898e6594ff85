"""Service: the demo. The whole product on the bundled sample, on this machine only.

Imports the sample subscribers into a fresh database under ``demo-out/``, writes the preview of
the sample edition, starts a real SMTP server (aiosmtpd) on a free loopback port, sends the
edition through it with the ordinary delivery code, and leaves every received message as a .eml
file to open in a mail client.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from newsletter.adapters.csvfile import open_csv
from newsletter.adapters.resources import SAMPLE_EDITION_DATE, sample_dir
from newsletter.adapters.store import open_store
from newsletter.config import Settings
from newsletter.domain import SendReport
from newsletter.services.compose import compose_edition
from newsletter.services.delivery import send_edition
from newsletter.services.preview import PreviewFiles, write_preview
from newsletter.services.subscribers import import_csv

DEMO_SECRET = "demo-only-secret-never-use-in-production"


class MaildirHandler:
    """aiosmtpd handler: each message becomes NNN-recipient.eml in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        rcpt = envelope.rcpt_tos[0].replace("@", "_at_")
        path = self.folder / f"{self.count:03d}-{rcpt}.eml"
        path.write_bytes(envelope.original_content or b"")
        return "250 OK"


@contextmanager
def local_smtp_server(folder: Path) -> Iterator[int]:
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:  # aiosmtpd's Controller cannot take port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(MaildirHandler(folder), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass(frozen=True, slots=True)
class DemoResult:
    out: Path
    imported: str
    preview: PreviewFiles
    report: SendReport
    mail_dir: Path


def demo_settings(settings: Settings, out: Path, smtp_port: int) -> Settings:
    return replace(
        settings,
        sources=(),
        database_url=f"sqlite:///{out / 'demo.db'}",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_security="none",
        smtp_username="",
        smtp_password="",
        from_address=settings.from_address or "L’Observateur africain <lettre@example.com>",
        # The footer as a real site's would be: the publisher and its address (fictional).
        publisher=settings.publisher or "L’Observateur africain SA",
        postal_address=settings.postal_address or "12 avenue Hassan II, 10000 Rabat, Maroc",
        base_url="http://localhost:8000",
        secret_key=DEMO_SECRET,
    )


def run_demo(settings: Settings, out: Path) -> DemoResult:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    day = date.fromisoformat(SAMPLE_EDITION_DATE)
    mail_dir = out / "mail"
    with local_smtp_server(mail_dir) as port:
        demo = demo_settings(settings, out, port)
        with open_store(demo.database_url) as store:
            sample_list = sample_dir() / "subscribers.csv"
            with open_csv(sample_list) as stream:
                report_import = import_csv(store, stream, sample_list.name)
            preview = write_preview(demo, compose_edition(demo, day), out / "preview")
            report = send_edition(store, demo, day)
    return DemoResult(out, report_import.summary(), preview, report, mail_dir)
