"""The daemon's process: APScheduler, its jobs, the signals, and ``run_daemon``.

A BackgroundScheduler with an in-memory job store (a shared job store double-fires across
processes) and a thread for each job runs these jobs, at most one instance of each:
- ``lease``: renews the scheduler lock every 10 s, or polls for it every 5 s on standby
  (``services/leases.py``); having a worker of its own, it goes on while a long send runs, and
  stops the send when the lease is lost;
- ``send`` and ``preview`` (``jobs.py``): each returns the moment, on the daemon's clock, at which
  it wants to run next, computed from the timetable; once it has run, it is scheduled there with
  a DateTrigger at the equivalent real instant (the same instant unless ``run --now`` shifted the
  clock). Taking the lease over schedules both at once;
- ``clicks`` (``jobs.py``): the click retention fold, 30 s after taking the lease, then daily;
- ``bounces`` (``jobs.py``), only when NEWSLETTER_BOUNCE_IMAP_URL is set: polls the bounce mailbox
  at once on taking the lease, then every NEWSLETTER_BOUNCE_POLL_MINUTES.
A job that comes late (a paused process, a busy machine) still runs, once: ``misfire_grace_time``
is None and ``coalesce`` True, and the job itself decides from the clock what is still due (catch
up, or record the edition skipped-late). Since the lease job runs at least every 10 s, the
scheduler wakes up that often, so a job due while the machine slept runs within seconds of waking.

SIGTERM or SIGINT only requests the stop: its handler writes the signal's number on a pipe. The
main thread, which was waiting on that pipe, sets the ``stopping`` event and the stop event of the
send in progress, then calls ``scheduler.shutdown(wait=True)``, which waits for the job in
progress (the messages in flight are finished and recorded), releases the lock and exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timedelta
from types import FrameType
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.store import Store, open_store
from newsletter.config import Settings
from newsletter.daemon.clock import Clock, real_instant, shifted_clock, system_clock
from newsletter.daemon.jobs import (
    BOUNCES,
    CLICKS,
    FIRST_FOLD_AFTER,
    LOOK_AGAIN,
    PREVIEW,
    SEND,
    Jobs,
)
from newsletter.domain.errors import NewsletterError, error_line
from newsletter.services.leases import Lease, new_owner_id

log = logging.getLogger("newsletter.daemon")

LEASE = "lease"  # the lease job's id (SEND, PREVIEW, BOUNCES and CLICKS are the others)
JOB_NAMES = {
    LEASE: "scheduler lock",
    SEND: "daily send",
    PREVIEW: "editors' preview",
    BOUNCES: "bounce mailbox poll",
    CLICKS: "click retention",
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class SiteZoneFormatter(logging.Formatter):
    """Timestamps in the site's zone, with their offset: the times inside the lines (send time,
    deadline) are the site's, so the line's own time must be too, whatever the server's zone."""

    def __init__(self, fmt: str, zone: ZoneInfo) -> None:
        super().__init__(fmt)
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, self.zone)
        return moment.strftime(datefmt or "%Y-%m-%dT%H:%M:%S%z")


def configure_logging(zone: ZoneInfo) -> None:
    """One line per event on stderr, with a timestamp; APScheduler only for its warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SiteZoneFormatter(LOG_FORMAT, zone))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Its INFO lines ("Running job ...", "Added job ...") would double every event of ours.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


class Daemon:
    """Wires the timetable, the store, the lease and APScheduler; ``run()`` blocks until stopped."""

    def __init__(
        self, settings: Settings, store: Store, *, clock: Clock = system_clock, owner: str = ""
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.stopping = threading.Event()
        self._planning = threading.Lock()
        self.lease = Lease(
            store, owner or new_owner_id(), on_taken=self._lease_taken, on_lost=self._lease_lost
        )
        self.jobs = Jobs(settings, store, self.lease, clock, self.stopping)
        self._runs = {
            LEASE: self._renew_lease,
            SEND: self.jobs.send,
            PREVIEW: self.jobs.preview,
            BOUNCES: self.jobs.poll_bounces,
            CLICKS: self.jobs.fold_clicks,
        }
        self.scheduler = BackgroundScheduler(
            timezone=settings.timezone,
            jobstores={"default": MemoryJobStore()},
            # A worker for each job: the lease is renewed while a send runs.
            executors={"default": ThreadPoolExecutor(len(self._runs) + 1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.scheduler.add_listener(self._not_run, EVENT_JOB_MAX_INSTANCES)

    # -- the jobs' schedule ----------------------------------------------------------------------
    def plan(self, job_id: str, moment: datetime | None) -> None:
        """Run job ``job_id`` when the daemon's clock reads ``moment`` (None: leave it unplanned)."""
        with self._planning:  # never once the stop is requested: shutdown() empties the schedule
            if moment is None or self.stopping.is_set():
                return
            self.scheduler.add_job(
                self._run_job,
                DateTrigger(real_instant(self.clock, moment)),
                args=[job_id],
                id=job_id,
                name=JOB_NAMES[job_id],
                replace_existing=True,
            )

    def _run_job(self, job_id: str) -> None:
        """Run one job, then schedule its next run where it asks to.

        Its DateTrigger has fired, so APScheduler drops the job: planning it again from here, in
        the job's own thread, comes after that (the scheduler holds its job store lock until then).
        """
        try:
            moment = self._runs[job_id]()
            if (
                moment is None
                and job_id != LEASE
                and self.jobs.wanted(job_id)
                and self.jobs.may_act()
            ):
                moment = self.clock()  # the lease was lost and taken again meanwhile
        except Exception as err:  # a bug: one line, and the job runs again later
            log.error("%s failed: %s", JOB_NAMES[job_id], error_line(err))
            later = timedelta(seconds=self.lease.poll_every) if job_id == LEASE else LOOK_AGAIN
            moment = self.clock() + later
        self.plan(job_id, moment)

    def _not_run(self, event: JobSubmissionEvent) -> None:
        """Planned while its previous run was still going on (a takeover mid-send): a bit later."""
        if event.job_id in self._runs:
            self.plan(event.job_id, self.clock() + timedelta(seconds=1))

    def _renew_lease(self) -> datetime:
        return self.clock() + timedelta(seconds=self.lease.tick())

    def _lease_taken(self) -> None:
        """Right after taking the lock: look at the ledger now."""
        now = self.clock()
        for job_id in (SEND, PREVIEW, BOUNCES):
            if self.jobs.wanted(job_id):
                self.plan(job_id, now)
        # The fold can wait: the send and the preview have the first look at the database.
        self.plan(CLICKS, now + FIRST_FOLD_AFTER)

    def _lease_lost(self, _why: str) -> None:
        self.jobs.lease_lost()

    def _describe(self) -> str:
        settings = self.settings
        text = (
            f"sends daily at {settings.send_time:%H:%M} {settings.timezone.key}, "
            f"catch-up deadline {settings.send_deadline_hours:g}h"
        )
        if self.jobs.previews:
            text += (
                f", editors' preview {settings.preview_lead_minutes} min before "
                "to "
                + english_ngettext("%(num)d address", "%(num)d addresses", len(settings.editors))
                % {"num": len(settings.editors)}
            )
        if self.jobs.wanted(BOUNCES):
            text += f", polls the bounce mailbox every {settings.bounce_poll_minutes} min"
        return text

    # -- run and stop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Block until SIGTERM or SIGINT; 0 when stopped cleanly."""
        readable, self._signalled = os.pipe()
        os.set_blocking(self._signalled, False)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            signum = os.read(readable, 1)[0]  # until a signal handler writes its number
            self.request_stop(signal.Signals(signum).name)
            self.shutdown()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(readable)
            os.close(self._signalled)
        return 0

    def start(self) -> None:
        """Take the lock (or stand by) and start the scheduler; returns at once."""
        log.info("newsletter run: started as %s; %s", self.lease.owner, self._describe())
        self.plan(LEASE, self._renew_lease())  # at once: "lock taken" or "standby" follows
        self.scheduler.start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only a byte on a pipe: the handler runs in the main thread between two bytecodes, maybe
        # while that thread holds a lock (an Event's, the scheduler's) that anything more would
        # need. run() reads it and requests the stop.
        with contextlib.suppress(OSError):
            os.write(self._signalled, bytes([signum]))

    def request_stop(self, reason: str) -> None:
        """Ask the daemon to stop: the send in progress finishes its messages in flight."""
        with self._planning:
            if self.stopping.is_set():
                return
            self.stopping.set()
        log.info("%s received: finishing the messages in flight, then stopping", reason)
        self.jobs.stop_send()

    def shutdown(self) -> None:
        """Wait for the job in progress, release the lock; after ``request_stop``."""
        if self.scheduler.running:
            # APScheduler 3.11 marks itself stopped before it takes its job store lock: a pass
            # over due jobs caught in between fails to drop a fired job and its thread dies with
            # a traceback. Emptied first (that waits for a pass in progress), nothing is due.
            self.scheduler.remove_all_jobs()
            self.scheduler.shutdown(wait=True)
        self.lease.release()
        log.info("stopped")


def run_daemon(settings: Settings, *, start_at: datetime | None = None) -> int:
    """``newsletter run``: check the settings, open the store and block until stopped."""
    configure_logging(settings.timezone)
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
            log.error("stopped by an unexpected error: %s", error_line(err))
            return 1
