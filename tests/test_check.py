"""`newsletter check` (issue 11): every problem of a set-up in one run, each on its own line,
exit 0 when all is well and 1 otherwise; it sends nothing and changes nothing. `check --settings`
shows each setting's value and origin with the secrets masked. Through the real CLI."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter.adapters.dkim import dns_record
from newsletter.adapters.store import open_store
from testkit.dns_server import DnsServer, dns_server
from tests.support import SAMPLE_FEED, TEST_SECRET, free_port, invoke_cli, run_cli, send_env

SPF = "v=spf1 mx a ~all"
DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc@exemple.ma"


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    """The DNS of exemple.ma: SPF and DMARC published, no DKIM key."""
    with dns_server(
        {"exemple.ma": [SPF, "google-site-verification=abc"], "_dmarc.exemple.ma": [DMARC]}
    ) as server:
        yield server


def _lines(stdout: str, level: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(f"{level}:")]


def test_a_good_set_up_passes_and_nothing_is_sent_or_created(
    tmp_path: Path, smtp_server, dns: DnsServer
) -> None:
    env = send_env(
        tmp_path,
        smtp_server.port,
        NEWSLETTER_EDITORS="redaction@exemple.ma,chef@exemple.ma",
        NEWSLETTER_TEST_DNS_SERVER=dns.env_value,
    )
    database = tmp_path / "newsletter.db"
    proc = run_cli("check", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _lines(proc.stdout, "problem") == []
    ok = "\n".join(_lines(proc.stdout, "ok"))
    assert "settings: everything send and run need is set" in ok
    assert f"database: sqlite:///{database}: {database} is created at first use" in ok
    assert f"relay: 127.0.0.1:{smtp_server.port}" in ok and "(no mail sent)" in ok
    assert f"source {SAMPLE_FEED}: 16 read; " in ok
    assert "articles in the edition of" in ok
    assert "editors: 2 addresses" in ok
    assert f"SPF: exemple.ma: {SPF}" in ok
    assert f"DMARC: _dmarc.exemple.ma: {DMARC}" in ok
    # No DKIM key set: worth a warning (the relay may sign), not a failure.
    assert any(
        line.startswith("warning: DKIM: messages are not signed")
        for line in proc.stdout.splitlines()
    )
    # No publisher or postal address: the footer lacks them, worth a warning.
    assert (
        "warning: publisher: NEWSLETTER_PUBLISHER and NEWSLETTER_POSTAL_ADDRESS not set"
        in proc.stdout
    )
    # Nothing listens on the base URL: worth a warning, not a failure.
    assert any(line.startswith("warning: base URL") for line in proc.stdout.splitlines())
    assert proc.stdout.rstrip().endswith("all good: the daily send has what it needs")
    assert not database.exists()  # check creates no database
    assert smtp_server.log() == []  # and sends no mail:
    assert smtp_server.commands() == ["QUIT"]  # the session ended before any MAIL


def test_every_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    database = tmp_path / "existing.db"
    open_store(f"sqlite:///{database}").close()
    (tmp_path / ".env").write_text("NEWSLETTER_SENDTIME=18:00\n")
    env = send_env(
        tmp_path,
        free_port(),  # nothing listens there
        NEWSLETTER_DATABASE_URL=f"sqlite:///file:{database}?mode=ro&uri=true",
        NEWSLETTER_SOURCES=f"{SAMPLE_FEED},{tmp_path / 'gone.xml'}",
        NEWSLETTER_EDITORS="redaction@exemple.ma,pas-une-adresse",
        NEWSLETTER_FROM="",
        NEWSLETTER_PUBLISHER="Le Journal Africain SA",
        NEWSLETTER_POSTAL_ADDRESS="12 avenue Hassan II, Rabat",
    )
    proc = invoke_cli("check", env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    problems = _lines(proc.stdout, "problem")
    text = "\n".join(problems)
    assert (
        "NEWSLETTER_SENDTIME in .env is not a setting (did you mean NEWSLETTER_SEND_TIME?" in text
    )
    assert "settings: NEWSLETTER_FROM is not set" in text
    assert "database: " in text and "readonly" in text
    assert "relay: 127.0.0.1:" in text
    assert f"source {tmp_path / 'gone.xml'}: cannot be read: file not found" in text
    assert "editors: NEWSLETTER_EDITORS: 'pas-une-adresse' is not a valid email address" in text
    assert len(problems) == 6, proc.stdout
    assert proc.stdout.rstrip().endswith(
        "6 problems found: the daily send would fail or go out wrong"
    )
    assert "ok:      publisher: Le Journal Africain SA, 12 avenue Hassan II, Rabat" in proc.stdout
    # The good source is still counted.
    assert any(
        line.startswith("ok:") and f" source {SAMPLE_FEED}: 16 read" in line
        for line in proc.stdout.splitlines()
    )


def test_malformed_settings_are_all_listed_and_the_rest_waits_for_them(tmp_path: Path) -> None:
    env = send_env(tmp_path, 9, NEWSLETTER_TIMEZONE="Mars/Olympus", NEWSLETTER_SMTP_RATE="vite")
    proc = invoke_cli("check", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    problems = _lines(proc.stdout, "problem")
    assert len(problems) == 2 and "NEWSLETTER_TIMEZONE" in problems[0]
    assert "NEWSLETTER_SMTP_RATE" in problems[1]
    assert "the other checks need valid settings" in proc.stdout


@pytest.mark.parametrize("command", [("check",), ("send", "--dry-run")])
def test_a_logo_that_is_not_https_is_refused_naming_the_setting(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    env = send_env(tmp_path, 9, NEWSLETTER_LOGO_URL="http://exemple.ma/logo.png")
    proc = invoke_cli(*command, env=env, cwd=tmp_path)
    assert proc.returncode == (1 if command == ("check",) else 2)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "LOGO" in line]
    assert (
        len(lines) == 1
        and "NEWSLETTER_LOGO_URL='http://exemple.ma/logo.png' is not an https URL" in lines[0]
    )
    assert "Traceback" not in proc.stdout + proc.stderr


def test_check_settings_shows_each_origin_and_masks_the_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "NEWSLETTER_TITLE=Depuis le fichier\nNEWSLETTER_ADMIN_PASSWORD=motdepasse-du-fichier\n"
    )
    env = send_env(
        tmp_path,
        2525,
        NEWSLETTER_SMTP_PASSWORD="hunter2-relay",
        NEWSLETTER_DATABASE_URL="postgresql+psycopg://lettre:dbsecret@db.example.com/lettre",
        NEWSLETTER_SMTP_HOTS="x",
    )
    proc = invoke_cli("check", "--settings", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for secret in ("hunter2-relay", "dbsecret", "motdepasse-du-fichier", TEST_SECRET):
        assert secret not in out
    rows = {
        line.split()[0]: line.split(None, 2)[1:]
        for line in out.splitlines()[1:]
        if line.startswith("NEWSLETTER_")
    }
    assert rows["NEWSLETTER_TITLE"] == [".env", "Depuis le fichier"]
    assert rows["NEWSLETTER_ADMIN_PASSWORD"] == [".env", "(set, hidden)"]
    assert rows["NEWSLETTER_SMTP_PASSWORD"] == ["environment", "(set, hidden)"]
    assert rows["NEWSLETTER_SMTP_PORT"] == ["environment", "2525"]
    assert rows["NEWSLETTER_LOCALE"] == ["default", "fr"]
    assert rows["NEWSLETTER_DATABASE_URL"][0] == "environment"
    assert "db.example.com" in rows["NEWSLETTER_DATABASE_URL"][1]
    assert "warning: NEWSLETTER_SMTP_HOTS in the environment is not a setting" in out


# ---------------------------------------------------------------------------------------------
# DNS (issue 12): SPF, the DKIM selector's key, DMARC; a missing or wrong record comes with the
# exact record to publish. Against testkit/dns_server.py (no internet here).
# ---------------------------------------------------------------------------------------------


def _dkim_env(
    tmp_path: Path, port: int, key: object, dns: DnsServer, **extra: str
) -> dict[str, str]:
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    values = {
        "NEWSLETTER_DKIM_SELECTOR": "lettre",
        "NEWSLETTER_DKIM_PRIVATE_KEY": str(pem),
        "NEWSLETTER_TEST_DNS_SERVER": dns.env_value,
    }
    return send_env(tmp_path, port, **{**values, **extra})


def _published(stdout: str) -> dict[str, str]:
    """The publish: lines, as name -> TXT value."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("publish:"):
            match = re.fullmatch(r'publish: (\S+) TXT "(.*)"', line)
            assert match, line
            found[match.group(1)] = match.group(2)
    return found


def test_missing_records_are_problems_with_the_records_to_publish_and_those_records_pass(
    tmp_path: Path, smtp_server
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with dns_server({}) as dns:
        env = _dkim_env(tmp_path, smtp_server.port, key, dns)
        proc = run_cli("check", env=env, cwd=tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        problems = "\n".join(_lines(proc.stdout, "problem"))
        assert "SPF: exemple.ma has no SPF record" in problems
        assert "DKIM: no DKIM key at lettre._domainkey.exemple.ma" in problems
        assert "DMARC: exemple.ma has no DMARC record" in problems
        assert len(_lines(proc.stdout, "problem")) == 3, proc.stdout
        assert proc.stdout.rstrip().endswith(
            "3 problems found: the daily send would fail or go out wrong"
        )
        # Each problem line is followed by its record, in the form a DNS panel takes.
        lines = proc.stdout.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("problem:") and " DKIM: " in line:
                assert lines[index + 1].startswith("publish: lettre._domainkey.exemple.ma TXT ")
        published = _published(proc.stdout)
        assert published == {
            "exemple.ma": "v=spf1 mx a ~all",  # the relay is on this host
            "lettre._domainkey.exemple.ma": dns_record(key),
            "_dmarc.exemple.ma": "v=DMARC1; p=none",
        }
        assert published["lettre._domainkey.exemple.ma"].startswith("v=DKIM1; k=rsa; p=MIIB")

        # Published as printed (the DKIM record is longer than 255 bytes: two TXT strings).
        dns.records.update({name: [value] for name, value in published.items()})
        again = run_cli("check", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        ok = "\n".join(_lines(again.stdout, "ok"))
        assert "SPF: exemple.ma: v=spf1 mx a ~all" in ok
        assert (
            "DKIM: lettre._domainkey.exemple.ma publishes the key of NEWSLETTER_DKIM_PRIVATE_KEY"
            in ok
        )
        assert "DMARC: _dmarc.exemple.ma: v=DMARC1; p=none" in ok
        assert "publish:" not in again.stdout


def test_a_dkim_record_with_another_key_is_a_problem_and_dmarc_is_found_at_the_parent(
    tmp_path: Path, smtp_server
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    other = ed25519.Ed25519PrivateKey.generate()
    records = {
        "info.exemple.ma": ["v=spf1 ip4:192.0.2.25 -all"],
        "lettre._domainkey.info.exemple.ma": [dns_record(other)],
        "_dmarc.exemple.ma": [DMARC],  # the organisational domain's policy covers info.
    }
    with dns_server(records) as dns:
        env = _dkim_env(
            tmp_path,
            smtp_server.port,
            key,
            dns,
            NEWSLETTER_FROM="La Lettre <lettre@info.exemple.ma>",
        )
        proc = invoke_cli("check", env=env, cwd=tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        [problem] = _lines(proc.stdout, "problem")
        assert problem.startswith(
            "problem: DKIM: lettre._domainkey.info.exemple.ma publishes another key"
        )
        assert _published(proc.stdout) == {"lettre._domainkey.info.exemple.ma": dns_record(key)}
        assert dns_record(key).startswith("v=DKIM1; k=ed25519; p=")
        ok = "\n".join(_lines(proc.stdout, "ok"))
        assert "SPF: info.exemple.ma: v=spf1 ip4:192.0.2.25 -all" in ok
        assert "(the policy of exemple.ma covers info.exemple.ma)" in ok

        # The envelope sender's domain, when NEWSLETTER_BOUNCE_ADDRESS is elsewhere, needs SPF too.
        env["NEWSLETTER_BOUNCE_ADDRESS"] = "retours@envoi.exemple.ma"
        proc = invoke_cli("check", env=env, cwd=tmp_path)
        assert "problem: SPF: envoi.exemple.ma has no SPF record" in proc.stdout
        assert _published(proc.stdout)["envoi.exemple.ma"] == "v=spf1 mx a ~all"
        del env["NEWSLETTER_BOUNCE_ADDRESS"]

        # Revoked (empty p=), then two SPF records: each a problem of its own.
        dns.records["lettre._domainkey.info.exemple.ma"] = ["v=DKIM1; k=ed25519; p="]
        dns.records["info.exemple.ma"] = ["v=spf1 mx -all", "v=spf1 a -all"]
        proc = invoke_cli("check", env=env, cwd=tmp_path)
        problems = "\n".join(_lines(proc.stdout, "problem"))
        assert "DKIM: lettre._domainkey.info.exemple.ma revokes its key (empty p=)" in problems
        assert "SPF: info.exemple.ma has 2 SPF records" in problems


def test_a_dns_that_does_not_answer_is_a_warning_within_seconds(
    tmp_path: Path, smtp_server
) -> None:
    with dns_server({}) as dns:
        dns.silent = True
        env = send_env(tmp_path, smtp_server.port, NEWSLETTER_TEST_DNS_SERVER=dns.env_value)
        started = time.monotonic()
        proc = run_cli("check", env=env, cwd=tmp_path, timeout=60)
        elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [warning] = [line for line in _lines(proc.stdout, "warning") if " DNS: " in line]
    assert "no DNS answer within 3 s" in warning and "exemple.ma" in warning
    assert not any(" SPF: " in line or " DMARC: " in line for line in proc.stdout.splitlines())
    # One look-up waited for, then the others were not asked: seconds, never a hang.
    assert set(dns.asked) == {"exemple.ma"}
    assert elapsed < 15, elapsed
