"""Delivery, worker stage: the group commit of "sent" outcomes into the ledger."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.store import SentLedger, Store
from newsletter.domain.errors import NewsletterError

log = logging.getLogger("newsletter.services.delivery")

# How long a commit waits for the other connections' messages (see Recorder._batch).
COALESCE_SECONDS = 0.002


class Recorder:
    """Group commit of "sent" outcomes: one transaction for what every worker finished meanwhile.

    A worker hands in the id of a message the relay accepted and goes on with the next one; before
    it hands in that next one it waits until the previous id is committed. So a kill -9 can repeat
    at most two messages per connection (one being recorded, one on the wire), while the database
    sees one commit per batch and the wait is almost always already over when it starts.
    """

    def __init__(
        self,
        store: Store,
        owner: str,
        on_commit: Callable[[], None] | None = None,
        *,
        connections: int = 1,
    ) -> None:
        """``on_commit``: called after each batch, so that a claimer waiting for the last rows
        in flight learns at once that they are final; ``connections``: how many workers submit
        (a batch waits a moment for one message of each)."""
        self._connections = connections
        self._store = store
        self._owner = owner
        self._on_commit = on_commit
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
        ledger: SentLedger | None = None
        try:
            while (first := self._queue.get()) is not None:
                batch = self._batch(first)
                try:
                    if ledger is None:  # made in this thread, the only one that uses it
                        ledger = self._store.sent_ledger()
                    self._note_lost(ledger.mark_sent([d for d, _ in batch], self._owner))
                except Exception as err:  # the ledger is unusable: stop the run, lose nothing more
                    self.error = err
                for _, done in batch:
                    done.set()
                if self._on_commit is not None:
                    self._on_commit()
        finally:
            if ledger is not None:
                ledger.close()

    def _batch(self, first: tuple[int, threading.Event]) -> list[tuple[int, threading.Event]]:
        """``first`` and what comes within COALESCE_SECONDS, up to one message per connection.

        A worker only waits for its previous message's commit after it has sent the next one,
        a millisecond or more later: waiting that long for the others' messages costs it
        nothing, and the database one commit for several messages instead of one each.
        """
        batch = [first]
        deadline = time.monotonic() + COALESCE_SECONDS
        while True:
            wait = deadline - time.monotonic() if len(batch) < self._connections else 0.0
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return batch
            if item is None:
                self._queue.put(None)  # stop after this batch
                return batch
            batch.append(item)

    def _note_lost(self, lost: set[int]) -> None:
        if not lost:
            return
        self.lost += len(lost)
        log.warning(
            english_ngettext(
                "%(num)d message went out after another sender took its row over",
                "%(num)d messages went out after another sender took their rows over",
                len(lost),
            )
            + " (this one was paused past its lease): the relay may have them twice; "
            "the other sender's record stands",
            {"num": len(lost)},
        )

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


class RecordingFailed(NewsletterError):
    """The ledger could not record a sent message; the run stops so nothing is sent twice."""
