"""When the daily send happens, pure: given now, the settings and an edition's ledger record, decide.

Nothing here reads a clock, a file or the database: the daemon (``newsletter/daemon/``) passes
``now`` and the records in, carries the decision out, and schedules its jobs at the moments
given here. That keeps every rule testable with an injected clock, minute by minute through a
DST change, in milliseconds.

Every instant is an aware datetime and is compared in UTC: Python compares two datetimes that
share a ``ZoneInfo`` by wall clock, which is wrong across a DST change (see edition.Window).

The rules:
- the edition of day D is due at D's send time (``local_cutoff``: the local date at the send
  time is the edition date), and stays due until the next edition's send time;
- a due edition that is not complete is sent, at once, while its deadline (send time +
  NEWSLETTER_SEND_DEADLINE hours) has not passed; "complete" is sent, empty or skipped-late;
- a held edition is not sent; past its deadline it is recorded as skipped-late, as is any edition
  nobody sent in time, so that no day is skipped silently;
- an edition already partly sent (frozen) is completed within its deadline; past it the scheduler
  leaves it for an editor (``newsletter send --date D`` completes it) and says so;
- the editors' preview of the next edition is due NEWSLETTER_PREVIEW_LEAD minutes before its send
  time, once, unless the edition is already frozen (being sent or sent).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.domain import EditionRecord, EditionStatus
from newsletter.domain.edition import local_cutoff

# A send that starts within this long after its time counts as on time, whatever the deadline:
# a cron job fires a few milliseconds late, and NEWSLETTER_SEND_DEADLINE=0 means "on time only",
# not "never".
ON_TIME_TOLERANCE = timedelta(minutes=1)

# Ledger statuses after which the scheduler has nothing left to do for an edition.
FINISHED = frozenset({EditionStatus.SENT, EditionStatus.EMPTY, EditionStatus.SKIPPED_LATE})


class Action(enum.StrEnum):
    """What the daemon does about the due edition now."""

    WAIT = "wait"  # nothing due: the next edition goes out at ``at``
    SEND = "send"  # send (or continue sending) ``day`` now
    RETRY_LATER = "retry-later"  # an earlier attempt failed: try again at ``at``
    HELD = "held"  # due but held by an editor: not sent
    SKIP_LATE = "skip-late"  # past its deadline and never started: record it as skipped-late
    LATE_PARTIAL = "late-partial"  # past its deadline, partly sent: left for an editor


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    day: date  # the edition concerned (for WAIT: the next one)
    at: datetime  # WAIT/RETRY_LATER: when to look again; otherwise the edition's send time (UTC)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Timetable:
    """The daily send time, its deadline and the editors' preview lead, in the site's zone."""

    send_time: time
    zone: ZoneInfo
    deadline: timedelta
    preview_lead: timedelta

    def send_at(self, day: date) -> datetime:
        """When edition ``day`` goes out, as a UTC instant (the end of its window)."""
        return local_cutoff(day, self.send_time, self.zone)

    def deadline_at(self, day: date) -> datetime:
        """After this instant the scheduler no longer sends edition ``day`` on its own."""
        return self.send_at(day) + max(self.deadline, ON_TIME_TOLERANCE)

    def preview_at(self, day: date) -> datetime:
        """When the editors get their test send of edition ``day``."""
        return self.send_at(day) - self.preview_lead

    def due_edition(self, now: datetime) -> date:
        """The latest edition whose send time has come (at ``now`` or before)."""
        today = now.astimezone(self.zone).date()
        # send_at(today - 1) is always on the local day before today, so before now.
        return today if self.send_at(today) <= now else today - timedelta(days=1)

    def next_edition(self, now: datetime) -> date:
        """The first edition whose send time is still to come (after ``now``)."""
        today = now.astimezone(self.zone).date()
        return today if self.send_at(today) > now else today + timedelta(days=1)

    def local(self, moment: datetime) -> str:
        """``moment`` as the site's wall clock with its offset, for log lines."""
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M %z")


def is_finished(record: EditionRecord | None) -> bool:
    return record is not None and record.status in FINISHED


def decide_send(
    now: datetime,
    timetable: Timetable,
    record: EditionRecord | None,
    retry_at: datetime | None = None,
) -> Decision:
    """What to do about the due edition at ``now``; ``record`` is that edition's ledger entry.

    ``record`` must be the entry of ``timetable.due_edition(now)``; ``retry_at`` is when the
    daemon may try that edition again after a failed or unfinished attempt (None: any time).
    """
    day = timetable.due_edition(now)
    if is_finished(record):
        upcoming = timetable.next_edition(now)
        return Decision(Action.WAIT, upcoming, timetable.send_at(upcoming))
    deadline = timetable.deadline_at(day)
    if now > deadline:
        return _late(day, timetable, record)
    if record is not None and record.held:
        return Decision(Action.HELD, day, timetable.send_at(day), "held by an editor")
    if retry_at is not None and now < retry_at:
        return Decision(Action.RETRY_LATER, day, retry_at)
    return Decision(Action.SEND, day, timetable.send_at(day))


def _late(day: date, timetable: Timetable, record: EditionRecord | None) -> Decision:
    deadline = timetable.local(timetable.deadline_at(day))
    if record is not None and record.frozen_at is not None:
        return Decision(
            Action.LATE_PARTIAL,
            day,
            timetable.send_at(day),
            f"partly sent and past its deadline ({deadline})",
        )
    why = (
        "still held at its deadline"
        if record is not None and record.held
        else "not sent by its deadline"
    )
    return Decision(Action.SKIP_LATE, day, timetable.send_at(day), f"{why} ({deadline})")


def decide_preview(
    now: datetime,
    timetable: Timetable,
    *,
    editors: bool,
    record: EditionRecord | None,
    sent_at: datetime | None,
) -> date | None:
    """The edition whose editors' preview is due at ``now``, or None.

    ``record`` and ``sent_at`` (when its preview went out, if it did) belong to
    ``timetable.next_edition(now)``. A lead of 0 minutes turns the preview off.
    """
    if not editors or timetable.preview_lead <= timedelta(0) or sent_at is not None:
        return None
    day = timetable.next_edition(now)
    if now < timetable.preview_at(day):
        return None
    if record is not None and (record.frozen_at is not None or record.status in FINISHED):
        return None  # already going out (an editor sent it early): a preview is too late
    return day


def as_utc(moment: datetime) -> datetime:
    """An aware instant in UTC; naive datetimes are refused (their zone would be a guess)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: give an offset, e.g. 2026-01-27T07:05:00+01:00")
    return moment.astimezone(UTC)
