"""What the daemon's scheduled jobs do: the send of the due edition and the editors' preview.

Each job reads the clock and the ledger, carries out what the timetable decides
(``domain/timetable.py``) and returns the moment, on the daemon's clock, at which it wants to run
next (None: not until this process holds the lease again). The runner schedules it there:
- the send job runs at the due edition's send time; when that has passed (a late start, a
  takeover) it catches up at once until the deadline, then records the edition skipped-late; after
  a failed attempt it runs again RETRY_AFTER later; while an editor holds the due edition it looks
  again every minute, so a release is acted on within a minute;
- the preview job runs NEWSLETTER_PREVIEW_LEAD minutes before the next send time, and RETRY_AFTER
  later while the edition has no article yet or the preview failed;
- the bounce job, when NEWSLETTER_BOUNCE_IMAP_URL is set, polls that mailbox every
  NEWSLETTER_BOUNCE_POLL_MINUTES (``services/mailbox.py``); a failed poll is one warning line;
- the click retention job folds the per-reader click rows older than
  NEWSLETTER_CLICK_RETENTION_DAYS into per-article totals (``services/clicks.py``) 30 s after
  taking the lease and then once a day.
Only the holder of the lease acts. Whatever happens, a job returns: an error is one log line and
the job runs again a minute later.
"""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime, timedelta

from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.daemon.clock import Clock
from newsletter.domain import DeliveryStatus, EditionStatus
from newsletter.domain.errors import error_line
from newsletter.domain.timetable import (
    ON_TIME_TOLERANCE,
    Action,
    Decision,
    decide_preview,
    decide_send,
)
from newsletter.services.clicks import fold_old_clicks
from newsletter.services.delivery import (
    NoActiveSubscriber,
    NothingToSend,
    send_edition,
    send_test,
)
from newsletter.services.editions import report_line
from newsletter.services.leases import Lease
from newsletter.services.mailbox import poll_bounce_mailbox

log = logging.getLogger("newsletter.daemon")

RETRY_AFTER = timedelta(minutes=5)  # after a failed or unfinished send or preview
LOOK_AGAIN = timedelta(minutes=1)  # while the due edition is held, and after an unexpected error
SEND, PREVIEW, BOUNCES, CLICKS = "send", "preview", "bounces", "clicks"  # the jobs' ids
FOLD_EVERY = timedelta(days=1)  # the click retention fold
FIRST_FOLD_AFTER = timedelta(seconds=30)  # after taking the lease


def _until(now: datetime, moment: datetime) -> str:
    minutes = max(0, int((moment - now).total_seconds() // 60))
    return f"in {minutes // 60}h{minutes % 60:02d}"


class Jobs:
    """The send and preview jobs of one daemon, and what they remember between runs."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        lease: Lease,
        clock: Clock,
        stopping: threading.Event,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lease = lease
        self.clock = clock
        self.stopping = stopping
        self.timetable = settings.timetable
        self.previews = bool(settings.editors) and settings.preview_lead_minutes > 0
        self._send_stop: threading.Event | None = None  # the stop event of the send in progress
        self._retry_at: dict[date, datetime] = {}
        self._said: set[tuple[str, date]] = set()  # warnings said once per edition
        # "next send" is said once both jobs have had their first look since the lease was taken,
        # then after each run that did something.
        self._announce_lock = threading.Lock()
        self._looked: set[str] = set()
        self._announced = False

    def may_act(self) -> bool:
        return self.lease.holds() and not self.stopping.is_set()

    def wanted(self, job: str) -> bool:
        """Whether job ``job`` has anything to do with these settings."""
        if job == PREVIEW:
            return self.previews
        if job == BOUNCES:
            return bool(self.settings.bounce_imap_url)
        return True

    def stop_send(self) -> None:
        """Ask the send in progress, if any, to finish its messages in flight and return."""
        stop = self._send_stop
        if stop is not None:
            stop.set()

    def lease_lost(self) -> None:
        self.stop_send()
        with self._announce_lock:
            self._looked.clear()
            self._announced = False

    # -- the send job ----------------------------------------------------------------------------
    def send(self) -> datetime | None:
        """Carry out the send decision for the due edition; when to run again."""
        if not self.may_act():
            return None
        acted = False
        try:
            for _ in range(3):  # an action changes the ledger: decide again, for the next moment
                now = self.clock()
                day = self.timetable.due_edition(now)
                decision = decide_send(
                    now, self.timetable, self.store.edition_record(day), self._retry_at.get(day)
                )
                if decision.action is Action.SEND:
                    acted = True
                    if not self._send(decision, now):
                        return None  # stopped: a signal or a lost lease
                elif decision.action is Action.SKIP_LATE:
                    acted = True
                    self._skip_late(decision)
                else:
                    break
            else:
                return self.clock() + LOOK_AGAIN
            acted = self._say(decision) or acted
            self._announce(SEND, acted)
            return self._next_look(decision, now)
        except Exception as err:
            # A database hiccup or a bug: one line, and a look again a minute on.
            log.error("check failed: %s", error_line(err))
            return self.clock() + LOOK_AGAIN

    def _next_look(self, decision: Decision, now: datetime) -> datetime:
        if decision.action in (Action.WAIT, Action.RETRY_LATER):
            return decision.at
        if decision.action is Action.HELD:
            return now + LOOK_AGAIN
        # LATE_PARTIAL: left for an editor; the next edition's send time.
        return self.timetable.send_at(self.timetable.next_edition(now))

    def _skip_late(self, decision: Decision) -> None:
        day = decision.day
        self.store.record_edition_status(day, EditionStatus.SKIPPED_LATE, decision.note)
        log.warning(
            "edition %s: recorded as skipped-late: %s; `newsletter send --date %s` still "
            "sends it by hand",
            day,
            decision.note,
            day,
        )

    def _say(self, decision: Decision) -> bool:
        """The warnings of a held or late edition, once per edition; True when said now."""
        day = decision.day
        if decision.action is Action.HELD:
            deadline = self.timetable.local(self.timetable.deadline_at(day))
            return self._say_once(
                "held",
                day,
                logging.WARNING,
                f"edition {day}: held by an editor, not sent; `newsletter release --date {day}` "
                f"lets it go before its deadline {deadline}",
            )
        if decision.action is Action.LATE_PARTIAL and ("late-partial", day) not in self._said:
            counts = self.store.delivery_counts(day)
            left = counts.get(DeliveryStatus.PENDING, 0) + counts.get(DeliveryStatus.SENDING, 0)
            return self._say_once(
                "late-partial",
                day,
                logging.WARNING,
                f"edition {day}: {decision.note}, {left} still to send: the scheduler leaves it; "
                f"`newsletter send --date {day}` completes it",
            )
        return False  # WAIT, RETRY_LATER: the reason was logged when it arose

    def _say_once(self, kind: str, day: date, level: int, message: str) -> bool:
        if (kind, day) in self._said:
            return False
        self._said.add((kind, day))
        log.log(level, message)
        return True

    def _send(self, decision: Decision, now: datetime) -> bool:
        """Send (or continue) the edition; False when a stop request interrupted it."""
        day = decision.day
        if now - decision.at > ON_TIME_TOLERANCE:
            log.info(
                "edition %s: catching up, its send time %s has passed (deadline %s)",
                day,
                self.timetable.local(decision.at),
                self.timetable.local(self.timetable.deadline_at(day)),
            )
        else:
            log.info("edition %s: sending", day)
        stop = threading.Event()
        self._send_stop = stop
        if not self.may_act():
            stop.set()  # a signal or a lost lease just before: the send returns at once
        try:
            report = send_edition(
                self.store,
                self.settings,
                day,
                stop=stop,
                on_frozen=lambda pending: log.info(
                    "edition %(day)s: "
                    + english_ngettext(
                        "%(num)d recipient to send to", "%(num)d recipients to send to", pending
                    ),
                    {"day": day, "num": pending},
                ),
            )
        except NothingToSend:
            # send_edition recorded the edition as empty.
            log.warning(
                "edition %s: no article in its window: recorded as empty, nothing sent", day
            )
            return True
        except NoActiveSubscriber as err:
            # Nothing recorded: the edition stays open and goes out once the list is imported,
            # until its deadline. Said once; looked at again every minute.
            self._retry_at[day] = now + LOOK_AGAIN
            self._say_once(
                "no-subscriber",
                day,
                logging.WARNING,
                f"{err}; looking again every minute until its deadline",
            )
            return True
        except Exception as err:
            self._retry_at[day] = now + RETRY_AFTER
            log.error(
                "edition %s: send failed: %s; next try at %s",
                day,
                error_line(err),
                self.timetable.local(self._retry_at[day]),
            )
            return True
        finally:
            self._send_stop = None
        for warning in report.warnings:
            log.warning(warning)
        log.info(report_line(report))
        if report.complete:
            self._retry_at.pop(day, None)
        elif stop.is_set():
            log.info("edition %s: send interrupted; the next sender continues it", day)
            return False
        else:
            self._retry_at[day] = self.clock() + RETRY_AFTER
            log.error(
                "edition %s: %s; next try at %s",
                day,
                report.error or "some messages could not be sent yet",
                self.timetable.local(self._retry_at[day]),
            )
        return True

    # -- the preview job -------------------------------------------------------------------------
    def preview(self) -> datetime | None:
        """Send the editors' preview of the next edition when it is due; when to run again."""
        if not self.previews or not self.may_act():
            return None
        now = self.clock()
        try:
            acted, again = self._preview(now)
        except Exception as err:
            log.error("check failed: %s", error_line(err))
            return now + LOOK_AGAIN
        self._announce(PREVIEW, acted)
        return again

    def _next_preview(self, now: datetime) -> datetime:
        day = self.timetable.next_edition(now)
        at = self.timetable.preview_at(day)
        if at <= now:  # this edition's preview is done or too late: the following one's
            at = self.timetable.preview_at(day + timedelta(days=1))
        return at if at > now else now + LOOK_AGAIN

    def _preview(self, now: datetime) -> tuple[bool, datetime]:
        day = self.timetable.next_edition(now)
        due = decide_preview(
            now,
            self.timetable,
            editors=True,
            record=self.store.edition_record(day),
            sent_at=self.store.preview_sent_at(day),
        )
        if due is None:
            return False, self._next_preview(now)
        try:
            count = send_test(self.store, self.settings, due, self.settings.editors)
        except NothingToSend:
            said = self._say_once(
                "preview-empty",
                due,
                logging.INFO,
                f"edition {due}: no article yet for the editors' preview; looking again every "
                f"{int(RETRY_AFTER.total_seconds() // 60)} min until the send time",
            )
            return said, now + RETRY_AFTER
        except Exception as err:
            log.error("edition %s: editors' preview failed: %s", due, error_line(err))
            return True, now + RETRY_AFTER
        self.store.record_preview_sent(due, count)
        log.info(
            "edition %(day)s: editors' preview sent to "
            + english_ngettext("%(num)d address", "%(num)d addresses", count)
            + "; the edition goes out at %(at)s",
            {"day": due, "num": count, "at": self.timetable.local(self.timetable.send_at(due))},
        )
        return True, self._next_preview(self.clock())

    # -- the bounce mailbox ----------------------------------------------------------------------
    def poll_bounces(self) -> datetime | None:
        """Poll the bounce mailbox once; the next poll NEWSLETTER_BOUNCE_POLL_MINUTES later."""
        if not self.wanted(BOUNCES) or not self.may_act():
            return None
        every = timedelta(minutes=self.settings.bounce_poll_minutes)
        try:
            report = poll_bounce_mailbox(self.store, self.settings)
        except Exception as err:  # unreachable, login refused, a bug: the daemon goes on
            log.warning(
                "bounce mailbox: poll failed: %s; next poll in %d min",
                error_line(err),
                self.settings.bounce_poll_minutes,
            )
            return self.clock() + every
        for line in report.lines:
            log.info("bounce mailbox: %s", line)
        if report.lines or report.error:  # a poll that found nothing says nothing
            log.info(report.summary())
        if report.error:
            log.warning("bounce mailbox: %s", report.error)
        return self.clock() + every

    # -- click retention -------------------------------------------------------------------------
    def fold_clicks(self) -> datetime | None:
        """Fold the click rows past NEWSLETTER_CLICK_RETENTION_DAYS; again a day later."""
        if not self.may_act():
            return None
        try:
            folded = fold_old_clicks(self.store, self.settings, self.clock())
        except Exception as err:  # the database is busy or down: the daemon goes on
            log.warning("click retention: fold failed: %s; next try in 1h", error_line(err))
            return self.clock() + timedelta(hours=1)
        if folded:
            log.info(
                "click retention: %s past %d days folded into per-article totals",
                english_ngettext("%(num)d click row", "%(num)d click rows", folded)
                % {"num": folded},
                self.settings.click_retention_days,
            )
        return self.clock() + FOLD_EVERY

    # -- "next send" -----------------------------------------------------------------------------
    def _announce(self, job: str, acted: bool) -> None:
        with self._announce_lock:
            self._looked.add(job)
            first_looks = {SEND, PREVIEW} if self.previews else {SEND}
            if not first_looks <= self._looked or self.stopping.is_set():
                return
            if self._announced and not acted:
                return
            self._announced = True
        now = self.clock()
        day = self.timetable.next_edition(now)
        at = self.timetable.send_at(day)
        text = f"next send: edition {day} at {self.timetable.local(at)} ({_until(now, at)})"
        if self.previews:
            text += f"; editors' preview at {self.timetable.local(self.timetable.preview_at(day))}"
        log.info(text)
