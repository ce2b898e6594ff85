"""`newsletter subscribers import` of a big CSV through the real CLI (issue 16: 1M rows < 60 s).

    .venv/bin/python bench/bench_import.py [--rows 1000000]

Writes N rows shaped like bench_send.py's list (`lecteur{i}@exemple{i % 97}.ma,Lecteur {i}`) in a
temporary folder, imports them into a fresh SQLite file in a child process, then imports the same
file again (every row unchanged). Prints wall seconds, rows/s and the child's peak RSS (wait4),
and whether the target holds. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 60.0  # for 1,000,000 rows (issue 16)


def write_list(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name\n")
        out.writelines(f"lecteur{i}@exemple{i % 97}.ma,Lecteur {i}\n" for i in range(rows))


def run_import(csv: Path, workdir: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB of the import process, and its summary line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"
    command = [sys.executable, "-m", "newsletter", "subscribers", "import", str(csv)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    summary = proc.stdout.read().strip() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"import failed: {summary}")
    return elapsed, usage.ru_maxrss / 1024, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory(prefix="bench-import-") as folder:
        workdir = Path(folder)
        csv = workdir / "subscribers.csv"
        write_list(csv, rows)
        print(f"{rows:,} rows, load average {os.getloadavg()[0]:.2f} (1 min)")
        for label in ("first import (empty database)", "same file again (all unchanged)"):
            seconds, rss, summary = run_import(csv, workdir)
            print(f"{label}: {seconds:.1f} s, {rows / seconds:,.0f} rows/s, peak RSS {rss:.0f} MB")
            print(f"  {summary}")
            if label.startswith("first") and rows >= 1_000_000:
                verdict = "holds" if seconds * 1_000_000 / rows < TARGET_SECONDS else "MISSED"
                print(f"  target: 1,000,000 rows in under {TARGET_SECONDS:.0f} s: {verdict}")
            elif label.startswith("first"):  # start-up (about 0.5 s) weighs on a small file
                print(f"  target: 1,000,000 rows in under {TARGET_SECONDS:.0f} s (not this size)")


if __name__ == "__main__":
    main()
