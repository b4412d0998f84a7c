"""An in-memory Outbox for the worker's tests (the stores implement the real one).

It keeps the interface's rules itself and records any breach in ``violations``: a mark on a row
that is not leased, or a row delivered while an earlier row of its conversation for the same
destination is neither delivered nor dead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from plivohook.forward.event import Event
from plivohook.forward.outbox import OutboxRow


@dataclass
class Entry:
    row: OutboxRow
    state: str = "pending"  # pending, delivered, dead
    next_attempt_at: datetime | None = None
    leased_until: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None


class MemoryOutbox:
    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.violations: list[str] = []
        self.claims = 0
        self._next_id = 1

    def add(self, event: Event, destination: str, created_at: datetime) -> int:
        row_id = self._next_id
        self._next_id += 1
        row = OutboxRow(
            id=row_id,
            event_id=event.id,
            event_type=event.type,
            destination=destination,
            payload=event.payload,
            conversation=event.conversation,
            attempts=0,
            created_at=created_at,
        )
        self.entries[row_id] = Entry(row, next_attempt_at=created_at)
        return row_id

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries.values():
            counts[entry.state] = counts.get(entry.state, 0) + 1
        return counts

    async def claim_due(
        self, destination: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[OutboxRow]:
        self.claims += 1
        blocked: set[str] = set()
        claimed: list[OutboxRow] = []
        for row_id in sorted(self.entries):
            entry = self.entries[row_id]
            row = entry.row
            if row.destination != destination or entry.state != "pending":
                continue
            if row.conversation in blocked:
                continue
            leased = entry.leased_until is not None and entry.leased_until > now
            if leased or entry.next_attempt_at > now:
                blocked.add(row.conversation)  # later rows wait for this one
                continue
            if len(claimed) == limit:
                break
            entry.leased_until = now + timedelta(seconds=lease_seconds)
            claimed.append(row)
        return claimed

    def _leased(self, row_id: int, what: str) -> Entry:
        entry = self.entries[row_id]
        if entry.leased_until is None:
            self.violations.append(f"{what} of row {row_id}, which is not leased")
        return entry

    async def mark_delivered(self, row_id: int, *, now: datetime, status_code: int | None) -> None:
        entry = self._leased(row_id, "mark_delivered")
        row = entry.row
        for earlier in self.entries.values():
            if (
                earlier.row.id < row_id
                and earlier.row.destination == row.destination
                and earlier.row.conversation == row.conversation
                and earlier.state == "pending"
            ):
                self.violations.append(f"row {row_id} delivered before row {earlier.row.id}")
        entry.state = "delivered"
        entry.leased_until = None
        entry.last_status = status_code
        entry.row = replace(row, attempts=row.attempts + 1)

    async def mark_failed(
        self,
        row_id: int,
        *,
        now: datetime,
        next_attempt_at: datetime,
        status_code: int | None,
        error: str | None,
    ) -> None:
        entry = self._leased(row_id, "mark_failed")
        if next_attempt_at <= now:
            self.violations.append(f"row {row_id} failed with its next attempt not in the future")
        entry.leased_until = None
        entry.next_attempt_at = next_attempt_at
        entry.last_status, entry.last_error = status_code, error
        entry.row = replace(entry.row, attempts=entry.row.attempts + 1)

    async def mark_dead(
        self, row_id: int, *, now: datetime, status_code: int | None, error: str | None
    ) -> None:
        entry = self._leased(row_id, "mark_dead")
        entry.state = "dead"
        entry.leased_until = None
        entry.last_status, entry.last_error = status_code, error
        entry.row = replace(entry.row, attempts=entry.row.attempts + 1)

    async def release(self, row_ids: Sequence[int]) -> None:
        for row_id in row_ids:
            self._leased(row_id, "release").leased_until = None
