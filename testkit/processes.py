"""The `newsletter` command as a real background process, and the one kill -9 harness.

The crash tests kill a sender, a daemon or an import with ``kill_9``: no clean-up, no atexit, no
finally runs in the victim, as after a crash or an OOM kill. (tests/test_daemon.py still calls
Popen.kill() itself in its standby test; it moves to kill_9 with the daemon rework.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def spawn_cli(
    *args: str,
    env: dict[str, str],
    cwd: Path,
    stdout: int | object = subprocess.PIPE,
    stderr: int | object = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """``python -m newsletter ARGS`` in the background (text mode; pipes unless told)."""
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args],
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        text=True,
    )


def kill_9(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL ``process`` and reap it; asserts it died of that signal (was still running)."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout)
    assert process.returncode == -signal.SIGKILL, process.returncode


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.02)


class LoggedCli:
    """One background `newsletter ARGS` whose stdout and stderr go to a file read as it runs."""

    def __init__(self, tmp_path: Path, env: dict[str, str], name: str, *args: str) -> None:
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "newsletter", *args],
            cwd=tmp_path,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def close(self, grace: float = 20.0) -> None:
        """SIGTERM if still running, then SIGKILL after ``grace`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
