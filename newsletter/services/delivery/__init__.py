"""Service: deliver one edition to its frozen recipients, exactly once per ledger row.

The pipeline, by stage (as in listmonk's manager), one module each:
- campaign (``campaign.py``): ``send_edition`` freezes the edition (its articles and its
  recipients) in the ledger and runs the sender; ``send_test`` sends to editors only;
- orchestration (``sender.py``): the claimer thread claims pending rows with a lease and hands
  them to the workers; the watcher renews the lease and notes who left;
- message (``message.py``): each row is personalised by substitution into its variant's
  pre-encoded ``MessageTemplate``;
- worker (``sender.py``, ``lease.py``, ``recorder.py``): one thread per SMTP connection takes
  messages from a small queue, checks the row is still its own, sends it, and has each outcome
  recorded (group commit) before it takes the next, so a kill -9 can repeat at most the message
  in flight and the one being recorded, per connection;
- SMTP pool (``pool.py``): each worker's own ``SmtpConnection``, opened through the run's
  ``RelayGate`` (the first connection alone, then the others; three attempts each, one log line
  per retry) while the edition is still being composed (``OpeningAhead``), paced by
  ``newsletter.domain.ratelimit.PacingLimiter``;
- processes (``processes.py``): with NEWSLETTER_SEND_PROCESSES=N, ``SenderGroup`` forks N-1
  more senders after the freeze, each an ``EditionSender`` with its share of the connections.
The "sent" outcomes go through ``Store.sent_ledger()`` (``adapters/store/sent.py``), one
connection kept for the run.

A 4xx or a dropped connection puts the row back with a short backoff (bounded attempts per run);
a 5xx marks it failed and the subscriber bounced. A relay that cannot be reached at all stops
the run (within a minute at the default settings) with every unsent row back to pending; one
that refuses us for good (TLS mismatch, certificate, login) stops it at once, without retrying.

Right before each message a worker checks, without a query, that the row is still its own (its
lease has not run out since the last extend-and-verify; when it may have, it renews and verifies
first) and that its subscriber has not left since the claim (a set the watcher thread refreshes
every second). So a sender paused past its lease costs at most what a crash costs (per
connection, the message on the wire and the one not yet recorded), and an unsubscribe is honoured
for every message that has not started within about a second of it.
"""

from __future__ import annotations

from newsletter.domain import SendReport
from newsletter.services.delivery.campaign import (
    NoActiveSubscriber,
    NothingToSend,
    send_edition,
    send_test,
)
from newsletter.services.delivery.lease import (
    LEASE_SECONDS,
    LEASE_TRUST_SECONDS,
    lease_clock,
    new_owner_id,
    owner_is_dead,
)
from newsletter.services.delivery.pool import (
    _TEST_BACKOFF_SCALE_ENV,
    DEFER_TO_NEXT_RUN,
    RECONNECT_BACKOFF,
    RETRY_BACKOFF,
    RelayGate,
    RelayUnresponsive,
    _backoff_scale,
)
from newsletter.services.delivery.recorder import Recorder, RecordingFailed
from newsletter.services.delivery.sender import EditionSender, SendingStopped

__all__ = [
    "DEFER_TO_NEXT_RUN",
    "LEASE_SECONDS",
    "LEASE_TRUST_SECONDS",
    "RECONNECT_BACKOFF",
    "RETRY_BACKOFF",
    "_TEST_BACKOFF_SCALE_ENV",
    "EditionSender",
    "NoActiveSubscriber",
    "NothingToSend",
    "Recorder",
    "RecordingFailed",
    "RelayGate",
    "RelayUnresponsive",
    "SendReport",
    "SendingStopped",
    "_backoff_scale",
    "lease_clock",
    "new_owner_id",
    "owner_is_dead",
    "send_edition",
    "send_test",
]
