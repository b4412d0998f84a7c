"""The store's one interface, shared by the SQLite and PostgreSQL backends.

Writes are whole operations, not SQL: "record this message under this nonce". A backend batches
the operations in flight into one transaction (group commit) and resolves each only after the
commit, so the app never acknowledges what is not durable. Uniqueness (MessageUUID, the nonce, a
status report) is decided by the database's constraints, never by process memory, so several
workers and machines share one truth.
"""

from __future__ import annotations

import abc
import base64
import enum
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "MessageWrite",
    "NonceClaim",
    "OutboxEvent",
    "Outcome",
    "Page",
    "RejectionWrite",
    "ReplyPlan",
    "StatusWrite",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WriteOp",
    "WriteResult",
    "claims",
    "clean",
    "decode_cursor",
    "encode_cursor",
    "request_fingerprint",
]

Pairs = Sequence[tuple[str, str]]


class StoreError(Exception):
    """A store problem that is not the client's fault."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or a commit failed: answer 503 so that Plivo retries."""


class Outcome(enum.Enum):
    STORED = "stored"  # new, committed now
    DUPLICATE = "duplicate"  # already stored (same MessageUUID / same report): same answer again
    RETRY = "retry"  # the same nonce with the same content: a retry, idempotent answer
    REPLAY = "replay"  # the nonce was seen with other content: refuse


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: Outcome
    reply: str | None = None  # the stored answer (message XML) for messages
    # A message DUPLICATE whose text differs from the stored one (counted on the message).
    conflicting: bool = False
    # Where the stored reply came from (MessageWrite.reply_source or opted_out_source, as the
    # store chose; "handler-pending" until the handler has answered).
    source: str | None = None


@dataclass(frozen=True, slots=True)
class NonceClaim:
    """A nonce seen with a request; ``fingerprint`` identifies the request's content."""

    family: Literal["v2", "v3"]
    nonce: str
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.family}:{self.nonce}"


# NUL and lone surrogates (undecodable bytes kept by surrogateescape) cannot live in a text
# column (PostgreSQL refuses them, JSON encoders too): both backends store U+FFFD instead.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean(value: Any) -> Any:
    """``value`` (a str, or lists and dicts of them) as the stores keep it: no NUL, no surrogates.

    Values looked up (a MessageUUID, a filter) are cleaned the same way, so that what was stored
    cleaned is found again.
    """
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value


def request_fingerprint(kind: str, query: str, params: Pairs) -> str:
    """A stable digest of what a request carries: a retry has the same one, a replay another."""
    # Length-prefixed, so that no two different requests encode alike (a forged body whose
    # fingerprint matched a captured one would pass for a retry).
    parts = [f"{len(kind)}:{kind}{len(query)}:{query}"]
    for key, value in sorted(params):
        parts.append(f"{len(key)}:{key}{len(value)}:{value}")
    return hashlib.sha256("".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event to hand on, stored with its record: one outbox row per destination.

    Only a record stored now (Outcome.STORED) gets its rows; a duplicate, a retry or a replay
    writes none, so one delivery from Plivo makes one event however often it comes.
    """

    id: str  # forward.event.Event.id
    type: str  # "message.received" or "message.status"
    conversation: str  # the ordering key
    payload: bytes  # the JSON sent, as is, on every attempt
    destinations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """The answer to a message, decided before its write for both opt-out states (see the
    replies fields of :class:`MessageWrite`, which take these values)."""

    reply: str | None
    reply_source: str | None = None
    opted_out_reply: str | None = None
    opted_out_source: str | None = None
    optout_action: Literal["optout", "optin"] | None = None


@dataclass(frozen=True, slots=True)
class MessageWrite:
    """An inbound message with the answer already decided (it is stored with the message)."""

    message_uuid: str
    from_number: str
    to_number: str
    type: str
    text: str
    media: Sequence[dict[str, str | None]]  # [{"url": ..., "content_type": ...}]
    params: Pairs  # every parameter as received, in order
    method: str
    received_at: datetime  # aware, UTC
    reply: str | None  # Message XML, or None for the empty <Response/>
    signature_scheme: str  # "v2", "ma-v2", "v3", "ma-v3" or "none"
    fingerprint: str
    nonce: NonceClaim | None = None
    extra_nonce: NonceClaim | None = None  # see claims()
    events: tuple[OutboxEvent, ...] = ()  # the outbox rows, when it is stored now
    # Replies (issue 13). The answer is decided for both states of the sender before the
    # write, so that the store needs no extra round trip: ``reply``/``reply_source`` when the
    # sender has not opted out of ``to_number``, ``opted_out_reply``/``opted_out_source`` when
    # they have. ``opted_out_source`` None means no opt-out lookup at all (``reply`` is stored as
    # is). ``optout_action`` is applied if the message is new: "optout" records the opt-out,
    # "optin" removes it.
    reply_source: str | None = None
    opted_out_reply: str | None = None
    opted_out_source: str | None = None
    optout_action: Literal["optout", "optin"] | None = None
    kind: Literal["message"] = "message"


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """A delivery report about an outbound message (a reply of ours, or the user's own)."""

    message_uuid: str
    status: str
    sequence: int | None
    parent_message_uuid: str | None
    error_code: str | None
    reply_to: str | None  # the inbound MessageUUID our reply answered (from ?reply_to=)
    params: Pairs
    method: str
    received_at: datetime
    signature_scheme: str
    fingerprint: str  # duplicates of one report share it: stored once
    nonce: NonceClaim | None = None
    extra_nonce: NonceClaim | None = None  # see claims()
    events: tuple[OutboxEvent, ...] = ()  # the outbox rows, when it is stored now
    kind: Literal["status"] = "status"


@dataclass(frozen=True, slots=True)
class RejectionWrite:
    """A correctly signed request that could not be parsed: kept whole for inspection."""

    method: str
    path: str
    query: str
    headers: Pairs  # secrets removed
    body: bytes
    reason: str
    received_at: datetime
    signature_scheme: str
    fingerprint: str
    nonce: NonceClaim | None = None
    extra_nonce: NonceClaim | None = None  # see claims()
    kind: Literal["rejection"] = "rejection"


WriteOp = MessageWrite | StatusWrite | RejectionWrite


def claims(op: WriteOp) -> tuple[NonceClaim, ...]:
    """The nonces an operation claims: ``nonce``, and ``extra_nonce`` when both families verified.

    An operation is a REPLAY when any of its claims was seen with other content, else a RETRY
    when any was seen with the same content.
    """
    if op.extra_nonce is None:
        return (op.nonce,) if op.nonce is not None else ()
    return (op.nonce, op.extra_nonce) if op.nonce is not None else (op.extra_nonce,)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None = None


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(str(row_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Raises ValueError for a cursor we did not make."""
    padded = cursor + "=" * (-len(cursor) % 4)
    value = int(base64.urlsafe_b64decode(padded.encode()).decode())
    if not 0 <= value < 2**63:  # a row id both databases can hold
        raise ValueError("cursor out of range")
    return value


@dataclass(slots=True)
class StoreStats:
    batches: int = 0
    operations: int = 0
    largest_batch: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class Store(abc.ABC):
    """What the app needs from a database. Every method may raise :class:`StoreUnavailable`.

    Message, status and rejection dicts returned by the read methods use the API's field names
    (see README, "The API"); datetimes are aware UTC ``datetime`` objects.
    """

    stats: StoreStats
    # Called once per committed group commit with its size and seconds (the app's metrics set
    # it); once per batch, never per operation, and it must not raise.
    on_commit: Callable[[int, float], None] | None = None

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, apply pending migrations, start the group-commit writer."""

    @abc.abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations (without opening for writes); return the versions applied."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish the writes in flight, then disconnect."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers now."""

    @abc.abstractmethod
    async def write(self, op: WriteOp) -> WriteResult:
        """Apply one operation in the next group commit; return after it is durable.

        Returns or raises within the store's ``timeout`` (StoreUnavailable when the commit takes
        longer: the caller answers 503 and Plivo retries; the write may still commit, and the
        retry then gets the stored answer).

        Semantics, identical on every backend, all in the operation's transaction:
        1. With nonces (claims()): claim each. If one was claimed before with another
           fingerprint, the outcome is REPLAY and nothing else is written. With the same
           fingerprint the request is a retry.
        2. Message: insert unless the MessageUUID exists; if it exists the outcome is DUPLICATE
           (RETRY after a matching nonce) and ``reply`` is the stored reply; a DUPLICATE with
           another text adds one to the stored message's ``conflicting_duplicates`` and says
           ``conflicting``.
           With ``opted_out_source`` set, the stored reply and source are those for the sender's
           opt-out state of (to, from) in that transaction, and a new message's
           ``optout_action`` is applied there (earlier operations of the batch first).
           ``WriteResult.source`` is the stored source.
           Status: insert unless a report with the same fingerprint exists (DUPLICATE/RETRY).
           Rejection: insert (RETRY after a matching nonce: not again).
        """

    @abc.abstractmethod
    async def list_messages(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
        q: str | None = None,
    ) -> Page:
        """Newest first; ``q`` matches text containing it (case-insensitive)."""

    @abc.abstractmethod
    async def get_message(self, message_uuid: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def get_statuses(self, message_uuid: str) -> list[dict[str, Any]]:
        """The history of an outbound message (and of its parts), in Sequence order."""

    @abc.abstractmethod
    async def list_rejections(self, *, limit: int = 50, cursor: str | None = None) -> Page: ...

    @abc.abstractmethod
    async def prune_nonces(self, older_than: datetime) -> int:
        """Forget nonces seen before ``older_than``; return how many."""

    @abc.abstractmethod
    async def prune_rejections(self, older_than: datetime) -> int:
        """Forget rejections received before ``older_than``, except the newest; return how many.

        The newest row always stays: SQLite numbers a new row max(id) + 1, so an emptied table
        would hand out ids again and a cursor from before would skip rows.
        """

    @abc.abstractmethod
    async def prune_messages(self, older_than: datetime) -> dict[str, int]:
        """Retention: delete messages, reports and rejections from before ``older_than``.

        In small batches, each a short transaction, so that Plivo's requests keep their latency
        while it runs (store/retention.py). Returns the rows removed per table.
        """

    @abc.abstractmethod
    async def set_reply(
        self, message_uuid: str, reply: str | None, source: str, error: str | None
    ) -> tuple[str | None, str | None]:
        """Store a handler's answer, unless one is already stored (the first writer wins).

        Only a message whose ``reply_source`` is still ``"handler-pending"`` takes it; returns the
        stored ``(reply, reply_source)`` afterwards, whoever wrote it (``(None, None)`` for an
        unknown MessageUUID).
        """

    @abc.abstractmethod
    async def list_optouts(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
    ) -> Page:
        """Opt-outs, newest first (OptOutView)."""

    @abc.abstractmethod
    async def add_optout(self, to_number: str, from_number: str, at: datetime) -> bool:
        """Record that ``from_number`` opted out of ``to_number``; False if it already had."""

    @abc.abstractmethod
    async def remove_optout(self, to_number: str, from_number: str) -> bool:
        """Forget that opt-out; False if there was none."""

    @abc.abstractmethod
    async def counts(self) -> dict[str, int]:
        """Rows per table: ``messages``, ``statuses``, ``rejections``, ``nonces``."""
