"""The ASGI app: Plivo's webhooks on a lean path, the admin API and health on Starlette.

Every webhook request flows one way: method and size limits -> signature -> nonce and parse ->
commit -> answer. Nothing is acknowledged before the store has committed it; a store failure
answers 503 so that Plivo retries, and a retry gets the answer stored the first time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import Settings, host_name, is_host
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
    decode_cursor,
    request_fingerprint,
)

__all__ = ["PlivohookApp", "create_app", "create_app_from_env"]

log = logging.getLogger("plivohook")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EMPTY_RESPONSE = b"<Response/>"
WEBHOOK_PATHS = {"/plivo/message": "message", "/plivo/status": "status"}
# Headers kept with a rejection must not carry credentials of any kind.
REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
_FORM = "application/x-www-form-urlencoded"
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_XML_HEADERS = [(b"content-type", b"application/xml; charset=utf-8"), _NOSNIFF]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), _NOSNIFF]
# For everything but the webhooks: nothing here is meant to be framed, sniffed or cached.
_SECURITY_HEADERS = [
    _NOSNIFF,
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class WebhookError(Exception):
    """An answer other than 200, with a short reason for the client."""

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


class _Seen:
    """What a refusal's log line tells about the request, filled in as the handler learns it."""

    __slots__ = ("family", "url")

    def __init__(self) -> None:
        self.url: str | None = None
        self.family = "none"


def _shown(text: str, limit: int = 300) -> str:
    """Client-chosen text made safe for one log line: no control characters, bounded."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _family_present(headers: dict[str, str]) -> str:
    present = []
    if signature.HEADER_V3 in headers or signature.HEADER_MA_V3 in headers:
        present.append("V3")
    if signature.HEADER_V2 in headers or signature.HEADER_MA_V2 in headers:
        present.append("V2")
    return "+".join(present) or "none"


def _failure_code(reason: str | None) -> str:
    """A short, stable name for a verification failure, for the counters."""
    reason = reason or ""
    if "Nonce" in reason and reason.startswith("missing"):
        return "missing_nonce"
    for needle, code in (
        ("missing", "missing_signature"),
        ("malformed", "malformed_signature"),
        ("more than", "too_many_signatures"),
        ("does not match", "mismatch"),
        ("token configured", "no_token"),
        ("cannot be parsed", "bad_url"),
    ):
        if needle in reason:
            return code
    return "other"


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        self.allowed_hosts = settings.allowed_hosts
        self.max_body = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        seen = _Seen()
        try:
            status, body, headers = await self.handle(scope, receive, kind, seen)
        except WebhookError as exc:
            self.counters[f"{kind}_{exc.status}"] += 1
            self.counters[f"refused_{exc.status}"] += 1
            if exc.status < 500:  # a 503 is the store's, logged where it happens
                # Never a token or a signature here: the reason names headers, not values.
                log.warning(
                    "refused %s %s: %d %s (signature checked against %s; headers %s)",
                    scope["method"],
                    _shown(scope.get("path", "")),
                    exc.status,
                    _shown(exc.reason),
                    _shown(seen.url) if seen.url else "-",
                    seen.family,
                )
            await _send(send, exc.status, exc.reason.encode() + b"\n", _TEXT_HEADERS + exc.headers)
            return
        except Exception:
            # Never a stack trace to the client; the log has it.
            log.exception("unexpected error on %s", scope.get("path"))
            self.counters[f"{kind}_500"] += 1
            await _send(send, 500, b"internal error\n", _TEXT_HEADERS)
            return
        self.counters[f"{kind}_{status}"] += 1
        await _send(send, status, body, headers)

    async def handle(
        self, scope: Scope, receive: Receive, kind: str, seen: _Seen | None = None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        seen = seen or _Seen()
        method = scope["method"]
        if method not in ("POST", "GET"):
            raise WebhookError(405, f"method {method} not allowed", [(b"allow", b"GET, POST")])
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        seen.family = _family_present(headers)
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
        seen.url = url
        families: tuple[str, ...] = ()
        if self.settings.insecure_skip_verify:
            scheme_name = "none"
        else:
            verification = signature.verify_request(
                method, url, headers, signed_params, self.auth_tokens, self.main_tokens
            )
            if not verification:
                self.counters["signature_failures"] += 1
                self.counters[f"verification_failure:{_failure_code(verification.reason)}"] += 1
                raise WebhookError(403, f"signature check failed: {verification.reason}")
            scheme_name = verification.scheme or "none"
            families = verification.families
        fingerprint = request_fingerprint(kind, query, params)
        claim, extra = _nonce_claims(headers, families, fingerprint)
        received_at = _now()
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
                extra_nonce=extra,
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
                extra_nonce=extra,
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
                extra_nonce=extra,
            )
        try:
            result = await self._write(store, op)
        except StoreError as exc:
            # The database refused this one request's data (not its health): keep it whole for
            # inspection like any malformed request, rather than answering 500 forever.
            log.warning("the store refused %s %s: %s", method, scope.get("path"), exc)
            reason = f"the database refused it: {exc}"
            # The refused write claimed nothing (its transaction rolled back): the rejection
            # claims the nonces, so that a replay of this request is not kept again.
            await self._reject(store, rejection(reason, claim))
            raise WebhookError(400, reason) from None
        if result.outcome is Outcome.REPLAY:
            self.counters["replays_refused"] += 1
            raise WebhookError(403, "nonce already used by another request")
        if result.outcome is not Outcome.STORED:
            self.counters[f"{kind}_{result.outcome.value}"] += 1
        if result.conflicting:
            self.counters["message_conflicting_duplicates"] += 1
            log.warning(
                "MessageUUID %s arrived again with another text: the first text is kept, the"
                " message's conflicting_duplicates counts it",
                _shown(parsed.message_uuid),
            )
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
        header = "Host"
        if self.trust_forwarded:
            proto = headers.get("x-forwarded-proto", "").split(",")[0].strip()
            if proto:
                if proto.lower() not in ("http", "https"):
                    raise WebhookError(400, "X-Forwarded-Proto must be http or https")
                scheme = proto.lower()
            forwarded = headers.get("x-forwarded-host", "").split(",")[0].strip()
            if forwarded:
                host, header = forwarded, "X-Forwarded-Host"
        if host is None:  # HTTP/1.0 without Host: the address the client connected to
            server = scope.get("server") or ("localhost", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
            if ":" in server[0]:
                host = f"[{server[0]}]" + ("" if server[1] is None else f":{server[1]}")
        elif not is_host(host):
            # The signed URL is built from this text: a '/', '?' or '#' in it would let a
            # signature made for another URL of the account (e.g. a voice answer_url) pass.
            raise WebhookError(400, f"{header} header is not a valid host[:port]")
        if self.allowed_hosts and not self._allowed(host):
            raise WebhookError(400, f"{header} header names a host not in --allowed-hosts")
        return f"{scheme}://{host}{suffix}"

    def _allowed(self, host: str) -> bool:
        """An entry with a port must match exactly; one without matches the host on any port."""
        lowered = host.lower()
        name = host_name(lowered)
        return any(
            lowered == entry if host_name(entry) != entry else name == entry
            for entry in self.allowed_hosts
        )


def _nonce_claims(
    headers: dict[str, str], families: tuple[str, ...], fingerprint: str
) -> tuple[NonceClaim | None, NonceClaim | None]:
    """The nonces that guard this request against replay: those of the verified families only.

    A nonce no verified signature covers is the client's free choice: recording it would let
    one captured request, replayed with random nonces, add a row each time. The V2 nonce is
    recorded whenever V2 verified, even beside V3: V2 does not sign the body, so a captured V2
    pair is what a forger could replay with another body (stripping the V3 headers). The V3
    nonce is recorded too, as V3's unseparated join lets a few re-splits of the same fields
    (``To=14155550199`` as ``To1=4155550199``) pass with one signature.
    """
    v2 = headers.get(signature.HEADER_V2_NONCE) if "v2" in families else None
    v3 = headers.get(signature.HEADER_V3_NONCE) if "v3" in families else None
    first = NonceClaim("v2", v2, fingerprint) if v2 is not None else None
    second = NonceClaim("v3", v3, fingerprint) if v3 is not None else None
    if first is None:
        return second, None
    return first, second


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the admin API ------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)


def _params_object(pairs: list[list[str]] | list[tuple[str, str]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            previous = result[key]
            result[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            result[key] = value
    return result


def _message_view(message: dict[str, Any]) -> dict[str, Any]:
    view = dict(message)
    view["params"] = _params_object(message["params"])
    return view


def _status_view(status: dict[str, Any]) -> dict[str, Any]:
    view = dict(status)
    view["params"] = _params_object(status["params"])
    return view


def _problem(status: int, reason: str) -> Response:
    return _json({"error": reason}, status)


class AdminAPI:
    def __init__(self, settings: Settings, store_ref: Callable[[], Store]):
        self.admin_token = settings.admin_token
        self._store = store_ref

    def _authorized(self, request: Request) -> Response | None:
        if not self.admin_token:
            return _problem(404, "the API is disabled: set --admin-token to enable it")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.admin_token.encode()
        ):
            return Response(
                orjson.dumps({"error": "missing or wrong bearer token"}),
                status_code=401,
                media_type="application/json",
                headers={
                    "www-authenticate": 'Bearer realm="plivohook"',
                    "cache-control": "no-store",
                },
            )
        return None

    @staticmethod
    def _limit(request: Request) -> int:
        raw = request.query_params.get("limit", "50")
        try:
            limit = int(raw)
        except ValueError:
            raise ValueError("limit must be an integer from 1 to 500") from None
        if not 1 <= limit <= 500:
            raise ValueError("limit must be an integer from 1 to 500")
        return limit

    async def messages(self, request: Request) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        params = request.query_params
        try:
            limit = self._limit(request)
            cursor = params.get("cursor") or None
            if cursor:
                decode_cursor(cursor)
        except ValueError as exc:
            reason = str(exc) if "limit" in str(exc) else "cursor is not one this API gave"
            return _problem(400, reason)
        page = await self._store().list_messages(
            limit=limit,
            cursor=cursor,
            from_number=params.get("from") or None,
            to_number=params.get("to") or None,
            q=params.get("q") or None,
        )
        return _json(
            {"messages": [_message_view(m) for m in page.items], "next_cursor": page.next_cursor}
        )

    async def message(self, request: Request) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        found = await self._store().get_message(request.path_params["message_uuid"])
        if found is None:
            return _problem(404, "no message with that MessageUUID")
        return _json(_message_view(found))

    async def statuses(self, request: Request) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        uuid = request.path_params["message_uuid"]
        history = await self._store().get_statuses(uuid)
        latest = None
        for report in history:
            latest = report["status"]
        return _json(
            {
                "message_uuid": uuid,
                "status": latest,
                "statuses": [_status_view(s) for s in history],
            }
        )

    async def rejections(self, request: Request) -> Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        try:
            limit = self._limit(request)
            cursor = request.query_params.get("cursor") or None
            if cursor:
                decode_cursor(cursor)
        except ValueError as exc:
            reason = str(exc) if "limit" in str(exc) else "cursor is not one this API gave"
            return _problem(400, reason)
        page = await self._store().list_rejections(limit=limit, cursor=cursor)
        return _json({"rejections": page.items, "next_cursor": page.next_cursor})


# -- the whole app ------------------------------------------------------------------------------


class PlivohookApp:
    """Routes ``/plivo/*`` straight to the webhook handler, everything else to Starlette."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings.validated()
        self.store: Store = store or open_store(
            self.settings.database_url,
            pool_max=self.settings.pool_size,
            timeout=self.settings.write_timeout,
        )
        self.counters: Counter[str] = Counter()
        self.webhooks = Webhooks(self.settings, lambda: self.store, self.counters)
        api = AdminAPI(self.settings, lambda: self.store)
        self.started = False
        self._pruner: asyncio.Task[None] | None = None
        self.starlette = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/api/messages", api.messages, methods=["GET"]),
                Route("/api/messages/{message_uuid}", api.message, methods=["GET"]),
                Route("/api/statuses/{message_uuid}", api.statuses, methods=["GET"]),
                Route("/api/rejections", api.rejections, methods=["GET"]),
                Route("/openapi.json", openapi_json, methods=["GET"]),
            ],
            lifespan=self._lifespan,
            exception_handlers={StoreUnavailable: self._store_unavailable, 500: self._crash},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            kind = WEBHOOK_PATHS.get(scope["path"])
            if kind is not None:
                await self.webhooks(scope, receive, send, kind)
                return
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.starlette(scope, receive, send_with_headers)

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
        self._pruner = asyncio.create_task(self._prune_forever())

    async def shutdown(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
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
        while True:
            await self.prune()
            await asyncio.sleep(3600)

    async def prune(self) -> None:
        """Forget nonces and rejections past their retention (hourly, from the start)."""
        retention: timedelta = self.settings.nonce_retention
        try:
            removed = await self.store.prune_nonces(_now() - retention)
            if removed:
                log.info("pruned %d nonces older than %s", removed, retention)
        except StoreUnavailable as exc:
            log.warning("nonce pruning skipped: %s", exc)
        # Rejections are signed requests kept for inspection: without a limit, a flood of
        # signed-but-malformed requests would grow the database for ever.
        retention = self.settings.rejection_retention
        try:
            removed = await self.store.prune_rejections(_now() - retention)
            if removed:
                log.info("pruned %d rejections older than %s", removed, retention)
        except StoreUnavailable as exc:
            log.warning("rejection pruning skipped: %s", exc)

    async def healthz(self, _request: Request) -> Response:
        try:
            await asyncio.wait_for(self.store.ping(), 2.0)
        except (StoreUnavailable, TimeoutError) as exc:
            reason = str(exc) or "no answer within 2 s"
            return JSONResponse({"status": "unavailable", "database": reason}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def _store_unavailable(self, _request: Request, _exc: Exception) -> Response:
        return _problem(503, "database unavailable, retry later")

    async def _crash(self, _request: Request, _exc: Exception) -> Response:
        return _problem(500, "internal error")


def create_app(settings: Settings, store: Store | None = None) -> PlivohookApp:
    return PlivohookApp(settings, store)


def create_app_from_env() -> PlivohookApp:
    """The factory uvicorn's workers call (``--workers N``): settings come from the environment."""
    return PlivohookApp(Settings.from_env())
