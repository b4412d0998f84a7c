"""When to try a failed event again, and when to give up: pure functions, no clock of their own.

The schedule doubles from ``base`` (1 s) up to ``cap`` (1 h) with *full jitter*: after the n-th
failed attempt the wait is drawn uniformly from ``[base, min(cap, base * 2**(n-1))]``. The jitter
matters after an outage: thousands of events that failed together would otherwise come back
together, every time, and knock the recovering app over again; spread over the whole window they
arrive as a trickle. The ``base`` floor keeps a retry from landing at once on a failure that just
happened. An event is dead once ``max_age`` (3 days) has passed since it was stored; the last
retry is pulled in to that moment, so a dead event has always been tried at the end of its time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

__all__ = [
    "DEFAULT_BASE",
    "DEFAULT_CAP",
    "DEFAULT_MAX_AGE",
    "RandomSource",
    "RetryPolicy",
    "backoff_ceiling",
    "backoff_delay",
]

DEFAULT_BASE = 1.0  # seconds
DEFAULT_CAP = 3600.0  # seconds
DEFAULT_MAX_AGE = timedelta(days=3)


class RandomSource(Protocol):
    """What the schedule needs of a random source: ``random.Random`` has it."""

    def uniform(self, a: float, b: float) -> float: ...


def backoff_ceiling(
    attempts: int, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP
) -> float:
    """The longest wait after ``attempts`` failed attempts (1 for the first failure)."""
    if attempts < 1:
        raise ValueError("attempts counts the failed attempts: 1 or more")
    # 2**attempts overflows a float only past 1023; past 64 doublings the cap has long won.
    return min(cap, base * 2 ** min(attempts - 1, 64))


def backoff_delay(
    attempts: int, rand: RandomSource, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP
) -> float:
    """Seconds to wait after ``attempts`` failed attempts: uniform in ``[base, ceiling]``."""
    ceiling = backoff_ceiling(attempts, base=base, cap=cap)
    return rand.uniform(min(base, ceiling), ceiling)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The schedule's three numbers, and what they say about one failed event."""

    base: float = DEFAULT_BASE
    cap: float = DEFAULT_CAP
    max_age: timedelta = DEFAULT_MAX_AGE

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError("the retry base must be positive and at most the cap")
        if self.max_age <= timedelta(0):
            raise ValueError("--forward-max-age must be positive")

    def delay(self, attempts: int, rand: RandomSource) -> float:
        return backoff_delay(attempts, rand, base=self.base, cap=self.cap)

    def deadline(self, created_at: datetime) -> datetime:
        return created_at + self.max_age

    def next_attempt(
        self, attempts: int, created_at: datetime, now: datetime, rand: RandomSource
    ) -> datetime | None:
        """When to try again after ``attempts`` failed attempts, or None: the event is dead.

        Dead once ``now`` has reached ``created_at + max_age``; otherwise ``now`` plus the
        jittered delay, but no later than that deadline, so the last try happens at it.
        """
        deadline = self.deadline(created_at)
        if now >= deadline:
            return None
        return min(now + timedelta(seconds=self.delay(attempts, rand)), deadline)
