"""The database password never reaches the terminal, whatever is wrong with the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import SAMPLE_DATE, free_port, invoke_cli, run_cli, send_env

PASSWORD = "Pw-9f3kQz7x"

URLS = {
    "driver missing": f"postgresql+pg8000://newsletter:{PASSWORD}@db.example/news",
    "unknown dialect": f"nosuchdb://newsletter:{PASSWORD}@db.example/news",
    "unsupported dialect": f"mysql://newsletter:{PASSWORD}@db.example/news",
    "host unreachable": f"postgresql+psycopg://newsletter:{PASSWORD}@127.0.0.1:1/news",
    "not a URL": f"newsletter:{PASSWORD}@db.example/news",
    "@ in the password": f"postgresql+psycopg://newsletter:{PASSWORD}@x@127.0.0.1:1/news",
}


@pytest.mark.parametrize("url", URLS.values(), ids=URLS.keys())
def test_no_command_prints_the_database_password(tmp_path: Path, url: str) -> None:
    env = send_env(tmp_path, free_port(), NEWSLETTER_DATABASE_URL=url)
    commands = [
        ("subscribers", "list"),
        ("send", "--date", SAMPLE_DATE),
        ("serve", "--port", str(free_port())),
    ]
    # One URL in real processes (what the interpreter itself would print), the rest in this
    # process through click's runner, which reports an escaped exception the same way.
    run = run_cli if url == next(iter(URLS.values())) else invoke_cli
    for command in commands:
        proc = run(*command, env=env, cwd=tmp_path, timeout=60)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, (command, output)
        assert "Traceback" not in output, (command, output)
        assert PASSWORD not in output and PASSWORD[:6] not in output, (command, output)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "NEWSLETTER_DATABASE_URL" in errors[0], (command, output)
        assert proc.stdout == "", (command, output)  # nothing half-printed before the error
