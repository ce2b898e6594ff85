"""Entry point: ``newsletter run``, the daemon that sends each edition on time, once.

APScheduler 3.11 only wakes us up; every rule about what to send lives in ``schedule.py`` and
every guarantee lives in the database:
- a BlockingScheduler with an in-memory job store (a shared job store double-fires across
  processes), a cron job at the send time, one at the editors' preview time, and a check every
  minute. All three run the same ``check``, which reads the clock and the ledger and decides, so
  a missed cron run (a late start, a machine waking from sleep) is caught up by the next check;
- one sender per database: the store's ``scheduler`` lock, a lease renewed from a thread of its
  own; a second daemon stands by, polls, and takes over when the lease expires (at once when the
  holder was a process of this host that no longer exists). Only the holder sends, and a holder
  that loses its lease stops its send. The ledger's unique key (edition, subscriber) is the last
  line of defence: two senders claim different rows, never the same one twice;
- SIGTERM or SIGINT sets the ``stop`` event of the send in progress (the messages in flight are
  finished and recorded), shuts the scheduler down, releases the lock and exits 0.

Log lines go to stderr, one per event, with a timestamp; errors are one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from newsletter.adapters.store import Store, open_store
from newsletter.config import Settings
from newsletter.domain import DeliveryStatus, EditionStatus
from newsletter.domain.errors import NewsletterError, UsageError
from newsletter.domain.timetable import (
    ON_TIME_TOLERANCE,
    Action,
    Decision,
    as_utc,
    decide_preview,
    decide_send,
)
from newsletter.services.delivery import (
    NothingToSend,
    new_owner_id,
    owner_is_dead,
    send_edition,
    send_test,
)
from newsletter.services.editions import report_line

log = logging.getLogger("newsletter.daemon")

Clock = Callable[[], datetime]

LOCK_NAME = "scheduler"
LOCK_TTL = 30.0  # seconds a lease lasts without renewal: how long a dead holder blocks a standby
LOCK_RENEW_EVERY = 10.0  # the holder renews three times per lease: one slow renewal is harmless
STANDBY_POLL_EVERY = 5.0
# The holder stops trusting its lease this long before it runs out in the database, so that it
# has stopped sending before a standby can take over.
LEASE_MARGIN = 5.0
CHECK_EVERY = 60  # seconds between catch-up checks (also bounds the delay after a wake-up)
RETRY_AFTER = timedelta(minutes=5)  # after a failed or unfinished send or preview
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


# ---------------------------------------------------------------------------------------------
# Clocks and small helpers
# ---------------------------------------------------------------------------------------------


def system_clock() -> datetime:
    return datetime.now(UTC)


def shifted_clock(start: datetime) -> Clock:
    """A clock that reads ``start`` now and runs at real speed from there (``run --now``)."""
    origin = time.monotonic()
    begin = as_utc(start)
    return lambda: begin + timedelta(seconds=time.monotonic() - origin)


def parse_now(text: str) -> datetime:
    """The ``run --now`` value: an ISO 8601 instant with its offset."""
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise UsageError(
            f"--now {text!r} is not an instant with an offset",
            "expected e.g. 2026-01-27T07:05:00+01:00",
        ) from None


def one_line(err: BaseException) -> str:
    """An exception as one log line: our errors say it all, others get their type."""
    if isinstance(err, NewsletterError):
        return str(err)
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def configure_logging() -> None:
    """One line per event on stderr, with a timestamp; APScheduler only for its warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Its INFO lines ("Running job ...", "Added job ...") would double every event of ours.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _until(now: datetime, moment: datetime) -> str:
    minutes = max(0, int((moment - now).total_seconds() // 60))
    return f"in {minutes // 60}h{minutes % 60:02d}"


# ---------------------------------------------------------------------------------------------
# The lease: one sender per database
# ---------------------------------------------------------------------------------------------


class Lease:
    """The store's ``scheduler`` lock, taken, renewed and polled from a thread of its own.

    A thread rather than an APScheduler job: renewal must go on while a long send occupies the
    scheduler's workers, and must stop the send when it fails.
    """

    def __init__(
        self,
        store: Store,
        owner: str,
        *,
        on_taken: Callable[[], None],
        on_lost: Callable[[str], None],
        ttl: float = LOCK_TTL,
        renew_every: float = LOCK_RENEW_EVERY,
        poll_every: float = STANDBY_POLL_EVERY,
    ) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.renew_every = renew_every
        self.poll_every = poll_every
        self._on_taken = on_taken
        self._on_lost = on_lost
        self._held = False
        self._valid_until = 0.0  # monotonic time after which we no longer trust our lease
        self._standby_for: str | None = None  # the holder we last announced standing by for
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler-lease", daemon=True)

    def holds(self) -> bool:
        return self._held and time.monotonic() < self._valid_until

    def start(self) -> None:
        self._attempt()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and give the lock up, so a standby takes over at its next poll."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self._held:
            self._held = False
            try:
                self.store.release_lock(LOCK_NAME, self.owner)
            except Exception as err:  # it expires by itself within LOCK_TTL anyway
                log.error("lock: could not release it: %s", one_line(err))

    def _loop(self) -> None:
        next_try = time.monotonic() + (self.renew_every if self._held else self.poll_every)
        while not self._stop.wait(1.0):
            try:
                if self._held and not self.holds():
                    self._lose("its lease ran out before it could be renewed")
                if time.monotonic() >= next_try:
                    self._attempt()
                    next_try = time.monotonic() + (
                        self.renew_every if self._held else self.poll_every
                    )
            except Exception as err:
                # This thread must outlive any surprise: without it the lease silently lapses.
                log.error("lock: %s", one_line(err))

    def _attempt(self) -> None:
        asked = time.monotonic()
        try:
            taken, holder = self._acquire()
        except Exception as err:
            # The database may be away for a moment; the lease we have stays valid until it ends.
            log.error("lock: cannot reach the database: %s", one_line(err))
            return
        if taken:
            self._valid_until = asked + self.ttl - LEASE_MARGIN
            if not self._held:
                self._held = True
                self._standby_for = None
                log.info("lock taken: this process sends (owner %s)", self.owner)
                self._on_taken()
        elif self._held:
            self._lose(f"now held by {holder}")
        elif holder != self._standby_for:
            self._standby_for = holder
            log.info(
                "standby: the scheduler lock is held by %s; polling every %gs to take over",
                holder,
                self.poll_every,
            )

    def _acquire(self) -> tuple[bool, str | None]:
        if self.store.acquire_lock(LOCK_NAME, self.owner, self.ttl):
            return True, None
        found = self.store.lock_holder(LOCK_NAME)
        holder = found[0] if found else None
        # kill -9 on this host: no need to wait for the dead holder's lease to run out.
        if (
            holder
            and owner_is_dead(holder)
            and self.store.take_over_lock(LOCK_NAME, holder, self.owner, self.ttl)
        ):
            log.warning("lock: its holder %s no longer exists; taking over", holder)
            return True, None
        return False, holder

    def _lose(self, why: str) -> None:
        self._held = False
        log.warning("lock lost (%s): stopping any send in progress; standby", why)
        self._on_lost(why)


# ---------------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------------


class Daemon:
    """Wires the timetable, the store, the lease and APScheduler; ``run()`` blocks until stopped."""

    def __init__(
        self, settings: Settings, store: Store, *, clock: Clock = system_clock, owner: str = ""
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.timetable = settings.timetable
        self.stopping = threading.Event()
        self._busy = threading.Lock()  # one check at a time, whichever job started it
        self._again = False  # a check was asked for while one was running
        self._send_stop: threading.Event | None = None  # the stop event of the send in progress
        self._retry_at: dict[date, datetime] = {}
        self._preview_retry_at: dict[date, datetime] = {}
        self._said: set[tuple[str, date]] = set()  # warnings said once per edition
        self._announced = False
        self._main_done = threading.Event()
        self._stopped = threading.Event()
        self.scheduler = self._build_scheduler()
        self.lease = Lease(
            store, owner or new_owner_id(), on_taken=self._check_soon, on_lost=self._lost
        )

    # -- set-up ----------------------------------------------------------------------------------
    def _build_scheduler(self) -> BlockingScheduler:
        zone = self.settings.timezone
        scheduler = BlockingScheduler(
            timezone=zone,
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        # APScheduler's default grace of 1 s silently drops a run that starts late; ours lasts
        # as long as the scheduler may still send (and `check` decides anyway).
        grace = int(self.timetable.deadline.total_seconds() + ON_TIME_TOLERANCE.total_seconds())
        send = self.settings.send_time
        scheduler.add_job(
            self.check,
            CronTrigger(hour=send.hour, minute=send.minute, timezone=zone),
            id="send",
            name="daily send",
            misfire_grace_time=grace,
        )
        if self.settings.editors and self.settings.preview_lead_minutes > 0:
            minutes = (send.hour * 60 + send.minute - self.settings.preview_lead_minutes) % 1440
            scheduler.add_job(
                self.check,
                CronTrigger(hour=minutes // 60, minute=minutes % 60, timezone=zone),
                id="preview",
                name="editors' preview",
                misfire_grace_time=grace,
            )
        # The catch-up check: runs at once, then every minute. Two instances may overlap only
        # while a long send runs; the second returns at once (see check), without APScheduler's
        # "maximum number of running instances reached" warning every minute.
        scheduler.add_job(
            self.check,
            IntervalTrigger(seconds=CHECK_EVERY, timezone=zone),
            id="check",
            name="catch-up check",
            next_run_time=datetime.now(zone),
            misfire_grace_time=None,
            max_instances=2,
        )
        return scheduler

    def _describe(self) -> str:
        settings = self.settings
        text = (
            f"sends daily at {settings.send_time:%H:%M} {settings.timezone.key}, "
            f"catch-up deadline {settings.send_deadline_hours:g}h"
        )
        if settings.editors and settings.preview_lead_minutes > 0:
            text += (
                f", editors' preview {settings.preview_lead_minutes} min before "
                f"to {len(settings.editors)} address(es)"
            )
        return text

    # -- run and stop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Block until SIGTERM or SIGINT; 0 when stopped cleanly."""
        self._install_signals()
        log.info("newsletter run: started as %s; %s", self.lease.owner, self._describe())
        try:
            self.lease.start()
            if not self.stopping.is_set():
                self.scheduler.start()
        finally:
            self._main_done.set()
        if self.stopping.is_set():
            self._stopped.wait()  # the shutdown thread waits for the check in progress
        self.lease.stop()
        log.info("stopped")
        return 0

    def _install_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only flags here: the shutdown (which waits for a send to finish) runs in a thread.
        self.request_stop(signal.Signals(signum).name)

    def request_stop(self, reason: str) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._send_stop is not None:
            self._send_stop.set()
        threading.Thread(
            target=self._shutdown, args=(reason,), name="scheduler-shutdown", daemon=True
        ).start()

    def _shutdown(self, reason: str) -> None:
        log.info("%s received: finishing the messages in flight, then stopping", reason)
        try:
            # The signal may come before the scheduler runs: then wait for it, or for run() to
            # have skipped it.
            while not self._main_done.is_set():
                if self.scheduler.running:
                    self.scheduler.shutdown(wait=True)
                    break
                time.sleep(0.05)
        except SchedulerNotRunningError:
            pass
        finally:
            self._stopped.set()

    # -- lease callbacks -------------------------------------------------------------------------
    def _check_soon(self) -> None:
        """Right after taking the lock over: look at the ledger now, not in a minute."""
        if not self.scheduler.running:
            return  # the first check is already due at start
        with contextlib.suppress(JobLookupError, SchedulerNotRunningError):
            self.scheduler.modify_job("check", next_run_time=datetime.now(UTC))

    def _lost(self, _why: str) -> None:
        self._announced = False
        if self._send_stop is not None:
            self._send_stop.set()

    # -- the check -------------------------------------------------------------------------------
    def check(self) -> None:
        """One look at the clock and the ledger; every job runs this, one at a time."""
        if not self._busy.acquire(blocking=False):
            self._again = True  # the running check looks once more when it is done
            return
        try:
            self._again = True
            while self._again and not self.stopping.is_set():
                self._again = False
                self._check_once()
        finally:
            self._busy.release()

    def _check_once(self) -> None:
        if not self.lease.holds():
            return
        try:
            acted = self._check_send()
            acted = self._check_preview() or acted
            if (acted or not self._announced) and not self.stopping.is_set():
                self._announce_next()
        except Exception as err:
            # A database hiccup or a bug: one line, and the next check (a minute on) tries again.
            log.error("check failed: %s", one_line(err))

    def _announce_next(self) -> None:
        now = self.clock()
        day = self.timetable.next_edition(now)
        at = self.timetable.send_at(day)
        text = f"next send: edition {day} at {self.timetable.local(at)} ({_until(now, at)})"
        if self.settings.editors and self.settings.preview_lead_minutes > 0:
            text += f"; editors' preview at {self.timetable.local(self.timetable.preview_at(day))}"
        log.info(text)
        self._announced = True

    def _check_send(self) -> bool:
        """Carry out the send decision for the due edition; True when something happened."""
        now = self.clock()
        day = self.timetable.due_edition(now)
        decision = decide_send(
            now, self.timetable, self.store.edition_record(day), self._retry_at.get(day)
        )
        if decision.action is Action.SEND:
            self._send(decision, now)
            return True
        if decision.action is Action.SKIP_LATE:
            self.store.record_edition_status(day, EditionStatus.SKIPPED_LATE, decision.note)
            log.warning(
                "edition %s: recorded as skipped-late: %s; `newsletter send --date %s` still "
                "sends it by hand",
                day,
                decision.note,
                day,
            )
            return True
        if decision.action is Action.HELD:
            return self._say_once(
                "held",
                day,
                logging.WARNING,
                f"edition {day}: held by an editor, not sent; `newsletter release --date {day}` "
                f"lets it go before its deadline {self.timetable.local(self.timetable.deadline_at(day))}",
            )
        if decision.action is Action.LATE_PARTIAL:
            if ("late-partial", day) in self._said:
                return False
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

    def _send(self, decision: Decision, now: datetime) -> None:
        day = decision.day
        late = now - decision.at > ON_TIME_TOLERANCE
        if late:
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
        if self.stopping.is_set() or not self.lease.holds():
            stop.set()  # a signal or a lost lease just before: the send returns at once
        try:
            report = send_edition(
                self.store,
                self.settings,
                day,
                stop=stop,
                on_frozen=lambda pending: log.info(
                    "edition %s: %d recipient(s) to send to", day, pending
                ),
            )
        except NothingToSend:
            # send_edition recorded the edition as empty.
            log.warning(
                "edition %s: no article in its window: recorded as empty, nothing sent", day
            )
            return
        except Exception as err:
            self._retry_at[day] = now + RETRY_AFTER
            log.error(
                "edition %s: send failed: %s; next try at %s",
                day,
                one_line(err),
                self.timetable.local(self._retry_at[day]),
            )
            return
        finally:
            self._send_stop = None
        for warning in report.warnings:
            log.warning(warning)
        log.info(report_line(report))
        if report.complete:
            self._retry_at.pop(day, None)
        elif stop.is_set():
            log.info("edition %s: send interrupted; the next sender continues it", day)
        else:
            self._retry_at[day] = self.clock() + RETRY_AFTER
            log.error(
                "edition %s: %s; next try at %s",
                day,
                report.error or "some messages could not be sent yet",
                self.timetable.local(self._retry_at[day]),
            )

    def _check_preview(self) -> bool:
        """Send the editors' preview of the next edition when it is due; True when attempted."""
        if not self.settings.editors or self.stopping.is_set():
            return False
        now = self.clock()
        day = self.timetable.next_edition(now)
        if now < self.timetable.preview_at(day) or now < self._preview_retry_at.get(day, now):
            return False
        due = decide_preview(
            now,
            self.timetable,
            editors=True,
            record=self.store.edition_record(day),
            sent_at=self.store.preview_sent_at(day),
        )
        if due is None:
            return False
        try:
            count = send_test(self.store, self.settings, due, self.settings.editors)
        except NothingToSend:
            self._preview_retry_at[due] = now + RETRY_AFTER
            return self._say_once(
                "preview-empty",
                due,
                logging.INFO,
                f"edition {due}: no article yet for the editors' preview; looking again every "
                f"{int(RETRY_AFTER.total_seconds() // 60)} min until the send time",
            )
        except Exception as err:
            self._preview_retry_at[due] = now + RETRY_AFTER
            log.error("edition %s: editors' preview failed: %s", due, one_line(err))
            return True
        self.store.record_preview_sent(due, count)
        log.info(
            "edition %s: editors' preview sent to %d address(es); the edition goes out at %s",
            due,
            count,
            self.timetable.local(self.timetable.send_at(due)),
        )
        return True


# ---------------------------------------------------------------------------------------------
# What the commands call
# ---------------------------------------------------------------------------------------------


def run_daemon(settings: Settings, *, start_at: datetime | None = None) -> int:
    """``newsletter run``: check the settings, open the store and block until stopped."""
    configure_logging()
    settings.require_sending()
    clock = system_clock if start_at is None else shifted_clock(start_at)
    if start_at is not None:
        log.warning(
            "testing aid: the scheduler's clock starts at %s instead of now (run --now)",
            start_at.astimezone(settings.timezone).isoformat(),
        )
    with open_store(settings.database_url) as store:
        try:
            return Daemon(settings, store, clock=clock).run()
        except NewsletterError:
            raise  # the command turns it into one line and its exit status
        except Exception as err:
            log.error("stopped by an unexpected error: %s", one_line(err))
            return 1
