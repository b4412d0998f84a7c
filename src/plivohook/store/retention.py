"""Deleting what is past its retention, for both backends, in small batches while serving.

A large ``DELETE ... WHERE received_at < ?`` holds the write lock (SQLite) or a long transaction
(PostgreSQL) for as long as it takes: at millions of rows, seconds in which Plivo's requests wait
past their budget. So every table is pruned in batches of :data:`BATCH` rows, each its own short
transaction, with a pause between them in which the group-commit writer takes its turns.

Rows are taken oldest first by their id (the primary key, in arrival order): the first row of a
batch that is not old ends the round. No index on the time column is needed, and a round that
finds nothing old costs one short index read, not a scan of the table.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .reads import Dialect

__all__ = ["BATCH", "PAUSE", "TIME_COLUMNS", "SQLMaintenance"]

BATCH = 500  # rows per transaction: a few milliseconds of write lock on SQLite
PAUSE = 0.005  # seconds between batches, for the writer

# Tables with an integer id in arrival order, and the column that says when a row came.
TIME_COLUMNS = {"messages": "received_at", "statuses": "received_at", "rejections": "received_at"}


class SQLMaintenance(abc.ABC):
    """Batched pruning on top of a backend's read primitive and one write primitive."""

    dialect: Dialect

    @abc.abstractmethod
    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One write statement in a short transaction of its own; returns its row count."""

    async def prune_table(
        self,
        table: str,
        older_than: datetime,
        *,
        keep_newest: bool = False,
        batch: int = BATCH,
        pause: float = PAUSE,
    ) -> int:
        """Delete ``table``'s rows that came before ``older_than``; return how many.

        ``keep_newest`` never deletes the table's newest row (SQLite would hand its id out again,
        and a cursor given before would then skip the new rows).
        """
        column = TIME_COLUMNS[table]
        d = self.dialect
        # Constant table and column names only (TIME_COLUMNS); every value is a parameter.
        select = d.sql(f"SELECT id, {column} AS t FROM {table} ORDER BY id LIMIT ?")  # noqa: S608
        newest = None
        if keep_newest:
            found = await self._rows(f"SELECT max(id) AS id FROM {table}")  # noqa: S608
            newest = found[0]["id"] if found else None
        removed = 0
        while True:
            rows = await self._rows(select, [batch])
            old = [r["id"] for r in rows if d.time(r["t"]) < older_than and r["id"] != newest]
            if old:
                marks = ", ".join("?" * len(old))
                sql = d.sql(f"DELETE FROM {table} WHERE id IN ({marks})")  # noqa: S608
                removed += await self._execute(sql, old)
            if len(old) < len(rows) or len(rows) < batch or not old:
                return removed
            await asyncio.sleep(pause)

    async def prune_nonces(self, older_than: datetime) -> int:
        """Forget nonces seen before ``older_than``, in batches (by the seen_at index)."""
        d = self.dialect
        sql = d.sql(
            "DELETE FROM nonces WHERE key IN"
            " (SELECT key FROM nonces WHERE seen_at < ? ORDER BY seen_at LIMIT ?)"
        )
        removed = 0
        while True:
            count = await self._execute(sql, [d.time_param(older_than), BATCH])
            removed += count
            if count < BATCH:
                return removed
            await asyncio.sleep(PAUSE)

    async def prune_rejections(self, older_than: datetime) -> int:
        """Forget rejections kept before ``older_than``; the newest always stays."""
        return await self.prune_table("rejections", older_than, keep_newest=True)

    async def prune_messages(self, older_than: datetime) -> dict[str, int]:
        """Retention: messages, delivery reports and rejections that came before ``older_than``.

        Opt-outs and nonces are not messages: they are kept (nonces have their own retention).
        """
        return {
            "messages": await self.prune_table("messages", older_than),
            "statuses": await self.prune_table("statuses", older_than),
            "rejections": await self.prune_rejections(older_than),
        }
