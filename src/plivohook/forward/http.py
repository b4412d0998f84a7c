"""Delivering events to the user's app: one signed POST per attempt, bounded in every way.

The body is the event's JSON as stored; the headers are Standard Webhooks' (``webhook-id``: the
event id, ``webhook-timestamp``: the time of *sending*, ``webhook-signature``: ``v1,`` and the
HMAC-SHA256 of ``id.timestamp.body``), so ``standardwebhooks.Webhook(secret).verify(body,
headers)`` accepts it on the receiving side. The timestamp is the sending time because receivers
refuse a signature older than five minutes, and a retry can come days after the event.

A 2xx answer is delivered. Anything else costs one attempt and is retried: another status, a
redirect (never followed: a forward URL that moved is a configuration to fix, and following it
would send signed events wherever the old address points), a refused or reset connection, or no
complete answer within ``timeout`` seconds (one deadline for the whole attempt, so a destination
that drips its answer a byte at a time cannot hold a worker). At most ``max_response_bytes`` of
the answer's body are read, raw (no decompression), then the connection is dropped: the body is
never needed, and a huge one must not cost memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from standardwebhooks.webhooks import Webhook

from .. import __version__
from .base import ForwardConfigError, Outcome

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "ForwardConfigError",
    "HttpDeliverer",
    "generate_secret",
    "parse_secret",
    "redact_url",
    "validate_url",
]

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_IN_FLIGHT = 8
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
SECRET_PREFIX = "whsec_"  # noqa: S105 -- the format's prefix, not a secret
# Standard Webhooks: a key of 24 to 64 bytes. Shorter is guessable; longer buys nothing.
SECRET_MIN_BYTES, SECRET_MAX_BYTES = 24, 64


def parse_secret(value: str) -> bytes:
    """The key of a ``whsec_...`` secret (Standard Webhooks format: ``whsec_`` + base64).

    Decoded strictly, unlike the receiving library's lenient decoder (which drops characters it
    does not know): a typo must refuse to start, not sign with another key than the receiver's.
    """
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ForwardConfigError(
            "--forward-secret must be a Standard Webhooks secret: 'whsec_' followed by base64 "
            '(make one with: python -c "import base64,os; '
            "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\")"
        )
    encoded = value[len(SECRET_PREFIX) :].strip()
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ForwardConfigError(
            "--forward-secret is not valid base64 after 'whsec_'"
        ) from None  # the chained error could quote part of the secret
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ForwardConfigError(
            f"--forward-secret must hold {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes of key "
            f"once decoded, not {len(key)}"
        )
    return key


def generate_secret() -> str:
    """A new ``whsec_`` secret with a 32-byte key."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode("ascii")


def validate_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host; else a clear error."""
    if not isinstance(url, str) or any(c.isspace() for c in url):
        raise ForwardConfigError("--forward-url must be an http:// or https:// URL without spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise ForwardConfigError(
            f"--forward-url {redact_url(url)!r} is not a valid URL (check its port)"
        ) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ForwardConfigError(
            f"--forward-url must start with http:// or https:// (got scheme {parts.scheme!r})"
        )
    if not parts.hostname:
        raise ForwardConfigError(f"--forward-url {redact_url(url)!r} has no host")
    return url


def redact_url(url: str) -> str:
    """``url`` without the password of its user information, for logs and the API."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


class HttpDeliverer:
    """POSTs events to one URL, signed with one secret, at most ``max_in_flight`` at once."""

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ):
        self.url = validate_url(url)
        if timeout <= 0:
            raise ForwardConfigError("--forward-timeout must be a positive number of seconds")
        if max_in_flight < 1:
            raise ForwardConfigError("the number of requests in flight must be at least 1")
        key = secret if isinstance(secret, bytes) else parse_secret(secret)
        self._webhook = Webhook(key)
        self.timeout = float(timeout)
        self.max_in_flight = max_in_flight
        self.max_response_bytes = max_response_bytes
        self.destination = redact_url(url)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            ),
            headers={
                "user-agent": f"plivohook/{__version__}",
                "content-type": "application/json",
                # The raw bytes are what is bounded: no decompression of a small bomb.
                "accept-encoding": "identity",
            },
        )

    def __repr__(self) -> str:  # never the secret
        return f"HttpDeliverer({self.destination!r})"

    def sign(self, event_id: str, payload: bytes, moment: datetime) -> dict[str, str]:
        """The three Standard Webhooks headers for ``payload`` sent at ``moment``."""
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self._webhook.sign(event_id, moment, payload),
        }

    async def deliver(self, event_id: str, event_type: str, payload: bytes) -> Outcome:
        async with self._slots:
            return await self._attempt(event_id, payload)

    async def _attempt(self, event_id: str, payload: bytes) -> Outcome:
        headers = self.sign(event_id, payload, datetime.now(UTC))
        status: int | None = None
        try:
            async with (
                asyncio.timeout(self.timeout),
                self._client.stream("POST", self.url, content=payload, headers=headers) as answer,
            ):
                status = answer.status_code
                read = 0
                try:
                    async for chunk in answer.aiter_raw():
                        read += len(chunk)
                        if read >= self.max_response_bytes:
                            break  # leaving the block drops the connection with the rest
                except httpx.HTTPError:
                    pass  # the status is in: a broken body does not undo it
        except TimeoutError:
            if status is not None and 200 <= status < 300:
                return Outcome.ok(status)  # accepted; only its body dragged on
            return Outcome.retry(status, f"no answer within {self.timeout:g} s")
        except httpx.TimeoutException:
            return Outcome.retry(None, f"no answer within {self.timeout:g} s")
        except (httpx.HTTPError, OSError) as exc:
            return Outcome.retry(None, self._describe(exc))
        finally:
            # Cookies a destination sets would otherwise go back with every later event.
            self._client.cookies.clear()
        if 200 <= status < 300:
            return Outcome.ok(status)
        if 300 <= status < 400:
            return Outcome.retry(status, f"HTTP {status}: redirect not followed")
        return Outcome.retry(status, f"HTTP {status}")

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            text = f"connection failed: {text}"
        elif isinstance(exc, httpx.RemoteProtocolError):
            text = f"connection broken: {text}"
        else:
            text = f"{type(exc).__name__}: {text}"
        # The URL's password is the only secret an httpx error could quote.
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***")
        return text[:300]

    async def aclose(self) -> None:
        await self._client.aclose()
