"""Baseline: a do-nothing ASGI app, the floor a Python ASGI server sets on one core.

It reads the whole body (so the server does the same socket work as for a real webhook) and
answers ``200 <Response/>`` as ``application/xml``. No parsing, no signature check, no storage.

    uvicorn noop_asgi:app --loop uvloop --http httptools
    granian --interface asgi noop_asgi:app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = b"<Response/>"
HEADERS = [(b"content-type", b"application/xml"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
