"""What the timetable and daemon tests share: the sample day, its zone and in-process settings."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from newsletter.config import Settings, load_settings
from tests.factories import sqlite_url

CASABLANCA = ZoneInfo("Africa/Casablanca")
DAY = date(2026, 1, 27)


def local(text: str, zone: ZoneInfo = CASABLANCA) -> datetime:
    """A local wall-clock time in ``zone`` as the UTC instant the daemon's clock returns."""
    return datetime.fromisoformat(text).replace(tzinfo=zone).astimezone(UTC)


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    return load_settings(
        env_file=tmp_path / "absent.env",
        environ={
            "NEWSLETTER_DATABASE_URL": sqlite_url(tmp_path),
            "NEWSLETTER_TIMEZONE": "Africa/Casablanca",
            "NEWSLETTER_SEND_TIME": "07:00",
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": "9",  # discard: nothing listens; these paths never send
            "NEWSLETTER_SMTP_SECURITY": "none",
            "NEWSLETTER_FROM": "La Lettre <lettre@exemple.ma>",
            "NEWSLETTER_BASE_URL": "http://localhost:8000",
            "NEWSLETTER_SECRET_KEY": "test-secret-key-0123456789abcdef",
            **extra,
        },
    )
