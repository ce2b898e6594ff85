"""Cold `newsletter preview` of a 50-article edition: wall time and peak memory.

    .venv/bin/python bench/bench_preview.py [--articles 50] [--runs 5]

Each run is a fresh process (imports, settings, feed parsing, edition, Jinja2 + premailer, MIME),
measured against two reference points in the same run: a bare `python -c pass` and
`python -c "import newsletter.cli"` (the import cost alone). Prints medians. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

SECTIONS = ("Sécurité", "Économie", "Politique", "Culture", "Sport", "International")
PARAGRAPH = (
    "<p>Le gouvernement a présenté mardi un projet qui « change la donne » pour les régions : "
    "l’État transfère la gestion des écoles primaires et des centres de santé aux collectivités, "
    "avec un budget d’accompagnement sur trois ans.</p>"
)


def write_feed(path: Path, count: int) -> None:
    start = datetime(2026, 1, 26, 7, 0, tzinfo=UTC)
    items = []
    for i in range(count):
        published = start + timedelta(minutes=20 * i)
        items.append(
            f"""<item><title>{escape(f"Article n° {i} : l’actualité « du jour » en {SECTIONS[i % 6]}")}</title>
<link>https://www.example.com/2026/01/26/article-{i}</link>
<guid isPermaLink="false">https://www.example.com/?p={i}</guid>
<pubDate>{published.strftime("%a, %d %b %Y %H:%M:%S +0000")}</pubDate>
<dc:creator>Rédaction</dc:creator><category>{SECTIONS[i % 6]}</category>
<description>{escape(PARAGRAPH)}</description>
<content:encoded><![CDATA[{PARAGRAPH * 6}]]></content:encoded></item>"""
        )
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Bench</title>'
        f"<link>https://www.example.com/</link>{''.join(items)}</channel></rss>",
        encoding="utf-8",
    )


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return elapsed, usage.ru_maxrss / 1024


def median_of(runs: int, cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    samples = [measure(cmd, env, cwd) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        feed = workdir / "feed.xml"
        write_feed(feed, args.articles)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(NEWSLETTER_SOURCES=str(feed), NEWSLETTER_MAX_PER_SECTION="50")
        preview = [
            sys.executable,
            "-m",
            "newsletter",
            "preview",
            "--date",
            "2026-01-27",
            "--out",
            "out",
        ]
        bare = median_of(args.runs, [sys.executable, "-c", "pass"], env, workdir)
        imports = median_of(
            args.runs, [sys.executable, "-c", "import newsletter.cli"], env, workdir
        )
        cold = median_of(args.runs, preview, env, workdir)
        html = (workdir / "out" / "digest.html").stat().st_size
    print(
        f"cold `newsletter preview`, {args.articles} articles (HTML {html:,} bytes), median of {args.runs}:"
    )
    print(f"  preview:            {cold[0] * 1000:6.0f} ms, peak RSS {cold[1]:5.1f} MB")
    print(f"  import newsletter:  {imports[0] * 1000:6.0f} ms, peak RSS {imports[1]:5.1f} MB")
    print(f"  python -c pass:     {bare[0] * 1000:6.0f} ms, peak RSS {bare[1]:5.1f} MB")
    print(
        f"  work beyond imports: {(cold[0] - imports[0]) * 1000:.0f} ms; "
        f"preview / bare interpreter: {cold[0] / bare[0]:.1f}x"
    )


if __name__ == "__main__":
    main()
