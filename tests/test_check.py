"""`newsletter check` (issue 11): every problem of a set-up in one run, each on its own line,
exit 0 when all is well and 1 otherwise; it sends nothing and changes nothing. `check --settings`
shows each setting's value and origin with the secrets masked. Through the real CLI."""

from __future__ import annotations

from pathlib import Path

from newsletter.adapters.store import open_store
from tests.support import SAMPLE_FEED, TEST_SECRET, free_port, invoke_cli, run_cli, send_env


def _lines(stdout: str, level: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(f"{level}:")]


def test_a_good_set_up_passes_and_nothing_is_sent_or_created(tmp_path: Path, smtp_server) -> None:
    env = send_env(
        tmp_path, smtp_server.port, NEWSLETTER_EDITORS="redaction@exemple.ma,chef@exemple.ma"
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
