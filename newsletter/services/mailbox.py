"""Polling the bounce mailbox: each returned message not handled yet goes to the bounce service.

For sites whose returned mail lands in a hosted mailbox rather than being piped to
``newsletter bounce-mail``. ``poll_bounce_mailbox`` opens one IMAP session
(``adapters/imap.py``), looks for messages not marked handled, and for each one, oldest first:
- over ``MAX_MESSAGE_BYTES`` (its size is read first): marked handled and ignored, its content
  never fetched (a DSN is a few kilobytes; a 50 MB attachment is not a report of ours);
- otherwise its raw bytes go to ``handle`` (by default ``services.bounces.handle_returned_mail``),
  then it is marked handled, whether the report was acted on or ignored (forged, an auto-reply):
  looking at it again would find the same;
- a database error while handling it leaves it unmarked and ends the poll: the next poll (the
  database back) handles it. Another error (a bug) leaves it unmarked too, and the poll goes on.
Nothing is ever deleted or expunged. One line per message, then a summary line. A session lost
between a message's handling and its marking hands it over again at the next poll, so the
handler must take a repeat as the same report (a hard bounce seen twice is one bounce).
Sizes are asked ``BATCH`` messages at a time, so a first poll of a mailbox holding years of
mail sends no command line longer than a server takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from newsletter.adapters.imap import ImapConfig, ImapMailbox, MailboxUnreachable
from newsletter.adapters.store import DatabaseError, Store, StoreError
from newsletter.config import Settings
from newsletter.domain.errors import error_line

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
BATCH = 200  # UIDs per FETCH of sizes


class HandledMail(Protocol):
    """What the handler says of one message (``services.bounces.BounceResult`` is one)."""

    @property
    def acted(self) -> bool: ...

    @property
    def line(self) -> str: ...


Handler = Callable[[bytes], HandledMail]


@dataclass
class PollReport:
    mailbox: str  # imaps://user@host:port/FOLDER, no password
    lines: list[str] = field(default_factory=list)  # one per message
    acted: int = 0  # the handler changed a subscriber or a delivery
    ignored: int = 0  # handled, nothing to change (or too big to read)
    left: int = 0  # left unmarked for the next poll
    error: str | None = None  # why the poll stopped early

    @property
    def handled(self) -> int:
        return self.acted + self.ignored

    def summary(self) -> str:
        text = (
            f"mailbox {self.mailbox}: {self.handled} handled "
            f"({self.acted} acted on, {self.ignored} ignored)"
        )
        if self.left:
            text += f", {self.left} left for the next poll"
        return text


def poll_bounce_mailbox(
    store: Store,
    settings: Settings,
    handle: Handler | None = None,
    *,
    cafile: str | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> PollReport:
    """Poll NEWSLETTER_BOUNCE_IMAP_URL once; raises ``MailboxUnreachable`` if no session opens.

    A session lost midway ends the poll with ``error`` set: what was marked stays marked, the
    rest waits for the next poll. ``cafile`` is the tests' private CA.
    """
    if handle is None:

        def handle(raw: bytes) -> HandledMail:
            # Imported here: the bounce service (flufl.bounce and all) only once a message came.
            from newsletter.services.bounces import handle_returned_mail

            return handle_returned_mail(store, settings, raw)

    config = ImapConfig.from_settings(settings, cafile=cafile)
    report = PollReport(config.where)
    with ImapMailbox(config) as box:
        try:
            _poll(box, handle, report, max_bytes)
        except MailboxUnreachable as err:
            report.error = str(err)
    return report


def _poll(box: ImapMailbox, handle: Handler, report: PollReport, max_bytes: int) -> None:
    uids = box.unhandled()
    sizes: dict[int, int] = {}
    for index, uid in enumerate(uids):
        if index % BATCH == 0:
            sizes = box.sizes(uids[index : index + BATCH])
        size = sizes.get(uid)
        if size is None:
            continue  # gone since the SEARCH (another client moved it)
        if size > max_bytes:
            box.mark_handled(uid)
            report.ignored += 1
            report.lines.append(
                f"message {uid}: ignored, {size} bytes is over the {max_bytes} byte limit "
                "(not read; marked handled)"
            )
            continue
        raw = box.read(uid)
        if raw is None:
            continue
        try:
            result = handle(raw)
        except (StoreError, DatabaseError) as err:
            report.left += len(uids) - index
            report.error = (
                f"the database failed: {error_line(err)}; message {uid} and the rest stay "
                "unhandled for the next poll"
            )
            return
        except Exception as err:  # a bug in the handler: this message waits, the others go on
            report.left += 1
            report.lines.append(
                f"message {uid}: left for the next poll, handling failed: {error_line(err)}"
            )
            continue
        box.mark_handled(uid)
        if result.acted:
            report.acted += 1
        else:
            report.ignored += 1
        report.lines.append(f"message {uid}: {result.line}")
