"""The outbox's statements, written once for both backends (``?`` placeholders, see Dialect).

The contract (claims in conversation order, leases, the states) is the forwarding worker's:
:mod:`plivohook.forward.outbox`. Each backend runs these statements its own way: SQLite under a
file-wide lease held by one worker, PostgreSQL with ``FOR UPDATE SKIP LOCKED`` for any number.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

__all__ = [
    "CLAIM_CANDIDATES",
    "MARK_DEAD",
    "MARK_DELIVERED",
    "MARK_FAILED",
    "RETRY_DEAD",
    "RETRY_ONE",
    "ROW_COLUMNS",
    "holder_name",
    "outbox_row",
]

# A due row whose conversation has no earlier pending row that holds it back (leased, or
# waiting for its next attempt). Every earlier pending row of an eligible row is eligible too and
# comes first in id order, so what a LIMIT keeps is, per conversation, a run from its head.
CLAIM_CANDIDATES = (
    "SELECT o.id FROM outbox o"
    " WHERE o.destination = ? AND o.state = 'pending' AND o.next_attempt_at <= ?"
    " AND (o.leased_until IS NULL OR o.leased_until <= ?)"
    " AND NOT EXISTS (SELECT 1 FROM outbox p"
    "  WHERE p.destination = o.destination AND p.conversation = o.conversation"
    "  AND p.state = 'pending' AND p.id < o.id"
    "  AND (p.next_attempt_at > ? OR (p.leased_until IS NOT NULL AND p.leased_until > ?)))"
    " ORDER BY o.id LIMIT ?"
)
ROW_COLUMNS = "id, event_id, event_type, destination, payload, conversation, attempts, created_at"

# The attempt counts whatever the lease: a worker that lost its lease and still delivered has
# delivered (forward.outbox.Outbox). A row retried meanwhile by hand stays as the retry left it.
MARK_DELIVERED = (
    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = ?,"
    " last_status_code = ?, last_error = NULL, leased_until = NULL, leased_by = NULL"
    " WHERE id = ?"
)
MARK_FAILED = (
    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_status_code = ?,"
    " last_error = ?, leased_until = NULL, leased_by = NULL WHERE id = ? AND state = 'pending'"
)
MARK_DEAD = (
    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_status_code = ?,"
    " last_error = ?, leased_until = NULL, leased_by = NULL WHERE id = ? AND state = 'pending'"
)
RETRY_ONE = (
    "UPDATE outbox SET state = 'pending', next_attempt_at = ?"
    " WHERE id = ? AND state IN ('pending', 'dead')"
)
RETRY_DEAD = "UPDATE outbox SET state = 'pending', next_attempt_at = ? WHERE state = 'dead'"


def holder_name() -> str:
    """Who holds a lease: host, process and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


def outbox_row(row: dict[str, Any], time: Callable[[Any], datetime]) -> Any:
    """A claimed row as the worker's OutboxRow (imported here: the forward package is optional)."""
    from ..forward.outbox import OutboxRow

    return OutboxRow(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        destination=row["destination"],
        payload=bytes(row["payload"]),
        conversation=row["conversation"],
        attempts=row["attempts"],
        created_at=time(row["created_at"]),
    )
