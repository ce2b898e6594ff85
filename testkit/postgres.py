"""A throwaway PostgreSQL server on loopback, for tests/test_postgres.py and bench/bench_send.py.

Needs PostgreSQL's server binaries (`initdb`, `pg_ctl`; Debian's postgresql package). PostgreSQL
refuses to run as root, so as root the server runs as `nobody`, in a folder made by mkdtemp (not
pytest's tmp folder: that one is private to root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testkit.net import free_port, wait_for_port


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary on PATH, else from Debian's /usr/lib/postgresql/VERSION/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def server_binaries_installed() -> bool:
    return bool(pg_bin("initdb") and pg_bin("pg_ctl"))


@contextmanager
def throwaway_postgres(fsync: bool = False) -> Iterator[str]:
    """Start a fresh cluster on a free port; yield its URL (the `postgres` database).

    fsync=off (the tests' choice) makes commits cheaper than on a real server; a benchmark that
    compares commit-bound runs may want PostgreSQL's default (on).
    """
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    data = folder / "data"
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    if not fsync:
        options += " -c fsync=off"
    subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    wait_for_port(port)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE name on the server of ``server_url``; its URL (needs psycopg)."""
    import psycopg

    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"
