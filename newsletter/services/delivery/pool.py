"""Delivery, SMTP pool stage: each worker's connection, opened within a bounded budget.

Also the pauses before a row is retried in the same run, and the error that ends a run when the
relay keeps the connection open but stops answering.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from newsletter.adapters.i18n import english_ngettext
from newsletter.adapters.smtp import RelayUnreachable, SmtpConfig, SmtpConnection
from newsletter.domain.errors import NewsletterError

TIMEOUT_STRIKES = 3  # replies timed out in a row: the relay is not answering, the run ends
RETRY_BACKOFF = (1.0, 2.0, 4.0, 8.0)  # seconds before attempts 2, 3, 4, 5 of one row in one run
DEFER_TO_NEXT_RUN = 3600.0  # after that, the row waits; the next `send` retries it at once
# Seconds before connection attempts 2 and 3; then the relay counts as unreachable. With the
# opening's deadline (NEWSLETTER_SMTP_CONNECT_TIMEOUT, 10 s) a relay that never greets is given
# up after 10 + 2 + 10 + 4 + 10 = 36 s, well inside the minute an operator should wait.
RECONNECT_BACKOFF = (2.0, 4.0)
# Private and undocumented: a factor (0 < f <= 1) on RETRY_BACKOFF and RECONNECT_BACKOFF that
# lets the tests shorten those waits without changing their number or order. Read only by
# EditionSender; no command sets it, and anything else leaves the real backoffs in place.
_TEST_BACKOFF_SCALE_ENV = "NEWSLETTER_TEST_BACKOFF_SCALE"

log = logging.getLogger("newsletter.services.delivery")


def _backoff_scale(env: str = _TEST_BACKOFF_SCALE_ENV) -> float:
    try:
        scale = float(os.environ.get(env) or 1.0)
    except ValueError:
        return 1.0
    return scale if 0.0 < scale <= 1.0 else 1.0


def scaled_backoff(pauses: tuple[float, ...]) -> tuple[float, ...]:
    """``pauses`` as this run waits them: the real ones, unless a test scaled them down."""
    scale = _backoff_scale()
    return tuple(pause * scale for pause in pauses)


def wait_unless(seconds: float, must_stop: Callable[[], bool], wake: threading.Event) -> None:
    """Wait up to ``seconds``: less once ``wake`` is set, and within 0.1 s of ``must_stop()``."""
    deadline = time.monotonic() + seconds
    while not must_stop() and not wake.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        wake.wait(min(remaining, 0.1))


class RelayUnresponsive(RelayUnreachable):
    """The relay keeps the connection open but does not answer in time, message after message."""


class RelayGate:
    """The pool's way to one relay: a bounded budget of attempts per connection, one line a retry.

    The run's first connection opens alone, the others wait for it: a relay that is down, or
    refuses our login, is tried by one connection rather than by all of them at once (a relay
    that counts failed logins is not handed several per run). Once it is open, the others open
    in parallel. Each connection gets ``len(pauses) + 1`` attempts; the line "retrying in 2 s
    (attempt 2 of 3)" is logged once per attempt number however many connections make it, and
    starts again after any connection opens. A ``RelayMisconfigured`` (a certificate, a login)
    is never retried.
    """

    def __init__(
        self,
        config: SmtpConfig,
        pauses: tuple[float, ...],
        *,
        must_stop: Callable[[], bool],
        sleep: Callable[[float], None],
    ) -> None:
        self.config = config
        self.pauses = pauses
        self._must_stop = must_stop
        self._sleep = sleep
        self._lock = threading.Condition()
        self._announced: set[int] = set()  # attempt numbers already logged since the last open
        self._first: str = "untried"  # the run's first connection: untried, opening, open
        self._first_failed: NewsletterError | None = None

    @property
    def attempts(self) -> int:
        return len(self.pauses) + 1

    def open(self, connection: SmtpConnection) -> None:
        """Open (or reopen) ``connection``; RelayUnreachable once its budget is spent."""
        if connection.is_open:
            return
        with self._lock:
            while self._first == "opening" and not self._must_stop():
                self._lock.wait(0.1)
            if self._first_failed is not None:
                raise self._first_failed  # the first connection's verdict holds for the run
            if self._must_stop():
                raise RelayUnreachable(
                    f"cannot reach the SMTP relay {self.config.where}: stopped while connecting",
                    reason="stopped while connecting",
                )
            first = self._first == "untried"
            if first:
                self._first = "opening"
        if not first:
            self._open(connection)
            return
        try:
            self._open(connection)
        except NewsletterError as err:
            with self._lock:
                self._first, self._first_failed = "untried", err
                self._lock.notify_all()
            raise
        except BaseException:
            with self._lock:
                self._first = "untried"
                self._lock.notify_all()
            raise
        with self._lock:
            self._first = "open"
            self._lock.notify_all()

    def _open(self, connection: SmtpConnection) -> None:
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                connection.open()
            except RelayUnreachable as err:
                if self._must_stop():
                    raise
                if attempt >= self.attempts:
                    raise self._gave_up(err, attempt, time.monotonic() - started) from None
                pause = self.pauses[attempt - 1]
                attempt += 1
                self._announce(err, attempt, pause)
                self._sleep(pause)
                if self._must_stop():
                    raise
                continue
            with self._lock:
                self._announced.clear()
            return

    def _announce(self, err: RelayUnreachable, attempt: int, pause: float) -> None:
        with self._lock:
            if attempt in self._announced:
                return  # another connection said it for this attempt
            self._announced.add(attempt)
        log.warning(
            "relay %s: %s; retrying in %s s (attempt %d of %d)",
            self.config.address,
            err.reason,
            f"{pause:g}",
            attempt,
            self.attempts,
        )

    def _gave_up(self, err: RelayUnreachable, attempts: int, took: float) -> RelayUnreachable:
        tries = english_ngettext("%(num)d attempt", "%(num)d attempts", attempts)
        return RelayUnreachable(
            f"{err.message}; gave up after {tries % {'num': attempts}} in {took:.0f} s",
            f"{err.hint}; nothing was lost: the unsent messages stay pending for the next run"
            if err.hint
            else "nothing was lost: the unsent messages stay pending for the next run",
            reason=err.reason,
        )


class OpeningAhead:
    """The run's connections, opened while the edition is composed and claimed.

    The first message of each connection then goes out as soon as it is personalised, instead of
    after the imports, the compose and one connection opening after another: what a slow relay
    (one that takes a second over each DATA) turns into seconds. Each connection opens in a
    thread of its own through the run's ``RelayGate``, so the first opens alone and a relay that
    refuses us is tried exactly as often as a worker would try it. ``EditionSender`` takes the
    gate and the connections over (``handover``); a send that ends before (nothing to send, an
    error) calls ``cancel``, which closes whatever opened.
    """

    def __init__(self, config: SmtpConfig, count: int, stop: threading.Event | None = None) -> None:
        self._stop = stop or threading.Event()
        self._cancelled = threading.Event()
        self._owner_must_stop: Callable[[], bool] | None = None
        self.gate = RelayGate(
            config, scaled_backoff(RECONNECT_BACKOFF), must_stop=self._must_stop, sleep=self._sleep
        )
        self.connections = [SmtpConnection(config) for _ in range(count)]
        self._failures: dict[int, NewsletterError] = {}
        self._threads = [
            threading.Thread(
                target=self._open, args=(index,), name=f"smtp-open-{index}", daemon=True
            )
            for index in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _open(self, index: int) -> None:
        try:
            self.gate.open(self.connections[index])
        except NewsletterError as err:
            self._failures[index] = err  # the worker raises it: one budget of attempts, not two

    def _must_stop(self) -> bool:
        owner = self._owner_must_stop
        return self._stop.is_set() or self._cancelled.is_set() or bool(owner and owner())

    def _sleep(self, seconds: float) -> None:
        wait_unless(seconds, self._must_stop, self._cancelled)

    def handover(self, must_stop: Callable[[], bool]) -> RelayGate:
        """The sender's stop and abort now stop the openings too; the gate is the run's."""
        self._owner_must_stop = must_stop
        return self.gate

    def take(self, index: int) -> SmtpConnection:
        """Connection ``index`` once its opening ended: open, or its error raised."""
        self._threads[index].join()
        failure = self._failures.pop(index, None)
        if failure is not None:
            raise failure
        return self.connections[index]

    def wait(self) -> None:
        """Until every opening ended (opened, or given up)."""
        for thread in self._threads:
            thread.join()

    def forget_in_child(self) -> None:
        """In a forked sender process: drop this process's copies of the parent's sockets
        without a word to the relay (the parent goes on using them)."""
        for connection in self.connections:
            connection.forget()

    def cancel(self) -> None:
        """Nothing will be sent on these: stop the openings and close what opened (QUIT)."""
        self._cancelled.set()
        for thread in self._threads:
            thread.join()
        for connection in self.connections:
            connection.close()
