"""Addresses with a non-ASCII local part (élodie@exemple.ma): taken by add, import and sign-up
only when the relay offers SMTPUTF8 (asked once, one EHLO and no MAIL), and then sent with it.

Sending itself (SMTPUTF8 on MAIL, the UTF-8 To) is in test_send.py.
"""

from __future__ import annotations

import email.policy
import time
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path

from newsletter.adapters.smtp import RelayUnreachable, SmtpConfig, Smtputf8Gate
from newsletter.adapters.store import open_store
from tests.support import SmtpServer, free_port, run_cli, send_env
from tests.web_support import running_app

ELODIE = "élodie@exemple.ma"


def listed(env: dict[str, str]) -> list[str]:
    with open_store(env["NEWSLETTER_DATABASE_URL"]) as store:
        return sorted(s.email for s in store.iter_subscribers())


def test_add_refuses_it_when_the_relay_does_not_offer_smtputf8(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
):
    relay = smtp_factory("--no-smtputf8")
    env = send_env(tmp_path, relay.port)

    refused = run_cli("subscribers", "add", ELODIE, env=env, cwd=tmp_path)

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        f"error: {ELODIE} cannot be added: a non-ASCII local part needs SMTPUTF8, which the "
        f"relay 127.0.0.1:{relay.port} does not offer (enable it on the relay, e.g. Postfix "
        "smtputf8_enable = yes, or use the ASCII address the owner also has)\n"
    )
    assert listed(env) == []
    assert relay.commands() == ["QUIT"]  # asked with EHLO alone: no MAIL, nothing sent

    plain = run_cli("subscribers", "add", "elodie@exemple.ma", env=env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert relay.commands() == ["QUIT"]  # an ASCII address never asks the relay
    assert listed(env) == ["elodie@exemple.ma"]


def test_import_rejects_only_those_rows_and_asks_the_relay_once(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
):
    relay = smtp_factory("--no-smtputf8")
    env = send_env(tmp_path, relay.port)
    csv = tmp_path / "list.csv"
    csv.write_text(
        "email;status\n"
        "plain@exemple.ma;\n"
        f"{ELODIE};\n"
        "aïcha@exemple.ma;\n"
        "zoé@exemple.ma;unsubscribed\n",  # a stop is recorded whatever the relay
        encoding="utf-8",
    )

    proc = run_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path)

    assert proc.returncode == 1
    reason = f"a non-ASCII local part needs SMTPUTF8, which the relay 127.0.0.1:{relay.port}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"line 3: '{ELODIE}': {reason}")
    assert lines[1].startswith(f"line 4: 'aïcha@exemple.ma': {reason}")
    assert relay.commands() == ["QUIT"]
    assert listed(env) == ["plain@exemple.ma", "zoé@exemple.ma"]


def test_a_relay_offering_smtputf8_lets_add_import_and_sign_up_take_it(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
):
    relay = smtp_factory()  # aiosmtpd offers SMTPUTF8
    env = send_env(tmp_path, relay.port)
    added = run_cli("subscribers", "add", ELODIE, env=env, cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"{ELODIE}: added\n"
    csv = tmp_path / "list.csv"
    csv.write_text("email\naïcha@exemple.ma\n", encoding="utf-8")
    imported = run_cli("subscribers", "import", str(csv), env=env, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert listed(env) == ["aïcha@exemple.ma", ELODIE]

    web = tmp_path / "web"
    web.mkdir()
    with running_app(web, relay) as live, live.client() as http:
        answer = http.post("/subscribe", data={"email": "zoé@exemple.ma", "name": "Zoé"})
        assert answer.status_code == 200, answer.text[:300]
        relay.wait_for(1)
    [entry] = relay.log()
    assert entry["rcpt_tos"] == ["zoé@exemple.ma"] and entry["smtputf8"] is True
    raw = (relay.out / entry["file"]).read_bytes()
    confirmation = message_from_bytes(raw, policy=email.policy.default)
    assert confirmation["To"] == "zoé@exemple.ma"
    assert b"\r\nTo: zo\xc3\xa9@exemple.ma\r\n" in b"\r\n" + raw  # UTF-8 as is, not encoded words


def test_sign_up_refuses_it_when_the_relay_does_not_offer_smtputf8(
    tmp_path: Path, smtp_factory: Callable[..., SmtpServer]
):
    relay = smtp_factory("--no-smtputf8")
    with running_app(tmp_path, relay) as live, live.client() as http:
        answer = http.post("/subscribe", data={"email": ELODIE})
        assert answer.status_code == 400
        assert "non-ASCII characters before the @ (SMTPUTF8)" in answer.text
        assert str(relay.port) not in answer.text  # the relay's name stays in the log
        assert live.status(ELODIE) is None
        ascii_answer = http.post("/subscribe", data={"email": "elodie@exemple.ma"})
        assert ascii_answer.status_code == 200
        assert live.status("elodie@exemple.ma") is not None


def test_an_unreachable_relay_refuses_it_for_a_short_while(tmp_path: Path):
    config = SmtpConfig("127.0.0.1", free_port(), "none", connect_timeout=2)
    asked: list[int] = []
    answers: list[object] = [
        RelayUnreachable("x", reason="connection refused"),
        True,
    ]

    def ask(_config: SmtpConfig) -> bool:
        asked.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)

    gate = Smtputf8Gate(config, retry=0.2, ask=ask)
    reason = gate(ELODIE)
    assert reason is not None
    assert f"the relay 127.0.0.1:{config.port} cannot be asked now (connection refused)" in reason
    assert gate("aicha@exemple.ma") is None and len(asked) == 1
    assert gate(ELODIE) == reason and len(asked) == 1  # the failure is kept for `retry`
    time.sleep(0.25)
    assert gate(ELODIE) is None and len(asked) == 2
    assert gate("zoé@exemple.ma") is None and len(asked) == 2  # remembered


def test_the_real_relay_question_says_connection_refused(tmp_path: Path):
    gate = Smtputf8Gate(SmtpConfig("127.0.0.1", free_port(), "none", connect_timeout=2))
    reason = gate(ELODIE)
    assert reason is not None and "cannot be asked now (connection refused)" in reason
