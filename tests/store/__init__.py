"""Helpers shared by the store tests: operation builders and a runner for async test bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from plivohook.store.base import (
    MessageWrite,
    NonceClaim,
    RejectionWrite,
    StatusWrite,
    Store,
    request_fingerprint,
)

T = TypeVar("T")

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SENDER = "14155550100"
OUR_NUMBER = "14155550199"
DEFAULT_REPLY = "<Response><Message>thanks</Message></Response>"


def at(seconds: float = 0) -> datetime:
    return T0 + timedelta(seconds=seconds)


def nonce(value: str, fingerprint: str, family: Literal["v2", "v3"] = "v3") -> NonceClaim:
    return NonceClaim(family, value, fingerprint)


def message(
    uuid: str,
    *,
    text: str = "hello",
    reply: str | None = DEFAULT_REPLY,
    from_number: str = SENDER,
    to_number: str = OUR_NUMBER,
    type: str = "sms",
    media: Sequence[dict[str, str | None]] = (),
    params: Sequence[tuple[str, str]] | None = None,
    received_at: datetime | None = None,
    claim: NonceClaim | None = None,
    scheme: str = "v3",
    method: str = "POST",
) -> MessageWrite:
    if params is None:
        params = [
            ("From", from_number),
            ("To", to_number),
            ("Type", type),
            ("Text", text),
            ("MessageUUID", uuid),
        ]
    return MessageWrite(
        message_uuid=uuid,
        from_number=from_number,
        to_number=to_number,
        type=type,
        text=text,
        media=list(media),
        params=list(params),
        method=method,
        received_at=received_at or T0,
        reply=reply,
        signature_scheme=scheme,
        fingerprint=request_fingerprint("message", "", params),
        nonce=claim,
    )


def status(
    uuid: str,
    state: str,
    *,
    sequence: int | None = None,
    parent: str | None = None,
    reply_to: str | None = None,
    error_code: str | None = None,
    received_at: datetime | None = None,
    claim: NonceClaim | None = None,
    scheme: str = "v3",
) -> StatusWrite:
    params = [("MessageUUID", uuid), ("Status", state)]
    if sequence is not None:
        params.append(("Sequence", str(sequence)))
    if parent is not None:
        params.append(("ParentMessageUUID", parent))
    if error_code is not None:
        params.append(("ErrorCode", error_code))
    query = f"reply_to={reply_to}" if reply_to else ""
    return StatusWrite(
        message_uuid=uuid,
        status=state,
        sequence=sequence,
        parent_message_uuid=parent,
        error_code=error_code,
        reply_to=reply_to,
        params=params,
        method="POST",
        received_at=received_at or T0,
        signature_scheme=scheme,
        fingerprint=request_fingerprint("status", query, params),
        nonce=claim,
    )


def rejection(
    body: bytes = b"From=1&To=2",
    *,
    reason: str = "missing MessageUUID",
    headers: Sequence[tuple[str, str]] = (("content-type", "application/x-www-form-urlencoded"),),
    received_at: datetime | None = None,
    claim: NonceClaim | None = None,
) -> RejectionWrite:
    return RejectionWrite(
        method="POST",
        path="/plivo/message",
        query="a=1",
        headers=list(headers),
        body=body,
        reason=reason,
        received_at=received_at or T0,
        signature_scheme="v3",
        fingerprint=request_fingerprint("rejection", "a=1", [("body", body.hex())]),
        nonce=claim,
    )


def run(store: Store, body: Callable[[Store], Awaitable[T]], *, timeout: float = 45) -> T:
    """Open ``store``, await ``body(store)``, close it: all in a fresh event loop."""

    async def main() -> T:
        async with asyncio.timeout(timeout):
            await store.open()
            try:
                return await body(store)
            finally:
                await store.close()

    return asyncio.run(main())


def arun(coro: Awaitable[T], *, timeout: float = 45) -> T:
    """Run a coroutine in a fresh event loop, with a deadline."""

    async def main() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(main())


def without(item: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in keys}
