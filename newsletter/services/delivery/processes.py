"""Delivery, scale-out on one machine: several sender processes on one edition.

One Python process sends on one core (the GIL): claiming, personalising, the SMTP dialogue and
recording share it. With NEWSLETTER_SEND_PROCESSES=N the send forks N-1 children right after the
freeze, and each process runs an ordinary ``EditionSender`` over the same ledger with its share
of NEWSLETTER_SMTP_CONNECTIONS and of NEWSLETTER_SMTP_RATE. Nothing new is promised or needed for
exactly-once: each process is a sender with its own owner id and leases, as two ``newsletter
send`` commands on one edition already are (the ledger's claims never hand a row to two owners).

- Children are forked once the edition is composed and its common variant rendered: the
  templates and the imported modules are shared pages, not copies (``gc.freeze`` keeps the
  collector from dirtying them).
- A child dies with its parent (PR_SET_PDEATHSIG): a kill -9 of ``newsletter send`` costs what it
  costs one process, at most two messages per connection, and the next run releases every row
  the dead processes held at once (their pids are gone).
- A child that dies alone leaves its rows to the others: a live sender releases the rows of a
  dead owner on this host before each claim.
- SIGTERM or SIGINT to a child, or a stop of the parent, asks for the usual graceful stop.
- Each child reports, over a pipe, the messages it sent (the progress bar counts them) and the
  error that ended its run, if any: the parent raises the first one once every process ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import pickle
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from newsletter.adapters.smtp import RelayUnreachable, SmtpConfig
from newsletter.adapters.store import Store
from newsletter.config import Settings
from newsletter.domain import Edition
from newsletter.domain.errors import NewsletterError
from newsletter.services.delivery.message import MessageBuilder
from newsletter.services.delivery.pool import OpeningAhead, RelayUnresponsive
from newsletter.services.delivery.sender import EditionSender, SendingStopped

log = logging.getLogger("newsletter.services.delivery")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_SENT = b"s"  # one byte per message sent, written in batches
_ERROR = b"e"  # then a pickled NewsletterError, to the end of the pipe


def can_fork() -> bool:
    """Forking is only safe from a single-threaded process (the ``send`` command, not the daemon,
    whose scheduler threads could hold a lock the child would then wait on forever)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` whole shares as equal as they go, the larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


@dataclass
class _Child:
    pid: int
    pipe: int
    sent: int = 0
    error: NewsletterError | None = None


class SenderGroup:
    """``EditionSender``'s ``run()`` and ``sent``, over this process and N-1 forked children."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        edition: Edition,
        *,
        processes: int,
        smtp: SmtpConfig | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
        ahead: OpeningAhead | None = None,
    ) -> None:
        """``ahead``: this process's connections (its share), opened while composing."""
        self.store = store
        self.ahead = ahead
        self.edition = edition
        self.smtp = smtp
        self.stop = stop or threading.Event()
        self.progress = progress
        connections = shares(settings.smtp_connections, processes)
        rate = settings.smtp_rate / processes if settings.smtp_rate else 0.0
        self._settings = [
            replace(settings, smtp_connections=count, smtp_rate=rate) for count in connections
        ]
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._own: EditionSender | None = None
        self._done = threading.Event()  # this process's own run ended
        self._messages: MessageBuilder | None = None

    @property
    def sent(self) -> int:
        own = self._own.sent if self._own is not None else 0
        return own + sum(child.sent for child in self._children)

    def run(self) -> int:
        """Send with every process until all are done; the first process's error is raised."""
        if self.ahead is not None:
            self.ahead.wait()  # its threads end first: a fork must be made with this one alone
        # The templates most readers get are rendered once, here, and shared with the children;
        # the rendering's garbage is collected and handed back before the fork, not copied.
        self._messages = MessageBuilder(self._settings[0], self.edition)
        self._messages.warm()
        gc.collect()
        _trim_heap()
        gc.freeze()  # what exists now is shared with the children: the collector leaves it be
        try:
            for settings in self._settings[1:]:
                self._children.append(self._fork(settings))
        finally:
            gc.unfreeze()
        readers = [
            threading.Thread(
                target=self._read, args=(child,), name=f"child-{child.pid}", daemon=True
            )
            for child in self._children
        ]
        for reader in readers:
            reader.start()
        stopper = threading.Thread(target=self._forward_stop, name="stop-children", daemon=True)
        stopper.start()
        own_error: BaseException | None = None
        try:
            self._own = EditionSender(
                self.store,
                self._settings[0],
                self.edition,
                smtp=self.smtp,
                stop=self.stop,
                progress=self.progress,
                ahead=self.ahead,
                messages=self._messages,
            )
            self._own.run()
        except BaseException as err:
            own_error = err
            if not _no_connection(err):
                self._signal_children(signal.SIGTERM)
        finally:
            self._done.set()
            stopper.join()
            for reader in readers:
                reader.join()
            self._reap()
        errors = [own_error, *(child.error for child in self._children)]
        if any(error is None for error in errors):
            # Some process ran its course: one that could open no connection at all (a relay
            # taking fewer connections than asked) is not a failure, as within one process.
            for error in errors:
                if _no_connection(error):
                    log.warning(
                        "relay %s: a sender process could not open a connection (%s); the "
                        "others sent its share",
                        self._settings[0].smtp_host,
                        getattr(error, "reason", error),
                    )
            errors = [error for error in errors if not _no_connection(error)]
        for error in errors:
            if error is not None:
                raise error
        return self.sent

    # -- the parent's side -----------------------------------------------------------------------
    def _read(self, child: _Child) -> None:
        """Count what ``child`` reports sent; keep its error. Ends when the child's pipe closes."""
        buffered = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(child.pipe, 65536):
                if buffered or chunk.find(_ERROR) != -1:
                    buffered += chunk
                    continue
                self._count(child, len(chunk))
        os.close(child.pipe)
        if buffered:
            head, _, error = buffered.partition(_ERROR)
            self._count(child, len(head))
            child.error = _loaded_error(error)

    def _count(self, child: _Child, sent: int) -> None:
        if not sent:
            return
        with self._lock:
            child.sent += sent
        if self.progress:
            self.progress(sent)

    def _forward_stop(self) -> None:
        """A stop of this run (the daemon, a test, Ctrl-C here) is a stop of every child."""
        while not self._done.wait(0.2):
            if self.stop.is_set():
                self._signal_children(signal.SIGTERM)
                return

    def _signal_children(self, signum: int) -> None:
        for child in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    def _reap(self) -> None:
        for child in self._children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)

    # -- the child's side ------------------------------------------------------------------------
    def _fork(self, settings: Settings) -> _Child:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid:
            os.close(write_end)
            return _Child(pid, read_end)
        os.close(read_end)
        code = 1
        try:
            code = self._child(settings, write_end)
        finally:
            os._exit(code)  # never back into the caller's stack: the parent owns it

    def _child(self, settings: Settings, pipe: int) -> int:
        _die_with_parent()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        # The parent's pooled database connections and SMTP sessions are its own: this
        # process opens its own.
        self.store.engine.dispose(close=False)
        if self.ahead is not None:
            self.ahead.forget_in_child()
        self._children = []
        reported = _Reporter(pipe)
        try:
            sender = EditionSender(
                self.store,
                settings,
                self.edition,
                smtp=self.smtp,
                stop=stop,
                progress=reported,
                messages=self._messages,
            )
            sender.run()
            code = 0
        except NewsletterError as err:
            reported.error(err)
            code = err.exit_code or 1
        except BaseException as err:  # a bug or the ledger failing: say so, rows go back
            reported.error(SendingStopped(f"sending stopped: {type(err).__name__}: {err}"))
            code = 1
        reported.close()
        return code


class _Reporter:
    """A child's progress callback: one byte per sent message, flushed in small batches."""

    def __init__(self, pipe: int) -> None:
        self._pipe = pipe
        self._pending = 0
        self._lock = threading.Lock()

    def __call__(self, sent: int) -> None:
        with self._lock:
            self._pending += sent
            if self._pending < 16:
                return
            pending, self._pending = self._pending, 0
        self._write(_SENT * pending)

    def error(self, err: NewsletterError) -> None:
        self._flush()
        try:
            data = pickle.dumps(err)
        except Exception:  # an exception that does not pickle: its text is enough
            data = pickle.dumps(SendingStopped(str(err)))
        self._write(_ERROR + data)

    def close(self) -> None:
        self._flush()
        os.close(self._pipe)

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, 0
        if pending:
            self._write(_SENT * pending)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        with contextlib.suppress(OSError):  # the parent is gone: PDEATHSIG ends this process
            while view:
                view = view[os.write(self._pipe, view) :]


def _no_connection(error: BaseException | None) -> bool:
    """The relay refused or did not answer this process's connections (not: stopped answering
    in the middle, which ends the whole run)."""
    return isinstance(error, RelayUnreachable) and not isinstance(error, RelayUnresponsive)


def _loaded_error(data: bytes) -> NewsletterError:
    try:
        error = pickle.loads(data)  # written by our own child, over a pipe only we hold
    except Exception:
        return SendingStopped("a sender process stopped without a readable error")
    return error if isinstance(error, NewsletterError) else SendingStopped(str(error))


def _trim_heap() -> None:
    """glibc: give the heap's free pages back to the system (the compose and the rendering
    leave many), so that they are neither counted nor copied into the children."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, so a kill -9 of the send stops it all."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("sender process %d will not stop with its parent", os.getpid())
    if os.getppid() == 1:
        os._exit(1)  # the parent died before prctl: nothing to do for an orphan
