"""Entry point: ``newsletter run``, the daemon that sends each edition on time, once.

APScheduler 3.11 runs the jobs; every rule about what to send lives in ``domain/timetable.py`` and
every guarantee lives in the database:
- ``runner.py``: the process. A BackgroundScheduler with three jobs, each with its own trigger
  and at most one instance: the lease renewal, the send of the due edition, the editors' preview.
  SIGTERM or SIGINT requests a stop; ``scheduler.shutdown(wait=True)`` lets the send in progress
  finish its messages in flight, then the lock is released and the process exits 0;
- ``jobs.py``: what the send and preview jobs do, and when each runs next, from the timetable
  (send time, catch-up until the deadline, retry after a failure, the preview's lead);
- ``clock.py``: the real clock, or the one ``run --now`` shifts, and the real instant at which
  a moment of the daemon's clock comes;
- ``services/leases.py``: one sender per database, the store's ``scheduler`` lock. A second daemon
  stands by, polls, and takes over when the lease expires (at once when the holder was a process
  of this host that no longer exists). Only the holder sends, and a holder that loses its lease
  stops its send. The ledger's unique key (edition, subscriber) is the last line of defence: two
  senders claim different rows, never the same one twice.

Log lines go to stderr, one per event, with a timestamp; errors are one line, never a traceback.
"""

from newsletter.daemon.clock import Clock, parse_now, shifted_clock, system_clock
from newsletter.daemon.jobs import Jobs
from newsletter.daemon.runner import Daemon, configure_logging, run_daemon
from newsletter.services.leases import Lease

__all__ = [
    "Clock",
    "Daemon",
    "Jobs",
    "Lease",
    "configure_logging",
    "parse_now",
    "run_daemon",
    "shifted_clock",
    "system_clock",
]
