"""One feed item of deeply nested <div>: build time against a normal article of the same size.

    .venv/bin/python bench/bench_nesting.py [--depths 16000,64000,200000] [--runs 3]

For each depth, in one process: parse a feed file holding one item of that many nested <div>
(parse_feed), build the edition (build_edition) and render it (Renderer.render: Jinja2, premailer
and the text reduction); then the same for a reference item of ordinary paragraphs padded to the
same byte size. Every run changes a word of the text, so no cached result answers for it. Prints
the median time of each and their ratio: linear sanitising keeps the ratio near 1 and the
nested times proportional to the size. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

from newsletter.adapters.render import Renderer
from newsletter.adapters.sources import parse_feed
from newsletter.domain.edition import build_edition

DAY = date(2026, 1, 27)
PARAGRAPH = (
    "<p>Le gouvernement a présenté mardi un projet qui « change la donne » pour les régions : "
    "l’État transfère la gestion des écoles primaires aux collectivités.</p>"
)
FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Bench</title><item><title>Article {run}</title>
<link>https://www.example.com/2026/01/26/article-{run}</link><guid>bench-{run}</guid>
<category>Société</category><pubDate>Tue, 27 Jan 2026 06:00:00 +0100</pubDate>
<description><![CDATA[{body}]]></description></item></channel></rss>"""


def nested_body(depth: int, run: int) -> str:
    return "<div>" * depth + f"Texte enfoui, passage {run}." + "</div>" * depth


def normal_body(size: int, run: int) -> str:
    """Ordinary paragraphs, ``size`` characters long, starting with a word unique to ``run``."""
    body = f"<p>Passage {run}.</p>" + PARAGRAPH * (size // len(PARAGRAPH) + 1)
    return body[:size]


def build_once(feed: Path, body: str, run: int, renderer: Renderer) -> float:
    """Seconds to parse the feed file, build the edition and render it."""
    feed.write_text(FEED.format(run=run, body=body), encoding="utf-8")
    started = time.perf_counter()
    articles, _ = parse_feed(feed.read_bytes(), str(feed))
    edition = build_edition(
        articles,
        day=DAY,
        send_time=clock(7, 0),
        zone=ZoneInfo("Africa/Casablanca"),
        order=(),
        max_per_section=10,
        title="Bench",
        locale="fr",
    )
    variant = renderer.render(edition)
    elapsed = time.perf_counter() - started
    assert f"passage {run}" in variant.text.lower(), "the article's text is missing"
    return elapsed


def median_time(
    feed: Path, make_body: Callable[[int, int], str], arg: int, runs: int, first_run: int
) -> float:
    renderer = Renderer(title="Bench", locale="fr")
    runs_ = range(first_run, first_run + runs)
    return statistics.median(build_once(feed, make_body(arg, r), r, renderer) for r in runs_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="16000,64000,200000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    # Warm up imports, templates and premailer's CSS cache outside the measurements.
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "feed.xml"
        build_once(feed, normal_body(1_000, 0), 0, Renderer(title="Bench", locale="fr"))
        print(f"{'depth':>8} {'bytes':>10} {'nested s':>9} {'normal s':>9} {'ratio':>6}")
        rows = []
        for index, depth in enumerate(depths):
            size = len(nested_body(depth, 0).encode())
            first = 1_000 * (index + 1)
            nested = median_time(feed, nested_body, depth, args.runs, first)
            normal = median_time(feed, normal_body, size, args.runs, first + 500)
            rows.append((depth, size, nested))
            print(f"{depth:>8} {size:>10,} {nested:>9.3f} {normal:>9.3f} {nested / normal:>6.2f}")
    if len(rows) > 1:
        (d0, s0, t0), (d1, s1, t1) = rows[0], rows[-1]
        print(
            f"{d0} -> {d1} divs: size x{s1 / s0:.1f}, nested time x{t1 / t0:.1f} "
            "(linear: about the same factor; quadratic: its square)"
        )


if __name__ == "__main__":
    main()
