"""Run every bench/bench_*.py in turn with modest sizes and print what each prints (`make bench`).

    .venv/bin/python bench/run_all.py [--full] [NAME ...]

Each script runs in its own process with the arguments below: sizes that finish in a few minutes
on a small machine, not each script's own (larger) defaults; --full runs them with their own
defaults instead. NAME limits the run to the scripts whose name contains it (e.g. `send`).
A script that fails (e.g. bench_send.py without Debian's postfix) is reported and the others
still run; the exit status is 1 when any failed. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# Modest sizes per script (see each script's docstring for what the arguments mean).
MODEST: dict[str, list[str]] = {
    "bench_clicks.py": ["--clicks", "3000", "--client", "threads"],
    "bench_header_flood.py": ["--megabytes", "10", "--clients", "4"],
    "bench_import.py": ["--rows", "20000"],
    "bench_nesting.py": ["--depths", "16000,64000", "--runs", "1"],
    "bench_preview.py": ["--articles", "50", "--runs", "3"],
    "bench_send.py": ["--quick"],
    "bench_subscribers.py": ["10000"],
    "bench_unsubscribe.py": ["--requests", "500", "--concurrency", "20"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each script's own default sizes")
    parser.add_argument("names", nargs="*", help="only the scripts whose name contains one")
    args = parser.parse_args()

    scripts = sorted(BENCH.glob("bench_*.py"))
    if args.names:
        scripts = [s for s in scripts if any(n in s.name for n in args.names)]
    failed: list[str] = []
    for script in scripts:
        extra = [] if args.full else MODEST.get(script.name, [])
        print(f"=== {script.name} {' '.join(extra)}".rstrip(), flush=True)
        started = time.monotonic()
        # Output goes straight through: long benches show their figures as they come.
        code = subprocess.run([sys.executable, str(script), *extra], check=False).returncode
        took = time.monotonic() - started
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"--- {script.name}: {status} in {took:.1f} s\n", flush=True)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"{len(scripts)} benches run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
