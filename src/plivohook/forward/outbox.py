"""The outbox, as the forwarding worker sees it: the interface the stores implement.

Every stored message and delivery report gets one outbox row per destination, written in the
same transaction as the record itself, so an event exists exactly when its record does: a crash
between the two cannot lose one or invent one, and a duplicate from Plivo (not stored again)
makes no second event. The worker then moves rows through these states::

    pending --claim_due--> leased --mark_delivered--> delivered
                              |----mark_failed------> pending (next_attempt_at later, attempts+1)
                              |----mark_dead--------> dead (attempts+1; kept for the API)
                              '----release----------> pending (as it was, attempts unchanged)

**Ordering.** Events of one conversation (:attr:`OutboxRow.conversation`, the From-To pair) reach
a destination in the order they were stored (outbox row id order). ``claim_due`` therefore
returns, for each conversation, a run of that conversation's pending rows for the destination
starting at its *earliest* pending row, in id order, and nothing of a conversation whose
earliest pending row is not due yet (failed, waiting for ``next_attempt_at``) or is leased by
another worker. A later row may be claimed with the head (it is then delivered after the head
in the same batch, and released untried if the head fails). Dead and delivered rows do not hold
a conversation back. Different conversations may be claimed and delivered in any order.

**Leases.** A claimed row carries ``leased_until = now + lease_seconds``; until then no other
claim returns it or any later row of its conversation. A worker that dies leaves its rows to be
claimed again once the lease has expired (at least once: an event may be delivered twice, never
lost). A worker only starts an attempt it can finish within its lease.

- PostgreSQL: ``claim_due`` selects the heads with ``FOR UPDATE SKIP LOCKED`` and sets the lease
  in the same transaction, so any number of workers on any machines claim disjoint rows.
- SQLite: one worker per database file holds a file-wide lease (a row naming the holder and its
  expiry, renewed by each ``claim_due``); ``claim_due`` of any other worker returns ``[]`` until
  that lease expires, so a worker started after a SIGKILL takes over within one lease.

Rows are claimed per destination so that a slow destination never delays the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["DEFAULT_LEASE_SECONDS", "Outbox", "OutboxRow"]

DEFAULT_LEASE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event for one destination, as claimed."""

    id: int  # the outbox row id: the storage order
    event_id: str  # Event.id: the webhook-id / Nats-Msg-Id, the same on every attempt
    event_type: str  # "message.received" or "message.status"
    destination: str
    payload: bytes  # Event.payload, sent as is
    conversation: str  # Event.conversation: the ordering key
    attempts: int  # attempts made before this claim
    created_at: datetime  # when the event was stored: max age counts from here


class Outbox(Protocol):
    """What the worker needs of a store. Every method is one short transaction.

    The ``mark_*`` methods apply to a row whatever its lease (a worker that lost its lease and
    still delivered has delivered); ``now`` is passed in so that the worker's clock is the only
    one, which is what lets tests move time.
    """

    async def claim_due(
        self, destination: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[OutboxRow]:
        """Lease and return up to ``limit`` due rows for ``destination``, in id order.

        Due: pending, ``next_attempt_at <= now``, not leased (or the lease expired), and the
        earliest pending row of its conversation for this destination, or after it in the run
        described in the module's docstring.
        """
        ...

    async def mark_delivered(self, row_id: int, *, now: datetime, status_code: int | None) -> None:
        """Delivered: final. Counts the attempt, keeps the status code, clears the lease."""
        ...

    async def mark_failed(
        self,
        row_id: int,
        *,
        now: datetime,
        next_attempt_at: datetime,
        status_code: int | None,
        error: str | None,
    ) -> None:
        """Failed, to be retried: counts the attempt, keeps the last status code or error."""
        ...

    async def mark_dead(
        self, row_id: int, *, now: datetime, status_code: int | None, error: str | None
    ) -> None:
        """Failed past the maximum age: final until someone asks for a retry."""
        ...

    async def release(self, row_ids: Sequence[int]) -> None:
        """Give rows back untried: the lease is cleared, attempts and next attempt unchanged."""
        ...
