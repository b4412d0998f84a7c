"""Handlers the tests load by name, as `--handler tests.replies.sample_handlers:NAME` would."""

from __future__ import annotations

import asyncio
import threading
import time

from plivohook.protocol.xml import Response, reply_to
from plivohook.replies.handlers import IncomingMessage

release = threading.Event()  # set by the blocking test from the event loop
started = threading.Event()


def echo(message: IncomingMessage) -> str:
    return f"you said: {message.text}"


async def async_echo(message: IncomingMessage) -> str:
    await asyncio.sleep(0)
    return f"async: {message.text}"


def nothing(message: IncomingMessage) -> None:
    return None


def response(message: IncomingMessage) -> Response:
    return Response([reply_to(message.from_number, message.to_number, "built")])


def raises(message: IncomingMessage) -> str:
    raise RuntimeError(f"no answer for {message.text}")


async def async_raises(message: IncomingMessage) -> str:
    raise KeyError("missing")


def wrong_type(message: IncomingMessage) -> int:
    return 42


def sleeps(message: IncomingMessage) -> str:
    time.sleep(2)
    return "too late"


async def async_sleeps(message: IncomingMessage) -> str:
    await asyncio.sleep(60)
    return "too late"


def blocks_until_released(message: IncomingMessage) -> str:
    # Blocks its thread until the event loop sets `release`: if the handler ran on the loop, the
    # loop could never set it and this would time out.
    started.set()
    if not release.wait(30):
        return "the loop was blocked"
    return "released"


class Callable:
    async def __call__(self, message: IncomingMessage) -> str:
        return "from an object"


callable_object = Callable()
not_callable = 3
