"""Service: deliver one edition to its frozen recipients, exactly once per ledger row.

The pipeline, by stage (as in listmonk's manager):
- campaign: ``send_edition`` freezes the edition (its articles and its recipients) in the ledger;
- message: the claimer thread claims pending rows with a lease and personalises each one by
  substitution into its variant's pre-encoded ``MessageTemplate``;
- worker: one thread per SMTP connection takes messages from a small queue, sends them, and
  records each outcome in the ledger before it takes the next, so a kill -9 can repeat at most
  the message in flight and the one being recorded, per connection;
- SMTP pool: each worker's own ``SmtpConnection``, reconnected with bounded backoff.

A 4xx or a dropped connection puts the row back with a short backoff (bounded attempts per run);
a 5xx marks it failed and the subscriber bounced. A relay that cannot be reached at all stops
the run with every unsent row back to pending.

Right before each message a worker checks, without a query, that the row is still its own (its
lease has not run out since the last extend-and-verify; when it may have, it renews and verifies
first) and that its subscriber has not left since the claim (a set the watcher thread refreshes
every second). So a sender paused past its lease costs at most what a crash costs (per
connection, the message on the wire and the one not yet recorded), and an unsubscribe is honoured
for every message that has not started within about a second of it.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from newsletter.adapters.links import Links
from newsletter.adapters.message import ListIdentity, MessageTemplate, Recipient, Sender
from newsletter.adapters.smtp import (
    AddressNeedsSmtpUtf8,
    ConnectionLost,
    PermanentFailure,
    RelayRefusedSender,
    RelayTimedOut,
    RelayUnreachable,
    SmtpConfig,
    SmtpConnection,
    TemporaryFailure,
    UncertainDelivery,
)
from newsletter.adapters.store import ClaimedDelivery, Store
from newsletter.config import Settings
from newsletter.domain import DeliveryStatus, Edition, EditionStatus, SendReport
from newsletter.domain.addresses import normalise_address
from newsletter.domain.errors import NewsletterError
from newsletter.services.compose import VariantRenderer
from newsletter.services.editions import frozen_edition

LEASE_SECONDS = 30.0  # a crashed sender's rows come back after this, or at once if its pid is gone
# A sender trusts its lease this long after its last renewal began, then renews and verifies
# before it sends again: the margin covers the renewal's own time and clock-rate differences.
LEASE_TRUST_SECONDS = LEASE_SECONDS - 10.0
RENEW_EVERY = LEASE_SECONDS / 3
WATCH_EVERY = 1.0  # how often the set of subscribers who left since the claim is refreshed
STOP_GRACE = 5.0  # after a stop, messages in flight get this long before their sockets are cut
TIMEOUT_STRIKES = 3  # replies timed out in a row: the relay is not answering, the run ends
CLAIM_BATCH = 200
RETRY_BACKOFF = (1.0, 2.0, 4.0, 8.0)  # seconds before attempts 2, 3, 4, 5 of one row in one run
DEFER_TO_NEXT_RUN = 3600.0  # after that, the row waits; the next `send` retries it at once
RETRY_HORIZON = 60.0  # a run waits for rows coming back within this many seconds
RECONNECT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # about 15 s; then the relay counts as unreachable
# Private and undocumented: a factor (0 < f <= 1) on RETRY_BACKOFF and RECONNECT_BACKOFF that
# lets the tests shorten those waits without changing their number or order. Read only by
# EditionSender; no command sets it, and anything else leaves the real backoffs in place.
_TEST_BACKOFF_SCALE_ENV = "NEWSLETTER_TEST_BACKOFF_SCALE"
# Private and undocumented too: the same kind of factor on LEASE_SECONDS, LEASE_TRUST_SECONDS and
# RENEW_EVERY together, so a test can let a paused sender's lease run out in seconds.
_TEST_LEASE_SCALE_ENV = "NEWSLETTER_TEST_LEASE_SCALE"


log = logging.getLogger("newsletter.services.delivery")


def _backoff_scale(env: str = _TEST_BACKOFF_SCALE_ENV) -> float:
    try:
        scale = float(os.environ.get(env) or 1.0)
    except ValueError:
        return 1.0
    return scale if 0.0 < scale <= 1.0 else 1.0


def lease_clock() -> float:
    """Seconds that keep counting while the process is stopped or the machine sleeps.

    A lease is measured in the database's time, which goes on during a SIGSTOP or a suspend;
    CLOCK_BOOTTIME does too, where plain monotonic time stops during a suspend.
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class RelayUnresponsive(RelayUnreachable):
    """The relay keeps the connection open but does not answer in time, message after message."""


class NothingToSend(NewsletterError):
    """The edition has no article in its window: there is nothing to send."""

    exit_code = 0


def new_owner_id() -> str:
    """Who holds a lease: host, pid and a nonce, so a dead owner on this host can be detected."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` ran on this host and its process no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's sender: only its lease expiry frees its rows
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


class RateLimiter:
    """At most ``rate`` acquisitions per second across all threads (0 = unlimited)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval
        if slot > now:
            time.sleep(slot - now)


class Recorder:
    """Group commit of "sent" outcomes: one transaction for what every worker finished meanwhile.

    A worker hands in the id of a message the relay accepted and goes on with the next one; before
    it hands in that next one it waits until the previous id is committed. So a kill -9 can repeat
    at most two messages per connection (one being recorded, one on the wire), while the database
    sees one commit per batch and the wait is almost always already over when it starts.
    """

    def __init__(self, store: Store, owner: str) -> None:
        self._store = store
        self._owner = owner
        self.lost = 0  # messages another sender had taken over by the time they were recorded
        self._queue: queue.Queue[tuple[int, threading.Event] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self.error: BaseException | None = None
        self._thread.start()

    def submit(self, delivery_id: int) -> threading.Event:
        """Queue ``delivery_id`` as sent; the event is set once it is committed (or failed)."""
        done = threading.Event()
        self._queue.put((delivery_id, done))
        return done

    def wait(self, done: threading.Event) -> None:
        done.wait()
        if self.error is not None:
            raise RecordingFailed(f"cannot record a sent message in the ledger: {self.error}")

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                lost = self._store.mark_sent([delivery_id for delivery_id, _ in batch], self._owner)
                if lost:
                    self.lost += len(lost)
                    log.warning(
                        "%d message(s) went out after another sender took their rows over "
                        "(this one was paused past its lease): the relay may have them twice; "
                        "the other sender's record stands",
                        len(lost),
                    )
            except Exception as err:  # the ledger is unusable: stop the run, lose nothing more
                self.error = err
            for _, done in batch:
                done.set()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class RecordingFailed(NewsletterError):
    """The ledger could not record a sent message; the run stops so nothing is sent twice."""


class SendingStopped(NewsletterError):
    """A worker hit an unexpected error (the ledger failing); the run stops, rows are released."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    delivery: ClaimedDelivery
    data: bytes


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
    ) -> None:
        self.store = store
        self.settings = settings
        self.edition = edition
        self.smtp = smtp or SmtpConfig.from_settings(settings)
        self.stop = stop or threading.Event()
        self.progress = progress
        self.owner = new_owner_id()
        self.identity = ListIdentity.from_settings(settings)
        self.links = Links.from_settings(settings, self.identity.sender.domain)
        self.variants = VariantRenderer.for_settings(edition, settings)
        self._templates: dict[tuple[frozenset[str], str], MessageTemplate] = {}
        self._queue: queue.Queue[OutgoingMessage | None] = queue.Queue(
            maxsize=4 * settings.smtp_connections
        )
        self._rate = RateLimiter(settings.smtp_rate)
        self._fatal: NewsletterError | None = None
        self._abort = threading.Event()
        self._sent = 0
        self._sent_lock = threading.Lock()
        self._tries: dict[int, int] = {}
        self._recorder = Recorder(store, self.owner)
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
        scale = _backoff_scale()
        self.retry_backoff = tuple(pause * scale for pause in RETRY_BACKOFF)
        self.reconnect_backoff = tuple(pause * scale for pause in RECONNECT_BACKOFF)
        lease_scale = _backoff_scale(_TEST_LEASE_SCALE_ENV)
        self.lease_seconds = LEASE_SECONDS * lease_scale
        self.lease_trust_seconds = LEASE_TRUST_SECONDS * lease_scale
        self.renew_every = RENEW_EVERY * lease_scale

    # -- message stage ---------------------------------------------------------------------------
    def _template(self, keys: frozenset[str], locale: str) -> MessageTemplate:
        if (keys, locale) not in self._templates:
            variant = self.variants.variant(keys, locale)
            self._templates[keys, locale] = MessageTemplate(
                variant, self.identity, self.edition.date
            )
        return self._templates[keys, locale]

    def _personalise(self, row: ClaimedDelivery) -> bytes | None:
        keys = self.edition.variant_keys(row.categories)
        if not keys:
            return None
        links = self.links.for_subscriber(row.subscriber_id, row.email_key)
        recipient = Recipient.with_links(row.subscriber_id, row.email, row.name, links)
        return self._template(keys, row.locale).personalise(recipient)

    def _claim_loop(self) -> None:
        """Claim rows and feed the workers until nothing is left or the run must stop."""
        while not self._must_stop():
            self.store.release_dead_owners(self.edition.date, owner_is_dead)
            with self._renew_lock:  # a renewal must not replace the set while it grows
                began = lease_clock()
                rows = self.store.claim_deliveries(
                    self.edition.date, self.owner, CLAIM_BATCH, self.lease_seconds
                )
                if not self._owned:
                    self._trusted_since = began  # the first claim starts the lease
                self._owned.update(row.delivery_id for row in rows)
            if not rows:
                if not self.store.has_unfinished(self.edition.date, RETRY_HORIZON):
                    return
                self._sleep(0.5)  # rows in backoff or held by another live sender
            for row in rows:
                if not row.email.isascii():
                    # Never tried, so not a bounce: the address stays active for a relay that
                    # speaks SMTPUTF8 (RFC 6531) once we support it.
                    reason = f"{row.email}: a non-ASCII address needs SMTPUTF8 (not supported yet)"
                    self.store.mark_failed(row.delivery_id, self.owner, reason, bounce=False)
                    continue
                data = self._personalise(row)
                if data is None:
                    self.store.mark_skipped(
                        row.delivery_id,
                        self.owner,
                        "none of the subscriber's sections in this edition",
                    )
                    continue
                self._hand_to_workers(OutgoingMessage(row, data))

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
            self._owned = self.store.renew_leases(self.owner, self.lease_seconds)
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
    def _worker(self) -> None:
        connection = SmtpConnection(self.smtp)
        self._connections.append(connection)
        recorded: threading.Event | None = None  # the commit of this worker's previous message
        try:
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
            connection.send(self.identity.sender.address, row.email, item.data)
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
        """Open (or reopen) the connection, backing off; RelayUnreachable when it never comes."""
        if connection.is_open:
            return
        for pause in (*self.reconnect_backoff, None):
            try:
                connection.open()
                return
            except RelayUnreachable:
                if pause is None or self._must_stop():
                    raise
                self._sleep(pause)

    # -- run -------------------------------------------------------------------------------------
    def _must_stop(self) -> bool:
        return self.stop.is_set() or self._abort.is_set()

    def _sleep(self, seconds: float) -> None:
        """Wait, but wake within 0.1 s of a stop or an abort."""
        deadline = time.monotonic() + seconds
        while not self._must_stop() and time.monotonic() < deadline:
            self._abort.wait(0.1)

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
            threading.Thread(target=self._worker, name=f"smtp-{i}", daemon=True)
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
            self.store.release_owner(self.owner)
        if self._taken_over:
            log.warning(
                "%d claimed message(s) not sent: another sender took them over while this one "
                "was paused past its lease",
                self._taken_over,
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


def send_edition(
    store: Store,
    settings: Settings,
    day: date,
    *,
    smtp: SmtpConfig | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    on_frozen: Callable[[int], None] | None = None,
) -> SendReport:
    """Deliver edition ``day`` to every frozen recipient; re-running continues where it stopped."""
    settings.require_sending()
    Sender.parse(settings.from_address)
    edition = frozen_edition(store, settings, day)
    if edition.is_empty:
        store.record_edition_status(day, EditionStatus.EMPTY, "no article in its window")
        raise NothingToSend(
            f"edition {day.isoformat()} has no article in its window: nothing to send"
        )
    store.freeze_edition(day, edition.articles)
    store.clear_backoff(day)  # rows deferred by an earlier run are retried now
    if on_frozen:
        # Every row still to send: pending ones, and those a killed sender left claimed.
        counts = store.delivery_counts(day)
        on_frozen(sum(counts.get(s, 0) for s in (DeliveryStatus.PENDING, DeliveryStatus.SENDING)))
    sender = EditionSender(store, settings, edition, smtp=smtp, stop=stop, progress=progress)
    error: str | None = None
    try:
        sent = sender.run()
    except (RelayUnreachable, RelayRefusedSender) as err:
        sent, error = sender.sent, str(err)
        if isinstance(err, RelayRefusedSender):
            raise
    report = SendReport(
        day, store.delivery_counts(day), store.delivery_failures(day), sent, error, edition.warnings
    )
    if report.complete:
        store.mark_edition_sent(day)
    return report


def send_test(store: Store, settings: Settings, day: date, addresses: Sequence[str]) -> int:
    """Send the full edition to ``addresses`` (editors); the ledger is not touched."""
    settings.require_sending()
    targets = [normalise_address(a) for a in addresses]
    edition = frozen_edition(store, settings, day)
    if edition.is_empty:
        raise NothingToSend(
            f"edition {day.isoformat()} has no article in its window: nothing to send"
        )
    identity = ListIdentity.from_settings(settings)
    variant = VariantRenderer.for_settings(edition, settings).variant(edition.section_keys)
    template = MessageTemplate(variant, identity, edition.date)
    links = Links.from_settings(settings, identity.sender.domain)
    connection = SmtpConnection(SmtpConfig.from_settings(settings))
    try:
        for address in targets:
            # id 0 is never a subscriber: the links in a test message lead to a "not valid" page.
            recipient = Recipient.with_links(
                0, address.normalized, "", links.for_subscriber(0, address.key)
            )
            connection.send(
                identity.sender.address, address.normalized, template.personalise(recipient)
            )
    finally:
        connection.close()
    return len(targets)
