"""Import and export benchmark for the subscriber list (not a test: prints figures).

    .venv/bin/python bench/bench_subscribers.py [ROWS ...]   (default: 10000 100000)

Each size runs in a fresh child process, so that peak RSS (ru_maxrss) belongs to that size
alone: import N generated rows into an empty SQLite file, then export them to /dev/null. Flat
memory means the export's peak stays about the same at 10x the rows.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ["Économie", "Sport", "Sécurité", "Culture", "Politique", "International"]
DOMAINS = ["gmail.com", "yahoo.fr", "hotmail.com", "menara.ma", "orange.sn", "exemple.ci"]


def generate(path: Path, rows: int) -> None:
    rng = random.Random(rows)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("\ufeffemail;name;categories;locale\r\n")
        for n in range(rows):
            cats = "|".join(rng.sample(CATEGORIES, rng.randint(0, 3)))
            domain = rng.choice(DOMAINS) if n % 10 else f"site{n}.example.com"
            out.write(f'Lecteur.{n}@{domain};"Aïcha Ouédraogo, {n}";{cats};fr\r\n')


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(rows: int, phase: str) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from newsletter.adapters.csvfile import open_csv
    from newsletter.adapters.store import open_store
    from newsletter.services.subscribers import import_csv

    folder = Path(tempfile.mkdtemp(prefix="bench-subscribers-"))
    source = folder / "list.csv"
    generate(source, rows)
    url = f"sqlite:///{folder / 'list.db'}"
    result: dict[str, float] = {}
    with open_store(url) as store:
        base = peak_rss_mb()
        start = time.perf_counter()
        with open_csv(source) as stream:
            report = import_csv(store, stream, source.name)
        result["import_s"] = time.perf_counter() - start
        result["import_rss_mb"] = peak_rss_mb()
        assert report.added == rows and not report.rejected, report.summary()
        if phase == "export":
            # Measure the export alone: a fresh process reading the database just built.
            return {"db": str(folder / "list.db"), **result}  # type: ignore[dict-item]
    result["base_rss_mb"] = base
    return result


def export_child(db: str) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from newsletter.adapters.store import open_store
    from newsletter.services.subscribers import export_csv

    with open_store(f"sqlite:///{db}") as store, open("/dev/null", "w", newline="") as sink:
        base = peak_rss_mb()
        start = time.perf_counter()
        count = export_csv(store, sink)
        elapsed = time.perf_counter() - start
    return {
        "export_s": elapsed,
        "export_rows": count,
        "export_rss_mb": peak_rss_mb(),
        "base_rss_mb": base,
    }


def run(args: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    figures = {}
    for rows in sizes:
        imported = run(["--child-import", str(rows)])
        exported = run(["--child-export", imported.pop("db")])  # type: ignore[arg-type]
        figures[rows] = {**imported, **exported}
        f = figures[rows]
        print(
            f"{rows:>7} rows: import {f['import_s']:.2f} s ({rows / f['import_s']:,.0f} rows/s, "
            f"peak RSS {f['import_rss_mb']:.0f} MB); export {f['export_s']:.2f} s "
            f"({rows / f['export_s']:,.0f} rows/s, peak RSS {f['export_rss_mb']:.0f} MB, "
            f"{f['export_rss_mb'] - f['base_rss_mb']:+.1f} MB over the opened store)"
        )
    if len(sizes) >= 2:
        small, large = figures[sizes[0]], figures[sizes[-1]]
        print(
            f"{sizes[-1]} vs {sizes[0]}: import time x{large['import_s'] / small['import_s']:.1f}, "
            f"export peak RSS x{large['export_rss_mb'] / small['export_rss_mb']:.2f}, "
            f"import peak RSS x{large['import_rss_mb'] / small['import_rss_mb']:.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child-import":
        print(json.dumps(child(int(sys.argv[2]), "export")))
    elif len(sys.argv) == 3 and sys.argv[1] == "--child-export":
        print(json.dumps(export_child(sys.argv[2])))
    else:
        main()
