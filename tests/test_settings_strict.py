"""Settings are strict and explained (issue 11, problems 1, 3, 5 and 7): a misspelt name is named
with the closest real one, every problem is reported in one run, a weak key is refused with the
command that makes a good one, send and run never mail the bundled sample, and an unquoted comma
in the From display name works. Each case through the real CLI; nothing is recorded by a command
that refused."""

from __future__ import annotations

from email.utils import getaddresses
from pathlib import Path

import pytest

from newsletter.adapters.store import open_store
from newsletter.config import (
    KEYGEN_COMMAND,
    ConfigProblems,
    Purpose,
    load_settings,
    unknown_settings,
)
from newsletter.domain.addresses import InvalidMailbox, parse_mailbox
from tests.daemon_support import DAY
from tests.factories import import_addresses, readers
from tests.support import SAMPLE_DATE, base_env, invoke_cli, run_cli, send_env


def _nothing_recorded(env: dict[str, str]) -> None:
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        assert store.edition_record(DAY) is None
        assert store.frozen_articles(DAY) is None


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_misspelt_setting_in_dotenv_is_named_with_the_real_one_and_send_refuses(
    tmp_path: Path, smtp_server
) -> None:
    env = send_env(tmp_path, smtp_server.port)
    (tmp_path / ".env").write_text("NEWSLETTER_SENDTIME=18:00\nNEWSLETTER_SMTP_HOTS=x\n")
    import_addresses(tmp_path, env, readers(2))

    sent = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert sent.returncode == 2, sent.stdout + sent.stderr
    errors = _errors(sent.stderr)
    assert len(errors) == 2, sent.stderr
    assert "NEWSLETTER_SENDTIME in .env is not a setting" in errors[0]
    assert "did you mean NEWSLETTER_SEND_TIME?" in errors[0]
    assert "did you mean NEWSLETTER_SMTP_HOST?" in errors[1]
    assert smtp_server.recipients() == []
    _nothing_recorded(env)

    # Every other command goes on, with the same words as a warning.
    listed = run_cli("status", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "warning: NEWSLETTER_SENDTIME in .env is not a setting" in listed.stderr
    assert "did you mean NEWSLETTER_SEND_TIME?" in listed.stderr


@pytest.mark.parametrize("command", [["run"], ["serve", "--port", "9"], ["send", "--dry-run"]])
def test_run_serve_and_dry_run_refuse_an_unknown_name_from_the_environment(
    tmp_path: Path, command: list[str]
) -> None:
    env = send_env(tmp_path, 9, NEWSLETTER_BASE_ULR="https://lettre.example.com")
    proc = invoke_cli(*command, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (error,) = _errors(proc.stderr)
    assert "NEWSLETTER_BASE_ULR in the environment is not a setting" in error
    assert "did you mean NEWSLETTER_BASE_URL?" in error


def test_three_missing_settings_are_reported_in_one_run(tmp_path: Path) -> None:
    env = base_env(tmp_path)  # no FROM, BASE_URL or SECRET_KEY
    proc = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    errors = _errors(proc.stderr)
    assert [e.split(" is ")[0] for e in errors] == [
        "error: NEWSLETTER_FROM",
        "error: NEWSLETTER_BASE_URL",
        "error: NEWSLETTER_SECRET_KEY",
    ], proc.stderr
    assert KEYGEN_COMMAND in errors[2]
    _nothing_recorded(env)


def test_malformed_and_missing_settings_come_together(tmp_path: Path) -> None:
    env = base_env(tmp_path, NEWSLETTER_SEND_TIME="25:00", NEWSLETTER_SMTP_PORT="x")
    proc = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    errors = _errors(proc.stderr)
    assert len(errors) == 5, proc.stderr
    assert "NEWSLETTER_SEND_TIME='25:00' is not a time of day" in errors[0]
    assert "NEWSLETTER_SMTP_PORT='x' is not a number (expected a whole number >= 1)" in errors[1]
    # A command with no requirement still reports every malformed one.
    listed = invoke_cli("status", env=env, cwd=tmp_path)
    assert listed.returncode == 2 and len(_errors(listed.stderr)) == 2


@pytest.mark.parametrize("command", [["send", "--date", SAMPLE_DATE], ["serve", "--port", "9"]])
def test_a_weak_secret_key_is_refused_with_the_command_that_makes_a_good_one(
    tmp_path: Path, command: list[str]
) -> None:
    env = send_env(tmp_path, 9, NEWSLETTER_SECRET_KEY="abc")
    proc = run_cli(*command, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    (error,) = _errors(proc.stderr)
    assert "NEWSLETTER_SECRET_KEY is too short (3 characters; at least 32)" in error
    assert KEYGEN_COMMAND in error
    assert "abc" not in error.replace("characters", "")  # the key itself is never printed
    _nothing_recorded(env)


def test_the_keygen_command_makes_a_key_that_is_accepted(tmp_path: Path) -> None:
    import subprocess

    key = subprocess.run(KEYGEN_COMMAND, shell=True, capture_output=True, text=True, check=True)
    env = send_env(tmp_path, 9, NEWSLETTER_SECRET_KEY=key.stdout.strip())
    settings = load_settings(env_file=tmp_path / "absent.env", environ=env, purpose=Purpose.SEND)
    assert len(settings.secret_key) >= 32


@pytest.mark.parametrize(
    "command", [["send", "--date", SAMPLE_DATE], ["run"], ["send", "--test", "r@exemple.ma"]]
)
def test_send_and_run_refuse_an_empty_sources_setting(
    tmp_path: Path, smtp_server, command: list[str]
) -> None:
    env = send_env(tmp_path, smtp_server.port, NEWSLETTER_SOURCES="")
    import_addresses(tmp_path, env, readers(2))
    proc = run_cli(*command, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (error,) = _errors(proc.stderr)
    assert "NEWSLETTER_SOURCES is empty" in error
    assert smtp_server.recipients() == []
    _nothing_recorded(env)


def test_preview_still_uses_the_bundled_sample(tmp_path: Path) -> None:
    env = base_env(tmp_path, NEWSLETTER_SOURCES="")
    proc = invoke_cli(
        "preview", "--date", SAMPLE_DATE, "--out", str(tmp_path / "out"), env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "digest.html").is_file()


def test_an_unquoted_comma_in_the_from_name_works(tmp_path: Path, smtp_server) -> None:
    env = send_env(
        tmp_path, smtp_server.port, NEWSLETTER_FROM="Le Journal Africain, Rabat <lettre@exemple.ma>"
    )
    import_addresses(tmp_path, env, readers(1))
    dry = run_cli("send", "--dry-run", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    sent = run_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    (message,) = smtp_server.messages()
    assert getaddresses([message["From"]]) == [("Le Journal Africain, Rabat", "lettre@exemple.ma")]
    assert message["From"].startswith('"Le Journal Africain, Rabat"')
    envelope = smtp_server.log()[-1]
    # The envelope sender is the VERP bounce address at the From domain (issue 12).
    assert envelope["mail_from"].startswith("bounces+d20260127-")
    assert envelope["mail_from"].endswith("@exemple.ma")


def test_dry_run_checks_from_as_send_does(tmp_path: Path) -> None:
    env = send_env(tmp_path, 9, NEWSLETTER_FROM="Le Journal Africain")
    proc = run_cli("send", "--dry-run", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    (error,) = _errors(proc.stderr)
    assert "NEWSLETTER_FROM" in error and "has no usable address" in error
    _nothing_recorded(env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Le Journal Africain, Rabat <lettre@exemple.ma>",
            ("Le Journal Africain, Rabat", "lettre@exemple.ma"),
        ),
        ('"Le Journal, Rabat" <lettre@exemple.ma>', ("Le Journal, Rabat", "lettre@exemple.ma")),
        (
            "L’Observateur africain <lettre@exemple.ma>",
            ("L’Observateur africain", "lettre@exemple.ma"),
        ),
        ("lettre@exemple.ma", ("", "lettre@exemple.ma")),
        ("<lettre@exemple.ma>", ("", "lettre@exemple.ma")),
    ],
)
def test_parse_mailbox(text: str, expected: tuple[str, str]) -> None:
    assert parse_mailbox(text) == expected


@pytest.mark.parametrize(
    "text", ["Le Journal", "a, b@c.d", "Nom <a b@c.d>", "Nom <>", "Nom <a@>", "x <y@z> <w@v>"]
)
def test_parse_mailbox_refuses(text: str) -> None:
    with pytest.raises(InvalidMailbox):
        parse_mailbox(text)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("NEWSLETTER_SENDTIME", "NEWSLETTER_SEND_TIME"),
        ("NEWSLETTER_SMTP_HOTS", "NEWSLETTER_SMTP_HOST"),
        ("NEWSLETTER_SECRETKEY", "NEWSLETTER_SECRET_KEY"),
        ("NEWSLETTER_TIME_ZONE", "NEWSLETTER_TIMEZONE"),
        ("NEWSLETTER_SOURCE", "NEWSLETTER_SOURCES"),
        ("NEWSLETTER_XYZZY_PLUGH", None),
    ],
)
def test_the_closest_setting_is_suggested(
    tmp_path: Path, name: str, suggestion: str | None
) -> None:
    (unknown,) = unknown_settings(env_file=tmp_path / "absent.env", environ={name: "1"})
    assert unknown.suggestion == suggestion


def test_private_test_hooks_are_not_reported(tmp_path: Path) -> None:
    environ = {"NEWSLETTER_TEST_BACKOFF_SCALE": "0.1", "OTHER_THING": "x"}
    assert unknown_settings(env_file=tmp_path / "absent.env", environ=environ) == ()


def test_every_problem_is_its_own_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblems) as caught:
        load_settings(
            env_file=tmp_path / "absent.env",
            environ={"NEWSLETTER_TIMEZONE": "Mars/Olympus", "NEWSLETTER_LOCALE": "xx-nowhere"},
        )
    lines = caught.value.lines()
    assert len(lines) == 2 and all("\n" not in line for line in lines)
