"""What comes back after a message went out, pure: bounces and complaints, the soft-bounce rule,
and the rates mailbox providers judge a sender by.

The store records one kind per delivery row; the services decide from these rules.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from newsletter.domain import DeliveryStatus

# Mailbox providers' thresholds: Gmail and Yahoo ask bulk senders to keep complaints under 0.3%
# and start filtering well before; 0.1% is the line to act on. A hard-bounce rate over 2% is
# what makes Orange, SES and most smarthosts throttle or suspend a sender.
BOUNCE_RATE_WARNING = 0.02
COMPLAINT_RATE_WARNING = 0.001

# Ledger rows that went to the relay at least once: only these can have something come back (a
# pending or skipped row was never mailed, so a report naming it is not ours), and they are the
# rates' denominator.
MAILED_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.UNCERTAIN)


class ReturnedKind(enum.StrEnum):
    """What came back for one delivery."""

    SOFT = "soft"  # a temporary failure (4.x.x): counted, see soft_bounces_make_hard
    HARD = "hard"  # a permanent failure (5.x.x): the subscriber stops as bounced
    COMPLAINT = "complaint"  # an ARF report: the subscriber stops as complained, suppressed

    @property
    def rank(self) -> int:
        """A later report replaces an earlier one only when it says more: soft < hard < complaint."""
        return _RANK[self]

    def outranks(self, other: ReturnedKind | None) -> bool:
        return other is None or self.rank > other.rank


_RANK = {ReturnedKind.SOFT: 1, ReturnedKind.HARD: 2, ReturnedKind.COMPLAINT: 3}


def kind_of_status(status: str) -> ReturnedKind | None:
    """The kind an RFC 3463 status code says: 5.x.x hard, 4.x.x soft, anything else none."""
    head = status.strip()[:2]
    if head == "5.":
        return ReturnedKind.HARD
    if head == "4.":
        return ReturnedKind.SOFT
    return None


def soft_bounces_make_hard(days: Iterable[date], limit: int, window_days: int) -> bool:
    """Whether soft bounces on ``limit`` different editions fall within ``window_days`` days.

    ``days`` are the editions whose delivery came back soft (one row per edition and subscriber,
    so each edition counts once). A mailbox that is full for a day should not lose its owner;
    one that refuses three editions in a month is as good as gone.
    """
    ordered = sorted(set(days))
    if limit <= 1:
        return bool(ordered)
    return any(
        (ordered[i + limit - 1] - ordered[i]).days < window_days
        for i in range(len(ordered) - limit + 1)
    )


@dataclass(frozen=True, slots=True)
class ReturnedCounts:
    """One edition's bounces and complaints against the messages the relay took."""

    delivered: int  # messages the relay took (sent, or failed for good at the relay)
    hard: int = 0
    soft: int = 0
    complaints: int = 0

    @classmethod
    def of(cls, delivered: int, returned: Mapping[str, int]) -> ReturnedCounts:
        return cls(
            delivered=delivered,
            hard=returned.get(ReturnedKind.HARD.value, 0),
            soft=returned.get(ReturnedKind.SOFT.value, 0),
            complaints=returned.get(ReturnedKind.COMPLAINT.value, 0),
        )

    @property
    def bounce_rate(self) -> float:
        """Hard bounces over messages delivered: the rate providers judge (soft ones pass)."""
        return self.hard / self.delivered if self.delivered else 0.0

    @property
    def soft_rate(self) -> float:
        return self.soft / self.delivered if self.delivered else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.delivered if self.delivered else 0.0

    @property
    def bounce_warning(self) -> bool:
        return self.bounce_rate > BOUNCE_RATE_WARNING

    @property
    def complaint_warning(self) -> bool:
        return self.complaint_rate > COMPLAINT_RATE_WARNING


def percent(rate: float) -> str:
    """A rate as an operator reads it: "0.25%", two decimals."""
    return f"{rate * 100:.2f}%"
