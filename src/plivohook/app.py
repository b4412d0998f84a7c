"""The ASGI app: Plivo's webhooks on a lean path, the admin API and health on Starlette.

Every webhook request flows one way: method and size limits -> signature -> nonce and parse ->
commit -> answer. Nothing is acknowledged before the store has committed it; a store failure
answers 503 so that Plivo retries, and a retry gets the answer stored the first time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from .config import Settings
from .openapi import openapi_json
from .protocol import signature
from .protocol.form import parse_form
from .protocol.params import ParamsError, parse_message, parse_status
from .protocol.xml import Response as XMLResponse
from .protocol.xml import XMLValidationError, reply_to
from .store import Store, StoreError, StoreUnavailable, open_store
from .store.base import (
    MessageWrite,
    NonceClaim,
    Outcome,
    RejectionWrite,
    StatusWrite,
    request_fingerprint,
)
from .web.api import api_app
from .web.asgi import Receive, Scope, Send, json_response, now, send_response
from .web.middleware import API_CSP, SecurityHeaders

__all__ = ["PlivohookApp", "create_app", "create_app_from_env"]

log = logging.getLogger("plivohook")


EMPTY_RESPONSE = b"<Response/>"
WEBHOOK_PATHS = {"/plivo/message": "message", "/plivo/status": "status"}
# Headers kept with a rejection must not carry credentials of any kind.
REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
_FORM = "application/x-www-form-urlencoded"
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_XML_HEADERS = [(b"content-type", b"application/xml; charset=utf-8"), _NOSNIFF]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), _NOSNIFF]


class WebhookError(Exception):
    """An answer other than 200, with a short reason for the client."""

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


class Webhooks:
    """The two Plivo routes, as a bare ASGI callable: this is the hot path."""

    def __init__(self, settings: Settings, store_ref: Callable[[], Store], counters: Counter):
        self.settings = settings
        self._store = store_ref
        self.counters = counters
        self.auth_tokens = settings.auth_tokens
        self.main_tokens = settings.main_auth_tokens
        self.public_url = settings.public_url
        self.trust_forwarded = settings.trust_forwarded_headers
        self.max_body = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        try:
            status, body, headers = await self.handle(scope, receive, kind)
        except WebhookError as exc:
            self.counters[f"{kind}_{exc.status}"] += 1
            await send_response(
                send, exc.status, exc.reason.encode() + b"\n", _TEXT_HEADERS + exc.headers
            )
            return
        except Exception:
            # Never a stack trace to the client; the log has it.
            log.exception("unexpected error on %s", scope.get("path"))
            self.counters[f"{kind}_500"] += 1
            await send_response(send, 500, b"internal error\n", _TEXT_HEADERS)
            return
        self.counters[f"{kind}_{status}"] += 1
        await send_response(send, status, body, headers)

    async def handle(
        self, scope: Scope, receive: Receive, kind: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        method = scope["method"]
        if method not in ("POST", "GET"):
            raise WebhookError(405, f"method {method} not allowed", [(b"allow", b"GET, POST")])
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        body = b""
        if method == "POST":
            content_type = headers.get("content-type", "")
            if content_type != _FORM and content_type.split(";", 1)[0].strip().lower() != _FORM:
                raise WebhookError(415, "Content-Type must be application/x-www-form-urlencoded")
            body = await self._read_body(receive, headers.get("content-length"))
            params = parse_form(body.decode("utf-8", "surrogateescape"))
            signed_params: list[tuple[str, str]] = params
        else:
            params = parse_form(query)
            signed_params = []  # GET: Plivo's fields ride in the URL's query, signed there

        url = self._url(scope, headers, query)
        if self.settings.insecure_skip_verify:
            scheme_name = "none"
        else:
            verification = signature.verify_request(
                method, url, headers, signed_params, self.auth_tokens, self.main_tokens
            )
            if not verification:
                self.counters["signature_failures"] += 1
                raise WebhookError(403, f"signature check failed: {verification.reason}")
            scheme_name = verification.scheme or "none"
        fingerprint = request_fingerprint(kind, query, params)
        claim = None if self.settings.insecure_skip_verify else _nonce_claim(headers, fingerprint)
        received_at = now()
        store = self._store()

        def rejection(reason: str, nonce: NonceClaim | None) -> RejectionWrite:
            return RejectionWrite(
                method=method,
                path=scope.get("path", ""),
                query=query,
                headers=[(k, v) for k, v in headers.items() if k not in REDACTED_HEADERS],
                body=body,
                reason=reason,
                received_at=received_at,
                signature_scheme=scheme_name,
                fingerprint=fingerprint,
                nonce=nonce,
            )

        try:
            parsed = parse_message(params) if kind == "message" else parse_status(params)
        except ParamsError as exc:
            await self._reject(store, rejection(str(exc), claim))
            raise WebhookError(400, f"malformed request: {exc}") from None

        op: Any
        if kind == "message":
            reply = self._reply(parsed)
            op = MessageWrite(
                message_uuid=parsed.message_uuid,
                from_number=parsed.from_number,
                to_number=parsed.to_number,
                type=parsed.type,
                text=parsed.text,
                media=[{"url": m.url, "content_type": m.content_type} for m in parsed.media],
                params=params,
                method=method,
                received_at=received_at,
                reply=reply,
                signature_scheme=scheme_name,
                fingerprint=fingerprint,
                nonce=claim,
            )
        else:
            reply_to_uuid = None
            for key, value in parse_qsl(query, keep_blank_values=True):
                if key == "reply_to" and value:
                    reply_to_uuid = value
            op = StatusWrite(
                message_uuid=parsed.message_uuid,
                status=parsed.status,
                sequence=parsed.sequence,
                parent_message_uuid=parsed.parent_message_uuid,
                error_code=parsed.error_code,
                reply_to=reply_to_uuid,
                params=params,
                method=method,
                received_at=received_at,
                signature_scheme=scheme_name,
                fingerprint=request_fingerprint("status", "", params),
                nonce=claim,
            )
        try:
            result = await self._write(store, op)
        except StoreError as exc:
            # The database refused this one request's data (not its health): keep it whole for
            # inspection like any malformed request, rather than answering 500 forever.
            log.warning("the store refused %s %s: %s", method, scope.get("path"), exc)
            reason = f"the database refused it: {exc}"
            # The nonce is already claimed by the refused write, or never will be.
            await self._reject(store, rejection(reason, None))
            raise WebhookError(400, reason) from None
        if result.outcome is Outcome.REPLAY:
            self.counters["replays_refused"] += 1
            raise WebhookError(403, "nonce already used by another request")
        if result.outcome is not Outcome.STORED:
            self.counters[f"{kind}_{result.outcome.value}"] += 1
        answer = result.reply.encode() if result.reply else EMPTY_RESPONSE
        return 200, answer, _XML_HEADERS

    async def _reject(self, store: Store, rejection: RejectionWrite) -> None:
        """Keep a signed request that cannot be stored as a message; raises the answer to give."""
        try:
            result = await self._write(store, rejection)
        except StoreError as exc:  # not even the rejection fits: say so, Plivo retries
            log.error("could not keep a rejected request: %s", exc)
            raise WebhookError(
                503, "database refused the request, retry later", [(b"retry-after", b"5")]
            ) from None
        self.counters["rejections"] += 1
        if result.outcome is Outcome.REPLAY:
            raise WebhookError(403, "nonce already used by another request")

    async def _write(self, store: Store, op: Any) -> Any:
        try:
            # No asyncio.timeout here: every store bounds its own writes (Store.write), with one
            # timer per batch rather than one per request.
            return await store.write(op)
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", exc)
            raise WebhookError(
                503, "database unavailable, retry later", [(b"retry-after", b"5")]
            ) from None

    def _reply(self, message: Any) -> str | None:
        text = self.settings.auto_reply
        if not text:
            return None
        callback = None
        if self.public_url:
            callback = f"{self.public_url}/plivo/status?reply_to={quote(message.message_uuid)}"
        try:
            element = reply_to(
                message.from_number,
                message.to_number,
                text,
                callback_url=callback,
                callback_method="POST" if callback else None,
            )
        except XMLValidationError as exc:
            # e.g. an alphanumeric sender cannot be answered: keep the message, skip the reply.
            log.info("no auto-reply to %s: %s", message.message_uuid, exc)
            return None
        return XMLResponse([element]).to_xml()

    async def _read_body(self, receive: Receive, declared: str | None) -> bytes:
        limit = self.max_body
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise WebhookError(400, "Content-Length is not a number") from None
            if length > limit:
                raise WebhookError(413, f"body larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise WebhookError(400, "client disconnected before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise WebhookError(413, f"body larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _url(self, scope: Scope, headers: dict[str, str], query: str) -> str:
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope.get("path", "/"))
        suffix = path + ("?" + query if query else "")
        if self.public_url:
            return self.public_url + suffix
        scheme = scope.get("scheme", "http")
        host = headers.get("host")
        if self.trust_forwarded:
            scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
            host = headers.get("x-forwarded-host", host or "").split(",")[0].strip() or host
        if not host:
            server = scope.get("server") or ("localhost", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        return f"{scheme}://{host}{suffix}"


def _nonce_claim(headers: dict[str, str], fingerprint: str) -> NonceClaim | None:
    """The nonce that guards this request against replay.

    The V2 nonce whenever one came, even when V3 verified the request: V2 does not sign the
    body, so a captured V2 pair is what a forger can replay with another body (stripping the V3
    headers to dodge the body check). A V3 nonce cannot be replayed with another body at all,
    so it is claimed only when no V2 nonce came.
    """
    nonce = headers.get(signature.HEADER_V2_NONCE)
    if nonce is not None:
        return NonceClaim("v2", nonce, fingerprint)
    nonce = headers.get(signature.HEADER_V3_NONCE)
    if nonce is not None:
        return NonceClaim("v3", nonce, fingerprint)
    return None


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
        self.started = False
        # Long-running jobs started with the app and cancelled at shutdown: nonce pruning today;
        # delivery workers and retention register here too.
        self._tasks: dict[str, BackgroundTask] = {}
        self._running: list[asyncio.Task[None]] = []
        self.add_task("prune", self._prune_forever)
        starlette = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/openapi.json", openapi_json, methods=["GET"]),
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
        await self.store.open()
        self.started = True
        for name, task in self._tasks.items():
            self._running.append(asyncio.create_task(task(), name=f"plivohook-{name}"))

    async def shutdown(self) -> None:
        running, self._running = self._running, []
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
        retention: timedelta = self.settings.nonce_retention
        while True:
            try:
                removed = await self.store.prune_nonces(now() - retention)
                if removed:
                    log.info("pruned %d nonces older than %s", removed, retention)
            except StoreUnavailable as exc:
                log.warning("nonce pruning skipped: %s", exc)
            await asyncio.sleep(3600)

    async def healthz(self, _request: Request) -> Response:
        try:
            await asyncio.wait_for(self.store.ping(), 2.0)
        except (StoreUnavailable, TimeoutError) as exc:
            reason = str(exc) or "no answer within 2 s"
            return json_response({"status": "unavailable", "database": reason}, 503)
        return json_response({"status": "ok", "database": "ok"})

    async def _store_unavailable(self, _request: Request, _exc: Exception) -> Response:
        return json_response({"error": "database unavailable, retry later"}, 503)

    async def _http_error(self, _request: Request, exc: Exception) -> Response:
        # JSON like every other answer here (a path the /api mount's pattern cannot match, such
        # as one with a newline in it, ends here rather than in the API's own handler).
        assert isinstance(exc, HTTPException)
        return json_response({"error": exc.detail}, exc.status_code, exc.headers)

    async def _crash(self, _request: Request, _exc: Exception) -> Response:
        return json_response({"error": "internal error"}, 500)


def create_app(settings: Settings, store: Store | None = None) -> PlivohookApp:
    return PlivohookApp(settings, store)


def create_app_from_env() -> PlivohookApp:
    """The factory uvicorn's workers call (``--workers N``): settings come from the environment."""
    return PlivohookApp(Settings.from_env())
