"""The scheduler's rules with an injected clock: send times, catch-up, deadline, hold, DST, preview,
and the one-sender lock on a real SQLite file. Fast: no process, no network, no sleeping clock."""

from __future__ import annotations

import logging
import socket
import time as systime
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from newsletter.adapters.store import EditionRecord, Store, open_store
from newsletter.config import Settings
from newsletter.daemon import Daemon, Lease, parse_now, shifted_clock
from newsletter.domain import EditionStatus
from newsletter.domain.edition import edition_date_for
from newsletter.domain.timetable import Action, Timetable, decide_preview, decide_send
from newsletter.services.editions import EditionFinished, set_hold
from tests.daemon_support import CASABLANCA, DAY, local, settings_for
from tests.factories import FakeClock, sqlite_url

PARIS = ZoneInfo("Europe/Paris")


def timetable(
    send: str = "07:00",
    zone: ZoneInfo = CASABLANCA,
    deadline_hours: float = 6,
    lead_minutes: int = 60,
) -> Timetable:
    return Timetable(
        send_time=time.fromisoformat(send),
        zone=zone,
        deadline=timedelta(hours=deadline_hours),
        preview_lead=timedelta(minutes=lead_minutes),
    )


def record(
    day: date = DAY,
    status: EditionStatus = EditionStatus.OPEN,
    *,
    held: bool = False,
    frozen: bool = False,
) -> EditionRecord:
    stamp = datetime(2026, 1, 27, 6, 0, tzinfo=UTC) if frozen else None
    return EditionRecord(day, status, held, 0, "", stamp, None)


SENT = record(status=EditionStatus.SENT, frozen=True)


# ---------------------------------------------------------------------------------------------
# The timetable
# ---------------------------------------------------------------------------------------------


def test_send_time_is_local_and_the_edition_date_is_the_local_date_at_that_time() -> None:
    table = timetable()
    assert table.send_at(DAY) == local("2026-01-27T07:00")
    assert table.deadline_at(DAY) == local("2026-01-27T13:00")
    assert table.preview_at(DAY) == local("2026-01-27T06:00")
    assert table.due_edition(local("2026-01-27T06:59")) == DAY - timedelta(days=1)
    assert table.due_edition(local("2026-01-27T07:00")) == DAY
    assert table.next_edition(local("2026-01-27T06:59")) == DAY
    assert table.next_edition(local("2026-01-27T07:00")) == DAY + timedelta(days=1)
    # The same rule as the edition window: the send instant closes the window of its own date.
    assert edition_date_for(table.send_at(DAY), table.send_time, table.zone) == DAY


def test_a_late_evening_send_time_belongs_to_its_own_local_day() -> None:
    table = timetable("23:30", zone=PARIS)
    at = table.send_at(DAY)
    assert at.astimezone(PARIS).date() == DAY
    assert at.date() == DAY  # 22:30 UTC: same day; the rule never looks at the UTC date
    assert table.due_edition(local("2026-01-28T00:10", PARIS)) == DAY


# ---------------------------------------------------------------------------------------------
# The send decision
# ---------------------------------------------------------------------------------------------


def test_before_the_send_time_it_waits_for_today() -> None:
    table = timetable()
    yesterday = replace(SENT, edition_date=DAY - timedelta(days=1))
    decision = decide_send(local("2026-01-27T06:59"), table, yesterday)
    assert decision.action is Action.WAIT
    assert decision.day == DAY
    assert decision.at == local("2026-01-27T07:00")


@pytest.mark.parametrize(
    "ledger",
    [
        None,
        record(),
        record(status=EditionStatus.SENDING, frozen=True),  # a crash half-way: completed
    ],
    ids=["no record", "open", "partly sent"],
)
def test_after_the_send_time_within_the_deadline_it_sends_now(ledger: EditionRecord | None) -> None:
    for moment in ("2026-01-27T07:00", "2026-01-27T07:05", "2026-01-27T12:59"):
        decision = decide_send(local(moment), timetable(), ledger)
        assert decision.action is Action.SEND, moment
        assert decision.day == DAY


@pytest.mark.parametrize(
    "status", [EditionStatus.SENT, EditionStatus.EMPTY, EditionStatus.SKIPPED_LATE]
)
def test_a_finished_edition_is_left_alone(status: EditionStatus) -> None:
    decision = decide_send(local("2026-01-27T07:05"), timetable(), record(status=status))
    assert decision.action is Action.WAIT
    assert decision.day == DAY + timedelta(days=1)


def test_past_the_deadline_an_unsent_edition_is_skipped_late_and_says_why() -> None:
    decision = decide_send(local("2026-01-27T13:01"), timetable(), None)
    assert decision.action is Action.SKIP_LATE
    assert decision.day == DAY
    assert "deadline" in decision.note and "13:00" in decision.note


def test_past_the_deadline_a_partly_sent_edition_is_left_for_an_editor() -> None:
    ledger = record(status=EditionStatus.SENDING, frozen=True)
    decision = decide_send(local("2026-01-27T13:01"), timetable(), ledger)
    assert decision.action is Action.LATE_PARTIAL


def test_a_held_edition_is_not_sent_and_is_skipped_late_at_its_deadline() -> None:
    held = record(held=True)
    assert decide_send(local("2026-01-27T07:00"), timetable(), held).action is Action.HELD
    late = decide_send(local("2026-01-27T13:01"), timetable(), held)
    assert late.action is Action.SKIP_LATE
    assert "held" in late.note


def test_a_failed_attempt_waits_for_its_retry_time_within_the_deadline() -> None:
    retry = local("2026-01-27T07:10")
    early = decide_send(local("2026-01-27T07:06"), timetable(), None, retry)
    assert early.action is Action.RETRY_LATER and early.at == retry
    assert decide_send(local("2026-01-27T07:10"), timetable(), None, retry).action is Action.SEND


def test_a_zero_deadline_still_sends_on_time_but_never_catches_up() -> None:
    table = timetable(deadline_hours=0)
    assert decide_send(local("2026-01-27T07:00:30"), table, None).action is Action.SEND
    assert decide_send(local("2026-01-27T07:02"), table, None).action is Action.SKIP_LATE


# ---------------------------------------------------------------------------------------------
# DST: exactly one send per edition, at its local time
# ---------------------------------------------------------------------------------------------


def simulate(
    table: Timetable, start: datetime, end: datetime, step: timedelta, already_sent: date
) -> dict[date, list[datetime]]:
    """Run the decision at every ``step`` of real time; returns {edition: [send instants]}."""
    ledger = {already_sent: record(already_sent, EditionStatus.SENT, frozen=True)}
    sends: dict[date, list[datetime]] = {}
    moment = start
    while moment < end:
        day = table.due_edition(moment)
        decision = decide_send(moment, table, ledger.get(day))
        if decision.action is Action.SEND:
            sends.setdefault(day, []).append(moment)
            ledger[day] = record(day, EditionStatus.SENT, frozen=True)
        assert decision.action in (Action.SEND, Action.WAIT), (moment, decision)
        moment += step
    return sends


@pytest.mark.parametrize("send", ["07:00", "02:30", "02:00", "03:00", "00:00", "23:59"])
@pytest.mark.parametrize(
    "change", [date(2026, 3, 29), date(2026, 10, 25)], ids=["spring-forward", "fall-back"]
)
def test_every_minute_across_a_dst_change_gives_exactly_one_send_per_day(
    send: str, change: date
) -> None:
    table = timetable(send, zone=PARIS)
    first = change - timedelta(days=1)
    # The day before the span went out, as a running daemon would have sent it.
    before = first - timedelta(days=1)
    start = table.send_at(before) + timedelta(minutes=1)
    end = table.send_at(change + timedelta(days=1)) + timedelta(minutes=1)
    sends = simulate(table, start, end, timedelta(minutes=1), already_sent=before)
    days = [first, change, change + timedelta(days=1)]
    assert sorted(sends) == days
    for day in days:
        assert sends[day] == [table.send_at(day)], day  # once, on the minute
        assert edition_date_for(sends[day][0], table.send_time, PARIS) == day


def test_a_send_time_in_the_spring_gap_goes_out_once_an_hour_later_in_real_time() -> None:
    table = timetable("02:30", zone=PARIS)
    at = table.send_at(date(2026, 3, 29))
    assert at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST: 02:30 does not exist
    assert at.astimezone(PARIS).date() == date(2026, 3, 29)


def cron_fires(send: time, zone: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times of our cron job, as APScheduler's scheduler loop asks them."""
    trigger = CronTrigger(hour=send.hour, minute=send.minute, timezone=zone)
    fires: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        fires.append(fire)
        previous, now = fire, fire
    return fires


def test_cron_fire_times_match_the_timetable_through_a_whole_year() -> None:
    table = timetable("07:00", zone=PARIS)
    fires = cron_fires(table.send_time, PARIS, datetime(2026, 1, 1, tzinfo=PARIS), 365)
    expected = [table.send_at(date(2026, 1, 1) + timedelta(days=n)) for n in range(365)]
    assert [f.astimezone(UTC) for f in fires] == expected


def test_cron_fires_twice_in_the_repeated_hour_but_the_edition_goes_out_once() -> None:
    # APScheduler 3.11 fires a 02:30 job at 02:30 CEST and again at 02:30 CET on 2026-10-25;
    # the decision (edition date + ledger) turns the second fire into a no-op.
    table = timetable("02:30", zone=PARIS)
    fires = cron_fires(table.send_time, PARIS, datetime(2026, 10, 24, 12, tzinfo=PARIS), 3)
    assert [f.astimezone(UTC) for f in fires] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]
    ledger: dict[date, EditionRecord] = {
        date(2026, 10, 24): record(date(2026, 10, 24), EditionStatus.SENT, frozen=True)
    }
    sent: list[date] = []
    for fire in fires:
        moment = fire.astimezone(UTC)
        day = table.due_edition(moment)
        if decide_send(moment, table, ledger.get(day)).action is Action.SEND:
            sent.append(day)
            ledger[day] = record(day, EditionStatus.SENT, frozen=True)
    assert sent == [date(2026, 10, 25), date(2026, 10, 26)]


# ---------------------------------------------------------------------------------------------
# The editors' preview
# ---------------------------------------------------------------------------------------------


def test_the_preview_is_due_from_send_time_minus_lead_until_the_send_time() -> None:
    table = timetable()
    kwargs = {"editors": True, "record": None, "sent_at": None}
    assert decide_preview(local("2026-01-27T05:59"), table, **kwargs) is None
    assert decide_preview(local("2026-01-27T06:00"), table, **kwargs) == DAY
    assert decide_preview(local("2026-01-27T06:59"), table, **kwargs) == DAY
    # From the send time on, the next preview is tomorrow's.
    assert decide_preview(local("2026-01-27T07:00"), table, **kwargs) is None


def test_the_preview_goes_out_once_and_not_for_an_edition_already_going_out() -> None:
    table, now = timetable(), local("2026-01-27T06:30")
    sent_at = local("2026-01-27T06:00")
    assert decide_preview(now, table, editors=True, record=None, sent_at=sent_at) is None
    frozen = record(status=EditionStatus.SENDING, frozen=True)
    assert decide_preview(now, table, editors=True, record=frozen, sent_at=None) is None
    held = record(held=True)  # editors still get it: they decide whether to release it
    assert decide_preview(now, table, editors=True, record=held, sent_at=None) == DAY


def test_no_preview_without_editors_or_with_a_zero_lead() -> None:
    now = local("2026-01-27T06:30")
    assert decide_preview(now, timetable(), editors=False, record=None, sent_at=None) is None
    zero = timetable(lead_minutes=0)
    assert decide_preview(now, zero, editors=True, record=None, sent_at=None) is None


def test_the_preview_lead_is_real_time_across_a_dst_change() -> None:
    table = timetable("07:00", zone=PARIS, lead_minutes=90)
    spring = date(2026, 3, 29)
    assert table.send_at(spring) - table.preview_at(spring) == timedelta(minutes=90)
    assert table.preview_at(spring).astimezone(PARIS).strftime("%H:%M") == "05:30"


# ---------------------------------------------------------------------------------------------
# The lock: two owners, expiry, takeover (real SQLite file, two engines)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_stores(tmp_path: Path) -> tuple[Store, Store, FakeClock]:
    clock = FakeClock(datetime(2026, 1, 27, 6, 5, tzinfo=UTC))
    url = sqlite_url(tmp_path)
    first, second = open_store(url, clock), open_store(url, clock)
    yield first, second, clock
    first.close()
    second.close()


def test_one_holder_at_a_time_and_a_takeover_after_expiry(two_stores) -> None:
    a, b, clock = two_stores
    assert a.acquire_lock("scheduler", "host:1:a", 30)
    assert not b.acquire_lock("scheduler", "host:2:b", 30)
    assert b.lock_holder("scheduler")[0] == "host:1:a"
    clock.advance(seconds=20)
    assert a.acquire_lock("scheduler", "host:1:a", 30)  # renewal
    clock.advance(seconds=20)
    assert not b.acquire_lock("scheduler", "host:2:b", 30)  # renewed: still A's
    clock.advance(seconds=11)  # A stopped renewing: its lease ran out
    assert b.lock_holder("scheduler") is None
    assert b.acquire_lock("scheduler", "host:2:b", 30)
    assert not a.acquire_lock("scheduler", "host:1:a", 30)  # A comes back: it lost the lock
    a.release_lock("scheduler", "host:1:a")  # not its lock: nothing happens
    assert a.lock_holder("scheduler")[0] == "host:2:b"
    b.release_lock("scheduler", "host:2:b")
    assert a.acquire_lock("scheduler", "host:1:a", 30)


def test_take_over_lock_only_from_the_named_owner(two_stores) -> None:
    a, b, _clock = two_stores
    assert a.acquire_lock("scheduler", "host:1:a", 30)
    assert not b.take_over_lock("scheduler", "host:9:other", "host:2:b", 30)
    assert b.take_over_lock("scheduler", "host:1:a", "host:2:b", 30)
    assert a.lock_holder("scheduler")[0] == "host:2:b"


def test_the_lease_stands_by_and_takes_over_when_the_holder_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "newsletter.leases")
    url = sqlite_url(tmp_path)
    with open_store(url) as one, open_store(url) as two:
        taken: list[str] = []
        first = Lease(one, "first", on_taken=lambda: taken.append("first"), on_lost=print)
        second = Lease(
            two, "second", on_taken=lambda: taken.append("second"), on_lost=print, poll_every=0.1
        )
        # The holder is ticked again before its lease could lapse, the standby at its poll.
        assert 0 < first.tick() <= first.renew_every
        assert second.tick() == 0.1
        try:
            assert first.holds() and not second.holds()
            assert "standby: the scheduler lock is held by first" in caplog.text
            assert first.tick() <= first.renew_every and first.holds()  # a renewal
            assert second.tick() == 0.1 and not second.holds()
            assert caplog.text.count("standby:") == 1  # said once per holder
            first.release()
            assert not first.holds()
            assert second.tick() <= second.renew_every
            assert second.holds()
            assert taken == ["first", "second"]
        finally:
            second.release()


def test_a_holder_whose_renewals_fail_loses_its_lease_when_it_runs_out(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    lost: list[str] = []
    with open_store(url) as store:
        lease = Lease(store, "holder", on_taken=lambda: None, on_lost=lost.append, ttl=5.3)
        lease.tick()
        assert lease.holds()

        def unreachable(*_args: object) -> bool:
            raise OSError("database unreachable")

        store.acquire_lock = unreachable  # type: ignore[method-assign]
        wait = lease.tick()  # a failed renewal: the lease still trusted until it runs out
        assert lease.holds() and wait <= 0.3 + 0.05
        systime.sleep(wait)
        while lease.holds():
            systime.sleep(0.01)
        lease.tick()
        assert lost == ["its lease ran out before it could be renewed"]
        assert not lease.holds()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    with open_store(url) as store:
        # A pid that cannot exist on Linux (above pid_max): the holder is dead, its lease is not.
        dead = f"{socket.gethostname()}:99999999:deadbeef"
        assert store.acquire_lock("scheduler", dead, 30)
        lease = Lease(store, "alive", on_taken=lambda: None, on_lost=print)
        lease.tick()
        try:
            assert lease.holds()
            assert store.lock_holder("scheduler")[0] == "alive"
        finally:
            lease.release()
        assert store.lock_holder("scheduler") is None  # released on stop


# ---------------------------------------------------------------------------------------------
# The daemon's check, driven in-process with an injected clock (no SMTP needed on these paths)
# ---------------------------------------------------------------------------------------------


def checked_daemon(settings: Settings, store: Store, now: datetime) -> Daemon:
    daemon = Daemon(settings, store, clock=lambda: now, owner="test:1:owner")
    daemon.lease.tick()
    daemon.jobs.send()
    daemon.lease.release()
    return daemon


def test_the_check_records_skipped_late_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "newsletter.daemon")
    settings = settings_for(tmp_path)
    with open_store(settings.database_url) as store:
        checked_daemon(settings, store, local("2026-01-27T13:30"))
        found = store.edition_record(DAY)
    assert found is not None and found.status is EditionStatus.SKIPPED_LATE
    assert "13:00" in found.note
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2026-01-27: recorded as skipped-late" in r.getMessage() for r in warning)
    assert "next send: edition 2026-01-28 at 2026-01-28 07:00 +0100" in caplog.text


def test_the_check_does_not_send_a_held_edition_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "newsletter.daemon")
    settings = settings_for(tmp_path)
    now = local("2026-01-27T07:05")
    with open_store(settings.database_url) as store:
        store.set_held(DAY, True)
        daemon = Daemon(settings, store, clock=lambda: now, owner="test:1:owner")
        daemon.lease.tick()
        try:
            daemon.jobs.send()
            daemon.jobs.send()
        finally:
            daemon.lease.release()
        found = store.edition_record(DAY)
    assert found is not None and found.held and found.status is EditionStatus.OPEN
    assert caplog.text.count("held by an editor, not sent") == 1


def test_a_standby_check_does_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with open_store(settings.database_url) as store:
        assert store.acquire_lock("scheduler", "elsewhere:1:x", 30)
        checked_daemon(settings, store, local("2026-01-27T13:30"))
        assert store.edition_record(DAY) is None


def test_preview_records_are_kept_once(tmp_path: Path) -> None:
    with open_store(sqlite_url(tmp_path), FakeClock()) as store:
        assert store.preview_sent_at(DAY) is None
        store.record_preview_sent(DAY, 2)
        first = store.preview_sent_at(DAY)
        store.record_preview_sent(DAY, 3)
        assert store.preview_sent_at(DAY) == first
        assert store.edition_record(DAY) is None  # a preview is not an edition in the ledger


# ---------------------------------------------------------------------------------------------
# hold / release, and the --now testing aid
# ---------------------------------------------------------------------------------------------


def test_hold_and_release_say_what_the_scheduler_will_do(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with open_store(settings.database_url) as store:
        before = local("2026-01-27T05:00")
        assert "not held" in set_hold(store, settings, DAY, held=False, now=before)
        assert store.edition_record(DAY) is None
        line = set_hold(store, settings, DAY, held=True, now=before)
        assert line.startswith("edition 2026-01-27: held;")
        assert store.edition_record(DAY).held
        line = set_hold(store, settings, DAY, held=False, now=before)
        assert "sends it at 2026-01-27 07:00 +0100" in line
        set_hold(store, settings, DAY, held=True)
        assert "within a minute" in set_hold(
            store, settings, DAY, held=False, now=local("2026-01-27T08:00")
        )
        set_hold(store, settings, DAY, held=True)
        assert "newsletter send --date 2026-01-27" in set_hold(
            store, settings, DAY, held=False, now=local("2026-01-27T14:00")
        )
        store.record_edition_status(DAY, EditionStatus.EMPTY, "no article")
        with pytest.raises(EditionFinished, match="already empty: it cannot be held"):
            set_hold(store, settings, DAY, held=True)
        assert not store.edition_record(DAY).held


def test_now_needs_an_offset_and_then_runs_at_real_speed() -> None:
    start = parse_now("2026-01-27T07:05:00+01:00")
    assert start == datetime(2026, 1, 27, 6, 5, tzinfo=UTC)
    clock = shifted_clock(start)
    assert timedelta(0) <= clock() - start < timedelta(seconds=1)
    with pytest.raises(Exception, match="offset"):
        parse_now("2026-01-27T07:05:00")
    with pytest.raises(Exception, match="offset"):
        parse_now("tomorrow")
