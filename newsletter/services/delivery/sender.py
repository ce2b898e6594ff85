"""Delivery, orchestration of one run: the claimer, the lease watcher and the SMTP workers.

The claimer claims pending rows with a lease and hands each personalised message to the workers
through a small queue; each worker (one per SMTP connection) checks, right before each message,
that the row is still its own and its subscriber has not left, sends it, and has the outcome
recorded before it takes the next one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.smtp import (
    AddressNeedsSmtpUtf8,
    ConnectionLost,
    PermanentFailure,
    RelayTimedOut,
    RelayUnreachable,
    SmtpConfig,
    SmtpConnection,
    TemporaryFailure,
    UncertainDelivery,
)
from newsletter.adapters.store import ClaimedDelivery, Store
from newsletter.config import Settings
from newsletter.domain import Edition
from newsletter.domain.errors import NewsletterError
from newsletter.domain.ratelimit import PacingLimiter
from newsletter.services.delivery.lease import (
    _TEST_LEASE_SCALE_ENV,
    LEASE_SECONDS,
    LEASE_TRUST_SECONDS,
    RENEW_EVERY,
    WATCH_EVERY,
    lease_clock,
    new_owner_id,
    owner_is_dead,
)
from newsletter.services.delivery.message import MessageBuilder, OutgoingMessage
from newsletter.services.delivery.pool import (
    DEFER_TO_NEXT_RUN,
    RECONNECT_BACKOFF,
    RETRY_BACKOFF,
    TIMEOUT_STRIKES,
    OpeningAhead,
    RelayGate,
    RelayUnresponsive,
    _backoff_scale,
    scaled_backoff,
    wait_unless,
)
from newsletter.services.delivery.recorder import Recorder

STOP_GRACE = 5.0  # after a stop, messages in flight get this long before their sockets are cut
CLAIM_BATCH = 200
# Rows claimed per connection at most: a sender holds no more than it sends in a moment, so
# that at the end of an edition the senders sharing it (processes, machines) finish together
# instead of one still working through a batch the others could have taken.
CLAIM_PER_CONNECTION = 25
RETRY_HORIZON = 60.0  # a run waits for rows coming back within this many seconds

log = logging.getLogger("newsletter.services.delivery")


class SendingStopped(NewsletterError):
    """A worker hit an unexpected error (the ledger failing); the run stops, rows are released."""


class EditionSender:
    """One run of one edition's delivery: claimer + workers over the ledger."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        edition: Edition,
        *,
        smtp: SmtpConfig | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
        ahead: OpeningAhead | None = None,
        messages: MessageBuilder | None = None,
    ) -> None:
        """``ahead``: the connections this run opened while the edition was composed;
        ``messages``: the edition's templates, when a parent process rendered them already."""
        self.store = store
        self.settings = settings
        self.edition = edition
        self.smtp = smtp or SmtpConfig.from_settings(settings)
        self.stop = stop or threading.Event()
        self.progress = progress
        self.owner = new_owner_id()
        self.messages = messages or MessageBuilder(settings, edition)
        self._queue: queue.Queue[OutgoingMessage | None] = queue.Queue(
            maxsize=4 * settings.smtp_connections
        )
        self._rate = PacingLimiter(settings.smtp_rate)
        self._claim_batch = min(CLAIM_BATCH, CLAIM_PER_CONNECTION * settings.smtp_connections)
        self._fatal: NewsletterError | None = None
        self._abort = threading.Event()
        self._sent = 0
        self._sent_lock = threading.Lock()
        self._tries: dict[int, int] = {}
        # Set whenever a row may have become final: the claimer, waiting for the last rows in
        # flight, ends the run as soon as they are recorded rather than at its next poll.
        self._progressed = threading.Event()
        self._recorder = Recorder(
            store, self.owner, on_commit=self._progressed.set, connections=settings.smtp_connections
        )
        # The lease as this sender knows it: the rows it holds, since when it trusts them, and
        # the rows whose subscriber left since the claim. Replaced whole, read without a lock.
        self._owned: set[int] = set()
        self._trusted_since = lease_clock()
        self._renew_lock = threading.Lock()
        self._gone: frozenset[int] = frozenset()
        self._strikes = 0  # replies timed out in a row, over every connection
        self._taken_over = 0  # claimed rows another sender took over before they went out
        self._connections: list[SmtpConnection] = []
        self._finished = threading.Event()  # the run is over: the watcher stops
        self.retry_backoff = scaled_backoff(RETRY_BACKOFF)
        self._ahead = ahead
        self._gate = (
            ahead.handover(self._must_stop)
            if ahead is not None
            else RelayGate(
                self.smtp,
                scaled_backoff(RECONNECT_BACKOFF),
                must_stop=self._must_stop,
                sleep=self._sleep,
            )
        )
        lease_scale = _backoff_scale(_TEST_LEASE_SCALE_ENV)
        self.lease_seconds = LEASE_SECONDS * lease_scale
        self.lease_trust_seconds = LEASE_TRUST_SECONDS * lease_scale
        self.renew_every = RENEW_EVERY * lease_scale

    # -- message stage ---------------------------------------------------------------------------
    def _claim_loop(self) -> None:
        """Claim rows and feed the workers until nothing is left or the run must stop."""
        while not self._must_stop():
            self.store.release_dead_owners(self.edition.date, owner_is_dead)
            with self._renew_lock:  # a renewal must not replace the set while it grows
                began = lease_clock()
                rows = self.store.claim_deliveries(
                    self.edition.date, self.owner, self._claim_batch, self.lease_seconds
                )
                if not self._owned:
                    self._trusted_since = began  # the first claim starts the lease
                self._owned.update(row.delivery_id for row in rows)
            if not rows:
                # Cleared before the look: a row recorded after it still wakes the wait below.
                self._progressed.clear()
                if not self.store.has_unfinished(self.edition.date, RETRY_HORIZON):
                    return
                # Rows in flight, in backoff or held by another live sender: until one of this
                # run's becomes final, or half a second.
                wait_unless(0.5, self._must_stop, self._progressed)
            for row in rows:
                data = self.messages.personalise(row)
                if data is None:
                    self.store.mark_skipped(
                        row.delivery_id,
                        self.owner,
                        "none of the subscriber's sections in this edition",
                    )
                    continue
                sender = self.messages.envelope_sender(row.reader)
                self._hand_to_workers(OutgoingMessage(row, data, sender))

    def _hand_to_workers(self, item: OutgoingMessage) -> None:
        """Queue one message; the watcher keeps the lease while the workers are busy."""
        while not self._must_stop():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                pass

    # -- the lease and the leavers ---------------------------------------------------------------
    def _watch(self) -> None:
        """Every second: who left since the claim; every RENEW_EVERY: extend-and-verify."""
        while not self._finished.wait(WATCH_EVERY):
            try:
                self._gone = frozenset(
                    self.store.stopped_among_claimed(self.edition.date, self.owner)
                )
                if lease_clock() - self._trusted_since > self.renew_every:
                    self._renew()
            except Exception as err:  # the ledger failing: stop the run, rows go back
                self._fail_run(SendingStopped(f"sending stopped: {type(err).__name__}: {err}"))
                return

    def _renew(self, only_if_older_than: float = 0.0) -> None:
        with self._renew_lock:
            began = lease_clock()
            if began - self._trusted_since <= only_if_older_than:
                return  # another thread renewed meanwhile
            self._owned = self.store.renew_leases(self.edition.date, self.owner, self.lease_seconds)
            self._trusted_since = began

    def _may_send(self, row: ClaimedDelivery) -> bool:
        """True when the row is still this sender's and its subscriber has not left."""
        if lease_clock() - self._trusted_since > self.lease_trust_seconds:
            # Paused, or the database was slow: verify before anything goes out.
            self._renew(only_if_older_than=self.lease_trust_seconds)
            self._gone = frozenset(self.store.stopped_among_claimed(self.edition.date, self.owner))
        if row.delivery_id not in self._owned:
            with self._sent_lock:
                self._taken_over += 1  # logged once, at the end of the run
            return False
        if row.delivery_id in self._gone:
            self.store.mark_skipped(row.delivery_id, self.owner, "no longer subscribed")
            return False
        return True

    # -- worker stage ----------------------------------------------------------------------------
    def _worker(self, index: int) -> None:
        ahead = self._ahead
        opened_ahead = ahead is not None and index < len(ahead.connections)
        connection = ahead.connections[index] if opened_ahead else SmtpConnection(self.smtp)
        self._connections.append(connection)
        recorded: threading.Event | None = None  # the commit of this worker's previous message
        try:
            if opened_ahead:
                ahead.take(index)  # its opening's error, if any, is this worker's
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if self._must_stop() or not self._may_send(item.delivery):
                    continue  # left claimed; released to pending when the run ends
                if self._deliver(connection, item):
                    previous, recorded = recorded, self._recorder.submit(item.delivery.delivery_id)
                    if previous is not None:
                        self._recorder.wait(previous)
                    self._count_sent()
        except RelayUnreachable as err:
            if isinstance(err, RelayUnresponsive) or not self._others_open(connection):
                self._fail_run(err)
            else:
                # A relay that takes fewer connections than NEWSLETTER_SMTP_CONNECTIONS: the
                # ones it took carry on, and this worker's message went back to pending.
                log.warning(
                    "relay %s: a connection could not be opened (%s); going on with those open",
                    self.smtp.address,
                    err.reason,
                )
        except NewsletterError as err:
            self._fail_run(err)
        except Exception as err:  # e.g. the ledger failing: stop the run, never leave it waiting
            self._fail_run(SendingStopped(f"sending stopped: {type(err).__name__}: {err}"))
        finally:
            connection.close()
            if recorded is not None:
                recorded.wait()

    def _deliver(self, connection: SmtpConnection, item: OutgoingMessage) -> bool:
        """Send one message; True when the relay took it (the caller records it)."""
        row = item.delivery
        try:
            self._ensure_open(connection)
            self._rate.wait()
            connection.send(item.sender, row.reader.email, item.data)
        except PermanentFailure as err:
            bounced = not isinstance(err, AddressNeedsSmtpUtf8)
            self.store.mark_failed(row.delivery_id, self.owner, str(err), bounce=bounced)
            return False
        except UncertainDelivery as err:
            self.store.mark_uncertain(row.delivery_id, self.owner, str(err))
            self._strike(str(err))
            return False
        except (TemporaryFailure, ConnectionLost) as err:
            self._retry_later(row, str(err))
            if isinstance(err, RelayTimedOut):
                self._strike(str(err))
            return False
        except RelayUnreachable:
            self.store.release([row.delivery_id], self.owner, None)
            raise
        with self._sent_lock:
            self._strikes = 0
        return True

    def _strike(self, error: str) -> None:
        """One more reply that timed out; TIMEOUT_STRIKES in a row end the run."""
        with self._sent_lock:
            self._strikes += 1
            strikes = self._strikes
        if strikes >= TIMEOUT_STRIKES and not self._must_stop():
            self._fail_run(
                RelayUnresponsive(
                    f"the SMTP relay {self.smtp.where} stopped answering: {strikes} replies in "
                    f"a row timed out ({error})",
                    "messages the relay may have are recorded uncertain and were not sent "
                    "again; check the relay, then run send again",
                )
            )

    def _count_sent(self) -> None:
        with self._sent_lock:
            self._sent += 1
        if self.progress:
            self.progress(1)

    def _retry_later(self, row: ClaimedDelivery, error: str) -> None:
        """Back to pending after a short backoff; after a few tries, left for the next run."""
        with self._sent_lock:
            tries = self._tries[row.delivery_id] = self._tries.get(row.delivery_id, 0) + 1
        backoff = self.retry_backoff
        delay = backoff[tries - 1] if tries <= len(backoff) else DEFER_TO_NEXT_RUN
        self.store.release([row.delivery_id], self.owner, error, delay=delay)

    def _ensure_open(self, connection: SmtpConnection) -> None:
        self._gate.open(connection)

    def _others_open(self, connection: SmtpConnection) -> bool:
        """True when another worker of this run has its connection open at the moment."""
        return any(other.is_open for other in self._connections if other is not connection)

    # -- run -------------------------------------------------------------------------------------
    def _must_stop(self) -> bool:
        return self.stop.is_set() or self._abort.is_set()

    def _sleep(self, seconds: float) -> None:
        """Wait, but wake within 0.1 s of a stop or an abort."""
        wait_unless(seconds, self._must_stop, self._abort)

    @property
    def sent(self) -> int:
        """Messages the relay accepted in this run."""
        return self._sent

    def _stop_workers(self, count: int) -> None:
        """Queue one stop sentinel per worker, even when the queue is full and no worker is left.

        The claimer has stopped, so nothing else is put. Workers that died (relay unreachable)
        no longer drain the queue: the messages still in it were never sent and their rows are
        still claimed by us, so dropping them here is safe (``release_owner`` puts them back).
        """
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in range(count):
            self._queue.put(None)

    def _fail_run(self, err: NewsletterError) -> None:
        if self._fatal is None:
            self._fatal = err
        self._abort.set()

    def run(self) -> int:
        """Send until every row is final, the relay fails, or ``stop`` is set. Returns messages sent."""
        workers = [
            threading.Thread(target=self._worker, args=(i,), name=f"smtp-{i}", daemon=True)
            for i in range(self.settings.smtp_connections)
        ]
        watcher = threading.Thread(target=self._watch, name="lease-watcher", daemon=True)
        for thread in (*workers, watcher):
            thread.start()
        try:
            self._claim_loop()
        except NewsletterError as err:
            self._fail_run(err)
        except Exception as err:  # a bug or the ledger failing: stop cleanly, rows go back
            self._fail_run(SendingStopped(f"sending stopped: {type(err).__name__}: {err}"))
        finally:
            self._stop_workers(len(workers))
            self._join_workers(workers)
            self._finished.set()
            watcher.join()
            self._recorder.close()
            # Whatever this run claimed but did not send goes back for the next run, at once.
            self.store.release_owner(self.edition.date, self.owner)
        if self._taken_over:
            log.warning(
                english_ngettext(
                    "%(num)d claimed message not sent: another sender took it over while this "
                    "one was paused past its lease",
                    "%(num)d claimed messages not sent: another sender took them over while this "
                    "one was paused past its lease",
                    self._taken_over,
                ),
                {"num": self._taken_over},
            )
        if self._fatal is not None:
            raise self._fatal
        return self._sent

    def _join_workers(self, workers: list[threading.Thread]) -> None:
        """Wait for the workers; after a stop, cut the sockets of those still waiting on the relay.

        A worker may be inside a reply that takes up to NEWSLETTER_SMTP_TIMEOUT. A stopped run
        gives it STOP_GRACE seconds, then aborts its connection: a message whose end of data had
        no answer yet is recorded uncertain, anything earlier goes back to pending.
        """
        deadline = time.monotonic() + STOP_GRACE
        for worker in workers:
            while worker.is_alive():
                worker.join(0.1)
                if self._must_stop() and time.monotonic() > deadline:
                    for connection in list(self._connections):
                        connection.abort()
                    worker.join()
