"""Settings: .env under the environment, validation, and the documented table kept in sync."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import time
from pathlib import Path

import pytest

from newsletter.config import SETTINGS, ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults(tmp_path):
    s = load_settings(env_file=tmp_path / "absent.env", environ={})
    assert s.timezone.key == "Africa/Casablanca"
    assert s.send_time == time(7, 0)
    assert s.smtp_security == "starttls" and s.smtp_port == 587
    assert s.database_url == "sqlite:///subscribers/newsletter.db"


def test_environment_wins_over_dotenv(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("NEWSLETTER_SEND_TIME=18:00\nNEWSLETTER_TITLE=Depuis le fichier\n")
    s = load_settings(env_file=env_file, environ={"NEWSLETTER_TITLE": "Depuis l'environnement"})
    assert s.send_time == time(18, 0)
    assert s.title == "Depuis l'environnement"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("NEWSLETTER_TIMEZONE", "Mars/Olympus", "IANA"),
        ("NEWSLETTER_SEND_TIME", "7h", "HH:MM"),
        ("NEWSLETTER_SEND_TIME", "24:00", "HH:MM"),
        ("NEWSLETTER_SMTP_SECURITY", "ssl", "none, starttls, tls"),
        ("NEWSLETTER_SMTP_CONNECTIONS", "zero", "whole number"),
        ("NEWSLETTER_BASE_URL", "http://news.example.com", "https"),
        ("NEWSLETTER_BASE_URL", "https://[broken", "https"),
        ("NEWSLETTER_FROM", "Rédaction <r@exemple.sn>\r\nBcc: x@y", "line break"),
        ("NEWSLETTER_FROM", "Rédaction\u2028<r@exemple.sn>", "line break"),
        ("NEWSLETTER_REPLY_TO", "r@exemple.sn\x00", "control character"),
        ("NEWSLETTER_BOUNCE_IMAP_URL", "imap://lettre@mail.example.com/INBOX", "over TLS"),
        ("NEWSLETTER_BOUNCE_IMAP_URL", "imaps://u:pw@mail.example.com/INBOX", "IMAP_PASSWORD"),
        ("NEWSLETTER_BOUNCE_IMAP_URL", "https://mail.example.com/", "imaps://"),
        ("NEWSLETTER_SOFT_BOUNCE_LIMIT", "0", "whole number >= 1"),
    ],
)
def test_bad_settings_name_the_setting_and_the_form(tmp_path, name, value, needle):
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=tmp_path / "absent.env", environ={name: value})
    assert name in str(caught.value) and needle in str(caught.value)
    assert caught.value.exit_code == 2


def test_bad_setting_exits_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_TIMEZONE"] = "Nowhere/Land"
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "preview", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "NEWSLETTER_TIMEZONE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_repr_never_shows_secrets(tmp_path):
    s = load_settings(
        env_file=tmp_path / "absent.env",
        environ={
            "NEWSLETTER_SECRET_KEY": "s3cr3t-value",
            "NEWSLETTER_SMTP_PASSWORD": "hunter2",
            "NEWSLETTER_DATABASE_URL": "postgresql+psycopg://u:dbpass@h/db",
        },
    )
    assert "s3cr3t-value" not in repr(s) and "hunter2" not in repr(s) and "dbpass" not in repr(s)


def test_env_example_lists_every_setting_with_its_default():
    text = (ROOT / ".env.example").read_text()
    for doc in SETTINGS:
        assert re.search(rf"^#?\s*{doc.name}={re.escape(doc.default)}$", text, re.M), doc.name


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [doc.name for doc in SETTINGS if f"`{doc.name}`" not in readme]
    assert not missing
