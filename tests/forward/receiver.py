"""A real receiving app for the forwarding tests: Starlette, served by uvicorn on 127.0.0.1.

It verifies every request with the ``standardwebhooks`` package, as a user's app would, and
records what it saw. Its ``mode`` says how /hook answers: "ok" (204), "500", or "fail-first"
(500 the first time it sees an event id, then 200). Other paths misbehave on purpose: /slow
never answers in time, /redirect answers 307 to /hook, /huge answers 200 with an endless body,
/drip answers 200 then drips its body, /busy holds each request a moment and counts the
requests in flight.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    event_id: str
    body: dict
    answered: int


@dataclass
class Receiver:
    secret: str = SECRET
    mode: str = "ok"
    received: list[Received] = field(default_factory=list)
    forged: int = 0
    seen: Counter = field(default_factory=Counter)
    hits: Counter = field(default_factory=Counter)
    in_flight: int = 0
    most_in_flight: int = 0
    huge_sent: int = 0
    busy_seconds: float = 0.2
    overlaps: int = 0
    ids_in_flight: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        webhook = Webhook(self.secret)

        async def hook(request: Request) -> Response:
            self.hits["hook"] += 1
            raw = await request.body()
            try:
                body = webhook.verify(raw, dict(request.headers))
            except WebhookVerificationError:
                self.forged += 1
                return PlainTextResponse("bad signature", status_code=400)
            event_id = request.headers["webhook-id"]
            with self.lock:
                self.seen[event_id] += 1
                first = self.seen[event_id] == 1
            status = {"ok": 204, "500": 500}.get(self.mode, 500 if first else 200)
            self.received.append(Received(event_id, body, status))
            return Response(status_code=status)

        async def slow(request: Request) -> Response:
            self.hits["slow"] += 1
            await asyncio.sleep(3)
            return Response(status_code=204)

        async def redirect(request: Request) -> Response:
            self.hits["redirect"] += 1
            return RedirectResponse("/hook", status_code=307)

        async def huge(request: Request) -> Response:
            self.hits["huge"] += 1
            chunk = b"x" * 65536

            async def endless():
                for _ in range(16384):  # 1 GiB if anyone read it all
                    # uvicorn drops what is sent after the client left: stop counting there.
                    if await request.is_disconnected():
                        return
                    self.huge_sent += len(chunk)
                    yield chunk

            return StreamingResponse(endless(), media_type="text/plain")

        async def drip(request: Request) -> Response:
            self.hits["drip"] += 1

            async def slowly():
                for _ in range(30):
                    yield b"."
                    await asyncio.sleep(0.1)

            return StreamingResponse(slowly(), media_type="text/plain")

        async def busy(request: Request) -> Response:
            raw = await request.body()
            body = webhook.verify(raw, dict(request.headers))
            event_id = request.headers["webhook-id"]
            with self.lock:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                if event_id in self.ids_in_flight:
                    self.overlaps += 1  # two deliveries of one event at the same time
                self.ids_in_flight.add(event_id)
                self.seen[event_id] += 1
            try:
                await asyncio.sleep(self.busy_seconds)
            finally:
                with self.lock:
                    self.in_flight -= 1
                    self.ids_in_flight.discard(event_id)
            self.received.append(Received(event_id, body, 200))
            return Response(status_code=200)

        return Starlette(
            routes=[
                Route("/hook", hook, methods=["POST"]),
                Route("/slow", slow, methods=["POST"]),
                Route("/redirect", redirect, methods=["POST"]),
                Route("/huge", huge, methods=["POST"]),
                Route("/drip", drip, methods=["POST"]),
                Route("/busy", busy, methods=["POST"]),
            ]
        )

    def accepted(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.answered < 300]


class Served:
    """uvicorn running ``app`` in a thread of its own, on ``port``, until ``stop()``."""

    def __init__(self, app: Starlette, port: int):
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the receiver did not start on port {port}")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
