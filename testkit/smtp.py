"""Real SMTP peers, each in its own process: the recording aiosmtpd server and the bad relay."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from testkit.net import free_port, wait_for_port

TESTKIT = Path(__file__).resolve().parent


@dataclass
class SmtpServer:
    port: int
    out: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log(self) -> list[dict]:
        path = self.out / "log.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def commands(self) -> list[str]:
        """The AUTH, MAIL and QUIT lines of every session, in order (see smtp_server.py)."""
        path = self.out / "commands.log"
        return path.read_text().splitlines() if path.exists() else []

    def raw_messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.out.glob("*.eml"))]

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[misc]
            for raw in self.raw_messages()
        ]

    def recipients(self) -> list[str]:
        return [rcpt for entry in self.log() for rcpt in entry["rcpt_tos"]]

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.log()) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def start_smtp_server(out: Path, *fault_args: str, port: int | None = None) -> SmtpServer:
    """testkit/smtp_server.py in its own process, listening once this returns."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(TESTKIT / "smtp_server.py"),
            "--port",
            str(port),
            "--out",
            str(out),
            *fault_args,
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return SmtpServer(port, out, process)


class MisbehavingRelay:
    """testkit/misbehaving_relay.py in its own process."""

    def __init__(self, tmp_path: Path, mode: str) -> None:
        self.port = free_port()
        self.out = tmp_path / f"relay-{mode}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(TESTKIT / "misbehaving_relay.py"),
                "--port",
                str(self.port),
                "--out",
                str(self.out),
                "--mode",
                mode,
            ]
        )
        wait_for_port(self.port)

    def connections(self) -> int:
        """How many connections the ``no-greeting`` relay accepted."""
        path = self.out / "connections.txt"
        return len(path.read_text().split()) if path.exists() else 0

    def complete(self) -> list[str]:
        """The recipients of every message whose content arrived whole, in order."""
        path = self.out / "complete.txt"
        return path.read_text().split() if path.exists() else []

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
