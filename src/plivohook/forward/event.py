"""The events plivohook forwards: one per stored message, one per stored delivery report.

An event is ``{"type": ..., "timestamp": ..., "data": ...}`` (the Standard Webhooks payload
shape), where ``data`` is the record exactly as the admin API shows it: a message as
``GET /api/messages/{uuid}``, a delivery report as one entry of ``GET /api/statuses/{uuid}``.
``event.schema.json`` beside this module describes it (JSON Schema, draft 2020-12).

The event is built once, when its record is stored, and kept as bytes in the outbox: every retry
sends the same bytes under the same id, so a receiver can drop duplicates by id and a signature
covers exactly what was stored. The timestamp is the record's ``received_at`` (not the time of
building) for the same reason: building twice gives the same event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal

import orjson

__all__ = [
    "MESSAGE_RECEIVED",
    "MESSAGE_STATUS",
    "Event",
    "conversation_key",
    "event_id",
    "load_schema",
    "message_event",
    "message_view",
    "params_object",
    "rfc3339",
    "status_event",
    "status_view",
]

MESSAGE_RECEIVED = "message.received"
MESSAGE_STATUS = "message.status"
EventType = Literal["message.received", "message.status"]


@dataclass(frozen=True, slots=True)
class Event:
    """One event, ready for the outbox: keep ``id``, ``type``, ``conversation`` and ``payload``."""

    id: str  # "evt_" + 32 hex digits; the same for the same record, every time
    type: str  # MESSAGE_RECEIVED or MESSAGE_STATUS
    conversation: str  # the ordering key: events of one key reach a destination in order
    payload: bytes  # the JSON body, exactly as sent (and signed) on every attempt

    @property
    def body(self) -> dict[str, Any]:
        return orjson.loads(self.payload)


def rfc3339(moment: datetime) -> str:
    """UTC with microseconds and a Z, as the admin API writes times."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in an event: pass an aware one")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def params_object(pairs: Any) -> dict[str, Any]:
    """Parameter pairs as one object: a repeated name gets the list of its values, in order.

    A mapping is returned as a plain dict unchanged, so that a view passes through again.
    """
    if isinstance(pairs, Mapping):
        return dict(pairs)
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            previous = result[key]
            result[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            result[key] = value
    return result


def _view(record: Mapping[str, Any]) -> dict[str, Any]:
    view = dict(record)
    view["params"] = params_object(record["params"])
    if isinstance(view.get("received_at"), datetime):
        view["received_at"] = rfc3339(view["received_at"])
    return view


def message_view(message: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message (``Store.get_message``) as ``GET /api/messages/{uuid}`` shows it."""
    return _view(message)


def status_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """A stored delivery report (one of ``Store.get_statuses``) as the API shows it."""
    return _view(status)


def event_id(event_type: str, key: str | int) -> str:
    """A stable id: ``evt_`` and 32 hex digits of SHA-256 over the type and the record's key.

    The key is what makes the record unique in the store: a message's MessageUUID, a delivery
    report's row id (or its fingerprint). Hashing keeps the id short, free of the characters a
    MessageUUID might carry (Plivo's are UUIDs, a forger's need not be), and the same in every
    process that builds it, which is what lets a receiver or JetStream drop duplicates.
    """
    if event_type not in (MESSAGE_RECEIVED, MESSAGE_STATUS):
        raise ValueError(f"unknown event type {event_type!r}")
    digest = hashlib.sha256(f"{event_type}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()
    return "evt_" + digest[:32]


def conversation_key(a: str | None, b: str | None) -> str:
    """The ordering key of a From-To pair, the same whichever way the message went.

    An inbound message (From: them, To: us) and the delivery reports of our reply (From: us,
    To: them) are one conversation, so the key is the unordered pair: ordering them together
    is stricter than needed, never looser.
    """
    first, second = sorted((a or "", b or ""))
    return f"{first}\x1f{second}"


def _encode(event_type: str, timestamp: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": event_type, "timestamp": timestamp, "data": data})


def message_event(message: Mapping[str, Any]) -> Event:
    """The ``message.received`` event of a stored message (a store dict or its API view)."""
    data = message_view(message)
    return Event(
        id=event_id(MESSAGE_RECEIVED, data["message_uuid"]),
        type=MESSAGE_RECEIVED,
        conversation=conversation_key(data["from"], data["to"]),
        payload=_encode(MESSAGE_RECEIVED, data["received_at"], data),
    )


def status_event(status: Mapping[str, Any], *, key: str | int) -> Event:
    """The ``message.status`` event of a stored delivery report.

    ``key`` names the report uniquely in the store (its row id, or the fingerprint that makes a
    duplicate from Plivo the same report): a MessageUUID has many reports, one event each.
    The conversation comes from the report's From and To; a report without them (Plivo always
    sends both, a hand-made one may not) is ordered with the other reports of its message.
    """
    data = status_view(status)
    params = data["params"]
    sender, recipient = params.get("From"), params.get("To")
    if isinstance(sender, str) and isinstance(recipient, str):
        conversation = conversation_key(sender, recipient)
    else:
        conversation = "message\x1f" + (data.get("parent_message_uuid") or data["message_uuid"])
    return Event(
        id=event_id(MESSAGE_STATUS, key),
        type=MESSAGE_STATUS,
        conversation=conversation,
        payload=_encode(MESSAGE_STATUS, data["received_at"], data),
    )


def load_schema() -> dict[str, Any]:
    """The JSON Schema of an event, as shipped in the package (``event.schema.json``)."""
    text = resources.files(__package__).joinpath("event.schema.json").read_text("utf-8")
    return json.loads(text)
