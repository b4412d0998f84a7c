"""The read side, one for both backends: queries, typed views, pagination.

The two backends used to carry their own copies of every listing (and had drifted: ``LIKE``
against ``ILIKE``, ``if from_number:`` against ``is not None``, rows mapped by position). Here
each query is built once; a backend contributes only a :class:`Dialect` (its placeholder, its
case-insensitive match, how its driver hands back JSON and timestamps) and one primitive,
``_rows(sql, args)``, that returns rows as dicts keyed by column name. Views are mapped by name,
so adding a column cannot shift another.

The views are what the API, the CLI and the OpenAPI document show (tests/test_openapi.py checks
the document's schemas against these TypedDicts, so the two cannot drift).
"""

from __future__ import annotations

import abc
import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from .base import Page, clean, decode_cursor, encode_cursor

__all__ = [
    "DELIVERY_STATES",
    "DeliveryView",
    "Dialect",
    "MessageView",
    "OptOutView",
    "RejectionView",
    "SQLReads",
    "StatusView",
    "like_pattern",
    "page_of",
]

# "from" is a keyword: the functional form is the only way to name the field as the API does.
MessageView = TypedDict(
    "MessageView",
    {
        "message_uuid": str,
        "from": str,
        "to": str,
        "type": str,
        "text": str,
        "media": list[dict[str, Any]],
        "params": list[list[str]],  # every parameter as received, in order
        "method": str,
        "received_at": datetime,
        "reply": str | None,
        "signature_scheme": str,
        "status": str | None,  # the latest delivery report of our reply, if any
        # Deliveries of this MessageUUID that came with another text (the first one is kept).
        "conflicting_duplicates": int,
        # Where the reply came from: "rule 3", "default", "compliance:stop", "compliance:start",
        # "compliance:help", "opted-out", "none", "handler", "handler-error" or
        # "handler-pending"; null for messages stored before replies existed.
        "reply_source": str | None,
        "handler_error": str | None,  # why the handler gave no answer (raised, timed out)
    },
)

# "from" again: the sender who opted out of "to" (one of our numbers).
OptOutView = TypedDict(
    "OptOutView",
    {
        "to": str,
        "from": str,
        "opted_out_at": datetime,
        "message_uuid": str | None,  # the STOP message; null when added by the API or the CLI
    },
)


class StatusView(TypedDict):
    message_uuid: str
    status: str
    sequence: int | None
    parent_message_uuid: str | None
    error_code: str | None
    reply_to: str | None
    params: list[list[str]]
    received_at: datetime
    signature_scheme: str


class RejectionView(TypedDict):
    id: int
    method: str
    path: str
    query: str
    headers: list[list[str]]
    body: str  # decoded as UTF-8 with replacement, for reading
    body_base64: str  # the exact bytes
    reason: str
    received_at: datetime
    signature_scheme: str


DELIVERY_STATES = ("pending", "delivered", "dead")


class DeliveryView(TypedDict):
    """One event for one destination (an outbox row), as the API and the CLI show it."""

    id: int
    event_id: str
    event_type: str
    destination: str
    message_uuid: str
    state: str  # pending, delivered or dead
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None  # pending only
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the backends' SQL and drivers, and nothing else."""

    placeholder: str  # "?" (sqlite3) or "%s" (psycopg)
    ilike: str  # a case-insensitive LIKE: SQLite's LIKE is one (for ASCII), PostgreSQL's ILIKE
    json: Callable[[Any], Any]  # a JSON column as the driver returns it -> Python
    time: Callable[[Any], datetime]  # a timestamp column as the driver returns it -> aware UTC
    time_param: Callable[[datetime], Any] = lambda moment: moment  # a datetime as a parameter

    def sql(self, text: str) -> str:
        """``text`` written with ``?`` placeholders, in this dialect."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards escaped (matched with ``ESCAPE '\\'``)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def page_of(rows: Sequence[dict[str, Any]], limit: int, view: Callable[[Any], Any]) -> Page:
    """One page from ``limit + 1`` rows fetched newest first: the extra row says there is more."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        [view(row) for row in rows], encode_cursor(rows[-1]["id"]) if more and rows else None
    )


def _before(cursor: str | None) -> int | None:
    return None if cursor is None else decode_cursor(cursor)  # ValueError: not one of ours


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError("limit must be at least 1")


# The latest report about our reply to a message: the inbox and the API show it beside the text.
_MESSAGE_SELECT = (
    "SELECT m.id AS id, m.message_uuid AS message_uuid, m.from_number AS from_number,"
    " m.to_number AS to_number, m.type AS type, m.text AS text, m.media AS media,"
    " m.params AS params, m.method AS method, m.received_at AS received_at, m.reply AS reply,"
    " m.signature_scheme AS signature_scheme,"
    " (SELECT s.status FROM statuses s WHERE s.reply_to = m.message_uuid"
    "  ORDER BY COALESCE(s.sequence, -1) DESC, s.id DESC LIMIT 1) AS status,"
    " m.conflicting_duplicates AS conflicting_duplicates,"
    " m.reply_source AS reply_source, m.handler_error AS handler_error"
    " FROM messages m"
)
_STATUS_SELECT = (
    "SELECT id, message_uuid, status, sequence, parent_message_uuid, error_code, reply_to,"
    " params, received_at, signature_scheme FROM statuses"
)
_REJECTION_SELECT = (
    "SELECT id, method, path, query, headers, body, reason, received_at, signature_scheme"
    " FROM rejections"
)
_DELIVERY_SELECT = (
    "SELECT id, event_id, event_type, destination, message_uuid, state, attempts, created_at,"
    " next_attempt_at, last_status_code, last_error, delivered_at FROM outbox"
)
_OPTOUT_SELECT = "SELECT id, to_number, from_number, opted_out_at, message_uuid FROM opt_outs"
TABLES = ("messages", "statuses", "rejections", "nonces")


class SQLReads(abc.ABC):
    """The read methods of :class:`~plivohook.store.base.Store`, for a SQL backend."""

    dialect: Dialect

    @abc.abstractmethod
    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one read (``?`` placeholders already in the dialect) and return named rows."""

    def message_view(self, row: dict[str, Any]) -> MessageView:
        d = self.dialect
        return {
            "message_uuid": row["message_uuid"],
            "from": row["from_number"],
            "to": row["to_number"],
            "type": row["type"],
            "text": row["text"],
            "media": d.json(row["media"]),
            "params": d.json(row["params"]),
            "method": row["method"],
            "received_at": d.time(row["received_at"]),
            "reply": row["reply"],
            "signature_scheme": row["signature_scheme"],
            "status": row["status"],
            "conflicting_duplicates": row["conflicting_duplicates"],
            "reply_source": row["reply_source"],
            "handler_error": row["handler_error"],
        }

    def optout_view(self, row: dict[str, Any]) -> OptOutView:
        return {
            "to": row["to_number"],
            "from": row["from_number"],
            "opted_out_at": self.dialect.time(row["opted_out_at"]),
            "message_uuid": row["message_uuid"],
        }

    def status_view(self, row: dict[str, Any]) -> StatusView:
        d = self.dialect
        return {
            "message_uuid": row["message_uuid"],
            "status": row["status"],
            "sequence": row["sequence"],
            "parent_message_uuid": row["parent_message_uuid"],
            "error_code": row["error_code"],
            "reply_to": row["reply_to"],
            "params": d.json(row["params"]),
            "received_at": d.time(row["received_at"]),
            "signature_scheme": row["signature_scheme"],
        }

    def rejection_view(self, row: dict[str, Any]) -> RejectionView:
        d = self.dialect
        body = bytes(row["body"])
        return {
            "id": row["id"],
            "method": row["method"],
            "path": row["path"],
            "query": row["query"],
            "headers": d.json(row["headers"]),
            "body": body.decode("utf-8", "replace"),
            "body_base64": base64.b64encode(body).decode("ascii"),
            "reason": row["reason"],
            "received_at": d.time(row["received_at"]),
            "signature_scheme": row["signature_scheme"],
        }

    def delivery_view(self, row: dict[str, Any]) -> DeliveryView:
        d = self.dialect
        pending = row["state"] == "pending"
        return {
            "id": row["id"],
            "event_id": row["event_id"],
            "event_type": row["event_type"],
            "destination": row["destination"],
            "message_uuid": row["message_uuid"],
            "state": row["state"],
            "attempts": row["attempts"],
            "created_at": d.time(row["created_at"]),
            "next_attempt_at": d.time(row["next_attempt_at"]) if pending else None,
            "last_status_code": row["last_status_code"],
            "last_error": row["last_error"],
            "delivered_at": d.time(row["delivered_at"]) if row["delivered_at"] else None,
        }

    async def list_deliveries(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        state: str | None = None,
        message_uuid: str | None = None,
        destination: str | None = None,
    ) -> Page:
        """Outbox rows, newest first; ``state`` is one of DELIVERY_STATES (else ValueError)."""
        _check_limit(limit)
        where: list[str] = []
        args: list[Any] = []
        if (before := _before(cursor)) is not None:
            where.append("id < ?")
            args.append(before)
        if state is not None:
            if state not in DELIVERY_STATES:
                raise ValueError(f"state must be one of {', '.join(DELIVERY_STATES)}")
            where.append("state = ?")
            args.append(state)
        if message_uuid is not None:
            where.append("message_uuid = ?")
            args.append(clean(message_uuid))
        if destination is not None:
            where.append("destination = ?")
            args.append(clean(destination))
        sql = _DELIVERY_SELECT
        if where:  # only constant fragments are joined; every value is a parameter
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit + 1)
        rows = await self._rows(self.dialect.sql(sql), args)
        return page_of(rows, limit, self.delivery_view)

    async def get_delivery(self, delivery_id: int) -> DeliveryView | None:
        rows = await self._rows(self.dialect.sql(f"{_DELIVERY_SELECT} WHERE id = ?"), [delivery_id])
        return self.delivery_view(rows[0]) if rows else None

    async def outbox_stats(self) -> dict[str, Any]:
        """``pending`` and ``dead`` counts, and ``oldest_pending`` (its created_at, or None)."""
        rows = await self._rows(
            "SELECT (SELECT count(*) FROM outbox WHERE state = 'pending') AS pending,"
            " (SELECT count(*) FROM outbox WHERE state = 'dead') AS dead,"
            " (SELECT created_at FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1)"
            " AS oldest"
        )
        row = rows[0]
        oldest = row["oldest"]
        return {
            "pending": int(row["pending"]),
            "dead": int(row["dead"]),
            "oldest_pending": self.dialect.time(oldest) if oldest is not None else None,
        }

    async def list_messages(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
        q: str | None = None,
    ) -> Page:
        _check_limit(limit)
        where: list[str] = []
        args: list[Any] = []
        if (before := _before(cursor)) is not None:
            where.append("m.id < ?")
            args.append(before)
        if from_number is not None:
            where.append("m.from_number = ?")
            args.append(clean(from_number))  # stored text never holds NUL or lone surrogates
        if to_number is not None:
            where.append("m.to_number = ?")
            args.append(clean(to_number))
        if q:
            where.append(f"m.text {self.dialect.ilike} ? ESCAPE '\\'")
            args.append(like_pattern(clean(q)))
        sql = _MESSAGE_SELECT
        if where:  # only constant fragments are joined; every value is a parameter
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY m.id DESC LIMIT ?"
        args.append(limit + 1)
        rows = await self._rows(self.dialect.sql(sql), args)
        return page_of(rows, limit, self.message_view)

    async def get_message(self, message_uuid: str) -> MessageView | None:
        rows = await self._rows(
            self.dialect.sql(f"{_MESSAGE_SELECT} WHERE m.message_uuid = ?"), [clean(message_uuid)]
        )
        return self.message_view(rows[0]) if rows else None

    async def get_statuses(self, message_uuid: str) -> list[StatusView]:
        key = clean(message_uuid)
        rows = await self._rows(
            self.dialect.sql(
                f"{_STATUS_SELECT} WHERE message_uuid = ? OR parent_message_uuid = ?"
                " ORDER BY COALESCE(sequence, -1), id"
            ),
            [key, key],
        )
        return [self.status_view(row) for row in rows]

    async def list_rejections(self, *, limit: int = 50, cursor: str | None = None) -> Page:
        _check_limit(limit)
        args: list[Any] = []
        sql = _REJECTION_SELECT
        if (before := _before(cursor)) is not None:
            sql += " WHERE id < ?"
            args.append(before)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit + 1)
        rows = await self._rows(self.dialect.sql(sql), args)
        return page_of(rows, limit, self.rejection_view)

    async def list_optouts(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
    ) -> Page:
        _check_limit(limit)
        where: list[str] = []
        args: list[Any] = []
        if (before := _before(cursor)) is not None:
            where.append("id < ?")
            args.append(before)
        if from_number is not None:
            where.append("from_number = ?")
            args.append(clean(from_number))
        if to_number is not None:
            where.append("to_number = ?")
            args.append(clean(to_number))
        sql = _OPTOUT_SELECT
        if where:  # constant fragments only; every value is a parameter
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit + 1)
        rows = await self._rows(self.dialect.sql(sql), args)
        return page_of(rows, limit, self.optout_view)

    async def counts(self) -> dict[str, int]:
        """Rows per table, in one statement."""
        # Constant table names only.
        sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in TABLES)  # noqa: S608
        rows = await self._rows(sql)
        return {table: int(rows[0][table]) for table in TABLES}
