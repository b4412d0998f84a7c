"""Pure ASGI middleware, composed per mount (the Starlette way, without its BaseHTTPMiddleware).

``SecurityHeaders`` takes its Content-Security-Policy as a parameter: the API and health answers
get ``default-src 'none'``, while the inbox's pages will need their own stylesheet and script
files (``'self'``), which one global policy cannot give both.
"""

from __future__ import annotations

import hmac

from .asgi import ASGIApp, Message, Receive, Scope, Send, json_bytes

__all__ = ["API_CSP", "BearerAuth", "SecurityHeaders"]

# Nothing served under this policy is meant to be framed, to load anything, or to run.
API_CSP = "default-src 'none'; frame-ancestors 'none'"


class SecurityHeaders:
    """Adds what a browser needs to treat the answers safely, unless a route set its own."""

    def __init__(self, app: ASGIApp, *, csp: str = API_CSP, cache: str = "no-store") -> None:
        self.app = app
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", csp.encode()),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cache-control", cache.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.headers if h[0] not in names)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BearerAuth:
    """Lets a request through only with ``Authorization: Bearer <token>``.

    Without a token configured the whole mount answers 404 (the API is off, and says how to turn
    it on). The comparison is constant-time; the token never appears in an answer.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        realm: str = "plivohook",
        disabled: str = "the API is disabled: set --admin-token to enable it",
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.realm = realm
        self.disabled = disabled  # the 404's reason without a token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token is None:
            await _error(send, 404, self.disabled)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            challenge = f'Bearer realm="{self.realm}"'.encode()
            await _error(
                send, 401, "missing or wrong bearer token", [(b"www-authenticate", challenge)]
            )
            return
        await self.app(scope, receive, send)


async def _error(
    send: Send, status: int, reason: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json_bytes({"error": reason})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
