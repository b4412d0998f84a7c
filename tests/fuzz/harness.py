"""The app in-process on a SQLite file, and a raw ASGI driver for requests no HTTP client sends:
bodies in arbitrary chunks with no Content-Length, clients that vanish mid-body, any method,
any header bytes."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from plivohook.app import PlivohookApp, create_app
from plivohook.config import Settings

TOKEN = "fuzz-auth-token-1234567890"
MAIN_TOKEN = "fuzz-main-token-0987654321"
ADMIN = "fuzz-admin-token-abcdefghij"
BASE = "http://testserver"
SECRETS = (TOKEN, MAIN_TOKEN, ADMIN)
# What a leaked stack trace looks like in a body.
_TRACE = re.compile(rb'Traceback \(most recent call last\)|File "[^"]+", line \d+')


@dataclass
class Fuzzed:
    """An app on a real SQLite file and a client whose event loop runs it."""

    app: PlivohookApp
    client: TestClient

    def counts(self) -> dict[str, int]:
        return self.client.portal.call(self.app.store.counts)

    def raw(
        self,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        chunks: list[bytes] | None = None,
        disconnect: bool = False,
        raw_path: bytes | None = None,
    ) -> Answer:
        return self.client.portal.call(
            asgi_call,
            self.app,
            method,
            path,
            query,
            headers or [],
            chunks or [],
            disconnect,
            raw_path,
        )


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


async def asgi_call(
    app: Any,
    method: str,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    disconnect: bool,
    raw_path: bytes | None,
) -> Answer:
    """One HTTP request straight into the ASGI app. ``chunks`` arrive as separate messages (the
    last with ``more_body=False``), or, with ``disconnect``, followed by ``http.disconnect``."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    pending = list(chunks) or [b""]
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done or (disconnect and not pending):
            done = True
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        more = bool(pending) or disconnect
        if not more:
            done = True
        return {"type": "http.request", "body": chunk, "more_body": more}

    status = 0
    out_headers: list[tuple[bytes, bytes]] = []
    body = bytearray()

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return Answer(status, out_headers, bytes(body))


@contextlib.contextmanager
def fuzzed_app(database: str | Path, **settings: Any) -> Iterator[Fuzzed]:
    """``database``: a URL, or a directory to hold a fresh SQLite file."""
    url = database if isinstance(database, str) else f"sqlite:///{database}/fuzz.db"
    options: dict[str, Any] = {
        "auth_tokens": (TOKEN,),
        "main_auth_tokens": (MAIN_TOKEN,),
        "admin_token": ADMIN,
    }
    options.update(settings)
    app = create_app(Settings(database_url=url, **options))
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield Fuzzed(app, client)


def assert_clean(status: int, body: bytes, *, method: str = "GET") -> None:
    """Never a 500, never a stack trace, never a secret; every refusal says why."""
    assert status != 500 and status < 600, (status, body[:300])
    assert not _TRACE.search(body), body[:500]
    for secret in SECRETS:
        assert secret.encode() not in body, "a token was echoed in a response"
    if 400 <= status < 500 and method != "HEAD":
        assert body.strip(), f"{status} without a reason"
