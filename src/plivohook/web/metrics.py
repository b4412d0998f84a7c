"""Prometheus metrics: ``GET /metrics`` and the metric objects every feature updates.

The webhooks keep counting into ``app.counters`` (a ``collections.Counter``, one dict increment
per fact) and nothing else: :class:`CounterExport` turns those counts into the Prometheus
metrics below once a second and before every scrape, by difference. The hot path pays nothing
for metrics; the figures lag by at most a second (:data:`EXPORT_EVERY`), far below any scrape
interval. Measured with bench/metrics_overhead.py (README, "Metrics and logs").

With ``--workers N`` every worker process writes its metrics to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode; ``serve`` creates a private
folder and removes it at exit) and ``/metrics``, answered by whichever worker got the request,
adds up the files of all of them.

Hooks for the features that are not in this module, each a module-level object to update from
anywhere in the process (the multiprocess mode needs no more):

* :data:`HANDLER_SECONDS` (``.observe(seconds)``): the time a reply handler took.
* :data:`HANDLER_ERRORS` (``.inc()``): a reply handler that raised or timed out.
* :data:`OUTBOX_DEPTH` (``.set(rows)``): forwarding's undelivered outbox rows, as last counted
  (a gauge of the whole database: the most recent value set by a live worker is shown).
* :data:`DELIVERIES` (``.labels(outcome=...).inc()``): forwarding attempts by outcome
  (``delivered``, ``retry``, ``dead``, ...); bind the few labelled children once, at start-up.

The group commit's batch size and duration come from the stores' ``on_commit`` callback
(:meth:`observe_commit`): one call per batch, not per request.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter as CountOf
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "COMMIT_BATCH_SIZE",
    "COMMIT_SECONDS",
    "CONFLICTING_DUPLICATES",
    "CONTENT_TYPE",
    "DELIVERIES",
    "DUPLICATES",
    "HANDLER_ERRORS",
    "HANDLER_SECONDS",
    "MESSAGES_STORED",
    "MULTIPROC_ENV",
    "OUTBOX_DEPTH",
    "REGISTRY",
    "REJECTIONS",
    "REPLAYS_REFUSED",
    "REQUESTS",
    "STATUSES_STORED",
    "VERIFICATION_FAILURES",
    "CounterExport",
    "mark_process_dead",
    "observe_commit",
    "render",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
EXPORT_EVERY = 1.0  # seconds between two exports of app.counters

# Our own registry, not prometheus-client's global one: what /metrics shows is exactly this
# list, whatever else the process imports.
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "plivohook_requests",
    "Webhook requests answered, by route (message, status) and HTTP status.",
    ["route", "status"],
    registry=REGISTRY,
)
MESSAGES_STORED = Counter(
    "plivohook_messages_stored", "Inbound messages stored for the first time.", registry=REGISTRY
)
STATUSES_STORED = Counter(
    "plivohook_statuses_stored", "Delivery reports stored for the first time.", registry=REGISTRY
)
DUPLICATES = Counter(
    "plivohook_duplicates",
    "Requests already stored (same MessageUUID or report, or a retry with the same nonce): "
    "answered 200 with the stored answer, nothing written.",
    ["route"],
    registry=REGISTRY,
)
CONFLICTING_DUPLICATES = Counter(
    "plivohook_conflicting_duplicates",
    "Duplicate MessageUUIDs that came with another text (the first text is kept).",
    registry=REGISTRY,
)
REPLAYS_REFUSED = Counter(
    "plivohook_replays_refused",
    "Requests refused 403 because their nonce was used by another request.",
    registry=REGISTRY,
)
VERIFICATION_FAILURES = Counter(
    "plivohook_verification_failures",
    "Requests refused 403 because no signature verified, by reason "
    "(missing_signature, mismatch, malformed_signature, missing_nonce, ...).",
    ["reason"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "plivohook_rejections",
    "Signed requests kept as rejections (malformed, or refused by the database): answered 400.",
    registry=REGISTRY,
)
COMMIT_BATCH_SIZE = Histogram(
    "plivohook_commit_batch_size",
    "Operations per group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "plivohook_commit_seconds",
    "Seconds from a group commit's start to its durability.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
# -- hooks for replies and forwarding (see the module's docstring) ---------------------------------
HANDLER_SECONDS = Histogram(
    "plivohook_handler_seconds",
    "Seconds a reply handler took.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
HANDLER_ERRORS = Counter(
    "plivohook_handler_errors",
    "Reply handlers that raised or ran out of time.",
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "plivohook_outbox_depth",
    "Forwarding outbox rows not delivered yet, as last counted.",
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "plivohook_deliveries",
    "Forwarding attempts, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)


def observe_commit(size: int, seconds: float) -> None:
    """A store's ``on_commit``: one group commit of ``size`` operations took ``seconds``."""
    COMMIT_BATCH_SIZE.observe(size)
    COMMIT_SECONDS.observe(seconds)


def _target(key: str) -> Callable[[float], None] | None:
    """The metric increment that one key of ``app.counters`` feeds, or None (not exported)."""
    kind, _, rest = key.partition("_")
    if kind in ("message", "status"):
        if rest.isdigit():  # message_200, status_403: one per answered request
            return REQUESTS.labels(route=kind, status=rest).inc
        if rest == "stored":
            return (MESSAGES_STORED if kind == "message" else STATUSES_STORED).inc
        if rest in ("duplicate", "retry"):
            return DUPLICATES.labels(route=kind).inc
        if rest == "conflicting_duplicates":
            return CONFLICTING_DUPLICATES.inc
        return None
    if key.startswith("verification_failure:"):
        return VERIFICATION_FAILURES.labels(reason=key.partition(":")[2]).inc
    if key == "replays_refused":
        return REPLAYS_REFUSED.inc
    if key == "rejections":
        return REJECTIONS.inc
    return None


class CounterExport:
    """Adds what ``counters`` gained since the last export to the Prometheus metrics.

    Runs on the event loop that owns ``counters`` (no lock needed): in the app's background task
    every :data:`EXPORT_EVERY` seconds, before each scrape and at shutdown. A count that went
    down (cleared) starts again from its new value.
    """

    def __init__(self, counters: CountOf[str]) -> None:
        self.counters = counters
        self._sent: dict[str, int] = {}
        self._targets: dict[str, Callable[[float], None] | None] = {}

    def export(self) -> None:
        sent = self._sent
        for key, value in list(self.counters.items()):
            delta = value - sent.get(key, 0)
            if delta == 0:
                continue
            sent[key] = value
            if delta < 0:
                continue
            try:
                target = self._targets[key]
            except KeyError:
                target = self._targets[key] = _target(key)
            if target is not None:
                target(delta)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPORT_EVERY)
            self.export()


def multiprocess_dir() -> str | None:
    """The folder of the multiprocess mode when it is on (set before prometheus-client loaded)."""
    folder = os.environ.get(MULTIPROC_ENV)
    return folder if folder and os.path.isdir(folder) else None


def render() -> bytes:
    """The text exposition: every worker's figures added up, or this process's."""
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=folder)
    return generate_latest(registry)


def mark_process_dead(pid: int | None = None) -> None:
    """A worker's goodbye: its live gauges (the outbox depth) no longer count."""
    folder = multiprocess_dir()
    if folder is not None:
        _multiprocess.mark_process_dead(os.getpid() if pid is None else pid, folder)
