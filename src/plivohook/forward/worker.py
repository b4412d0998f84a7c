"""The forwarding worker: claims due outbox rows, delivers them, records what happened.

Each destination has its own loop, so a slow or dead destination never delays another. A round
claims one batch (at most ``batch_size`` rows, leased), delivers its conversations concurrently
(the deliverer bounds the requests in flight) and each conversation's rows one after the other in
stored order; the first failure of a conversation stops it for this round and gives its later
rows back untried, which is what keeps events in order at the destination. Nothing is held in
memory beyond the batch: rows not yet claimed stay in the database, however many there are.

An attempt is only started if it can end (``deliverer.timeout``) before the batch's lease does,
so a row is never delivered by two workers at once while the lease holds; the rest of such a
batch is released for the next round. A store error ends the round; the leases of what was
claimed expire and the rows are claimed again, so a crash or an outage delays, never loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from .base import Deliverer, Outcome
from .outbox import DEFAULT_LEASE_SECONDS, Outbox, OutboxRow
from .retry import RandomSource, RetryPolicy

__all__ = ["Worker"]

log = logging.getLogger("plivohook.forward")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Worker:
    """Delivers the outbox's rows for every destination of ``deliverers`` (keyed by destination).

    ``clock`` gives aware UTC datetimes (the store compares them with ``next_attempt_at`` and
    leases); ``rand`` draws the retry jitter. ``batch_size`` defaults to twice the
    destination's ``max_in_flight``: enough to keep it busy, little enough to hold in memory.
    """

    def __init__(
        self,
        outbox: Outbox,
        deliverers: Mapping[str, Deliverer],
        *,
        clock: Callable[[], datetime] = _utcnow,
        rand: RandomSource | None = None,
        policy: RetryPolicy | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        batch_size: int | None = None,
        idle_seconds: float = 1.0,
        error_seconds: float = 5.0,
    ):
        if not deliverers:
            raise ValueError("a worker needs at least one destination")
        for destination, deliverer in deliverers.items():
            if lease_seconds <= deliverer.timeout:
                raise ValueError(
                    f"the lease ({lease_seconds:g} s) must outlast one attempt to "
                    f"{destination} ({deliverer.timeout:g} s)"
                )
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.outbox = outbox
        self.deliverers = dict(deliverers)
        self.clock = clock
        self.rand: RandomSource = rand if rand is not None else random.Random()
        self.policy = policy or RetryPolicy()
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.error_seconds = error_seconds
        self._wakeups = {destination: asyncio.Event() for destination in self.deliverers}
        # The worker holds the in-flight slots itself so that it can check the lease once it
        # has one: time spent waiting for a slot is time off the lease.
        self._slots = {d: asyncio.Semaphore(x.max_in_flight) for d, x in self.deliverers.items()}
        self._stopping = False

    def wake(self) -> None:
        """New rows were stored: look now rather than at the next poll (call from the loop)."""
        for event in self._wakeups.values():
            event.set()

    async def run_once(self) -> int:
        """One round for every destination, together; returns the number of attempts made."""
        counts = await asyncio.gather(*(self.run_destination_once(d) for d in self.deliverers))
        return sum(counts)

    async def run_destination_once(self, destination: str) -> int:
        """One round for one destination: claim a batch, deliver it, record the outcomes."""
        attempts, _claimed = await self._round(destination)
        return attempts

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Rounds for every destination until ``stop`` is set.

        Attempts in flight when it is set are finished and recorded (each ends within its
        timeout); no new one starts, and the rest of a batch is released.
        """
        self._stopping = False
        watcher = asyncio.create_task(self._watch(stop))
        try:
            await asyncio.gather(*(self._loop(d, stop) for d in self.deliverers))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._stopping = False  # a later run_once is not stopping

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        self.wake()

    async def _loop(self, destination: str, stop: asyncio.Event) -> None:
        wakeup = self._wakeups[destination]
        while not stop.is_set():
            wakeup.clear()
            try:
                _attempts, claimed = await self._round(destination)
            except Exception as exc:  # the store is down or failing: wait, then try again
                log.warning(
                    "forwarding to %s paused: the outbox failed (%s); retrying in %g s",
                    destination,
                    type(exc).__name__,
                    self.error_seconds,
                )
                await self._pause(wakeup, stop, self.error_seconds)
                continue
            if not claimed:
                await self._pause(wakeup, stop, self.idle_seconds)

    @staticmethod
    async def _pause(wakeup: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _round(self, destination: str) -> tuple[int, int]:
        deliverer = self.deliverers[destination]
        limit = self.batch_size or 2 * deliverer.max_in_flight
        claimed_at = self.clock()
        rows = await self.outbox.claim_due(destination, limit, self.lease_seconds, claimed_at)
        if not rows:
            return 0, 0
        # An attempt must end before the lease does; a small margin covers the clock's steps.
        spare = self.lease_seconds - deliverer.timeout
        last_start = claimed_at + timedelta(seconds=spare - min(1.0, spare / 2))
        conversations: dict[str, list[OutboxRow]] = {}
        for row in sorted(rows, key=lambda r: r.id):
            conversations.setdefault(row.conversation, []).append(row)
        results = await asyncio.gather(
            *(
                self._conversation(deliverer, self._slots[destination], group, last_start)
                for group in conversations.values()
            ),
            return_exceptions=True,
        )
        attempts = 0
        for result in results:
            if isinstance(result, BaseException):
                raise result
            attempts += result
        return attempts, len(rows)

    async def _conversation(
        self,
        deliverer: Deliverer,
        slots: asyncio.Semaphore,
        rows: Sequence[OutboxRow],
        last_start: datetime,
    ) -> int:
        attempts = 0
        for index, row in enumerate(rows):
            async with slots:
                if self._stopping or self.clock() > last_start:
                    outcome = None
                else:
                    try:
                        outcome = await deliverer.deliver(row.event_id, row.event_type, row.payload)
                    except Exception as exc:  # a deliverer's bug must not stop the worker
                        log.exception("delivering %s to %s failed", row.event_id, row.destination)
                        outcome = Outcome.retry(None, f"internal error: {type(exc).__name__}")
            if outcome is None:
                await self.outbox.release([r.id for r in rows[index:]])
                return attempts
            attempts += 1
            if not await self._settle(row, outcome):
                rest = [r.id for r in rows[index + 1 :]]
                if rest:
                    await self.outbox.release(rest)
                return attempts
        return attempts

    async def _settle(self, row: OutboxRow, outcome: Outcome) -> bool:
        """Record one attempt; True when later events of the conversation may go on."""
        now = self.clock()
        if outcome.delivered:
            await self.outbox.mark_delivered(row.id, now=now, status_code=outcome.status_code)
            log.debug("delivered %s to %s", row.event_id, row.destination)
            return True
        attempts = row.attempts + 1
        following = self.policy.next_attempt(attempts, row.created_at, now, self.rand)
        if following is None:
            await self.outbox.mark_dead(
                row.id, now=now, status_code=outcome.status_code, error=outcome.error
            )
            log.warning(
                "event %s is dead for %s after %d attempts (last: %s)",
                row.event_id,
                row.destination,
                attempts,
                outcome.error or outcome.status_code,
            )
            return True  # dead is final: it no longer holds its conversation back
        await self.outbox.mark_failed(
            row.id,
            now=now,
            next_attempt_at=following,
            status_code=outcome.status_code,
            error=outcome.error,
        )
        log.info(
            "event %s to %s failed (attempt %d: %s); next try at %s",
            row.event_id,
            row.destination,
            attempts,
            outcome.error or outcome.status_code,
            following.isoformat(),
        )
        return False
