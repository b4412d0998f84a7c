"""Plivo's two webhooks, as a bare ASGI callable: the hot path.

Every request flows one way, in named stages (see :class:`Webhooks`): read the request ->
verify -> parse -> build the write -> commit -> answer. Nothing is acknowledged before the
store has committed it; a store failure answers 503 so that Plivo retries, and a retry gets the
answer stored the first time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, quote

from ..config import Settings, host_name, is_host
from ..logs import REQUEST_FIELDS, log_request
from ..protocol import signature
from ..protocol.form import parse_form
from ..protocol.params import (
    DeliveryStatus,
    InboundMessage,
    ParamsError,
    parse_message,
    parse_status,
)
from ..protocol.xml import Response as XMLResponse
from ..protocol.xml import XMLValidationError, reply_to
from ..store import Store, StoreError, StoreUnavailable
from ..store.base import (
    MessageWrite,
    NonceClaim,
    Outcome,
    RejectionWrite,
    ReplyPlan,
    StatusWrite,
    WriteOp,
    WriteResult,
    request_fingerprint,
)
from .asgi import Receive, Scope, Send, now, send_response

__all__ = [
    "WEBHOOK_PATHS",
    "AfterCommit",
    "Inbound",
    "ReplyDecider",
    "Verified",
    "WebhookError",
    "Webhooks",
    "WriteExtension",
]

log = logging.getLogger("plivohook")

EMPTY_RESPONSE = b"<Response/>"
WEBHOOK_PATHS = {"/plivo/message": "message", "/plivo/status": "status"}
# Headers kept with a rejection must not carry credentials of any kind: these are dropped.
REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
# A signature is kept by name (which family the request carried), never by value: the API and
# the inbox show rejections, and no answer or page carries a signature.
SIGNATURE_HEADERS = frozenset(
    {
        signature.HEADER_V2,
        signature.HEADER_MA_V2,
        signature.HEADER_V3,
        signature.HEADER_MA_V3,
    }
)
REDACTED = "[redacted]"
_FORM = "application/x-www-form-urlencoded"
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_XML_HEADERS = [(b"content-type", b"application/xml; charset=utf-8"), _NOSNIFF]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), _NOSNIFF]


class WebhookError(Exception):
    """An answer other than 200, with a short reason for the client.

    ``outcome`` is the request's outcome in its log line: ``refused`` (the request itself is
    wrong), ``verification_failed``, ``replay``, ``rejected`` (signed, kept as a rejection) or
    ``unavailable`` (the store: Plivo retries).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        outcome: str = "refused",
    ):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []
        self.outcome = outcome


class _Seen:
    """What a request's log line tells about it, filled in as the handler learns it."""

    __slots__ = ("family", "ms", "outcome", "started", "url", "uuid")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.url: str | None = None
        self.family = "none"
        self.uuid: str | None = None  # the MessageUUID, once parsed
        self.outcome = "refused"
        self.ms = 0.0  # the request's duration, once answered


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


@dataclass(slots=True)
class Inbound:
    """Stage 1's result: the request as read, before anything is believed."""

    kind: str  # "message" or "status"
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names, latin-1 values
    body: bytes
    params: list[tuple[str, str]]  # every field, in order (body for POST, query for GET)
    signed_params: list[tuple[str, str]]  # what V3 signs: the body's fields (none for GET)


@dataclass(slots=True)
class Verified:
    """Stage 2's result: who signed it, and the nonces that guard it against replay."""

    url: str  # the URL the signature was checked against
    scheme: str  # "v2", "ma-v2", "v3", "ma-v3" or "none"
    fingerprint: str
    received_at: datetime
    claim: NonceClaim | None
    extra: NonceClaim | None


# The plug points (see Webhooks): what to answer an inbound message, and what else a write
# carries into its transaction (outbox rows, say). Both run before the commit, on the hot path.
ReplyDecider = Callable[[InboundMessage], "str | ReplyPlan | None"]
WriteExtension = Callable[["MessageWrite | StatusWrite"], "MessageWrite | StatusWrite"]
# Plug point 3: after a message's commit, may change the answer (a second commit of its own).
AfterCommit = Callable[[Store, InboundMessage, MessageWrite, WriteResult], Awaitable[WriteResult]]


class Webhooks:
    """The two Plivo routes, as a bare ASGI callable: this is the hot path.

    A request passes through named stages, each small and typed, in one direction::

        read_request -> verify -> parse -> build_write -> commit -> answer
        (Inbound)       (Verified) (InboundMessage |   (MessageWrite |  (WriteResult) (bytes)
                                    DeliveryStatus)     StatusWrite)

    Any stage may raise :class:`WebhookError` (the answer is then that error); a signed request
    that ``parse`` or the database refuses is kept whole as a rejection before it is refused.

    Two plug points, both in ``build_write`` and both documented here so that features do not
    grow this class:

    * ``decide_reply`` (a :data:`ReplyDecider`): given the parsed message, the Message XML to
      answer (or None for ``<Response/>``), or a :class:`~plivohook.store.base.ReplyPlan` with
      the answer for both opt-out states (the replies package's :meth:`Replies.decide_reply`:
      the store picks the one that applies). It is decided *before* the commit and stored with
      the message in the same transaction, so that every retry of that MessageUUID gets the
      same bytes. The default answers ``--auto-reply``; the app installs the replies package's.
    * ``write_extensions`` (:data:`WriteExtension` functions): each may return the write with
      more in it (``dataclasses.replace``), committed in the same transaction, e.g. the outbox
      rows that hand the message on. Empty by default: a loop over nothing costs nothing.
    * ``after_commit`` (an :data:`AfterCommit`, None by default): runs after a message's commit
      and may return another result, e.g. the user's handler's answer, stored by a second commit
      of its own so that a retry gets it too. A StoreUnavailable there answers 503.
    """

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
        self.skip_verify = settings.insecure_skip_verify
        self.decide_reply: ReplyDecider = self.auto_reply
        self.write_extensions: list[WriteExtension] = []
        # Called after a commit that stored a write carrying events (the forwarding worker's
        # wake-up): a poll would find them anyway, a second later.
        self.enqueued: list[Callable[[], None]] = []
        self.after_commit: AfterCommit | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        seen = _Seen()
        try:
            status, body, headers = await self.handle(scope, receive, kind, seen)
        except WebhookError as exc:
            self._refused(scope, kind, exc, seen)
            await send_response(
                send, exc.status, exc.reason.encode() + b"\n", _TEXT_HEADERS + exc.headers
            )
            return
        except Exception:
            # Never a stack trace to the client; the log has it (the request's line).
            seen.outcome = "error"
            log.exception(
                "unexpected error on %s %s: 500%s",
                scope["method"],
                _shown(scope.get("path", "")),
                _tail(seen),
                extra={REQUEST_FIELDS: _fields(scope, kind, 500, seen)},
            )
            self.counters[f"{kind}_500"] += 1
            await send_response(send, 500, b"internal error\n", _TEXT_HEADERS)
            return
        self.counters[f"{kind}_{status}"] += 1
        await send_response(send, status, body, headers)
        if log.isEnabledFor(logging.INFO):  # one line per request (a cached level check)
            log_request(
                log,
                logging.INFO,
                "answered %s %s: %d %s%s",
                # the path is one of WEBHOOK_PATHS: no client text
                (scope["method"], scope["path"], status, seen.outcome, _tail(seen)),
                _fields(scope, kind, status, seen),
            )

    async def handle(
        self, scope: Scope, receive: Receive, kind: str, seen: _Seen | None = None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The stages, in order; returns the status, body and headers of the answer."""
        seen = seen or _Seen()
        request = await self.read_request(scope, receive, kind)
        seen.family = _family_present(request.headers)
        verified = self.verify(scope, request, seen)
        store = self._store()
        parsed = await self.parse(store, request, verified)
        seen.uuid = parsed.message_uuid
        op = self.build_write(request, verified, parsed)
        result = await self.commit(store, request, verified, op)
        if self.after_commit is not None and isinstance(op, MessageWrite):
            assert isinstance(parsed, InboundMessage)
            try:
                result = await self.after_commit(store, parsed, op, result)  # plug point 3
            except StoreUnavailable as exc:
                log.warning("store unavailable after the commit: %s", exc)
                raise WebhookError(
                    503, "database unavailable, retry later", [(b"retry-after", b"5")]
                ) from None
        seen.outcome = result.outcome.value
        return 200, self.answer(kind, parsed, result), _XML_HEADERS

    # -- the stages ------------------------------------------------------------------------------

    async def read_request(self, scope: Scope, receive: Receive, kind: str) -> Inbound:
        """Method, Content-Type and size limits; the body; the form's fields."""
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
        path = scope.get("path", "")
        return Inbound(kind, method, path, query, headers, body, params, signed_params)

    def verify(self, scope: Scope, request: Inbound, seen: _Seen) -> Verified:
        """The signature against the URL Plivo called; the nonces the verified ones cover."""
        url = self._url(scope, request.headers, request.query)
        seen.url = url
        families: tuple[str, ...] = ()
        if self.skip_verify:
            scheme = "none"
        else:
            verification = signature.verify_request(
                request.method,
                url,
                request.headers,
                request.signed_params,
                self.auth_tokens,
                self.main_tokens,
            )
            if not verification:
                self.counters["signature_failures"] += 1
                self.counters[f"verification_failure:{_failure_code(verification.reason)}"] += 1
                raise WebhookError(
                    403,
                    f"signature check failed: {verification.reason}",
                    outcome="verification_failed",
                )
            scheme = verification.scheme or "none"
            families = verification.families
        fingerprint = request_fingerprint(request.kind, request.query, request.params)
        claim, extra = _nonce_claims(request.headers, families, fingerprint)
        return Verified(url, scheme, fingerprint, now(), claim, extra)

    async def parse(
        self, store: Store, request: Inbound, verified: Verified
    ) -> InboundMessage | DeliveryStatus:
        """Plivo's fields as a typed model; a signed request that is not one is kept, then 400."""
        try:
            if request.kind == "message":
                return parse_message(request.params)
            return parse_status(request.params)
        except ParamsError as exc:
            await self._reject(store, _rejection(request, verified, str(exc), verified.claim))
            raise WebhookError(400, f"malformed request: {exc}", outcome="rejected") from None

    def build_write(
        self, request: Inbound, verified: Verified, parsed: InboundMessage | DeliveryStatus
    ) -> MessageWrite | StatusWrite:
        """What to commit: the record, the answer decided now, and what the extensions add."""
        op: MessageWrite | StatusWrite
        if isinstance(parsed, InboundMessage):
            plan = self.decide_reply(parsed)  # plug point 1
            if plan is None or isinstance(plan, str):
                plan = ReplyPlan(plan)
            op = MessageWrite(
                message_uuid=parsed.message_uuid,
                from_number=parsed.from_number,
                to_number=parsed.to_number,
                type=parsed.type,
                text=parsed.text,
                media=[{"url": m.url, "content_type": m.content_type} for m in parsed.media],
                params=request.params,
                method=request.method,
                received_at=verified.received_at,
                reply=plan.reply,
                signature_scheme=verified.scheme,
                fingerprint=verified.fingerprint,
                nonce=verified.claim,
                extra_nonce=verified.extra,
                reply_source=plan.reply_source,
                opted_out_reply=plan.opted_out_reply,
                opted_out_source=plan.opted_out_source,
                optout_action=plan.optout_action,
            )
        else:
            reply_to_uuid = None
            for key, value in parse_qsl(request.query, keep_blank_values=True):
                if key == "reply_to" and value:
                    reply_to_uuid = value
            op = StatusWrite(
                message_uuid=parsed.message_uuid,
                status=parsed.status,
                sequence=parsed.sequence,
                parent_message_uuid=parsed.parent_message_uuid,
                error_code=parsed.error_code,
                reply_to=reply_to_uuid,
                params=request.params,
                method=request.method,
                received_at=verified.received_at,
                signature_scheme=verified.scheme,
                fingerprint=request_fingerprint("status", "", request.params),
                nonce=verified.claim,
                extra_nonce=verified.extra,
            )
        for extend in self.write_extensions:  # plug point 2
            op = extend(op)
        return op

    async def commit(
        self, store: Store, request: Inbound, verified: Verified, op: MessageWrite | StatusWrite
    ) -> WriteResult:
        """The write, durable before anything is answered; replays refused here."""
        try:
            result = await self._write(store, op)
        except StoreError as exc:
            # The database refused this one request's data (not its health): keep it whole for
            # inspection like any malformed request, rather than answering 500 forever.
            log.warning("the store refused %s %s: %s", request.method, request.path, exc)
            reason = f"the database refused it: {exc}"
            # The refused write claimed nothing (its transaction rolled back): the rejection
            # claims the nonces, so that a replay of this request is not kept again.
            await self._reject(store, _rejection(request, verified, reason, verified.claim))
            raise WebhookError(400, reason, outcome="rejected") from None
        if result.outcome is Outcome.REPLAY:
            self.counters["replays_refused"] += 1
            raise WebhookError(403, "nonce already used by another request", outcome="replay")
        if op.events and result.outcome is Outcome.STORED:
            for notify in self.enqueued:
                notify()
        return result

    def answer(
        self, kind: str, parsed: InboundMessage | DeliveryStatus, result: WriteResult
    ) -> bytes:
        """The stored answer (the same bytes on every retry), or ``<Response/>``."""
        # message_stored, status_duplicate, ...: /metrics reads these (web/metrics.py).
        self.counters[f"{kind}_{result.outcome.value}"] += 1
        if result.conflicting:
            self.counters["message_conflicting_duplicates"] += 1
            log.warning(
                "MessageUUID %s arrived again with another text: the first text is kept, the"
                " message's conflicting_duplicates counts it",
                _shown(parsed.message_uuid),
            )
        return result.reply.encode() if result.reply else EMPTY_RESPONSE

    # -- helpers ---------------------------------------------------------------------------------

    def _refused(self, scope: Scope, kind: str, exc: WebhookError, seen: _Seen) -> None:
        """The refused request's one log line (WARNING), and its counts."""
        self.counters[f"{kind}_{exc.status}"] += 1
        self.counters[f"refused_{exc.status}"] += 1
        seen.outcome = exc.outcome
        if not log.isEnabledFor(logging.WARNING):
            return
        # Never a token or a signature here: the reason names headers, not values.
        log_request(
            log,
            logging.WARNING,
            "refused %s %s: %d %s (signature checked against %s; headers %s)%s",
            (
                scope["method"],
                _shown(scope.get("path", "")),
                exc.status,
                _shown(exc.reason),
                _shown(seen.url) if seen.url else "-",
                seen.family,
                _tail(seen),
            ),
            _fields(scope, kind, exc.status, seen),
        )

    async def _reject(self, store: Store, rejection: RejectionWrite) -> None:
        """Keep a signed request that cannot be stored as a message; raises the answer to give."""
        try:
            result = await self._write(store, rejection)
        except StoreError as exc:  # not even the rejection fits: say so, Plivo retries
            log.error("could not keep a rejected request: %s", exc)
            raise WebhookError(
                503,
                "database refused the request, retry later",
                [(b"retry-after", b"5")],
                outcome="unavailable",
            ) from None
        self.counters["rejections"] += 1
        if result.outcome is Outcome.REPLAY:
            self.counters["replays_refused"] += 1
            raise WebhookError(403, "nonce already used by another request", outcome="replay")

    async def _write(self, store: Store, op: WriteOp) -> WriteResult:
        try:
            # No asyncio.timeout here: every store bounds its own writes (Store.write), with one
            # timer per batch rather than one per request.
            return await store.write(op)
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", exc)
            raise WebhookError(
                503,
                "database unavailable, retry later",
                [(b"retry-after", b"5")],
                outcome="unavailable",
            ) from None

    def auto_reply(self, message: InboundMessage) -> str | None:
        """The default reply decision: ``--auto-reply``'s text to every sender, or nothing."""
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


def _tail(seen: _Seen) -> str:
    """The end of a request's text line: its MessageUUID (once parsed) and its duration."""
    ms = seen.ms = (time.perf_counter() - seen.started) * 1000
    uid = f", MessageUUID {_shown(seen.uuid, 80)}" if seen.uuid else ""
    return f"{uid} in {ms:.2f} ms"


def _fields(scope: Scope, kind: str, status: int, seen: _Seen) -> dict[str, object]:
    """A request's fields for a JSON log line (the text line says the same in words)."""
    return {
        "route": kind,
        "method": scope["method"],
        "status": status,
        "outcome": seen.outcome,
        "message_uuid": seen.uuid,
        "duration_ms": round(seen.ms, 3),  # measured once, by _tail
    }


def _rejection(
    request: Inbound, verified: Verified, reason: str, nonce: NonceClaim | None
) -> RejectionWrite:
    return RejectionWrite(
        method=request.method,
        path=request.path,
        query=request.query,
        headers=[
            (k, REDACTED if k in SIGNATURE_HEADERS else v)
            for k, v in request.headers.items()
            if k not in REDACTED_HEADERS
        ],
        body=request.body,
        reason=reason,
        received_at=verified.received_at,
        signature_scheme=verified.scheme,
        fingerprint=verified.fingerprint,
        nonce=nonce,
        extra_nonce=verified.extra,
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
