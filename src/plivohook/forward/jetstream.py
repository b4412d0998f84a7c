"""Publishing events to NATS JetStream, for those who consume from a broker.

Each event goes to ``<subject>.message.received`` or ``<subject>.message.status`` with the event
id as ``Nats-Msg-Id``, and counts as delivered only once JetStream has acknowledged it (stored
it). A retry after a lost acknowledgement publishes the same id again, which JetStream drops
within the stream's duplicate window (two minutes by default; the first retries come after 1 to
2 s), so consumers see each event once in the usual case and at least once always. The stream
(``PLIVOHOOK`` by default) is created with the subjects ``<subject>.>`` when it is missing; an
existing one is used as it is configured.

No connection, no stream or no acknowledgement within ``timeout`` is a failed attempt, retried
on the outbox's schedule like an HTTP destination's. The client reconnects by itself for ever.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from urllib.parse import urlsplit

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from .base import ForwardConfigError, Outcome

__all__ = [
    "DEFAULT_STREAM",
    "DEFAULT_SUBJECT",
    "NatsPublisher",
    "redact_nats_url",
    "validate_nats_url",
    "validate_stream",
    "validate_subject",
]

log = logging.getLogger("plivohook.forward")

DEFAULT_STREAM = "PLIVOHOOK"
DEFAULT_SUBJECT = "plivohook"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_IN_FLIGHT = 64  # publishes are cheap; the limit only bounds a burst's memory
_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")
_STREAM = re.compile(r"[A-Za-z0-9_\-]{1,255}")


def validate_nats_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise ForwardConfigError("--nats-url is not a valid URL (check its port)") from None
    if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
        raise ForwardConfigError("--nats-url must look like nats://host:4222 (or tls://, ws://)")
    return url


def redact_nats_url(url: str) -> str:
    """The URL without its credentials (a user and password, or a token), for logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def validate_subject(subject: str) -> str:
    """A subject prefix: dot-separated tokens of letters, digits, ``_`` and ``-``."""
    if not isinstance(subject, str) or not all(_TOKEN.fullmatch(t) for t in subject.split(".")):
        raise ForwardConfigError(
            "--nats-subject must be dot-separated tokens of letters, digits, '_' and '-' "
            "(no wildcards, no spaces), such as plivohook or acme.sms"
        )
    return subject


def validate_stream(stream: str) -> str:
    if not isinstance(stream, str) or not _STREAM.fullmatch(stream):
        raise ForwardConfigError(
            "--nats-stream must be letters, digits, '_' and '-' (at most 255), such as PLIVOHOOK"
        )
    return stream


class NatsPublisher:
    """A deliverer to one JetStream stream (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        subject: str = DEFAULT_SUBJECT,
        timeout: float = DEFAULT_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ):
        self.url = validate_nats_url(url)
        self.stream = validate_stream(stream)
        self.subject = validate_subject(subject)
        if timeout <= 0:
            raise ForwardConfigError("--forward-timeout must be a positive number of seconds")
        if max_in_flight < 1:
            raise ForwardConfigError("the number of publishes in flight must be at least 1")
        self.timeout = float(timeout)
        self.max_in_flight = max_in_flight
        self.destination = f"nats:{self.stream}/{self.subject}"
        self._slots = asyncio.Semaphore(max_in_flight)
        self._connecting = asyncio.Lock()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._last_error, self._last_error_at = "", 0.0

    def __repr__(self) -> str:
        return f"NatsPublisher({redact_nats_url(self.url)!r}, stream={self.stream!r})"

    def subject_for(self, event_type: str) -> str:
        return f"{self.subject}.{event_type}"

    async def deliver(self, event_id: str, event_type: str, payload: bytes) -> Outcome:
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    js = await self._ready()
                    ack = await js.publish(
                        self.subject_for(event_type),
                        payload,
                        timeout=self.timeout,
                        headers={"Nats-Msg-Id": event_id},
                    )
            except TimeoutError:
                return Outcome.retry(None, f"NATS: no acknowledgement within {self.timeout:g} s")
            except (NatsError, OSError) as exc:
                return Outcome.retry(None, self._describe(exc))
            if ack.stream != self.stream:
                # Another stream took the subject: stored, but not where consumers look.
                return Outcome.retry(
                    None, f"NATS: stored in stream {ack.stream!r}, not {self.stream!r}"
                )
            return Outcome.ok()

    async def _ready(self) -> JetStreamContext:
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                self._stream_ready = False
                self._nc = await self._connect()
                self._js = self._nc.jetstream(timeout=self.timeout)
            if not self._stream_ready:
                await self._ensure_stream()
                self._stream_ready = True
            assert self._js is not None
            return self._js

    async def _connect(self) -> NATS:
        # Reconnects never give up once connected (a NATS restart must not need a plivohook
        # restart); the first connection is bounded by the attempt's deadline instead, and the
        # half-made client is closed so that its connecting loop does not outlive the attempt.
        client = NATS()
        try:
            await client.connect(
                self.url,
                name="plivohook",
                connect_timeout=min(self.timeout, 5.0),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except BaseException:
            await asyncio.shield(client.close())
            raise
        return client

    async def _ensure_stream(self) -> None:
        assert self._js is not None
        try:
            await self._js.stream_info(self.stream)
        except NotFoundError:
            await self._js.add_stream(name=self.stream, subjects=[f"{self.subject}.>"])
            log.info("created the JetStream stream %s for %s.>", self.stream, self.subject)

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        parts = urlsplit(self.url)
        for secret in (parts.username, parts.password):
            if secret:
                text = text.replace(secret, "***")
        return f"NATS: {text}"[:300]

    async def _on_error(self, exc: Exception) -> None:
        # While NATS is down the client fails once a second: one line a minute says as much.
        text = self._describe(exc)
        now = time.monotonic()
        if text != self._last_error or now - self._last_error_at >= 60:
            self._last_error, self._last_error_at = text, now
            log.warning("%s (at %s)", text, redact_nats_url(self.url))

    async def _on_disconnected(self) -> None:
        log.warning("NATS at %s: disconnected; reconnecting", redact_nats_url(self.url))

    async def _on_reconnected(self) -> None:
        log.info("NATS at %s: reconnected", redact_nats_url(self.url))

    async def aclose(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        self._nc = self._js = None
