"""Edition window, sections and order: the pure rules, on hand-built articles."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from newsletter.domain import Article, category_key
from newsletter.domain.edition import (
    build_edition,
    build_sections,
    edition_date_for,
    edition_window,
)

CASA = ZoneInfo("Africa/Casablanca")
PARIS = ZoneInfo("Europe/Paris")


def article(uid: str, published: datetime, *categories: str) -> Article:
    return Article(
        uid=uid,
        title=uid,
        link=f"https://example.com/{uid}",
        published=published,
        categories=categories,
    )


def edition(articles, day, send_time=time(7, 0), zone=CASA, order=(), cap=10):
    return build_edition(
        articles,
        day=day,
        send_time=send_time,
        zone=zone,
        order=order,
        max_per_section=cap,
        title="T",
        locale="fr",
    )


def test_window_is_after_previous_cutoff_up_to_and_including_this_one():
    window = edition_window(date(2026, 1, 27), time(18, 0), CASA)
    cutoff = datetime(2026, 1, 27, 18, 0, tzinfo=CASA)
    assert cutoff in window
    assert cutoff + timedelta(microseconds=1) not in window
    assert cutoff - timedelta(days=1) not in window
    assert cutoff - timedelta(days=1) + timedelta(seconds=1) in window


def test_article_exactly_at_cutoff_goes_to_that_edition_and_not_the_next():
    at_cutoff = article(
        "a", datetime(2026, 1, 27, 17, 0, tzinfo=UTC), "Sport"
    )  # 18:00 Casablanca (UTC+1)
    today = edition([at_cutoff], date(2026, 1, 27), send_time=time(18, 0))
    tomorrow = edition([at_cutoff], date(2026, 1, 28), send_time=time(18, 0))
    assert [a.uid for a in today.articles] == ["a"]
    assert tomorrow.is_empty


@pytest.mark.parametrize("day", [date(2026, 3, 29), date(2026, 10, 25)])
def test_dst_transition_days_in_paris_have_contiguous_windows(day):
    send = time(7, 0)
    before, on, after = (edition_window(day + timedelta(days=d), send, PARIS) for d in (-1, 0, 1))
    assert before.end == on.start and on.end == after.start
    length = on.end - on.start
    assert length == (timedelta(hours=23) if day.month == 3 else timedelta(hours=25))
    # every hour across the change lands in exactly one edition
    moment = on.start - timedelta(hours=2)
    while moment < on.end + timedelta(hours=2):
        assert sum(moment in w for w in (before, on, after)) == 1
        moment += timedelta(minutes=30)


def test_send_time_inside_the_spring_gap_still_cuts_once():
    day = date(2026, 3, 29)  # 02:00 -> 03:00 in Paris: 02:30 does not exist that night
    window = edition_window(day, time(2, 30), PARIS)
    # read with the offset before the change: 02:30 CET == 01:30 UTC == 03:30 CEST
    assert window.end == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    following = edition_window(day + timedelta(days=1), time(2, 30), PARIS)
    assert following.start == window.end
    assert following.end - following.start == timedelta(hours=23)


def test_edition_date_for_moment():
    assert edition_date_for(datetime(2026, 1, 27, 6, 59, tzinfo=CASA), time(7, 0), CASA) == date(
        2026, 1, 27
    )
    assert edition_date_for(datetime(2026, 1, 27, 7, 0, tzinfo=CASA), time(7, 0), CASA) == date(
        2026, 1, 27
    )
    assert edition_date_for(datetime(2026, 1, 27, 7, 1, tzinfo=CASA), time(7, 0), CASA) == date(
        2026, 1, 28
    )


def test_sections_by_primary_category_in_configured_order_then_unknown_then_general():
    t = datetime(2026, 1, 27, 5, 0, tzinfo=UTC)
    items = [
        article("s1", t, "Sport", "Culture"),
        article("e1", t, "economie"),
        article("z1", t, "Zoologie"),
        article("g1", t),
        article("a1", t, "Agriculture"),
        article("p1", t, "POLITIQUE"),
    ]
    sections = build_sections(items, order=("Politique", "Économie", "Sport"), max_per_section=5)
    assert [s.label for s in sections] == [
        "Politique",
        "Économie",
        "Sport",
        "Agriculture",
        "Zoologie",
        "",
    ]
    assert sections[-1].key == ""


def test_newest_first_and_capped():
    base = datetime(2026, 1, 27, 0, 0, tzinfo=UTC)
    items = [article(f"n{i}", base + timedelta(minutes=i), "Sport") for i in range(6)]
    (sport,) = build_sections(items, order=(), max_per_section=3)
    assert [a.uid for a in sport.articles] == ["n5", "n4", "n3"]


def test_excluded_uids_are_not_sent_again():
    t = datetime(2026, 1, 27, 5, 0, tzinfo=UTC)
    ed = build_edition(
        [article("old", t, "Sport"), article("new", t, "Sport")],
        day=date(2026, 1, 27),
        send_time=time(7, 0),
        zone=CASA,
        order=(),
        max_per_section=5,
        title="T",
        locale="fr",
        exclude_uids=frozenset({"old"}),
    )
    assert [a.uid for a in ed.articles] == ["new"]


def test_variant_keys_match_preferences_tolerantly():
    t = datetime(2026, 1, 27, 5, 0, tzinfo=UTC)
    ed = edition([article("e", t, "Économie"), article("s", t, "Sport")], date(2026, 1, 27))
    assert ed.variant_keys(["ECONOMIE"]) == frozenset({category_key("Économie")})
    assert ed.variant_keys([]) == ed.section_keys
    assert ed.variant_keys(["Culture"]) == frozenset()
    assert [s.label for s in ed.restricted_to(ed.variant_keys(["sport"])).sections] == ["Sport"]


def test_at_the_exact_send_instant_every_caller_names_the_same_coming_edition():
    """One owner for "the next edition": the CLI's default (Settings.next_edition_date) and the
    daemon (Timetable.next_edition) agree at the send instant itself, where the edition of the
    day goes out and the coming one is tomorrow's; an article published at that instant still
    belongs to the edition of the day (its window's end is inclusive)."""
    from newsletter.config import load_settings

    settings = load_settings(
        environ={"NEWSLETTER_TIMEZONE": "Africa/Casablanca", "NEWSLETTER_SEND_TIME": "07:00"}
    )
    instant = datetime(2026, 1, 27, 7, 0, tzinfo=CASA)
    day, tomorrow = date(2026, 1, 27), date(2026, 1, 28)
    assert settings.timetable.send_at(day) == instant
    assert settings.timetable.due_edition(instant) == day
    assert (
        settings.next_edition_date(instant) == settings.timetable.next_edition(instant) == tomorrow
    )
    assert settings.next_edition_date(instant - timedelta(microseconds=1)) == day
    assert edition_date_for(instant, settings.send_time, settings.timezone) == day
