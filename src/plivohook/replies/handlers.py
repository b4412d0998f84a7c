"""The user's own reply handler: ``--handler package.module:function``.

A handler is a plain function, sync or async, that takes an :class:`IncomingMessage` and returns
``None`` (no reply), a ``str`` (the reply text, sent back to the sender like a rule's reply) or a
:class:`plivohook.protocol.xml.Response` (sent as built)::

    # myapp/replies.py, run as: plivohook serve --handler myapp.replies:answer
    from plivohook.replies.handlers import IncomingMessage

    def answer(message: IncomingMessage) -> str | None:
        if "order" in message.text.lower():
            return f"Your order is on its way, {message.from_number}."
        return None

It runs only when compliance and the rules did not answer, after the message is stored, with a
time limit. :func:`run_handler` never raises for the handler's faults: an exception, a timeout or
a wrong return type comes back as an error string (and is logged with its traceback), so the
caller can record it on the message and still answer Plivo in time.

A sync handler runs in a thread pool of its own, so it neither blocks the event loop nor, when it
hangs, takes the threads the rest of the server uses. Python cannot stop a thread: a sync handler
past its limit is abandoned, not killed, and holds its worker until it returns. An async handler
is cancelled at its limit; it must not block (``time.sleep``), or it stalls the whole server.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..protocol.params import InboundMessage, Media
from ..protocol.xml import Response

__all__ = [
    "DEFAULT_TIMEOUT",
    "HandlerError",
    "HandlerOutcome",
    "IncomingMessage",
    "load_handler",
    "run_handler",
]

log = logging.getLogger("plivohook.replies")

DEFAULT_TIMEOUT = 3.0
# Enough for a few slow handlers at once; a hung one holds a worker until it returns.
HANDLER_THREADS = 8
# An error recorded on a message stays readable in the API and the logs.
_MAX_ERROR = 500

_SPEC = re.compile(r"([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)")


class HandlerError(ValueError):
    """``--handler`` cannot be loaded; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """The stored inbound message, as a handler receives it.

    ``from_number`` sent ``text`` to ``to_number`` (one of your Plivo numbers); ``type`` is
    ``sms``, ``mms`` or ``whatsapp``; ``media`` holds MMS/WhatsApp attachments. ``received_at`` is
    when plivohook received it (UTC). ``message_intent`` is Plivo's keyword class (``optout``,
    ``optin``, ``help``) or ``None``. ``params`` has every field exactly as Plivo sent it, for
    anything not lifted out here. The object is immutable; handlers may keep it.
    """

    message_uuid: str
    from_number: str
    to_number: str
    type: str
    text: str
    received_at: datetime
    media: tuple[Media, ...] = ()
    message_intent: str | None = None
    units: int | None = None
    total_amount: Decimal | None = None
    powerpack_uuid: str | None = None
    params: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def from_inbound(cls, message: InboundMessage, received_at: datetime) -> IncomingMessage:
        """Build it from the parsed request (:func:`plivohook.protocol.params.parse_message`)."""
        return cls(
            message_uuid=message.message_uuid,
            from_number=message.from_number,
            to_number=message.to_number,
            type=message.type,
            text=message.text,
            received_at=received_at,
            media=message.media,
            message_intent=message.message_intent,
            units=message.units,
            total_amount=message.total_amount,
            powerpack_uuid=message.powerpack_uuid,
            params=message.params,
        )

    def param(self, name: str) -> str | None:
        """The first value Plivo sent for ``name`` (``None`` when absent)."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    def as_dict(self) -> Mapping[str, Any]:
        """The main fields as JSON-ready values (for handlers that log or forward them)."""
        return {
            "message_uuid": self.message_uuid,
            "from": self.from_number,
            "to": self.to_number,
            "type": self.type,
            "text": self.text,
            "received_at": self.received_at.isoformat(),
            "media": [{"url": m.url, "content_type": m.content_type} for m in self.media],
            "message_intent": self.message_intent,
        }


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """What a handler run gave: ``reply`` (``None``, a non-empty ``str`` or a ``Response``) and
    ``error`` (``None`` when it returned normally with an accepted type)."""

    reply: str | Response | None
    error: str | None = None


Handler = Callable[[IncomingMessage], Any]


def load_handler(spec: str) -> Handler:
    """Import ``package.module:function`` (the function may be ``Class.method`` style dotted).

    Raises :class:`HandlerError` naming what is wrong: the form of ``spec``, a module that cannot
    be imported (with the import's own error), a missing attribute, or an object that is not
    callable. Importing runs the module's top-level code, as ``python -m`` would.
    """
    if not isinstance(spec, str) or _SPEC.fullmatch(spec.strip()) is None:
        raise HandlerError(
            f"--handler {spec!r}: expected 'package.module:function', e.g. 'myapp.replies:answer'"
        )
    module_name, _, attr_path = spec.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise HandlerError(
                f"--handler {spec}: no module named {exc.name!r} (is it on PYTHONPATH, or "
                "installed in this environment?)"
            ) from None
        raise HandlerError(f"--handler {spec}: importing {module_name} failed: {exc}") from None
    except Exception as exc:
        raise HandlerError(
            f"--handler {spec}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerError(f"--handler {spec}: {module_name} has no {attr_path!r}") from None
    if not callable(target):
        raise HandlerError(
            f"--handler {spec}: {attr_path} is not callable (it is {type(target).__name__})"
        )
    return target  # type: ignore[no-any-return]


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with `async def __call__`
    )


_executor: ThreadPoolExecutor | None = None


def _default_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="plivohook-handler")
    return _executor


def _error(text: str) -> str:
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _checked(result: Any) -> HandlerOutcome:
    if result is None or isinstance(result, Response):
        return HandlerOutcome(result)
    if isinstance(result, str):
        return HandlerOutcome(result or None)
    return HandlerOutcome(
        None,
        _error(f"handler returned {type(result).__name__}; expected None, str or Response"),
    )


async def run_handler(
    fn: Handler,
    message: IncomingMessage,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    executor: ThreadPoolExecutor | None = None,
) -> HandlerOutcome:
    """Run ``fn(message)`` with a time limit of ``timeout`` seconds; never raises for its faults.

    Async functions run on the loop and are cancelled at the limit; sync ones run in ``executor``
    (a pool of :data:`HANDLER_THREADS` by default). A sync function that returns an awaitable
    (e.g. a ``functools.partial`` of an async one) has it awaited within the same limit.
    Cancelling the caller cancels the wait, as usual.
    """
    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            if _is_async(fn):
                result = await fn(message)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(executor or _default_executor(), fn, message)
                if inspect.isawaitable(result):
                    result = await result
    except TimeoutError as exc:
        if not limit.expired():  # the handler's own TimeoutError, e.g. from a client it used
            log.warning("handler %s raised on %s", _name(fn), message.message_uuid, exc_info=True)
            return HandlerOutcome(None, _error(f"handler raised {type(exc).__name__}: {exc}"))
        log.warning(
            "handler %s timed out after %ss on %s", _name(fn), timeout, message.message_uuid
        )
        return HandlerOutcome(None, f"handler timed out after {timeout:g}s")
    except Exception as exc:
        log.warning("handler %s raised on %s", _name(fn), message.message_uuid, exc_info=True)
        return HandlerOutcome(None, _error(f"handler raised {type(exc).__name__}: {exc}"))
    outcome = _checked(result)
    if outcome.error:
        log.warning("handler %s on %s: %s", _name(fn), message.message_uuid, outcome.error)
    return outcome


def _name(fn: Any) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{name}" if module else name
