"""What one attempt to deliver an event came to, what a deliverer is, and a refused option."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Deliverer", "ForwardConfigError", "Outcome"]


class ForwardConfigError(ValueError):
    """A forwarding option that cannot work; the message names the option, never its secret."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """Delivered, or to be retried with the destination's status code or the error.

    ``error`` is short and safe to store and show: it never carries the forward secret, a
    response body or a URL's credentials.
    """

    delivered: bool
    status_code: int | None = None
    error: str | None = None

    @classmethod
    def ok(cls, status_code: int | None = None) -> Outcome:
        return cls(True, status_code, None)

    @classmethod
    def retry(cls, status_code: int | None = None, error: str | None = None) -> Outcome:
        return cls(False, status_code, error)


class Deliverer(Protocol):
    """Hands one event to one destination. Never raises for a destination's fault.

    ``timeout`` bounds one attempt (seconds); ``max_in_flight`` is how many attempts run at
    once at most (the deliverer enforces it; the worker uses it to size its batches).
    """

    timeout: float
    max_in_flight: int

    async def deliver(self, event_id: str, event_type: str, payload: bytes) -> Outcome: ...

    async def aclose(self) -> None: ...
