"""The events of a write, attached to it so that the store keeps them in the same transaction.

:class:`Enqueuer` is a write extension (``Webhooks.write_extensions``, plug point 2): it adds the
write's event, with every destination, to the MessageWrite or StatusWrite; the store inserts one
outbox row per destination only when it stores the record now (a duplicate makes none).

The event's ``data`` is built from the write as the store keeps it (text cleaned of NUL and lone
surrogates, the way both backends store it), in the shape ``GET /api/messages/{uuid}`` and
``GET /api/statuses/{uuid}`` show, so that what the user's app receives is what the API shows
for the new record. Two fields are facts of the moment of storing: a new message's ``status``
(the latest report about our reply) is null and its ``conflicting_duplicates`` is 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..store.base import MessageWrite, OutboxEvent, StatusWrite, clean
from .event import Event, message_event, status_event

__all__ = ["Enqueuer", "message_write_view", "status_write_view", "write_event"]


def message_write_view(op: MessageWrite) -> dict[str, Any]:
    """The message of ``op`` as the API will show it once stored (before params_object)."""
    return clean(
        {
            "message_uuid": op.message_uuid,
            "from": op.from_number,
            "to": op.to_number,
            "type": op.type,
            "text": op.text,
            "media": [dict(item) for item in op.media],
            "params": [list(pair) for pair in op.params],
            "method": op.method,
            "received_at": op.received_at,
            # The reply for a sender who has not opted out: the store swaps in the other one
            # (and its source) when the sender has (see the stores' outbox inserts).
            "reply": op.reply,
            "signature_scheme": op.signature_scheme,
            "status": None,
            "conflicting_duplicates": 0,
            "reply_source": op.reply_source,
            "handler_error": None,
        }
    )


def status_write_view(op: StatusWrite) -> dict[str, Any]:
    """The delivery report of ``op`` as one entry of ``GET /api/statuses/{uuid}`` shows it."""
    return clean(
        {
            "message_uuid": op.message_uuid,
            "status": op.status,
            "sequence": op.sequence,
            "parent_message_uuid": op.parent_message_uuid,
            "error_code": op.error_code,
            "reply_to": op.reply_to,
            "params": [list(pair) for pair in op.params],
            "received_at": op.received_at,
            "signature_scheme": op.signature_scheme,
        }
    )


def write_event(op: MessageWrite | StatusWrite) -> Event:
    """The event of a write: ``message.received``, or ``message.status`` keyed by fingerprint."""
    if isinstance(op, MessageWrite):
        return message_event(message_write_view(op))
    # The fingerprint is what makes a report one report in the store (a duplicate from Plivo
    # has the same one), so it is what makes its event the same event.
    return status_event(status_write_view(op), key=op.fingerprint)


class Enqueuer:
    """A write extension: the write's event, for every destination, rides with the write."""

    def __init__(self, destinations: Sequence[str]):
        if not destinations:
            raise ValueError("no destination to forward to")
        if len(set(destinations)) != len(destinations):
            raise ValueError("a destination is named twice")
        self.destinations = tuple(destinations)

    def __call__(self, op: MessageWrite | StatusWrite) -> MessageWrite | StatusWrite:
        event = write_event(op)
        queued = OutboxEvent(
            event.id, event.type, event.conversation, event.payload, self.destinations
        )
        return dataclasses.replace(op, events=(*op.events, queued))
