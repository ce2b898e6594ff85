"""The package as users get it: the wheel ships its templates, the demo runs, the docs cover it."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from tests.support import ROOT, SAMPLE_DATE, base_env, run_cli


def test_wheel_ships_templates_and_sample_and_works_from_another_folder(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    (wheel,) = wheels.glob("newsletter-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    assert (target / "newsletter" / "templates" / "digest.html").is_file()
    for language in ("fr", "en", "ar"):  # the compiled gettext catalogues
        assert (
            target / "newsletter" / "locale" / language / "LC_MESSAGES" / "newsletter.mo"
        ).is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = base_env(tmp_path, PYTHONPATH=str(target))
    where = subprocess.run(
        [sys.executable, "-c", "import newsletter; print(newsletter.__file__)"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(target))  # the wheel's copy, not the checkout
    proc = run_cli("preview", "--date", SAMPLE_DATE, "--out", "out", env=env, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere / "out" / "digest.html").stat().st_size > 10_000


def test_demo_runs_the_whole_job_on_the_sample(tmp_path):
    proc = run_cli("demo", "--out", "demo", env=base_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    received = sorted((tmp_path / "demo" / "mail").glob("*.eml"))
    assert len(received) == 6  # seven sample subscribers, one of whom had unsubscribed
    assert not any("ancien.lecteur" in p.name for p in received)
    assert "6 sent" in proc.stdout and "demo/mail" in proc.stdout
    assert (tmp_path / "demo" / "preview" / "digest.html").is_file()
    arabic = next(p for p in received if "leila" in p.name)
    msg = email.message_from_bytes(arabic.read_bytes(), policy=email.policy.default)
    html = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html").get_content()
    assert 'dir="rtl"' in html
    # her sections only (International), her language for the fixed text
    assert "Sport" not in html and "يناير" in html  # the date, in Arabic
    assert str(msg["Subject"]) == "قمة إقليمية حول المياه تختتم أعمالها بإعلان مشترك"  # her lead


def _command_paths(group: click.Group, prefix: str = "newsletter") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        paths.append(path)
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, path))
    return paths


def test_readme_documents_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [path for path in _command_paths(cli) if f"`{path}" not in readme]
    assert not missing, f"README lacks: {missing}"


def test_every_command_has_help():
    runner = CliRunner()
    for path in _command_paths(cli):
        result = runner.invoke(cli, [*path.split()[1:], "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, path
        assert len(result.output.splitlines()) > 3, path


@pytest.mark.parametrize("command", ["status", "preview"])
def test_the_default_edition_reads_the_same_in_help_and_readme(command: str) -> None:
    help_text = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
    default = re.search(r"Edition date \(default: ([^)]*)\)", help_text)
    assert default, help_text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith(f"| `newsletter {command} ")]
    assert f"(default: {default.group(1)})" in row, row


def test_readme_walks_through_the_first_real_set_up() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## First real set-up", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^(\d)\. \*\*(.+?)\*\*", section, re.M)
    assert [number for number, _ in steps] == list("12345678"), steps
    for command in (
        "cp .env.example .env",
        "secrets.token_urlsafe(32)",
        "newsletter check",
        "newsletter subscribers import",
        "newsletter preview",
        "newsletter send --test",
        "newsletter serve",
        "newsletter run",
        "systemd",
    ):
        assert command in section, command
