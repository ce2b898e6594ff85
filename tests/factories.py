"""Small helpers that build subscribers, stores and CSV files for the subscriber-list tests."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from newsletter.adapters.store import NewSubscriber, Store, open_store
from newsletter.domain import ConsentSource, SubscriberStatus
from newsletter.domain.addresses import normalise_address


class FakeClock:
    """A clock the test moves by hand, so timestamps can be asserted exactly."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 27, 7, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def sqlite_url(tmp_path: Path, name: str = "newsletter.db") -> str:
    return f"sqlite:///{tmp_path / 'db' / name}"


def make_store(
    tmp_path: Path, clock: FakeClock | None = None, name: str = "newsletter.db"
) -> Store:
    return open_store(sqlite_url(tmp_path, name), clock or FakeClock())


def new_subscriber(
    email: str,
    *,
    name: str = "",
    categories: Sequence[str] = (),
    locale: str = "",
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    source: ConsentSource = ConsentSource.CLI,
    detail: str = "",
) -> NewSubscriber:
    return NewSubscriber(
        address=normalise_address(email),
        name=name,
        locale=locale,
        categories=tuple(categories),
        status=status,
        consent_source=source,
        consent_detail=detail,
    )


def csv_text(
    rows: Sequence[Sequence[str]], *, delimiter: str = ",", lineterminator: str = "\r\n"
) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=lineterminator).writerows(rows)
    return out.getvalue()


def write_file(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# -- the delivery tests: a list of readers imported through the real CLI, the ledger's counts -----


def readers(n: int) -> list[str]:
    return [f"lecteur{i}@exemple.ma" for i in range(n)]


def import_addresses(tmp_path: Path, env: dict[str, str], addresses: list[str]) -> None:
    """Import ``addresses`` with `newsletter subscribers import`, as an operator would (the
    command in this process: the tests that use it are about the send that follows)."""
    from tests.support import invoke_cli

    csv_file = tmp_path / "subs.csv"
    csv_file.write_text("email;name\n" + "\n".join(f"{a};Lecteur" for a in addresses) + "\n")
    proc = invoke_cli("subscribers", "import", str(csv_file), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def ledger(env: dict[str, str], day: str = "2026-01-27") -> dict[str, int]:
    """How many rows of edition ``day`` (default: the sample's) are in each delivery status."""
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        return store.delivery_counts(date.fromisoformat(day))
