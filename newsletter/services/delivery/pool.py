"""Delivery, SMTP pool stage: each worker's connection, reopened with bounded backoff.

Also the pauses before a row is retried in the same run, and the error that ends a run when the
relay keeps the connection open but stops answering.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from newsletter.adapters.smtp import RelayUnreachable, SmtpConnection

TIMEOUT_STRIKES = 3  # replies timed out in a row: the relay is not answering, the run ends
RETRY_BACKOFF = (1.0, 2.0, 4.0, 8.0)  # seconds before attempts 2, 3, 4, 5 of one row in one run
DEFER_TO_NEXT_RUN = 3600.0  # after that, the row waits; the next `send` retries it at once
RECONNECT_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # about 15 s; then the relay counts as unreachable
# Private and undocumented: a factor (0 < f <= 1) on RETRY_BACKOFF and RECONNECT_BACKOFF that
# lets the tests shorten those waits without changing their number or order. Read only by
# EditionSender; no command sets it, and anything else leaves the real backoffs in place.
_TEST_BACKOFF_SCALE_ENV = "NEWSLETTER_TEST_BACKOFF_SCALE"


def _backoff_scale(env: str = _TEST_BACKOFF_SCALE_ENV) -> float:
    try:
        scale = float(os.environ.get(env) or 1.0)
    except ValueError:
        return 1.0
    return scale if 0.0 < scale <= 1.0 else 1.0


class RelayUnresponsive(RelayUnreachable):
    """The relay keeps the connection open but does not answer in time, message after message."""


def open_with_backoff(
    connection: SmtpConnection,
    pauses: tuple[float, ...],
    *,
    must_stop: Callable[[], bool],
    sleep: Callable[[float], None],
) -> None:
    """Open (or reopen) the connection, backing off; RelayUnreachable when it never comes."""
    if connection.is_open:
        return
    for pause in (*pauses, None):
        try:
            connection.open()
            return
        except RelayUnreachable:
            if pause is None or must_stop():
                raise
            sleep(pause)
