"""Verify and parse Plivo messaging webhooks inside your own Flask app.

For users who keep their Flask app (the shape of Plivo's own receive-SMS sample) instead of running
the plivohook server. Import this module only where Flask is installed (``pip install
'/path/to/plivohook[flask]'`` from a checkout: Flask and nothing of the server); nothing else in
plivohook imports it::

    from flask import Flask
    from plivohook.integrations.flask import plivo_webhook
    from plivohook.protocol.xml import Response, reply_to

    app = Flask(__name__)
    app.config["PLIVO_AUTH_TOKEN"] = "..."            # or "new,old" while rotating, or a list
    app.config["PLIVO_MAIN_AUTH_TOKEN"] = "..."       # optional: checks the X-...-Ma-... headers

    @app.post("/plivo/sms")
    @plivo_webhook(public_url="https://example.com")
    def inbound(message):                             # a plivohook.protocol.params.InboundMessage
        return Response([reply_to(message.from_number, message.to_number, "Got it")])

    @app.post("/plivo/status")
    @plivo_webhook(kind="status", public_url="https://example.com")
    def status(delivery):                             # a plivohook.protocol.params.DeliveryStatus
        ...                                           # None answers <Response/>

What the decorator does, in order:

1. Finds the tokens: ``auth_tokens`` if given, else ``app.config["PLIVO_AUTH_TOKEN"]``; and
   ``main_auth_tokens``, else ``app.config["PLIVO_MAIN_AUTH_TOKEN"]`` (for the ``Ma-`` headers).
   A string is split on commas (spaces around entries ignored); a list is taken entry by entry.
   With no token at all the request is answered ``500 plivohook: no auth token configured`` (and
   logged): never accepted unchecked.
2. Rebuilds the URL Plivo called. With ``public_url`` (``"https://example.com"``, plus any path
   prefix your proxy strips) it is ``public_url`` + the request's path and query as received.
   Without it, the scheme and host come from the request (``request.scheme``/``request.host``):
   behind a TLS-terminating proxy that is ``http://internal-host`` and every signature fails,
   unless you install ``werkzeug.middleware.proxy_fix.ProxyFix``, which Flask then honours.
   ``public_url`` is the safer choice: a ``Host`` header comes from the client, so trusting it
   lets a signature captured for one of your hosts be replayed against another. The path is the
   raw one (``RAW_URI``/``REQUEST_URI`` when the WSGI server provides them, as Werkzeug, gunicorn,
   uWSGI and mod_wsgi do), because Plivo signs ``%2F`` or ``%c3%a9`` exactly as written. Register
   your URL with Plivo without a default port (``:443``/``:80``).
3. Verifies the signature with :func:`plivohook.protocol.signature.verify_request`: V3 when a V3
   header is present (over the POST form fields, body only, or the full GET URL), else V2, and
   never V2 after a V3 failure. A failure answers ``403`` with the reason as ``text/plain``.
   Remember that V2 signs only URL and nonce: make your handling idempotent on ``MessageUUID``.
4. Parses the fields (:func:`~plivohook.protocol.params.parse_message` for ``kind="message"``,
   :func:`~plivohook.protocol.params.parse_status` for ``kind="status"``); a bad field answers
   ``400`` naming every bad field.
5. Calls ``view(parsed, *args, **kwargs)`` with the route's arguments, with the
   :class:`~plivohook.protocol.signature.Verification` in ``flask.g.plivo_verification``. A
   returned :class:`plivohook.protocol.xml.Response` (alone or first in a tuple) is served as
   ``application/xml``, ``None`` as ``<Response/>``; anything else as Flask usually does.
6. Skips a reply that cannot be written, as ``plivohook serve`` does: when the view raises
   :class:`~plivohook.protocol.xml.XMLValidationError` (``Message(dst=message.from_number)`` for
   an alphanumeric sender such as ``ACME``, which cannot be answered) the request is answered
   ``200 <Response/>`` and a WARNING names the callback and the bad value. Plivo delivered the
   message, so an error status would only make it retry a callback that fails the same way.
   The exception unwinds the view, so build the reply after anything the view must do (store,
   enqueue), or catch ``XMLValidationError`` yourself; any other exception is Flask's, as usual.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import flask

from plivohook.protocol.params import ParamsError, parse_message, parse_status
from plivohook.protocol.signature import verify_request
from plivohook.protocol.xml import Response as XMLResponse
from plivohook.protocol.xml import XMLValidationError

__all__ = ["AUTH_TOKEN_CONFIG", "MAIN_AUTH_TOKEN_CONFIG", "plivo_webhook"]

# Names of app.config keys, not secrets.
AUTH_TOKEN_CONFIG = "PLIVO_AUTH_TOKEN"  # noqa: S105
MAIN_AUTH_TOKEN_CONFIG = "PLIVO_MAIN_AUTH_TOKEN"  # noqa: S105

log = logging.getLogger(__name__)

TokenConfig = str | bytes | Iterable[str | bytes] | None
Kind = Literal["message", "status"]

_PARSERS: dict[str, Callable[[list[tuple[str, str]]], Any]] = {
    "message": parse_message,
    "status": parse_status,
}
# What stays literal when a decoded path has to be encoded again (RFC 3986 pchar and '/').
_PATH_SAFE = "/!$&'()*+,;=:@~"
_EMPTY_XML = XMLResponse().to_bytes()


def _token_list(value: TokenConfig, what: str) -> list[str | bytes]:
    """Tokens from a comma-separated str/bytes or a list of them; blanks dropped."""
    if value is None:
        return []
    if isinstance(value, str):
        entries: list[str | bytes] = list(value.split(","))
    elif isinstance(value, bytes):
        entries = list(value.split(b","))
    elif isinstance(value, Iterable):
        entries = list(value)
        for entry in entries:
            if not isinstance(entry, str | bytes):
                raise TypeError(f"{what}: a token must be str or bytes, not {type(entry).__name__}")
    else:
        raise TypeError(f"{what}: expected a str or a list of str, not {type(value).__name__}")
    return [entry.strip() for entry in entries if entry.strip()]


def _check_public_url(public_url: str | None) -> str | None:
    if public_url is None:
        return None
    parts = urlsplit(public_url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"public_url must be an absolute http(s) URL, not {public_url!r}")
    if parts.query or parts.fragment or public_url.endswith(("?", "#")):
        raise ValueError("public_url must not carry a query or a fragment")
    return public_url.rstrip("/")


def _wsgi_text(value: str) -> str:
    """A WSGI environ string (bytes read as Latin-1) as the UTF-8 text it carries."""
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # not a proper WSGI string; take it as text already
        return value


def _raw_path(request: flask.Request) -> str:
    """The request path as the client wrote it, script root included."""
    full = request.script_root + request.path
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        raw = _wsgi_text(raw)
        if not raw.startswith("/"):  # absolute-form request target
            raw = urlsplit(raw).path or "/"
        raw = raw.split("?", 1)[0].split("#", 1)[0]
        decoded = unquote(raw, errors="replace")
        if decoded == full:
            return raw
        if decoded == request.path:  # a middleware (ProxyFix x_prefix) set SCRIPT_NAME
            return quote(request.script_root, safe=_PATH_SAFE) + raw
    # No raw form from the server, or one that no longer matches what the app routes on:
    # re-encode the decoded path (the verifier also tries the decoded form of non-ASCII).
    return quote(full, safe=_PATH_SAFE)


def _request_url(request: flask.Request, public_url: str | None) -> str:
    base = public_url if public_url is not None else f"{request.scheme}://{request.host}"
    query = request.query_string.decode("utf-8", "replace")
    return base + _raw_path(request) + ("?" + query if query else "")


def _text(body: str, status: int) -> flask.Response:
    return flask.Response(body, status=status, mimetype="text/plain")


def _xml(body: bytes) -> flask.Response:
    return flask.Response(body, mimetype="application/xml")


def plivo_webhook(
    auth_tokens: TokenConfig = None,
    *,
    main_auth_tokens: TokenConfig = None,
    public_url: str | None = None,
    kind: Kind = "message",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Flask view so that it runs only for genuine, well-formed Plivo callbacks.

    ``auth_tokens``/``main_auth_tokens``: the (sub-)account and main-account tokens, each a str
    (comma-separated for several, e.g. while rotating), bytes, or a list; ``None`` reads
    ``app.config["PLIVO_AUTH_TOKEN"]`` / ``["PLIVO_MAIN_AUTH_TOKEN"]`` at request time.
    ``public_url``: the scheme and host Plivo calls (see the module docs). ``kind``:
    ``"message"`` (inbound SMS/MMS, the view gets an ``InboundMessage``) or ``"status"``
    (delivery reports, a ``DeliveryStatus``).
    """
    if callable(auth_tokens):
        raise TypeError("plivo_webhook is a decorator factory: write @plivo_webhook()")
    if kind not in _PARSERS:
        raise ValueError(f"kind must be 'message' or 'status', not {kind!r}")
    explicit = None if auth_tokens is None else _token_list(auth_tokens, "auth_tokens")
    explicit_main = (
        None if main_auth_tokens is None else _token_list(main_auth_tokens, "main_auth_tokens")
    )
    if explicit == []:
        raise ValueError("auth_tokens is empty: pass a token, or None to use app.config")
    if explicit_main == []:
        raise ValueError("main_auth_tokens is empty: pass a token, or None to use app.config")
    base = _check_public_url(public_url)
    parse = _PARSERS[kind]

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = flask.request
            config = flask.current_app.config
            try:
                tokens = explicit or _token_list(config.get(AUTH_TOKEN_CONFIG), AUTH_TOKEN_CONFIG)
                main = explicit_main or _token_list(
                    config.get(MAIN_AUTH_TOKEN_CONFIG), MAIN_AUTH_TOKEN_CONFIG
                )
            except TypeError as exc:
                log.error("plivohook: invalid auth token configuration: %s", exc)
                return _text("plivohook: invalid auth token configuration", 500)
            if not tokens and not main:
                log.error(
                    "plivohook: no auth token configured for %r (set app.config[%r] or pass "
                    "auth_tokens to plivo_webhook); request refused",
                    request.path,
                    AUTH_TOKEN_CONFIG,
                )
                return _text("plivohook: no auth token configured", 500)

            method = request.method
            if method == "GET":
                fields = list(request.args.items(multi=True))
                signed: list[tuple[str, str]] = []  # GET: the fields ride in the signed URL
            elif method == "POST":
                fields = list(request.form.items(multi=True))  # the body only, never .values
                signed = fields
            else:
                response = _text("plivohook: Plivo calls with GET or POST", 405)
                response.headers["Allow"] = "GET, POST"
                return response

            try:
                url = _request_url(request, base)
                result = verify_request(method, url, request.headers, signed, tokens, main)
            except ValueError as exc:  # a request target or Host that urllib cannot parse
                log.warning("plivohook: refused %s %r: bad URL: %s", method, request.path, exc)
                return _text("plivohook: request URL cannot be verified", 403)
            flask.g.plivo_verification = result
            if not result:
                log.warning("plivohook: refused %s %r: %s", method, request.path, result.reason)
                return _text(result.reason or "signature check failed", 403)

            try:
                parsed = parse(fields)
            except ParamsError as exc:
                log.warning("plivohook: bad %s callback at %r: %s", kind, request.path, exc)
                return _text(str(exc), 400)

            try:
                rv = flask.current_app.ensure_sync(view)(parsed, *args, **kwargs)
                if rv is None:
                    return _xml(_EMPTY_XML)
                if isinstance(rv, XMLResponse):
                    return _xml(rv.to_bytes())
                if isinstance(rv, tuple) and rv and isinstance(rv[0], XMLResponse):
                    return (_xml(rv[0].to_bytes()), *rv[1:])
            except XMLValidationError as exc:
                # The message arrived and the view ran; only its reply is unwritable (an
                # alphanumeric sender is no destination). A 500 would make Plivo retry in vain.
                # The reason names a Message field and value, never a token.
                log.warning(
                    "plivohook: no reply to %s %s at %r: %s",
                    kind,
                    parsed.message_uuid,
                    request.path,
                    exc,
                )
                return _xml(_EMPTY_XML)
            return rv

        return wrapper

    return decorate
