"""Forwarding put to work: the destinations of the settings, the enqueuing, the worker's task.

``serve`` calls :func:`install` on its app when a forward URL or NATS is configured: every write
then carries its event (:class:`~.enqueue.Enqueuer`, plug point 2), a commit that stored one wakes
the worker, and the worker runs as the app's background task ``forward`` unless
``--no-forward-worker``. ``plivohook forward`` runs :func:`run_worker` alone, against the same
database, so that delivery can live apart from receiving (any number of them on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .enqueue import Enqueuer
from .http import HttpDeliverer, redact_url
from .jetstream import NatsPublisher
from .outbox import Outbox
from .retry import RetryPolicy
from .worker import Worker

if TYPE_CHECKING:
    from ..app import PlivohookApp
    from ..config import Settings
    from .base import Deliverer

__all__ = ["ForwardTask", "destinations", "install", "make_deliverers", "run_worker"]

log = logging.getLogger("plivohook.forward")


def destinations(settings: Settings) -> list[str]:
    """The destination names the outbox rows carry, in the settings' order.

    The same as each deliverer's ``destination``: a forward URL without its password, and
    ``nats:<stream>/<subject>``. Computed without making the deliverers (no client is opened to
    store an event).
    """
    names = [redact_url(url) for url in settings.forward_urls]
    if settings.nats_url:
        names.append(f"nats:{settings.nats_stream}/{settings.nats_subject}")
    return names


def make_deliverers(settings: Settings) -> dict[str, Deliverer]:
    """One deliverer per destination, keyed by :func:`destinations`' names."""
    made: list[Any] = []
    if settings.forward_urls:
        assert settings.forward_secret  # validated(): a URL needs a secret
        made.extend(
            HttpDeliverer(url, settings.forward_secret, timeout=settings.forward_timeout)
            for url in settings.forward_urls
        )
    if settings.nats_url:
        made.append(
            NatsPublisher(
                settings.nats_url,
                stream=settings.nats_stream,
                subject=settings.nats_subject,
                timeout=settings.forward_timeout,
            )
        )
    found = {deliverer.destination: deliverer for deliverer in made}
    assert list(found) == destinations(settings), "destination names drifted"
    return found


def make_worker(settings: Settings, outbox: Outbox, deliverers: dict[str, Deliverer]) -> Worker:
    return Worker(
        outbox,
        deliverers,
        policy=RetryPolicy(max_age=settings.forward_max_age),
        lease_seconds=settings.forward_lease,
    )


async def run_worker(
    settings: Settings, outbox: Outbox, stop: asyncio.Event, started: Any = None
) -> None:
    """Deliver until ``stop`` is set, then finish the attempts in flight and close the clients.

    ``started(worker)`` is called once the worker exists (serve wakes it after each commit).
    Cancelled, it stops the same way (each attempt ends within its timeout), then re-raises.
    """
    deliverers = make_deliverers(settings)
    worker = make_worker(settings, outbox, deliverers)
    if started is not None:
        started(worker)
    log.info("forwarding to %s", ", ".join(deliverers))
    runner = asyncio.ensure_future(worker.run_forever(stop))
    try:
        await asyncio.shield(runner)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(runner, settings.forward_timeout + 2)
        raise
    finally:
        for deliverer in deliverers.values():
            with contextlib.suppress(Exception):
                await deliverer.aclose()
        release = getattr(outbox, "release_outbox_lease", None)
        if release is not None:
            with contextlib.suppress(Exception):
                await release()


class ForwardTask:
    """The app's side of forwarding: enqueue with every write, deliver in the background."""

    def __init__(self, app: PlivohookApp):
        self.app = app
        self.settings = app.settings
        self.worker: Worker | None = None
        self.enqueued = 0

    def wake(self) -> None:
        """Called after a commit that stored an event: the worker looks now, not at its poll."""
        self.enqueued += 1
        if self.worker is not None:
            self.worker.wake()

    def _started(self, worker: Worker) -> None:
        self.worker = worker

    async def run(self) -> None:
        await run_worker(self.settings, self.app.store, asyncio.Event(), self._started)  # type: ignore[arg-type]


def install(app: PlivohookApp) -> ForwardTask:
    """Enqueue each stored record's event on ``app``; deliver unless --no-forward-worker."""
    task = ForwardTask(app)
    app.webhooks.write_extensions.append(Enqueuer(destinations(app.settings)))
    app.webhooks.enqueued.append(task.wake)
    if not app.settings.forward_worker_off:
        app.add_task("forward", task.run)
    return task
