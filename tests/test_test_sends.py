"""Editors' test sends are unmistakable (issue 11, problem 6): each carries its own Message-ID
(a mailbox drops a second message whose Message-ID it already has) and "[TEST]" in its Subject."""

from __future__ import annotations

from email.header import decode_header, make_header
from pathlib import Path

from tests.factories import import_addresses, readers
from tests.support import SAMPLE_DATE, invoke_cli, send_env


def test_two_test_sends_are_two_messages_marked_test_with_their_own_message_ids(
    tmp_path: Path, smtp_server
) -> None:
    env = send_env(tmp_path, smtp_server.port)
    import_addresses(tmp_path, env, readers(1))
    for _ in range(2):
        proc = invoke_cli(
            "send",
            "--date",
            SAMPLE_DATE,
            "--test",
            "editor@exemple.ma",
            "--test",
            "chef@exemple.ma",
            env=env,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
    tests = smtp_server.messages()
    assert len(tests) == 4
    ids = [m["Message-ID"] for m in tests]
    assert len(set(ids)) == 4, ids  # per send and per address
    assert all(".test-" in i for i in ids)
    for message in tests:
        subject = str(make_header(decode_header(message["Subject"])))
        assert subject.startswith("[TEST] "), subject

    real = invoke_cli("send", "--date", SAMPLE_DATE, env=env, cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    [delivered] = smtp_server.messages()[4:]
    assert ".test-" not in delivered["Message-ID"] and delivered["Message-ID"] not in ids
    assert not str(make_header(decode_header(delivered["Subject"]))).startswith("[TEST]")
