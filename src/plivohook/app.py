"""The ASGI app: puts the pieces together, and nothing else.

Plivo's webhooks go straight to :class:`~.web.webhooks.Webhooks` (the hot path, no routing, no
middleware); health, the OpenAPI document and the admin API (mounted at ``/api``) go through
Starlette with the security headers. Background tasks are registered and run from start-up to
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from .config import Settings
from .openapi import openapi_json
from .replies.service import Replies
from .store import Store, StoreUnavailable, open_store
from .web import metrics
from .web.api import api_app
from .web.asgi import Receive, Scope, Send, json_response, now
from .web.middleware import API_CSP, BearerAuth, SecurityHeaders
from .web.webhooks import WEBHOOK_PATHS, WebhookError, Webhooks

__all__ = ["PlivohookApp", "WebhookError", "create_app", "create_app_from_env"]

log = logging.getLogger("plivohook")

PRUNE_FIRST = 60.0  # seconds after start-up
PRUNE_EVERY = 3600.0

BackgroundTask = Callable[[], Awaitable[None]]


class PlivohookApp:
    """Routes ``/plivo/*`` straight to the webhook handler, everything else to Starlette.

    The webhooks bypass Starlette's routing and middleware: they are the hot path, and they set
    their own few headers. Everything else (health, the OpenAPI document, the API mounted at
    ``/api`` behind its bearer check) goes through Starlette with the security headers.
    """

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings.validated()
        self.store: Store = store or open_store(
            self.settings.database_url,
            pool_max=self.settings.pool_size,
            timeout=self.settings.write_timeout,
        )
        self.counters: Counter[str] = Counter()
        self.webhooks = Webhooks(self.settings, lambda: self.store, self.counters)
        # Replies (compliance, rules, handler): the answer is decided for both opt-out states
        # and the store keeps the one that applies; --auto-reply is the rules' [default].
        self.replies = Replies(self.settings, self.counters)
        self.webhooks.decide_reply = self.replies.decide_reply
        self.webhooks.after_commit = self.replies.after_commit
        self._hup_installed = False
        # /metrics: the counters above, exported by difference (web/metrics.py); the group
        # commit's sizes and durations straight from the store, once per batch.
        self.metrics_export = metrics.CounterExport(self.counters)
        self.store.on_commit = metrics.observe_commit
        self.started = False
        # Long-running jobs started with the app and cancelled at shutdown: nonce pruning today;
        # delivery workers and retention register here too.
        self._tasks: dict[str, BackgroundTask] = {}
        self._running: list[asyncio.Task[None]] = []
        self.add_task("prune", self._prune_forever)
        self.forwarding: Any = None  # forward.service.ForwardTask when events are forwarded
        if self.settings.forwarding:
            from .forward.service import install

            self.forwarding = install(self)
        self.add_task("metrics", self.metrics_export.run_forever)
        metrics_endpoint: object = self.metrics
        if not self.settings.metrics_open:
            metrics_endpoint = BearerAuth(
                _asgi(self.metrics),
                token=self.settings.admin_token,
                disabled="/metrics is disabled: set --admin-token (it is the bearer token "
                "/metrics needs) or --metrics-open",
            )
        starlette = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/openapi.json", openapi_json, methods=["GET"]),
                Route("/metrics", metrics_endpoint, methods=["GET"]),  # type: ignore[arg-type]
                Mount("/api", app=api_app(lambda: self.store, self.settings.admin_token)),
            ],
            lifespan=self._lifespan,
            exception_handlers={
                StoreUnavailable: self._store_unavailable,
                HTTPException: self._http_error,
                500: self._crash,
            },
        )
        self.starlette = starlette
        self.router = SecurityHeaders(starlette, csp=API_CSP)

    def paths(self) -> set[str]:
        """Every path the app answers, mounts expanded (the OpenAPI document must list each)."""
        found = set(WEBHOOK_PATHS)
        for route in self.starlette.routes:
            if isinstance(route, Mount):
                inner = route.app
                while not hasattr(inner, "routes"):  # through the mount's middleware
                    inner = inner.app  # type: ignore[attr-defined]
                found.update(route.path + sub.path for sub in inner.routes)
            else:
                found.add(route.path)  # type: ignore[attr-defined]
        return found

    def add_task(self, name: str, task: BackgroundTask) -> None:
        """Run ``task`` from start-up until shutdown (before start-up only)."""
        if self.started:
            raise RuntimeError("background tasks are registered before the app starts")
        self._tasks[name] = task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            kind = WEBHOOK_PATHS.get(scope["path"])
            if kind is not None:
                await self.webhooks(scope, receive, send, kind)
                return
        await self.router(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        if self.started:
            return
        if self.settings.insecure_skip_verify:
            log.warning(
                "--insecure-skip-verify: requests are NOT verified; anyone can post messages"
            )
        if not self.settings.public_url and not self.settings.allowed_hosts:
            log.warning(
                "no --public-url or --allowed-hosts: signatures are checked against a URL built "
                "from the request's %s header, which the client chooses; give --public-url (the "
                "URL Plivo calls) or --allowed-hosts",
                "X-Forwarded-Host/Host" if self.settings.trust_forwarded_headers else "Host",
            )
        await self.store.open()
        self.started = True
        self._install_hup()
        for name, task in self._tasks.items():
            self._running.append(asyncio.create_task(task(), name=f"plivohook-{name}"))

    def _install_hup(self) -> None:
        """SIGHUP reloads the rules file (each worker process of --workers on its own)."""
        if threading.current_thread() is not threading.main_thread():
            return  # an in-process test client: signals are for the main thread only
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.replies.reload)
            self._hup_installed = True

    async def shutdown(self) -> None:
        if self._hup_installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._hup_installed = False
        running, self._running = self._running, []
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The last second's counts, then this process's goodbye to the multiprocess files.
        self.metrics_export.export()
        metrics.mark_process_dead()
        if self.started:
            stats = self.store.stats
            if stats.batches:
                log.info(
                    "group commit: %d operations in %d batches (%.1f on average, %d at most)",
                    stats.operations,
                    stats.batches,
                    stats.operations / stats.batches,
                    stats.largest_batch,
                )
            await self.store.close()
            self.started = False

    async def _prune_forever(self) -> None:
        # The first round a minute after start: not in the way of the start-up itself (a
        # restart under load), and a process that lives a minute still prunes.
        await asyncio.sleep(PRUNE_FIRST)
        while True:
            await self.prune()
            await asyncio.sleep(PRUNE_EVERY)

    async def prune(self) -> None:
        """Forget nonces and rejections past their retention (hourly, from the start)."""
        retention: timedelta = self.settings.nonce_retention
        try:
            removed = await self.store.prune_nonces(now() - retention)
            if removed:
                log.info("pruned %d nonces older than %s", removed, retention)
        except StoreUnavailable as exc:
            log.warning("nonce pruning skipped: %s", exc)
        # Rejections are signed requests kept for inspection: without a limit, a flood of
        # signed-but-malformed requests would grow the database for ever.
        retention = self.settings.rejection_retention
        try:
            removed = await self.store.prune_rejections(now() - retention)
            if removed:
                log.info("pruned %d rejections older than %s", removed, retention)
        except StoreUnavailable as exc:
            log.warning("rejection pruning skipped: %s", exc)
        if self.settings.retention_days:  # what the user asked to keep no longer than that
            cutoff = now() - timedelta(days=self.settings.retention_days)
            try:
                removed = await self.store.prune_messages(cutoff)
                if any(removed.values()):
                    log.info("retention: deleted %s (before %s)", removed, cutoff)
            except StoreUnavailable as exc:
                log.warning("retention skipped: %s", exc)

    async def metrics(self, _request: Request) -> Response:
        """Prometheus's text format: every worker's figures (this one's exported just now)."""
        self.metrics_export.export()
        body = await asyncio.to_thread(metrics.render)  # reads every worker's files
        return Response(body, media_type=metrics.CONTENT_TYPE)

    async def healthz(self, _request: Request) -> Response:
        try:
            await asyncio.wait_for(self.store.ping(), 2.0)
        except (StoreUnavailable, TimeoutError) as exc:
            reason = str(exc) or "no answer within 2 s"
            return json_response({"status": "unavailable", "database": reason}, 503)
        answer: dict[str, Any] = {"status": "ok", "database": "ok"}
        try:
            stats = await asyncio.wait_for(self.store.outbox_stats(), 2.0)  # type: ignore[attr-defined]
        except (StoreUnavailable, TimeoutError):
            answer["outbox"] = None  # the database answered the ping: health is about that
        else:
            oldest = stats["oldest_pending"]
            answer["outbox"] = {
                "pending": stats["pending"],
                "dead": stats["dead"],
                "oldest_pending_age_seconds": (
                    None if oldest is None else round(max(0.0, (now() - oldest).total_seconds()), 3)
                ),
            }
        rules = self.replies.health()
        if rules is not None:
            # Still 200: the server answers with the rules in force; "ok" says whether they
            # are the file on disk.
            answer["rules"] = rules
        return json_response(answer)

    async def _store_unavailable(self, _request: Request, _exc: Exception) -> Response:
        return json_response({"error": "database unavailable, retry later"}, 503)

    async def _http_error(self, _request: Request, exc: Exception) -> Response:
        # JSON like every other answer here (a path the /api mount's pattern cannot match, such
        # as one with a newline in it, ends here rather than in the API's own handler).
        assert isinstance(exc, HTTPException)
        return json_response({"error": exc.detail}, exc.status_code, exc.headers)

    async def _crash(self, _request: Request, _exc: Exception) -> Response:
        return json_response({"error": "internal error"}, 500)


def _asgi(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[..., Awaitable[None]]:
    """A request -> response endpoint as an ASGI app (for middleware around one route)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    return app


def create_app(settings: Settings, store: Store | None = None) -> PlivohookApp:
    return PlivohookApp(settings, store)


def create_app_from_env() -> PlivohookApp:
    """The factory uvicorn's workers call (``--workers N``): settings come from the environment."""
    return PlivohookApp(Settings.from_env())
