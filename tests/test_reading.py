"""web.reading: the editors' click-through lines, drawn on the server (pure geometry)."""

from __future__ import annotations

from datetime import date

from newsletter.services.stats import SectionTrend
from newsletter.web.reading import CHART_HEIGHT, CHART_PAD, sparklines


def trend(*rates: dict[str, float]) -> list[SectionTrend]:
    return [
        SectionTrend(date(2026, 1, 20 + n), 100, tuple(by_section.items()))
        for n, by_section in enumerate(rates)
    ]


def test_sections_share_one_scale_and_an_absent_section_leaves_a_gap() -> None:
    lines = sparklines(
        trend(
            {"Politique": 0.4, "Sport": 0.1}, {"Politique": 0.2}, {"Politique": 0.1, "Sport": 0.2}
        ),
        "fr",
    )
    politics, sport = lines
    assert [line.label for line in lines] == ["Politique", "Sport"]
    assert len(politics.segments) == 1 and len(politics.segments[0].split()) == 3
    # the peak (40 %) is at the top of the box, a rate of 0 would be at the bottom
    assert politics.segments[0].split()[0].endswith(f",{CHART_PAD:.1f}")
    # Sport had no article in the middle edition: two runs, not a line through a fake zero
    assert len(sport.segments) == 2
    assert sport.latest == "20,00\u00a0%" and "10,00\u00a0% – 20,00\u00a0%" in sport.description


def test_no_click_at_all_draws_flat_lines_at_the_bottom() -> None:
    [line] = sparklines(trend({"Culture": 0.0}, {"Culture": 0.0}), "fr")
    ys = {point.split(",")[1] for point in line.segments[0].split()}
    assert ys == {f"{CHART_HEIGHT - CHART_PAD:.1f}"}
