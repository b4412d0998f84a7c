"""Slow and broken clients beside normal traffic.

Twenty slow sockets stay open at once: connections that never send a byte, slowloris headers
trickled one byte every half second, and bodies trickled the same way after complete headers.
Meanwhile clients disconnect in the middle of their body, and 200 normal signed requests must
all be answered 200, promptly. Then every slow socket must be closed by the server's own timeouts
within ``SLOW_DEADLINE`` seconds of opening, however steadily it trickles: only an absolute
deadline for the headers and for the body defeats slowloris, an idle timeout that each byte
resets does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from plivohook.protocol.simulator import signed_request
from tests.faults.harness import TOKEN, CheckedServer, message_params, stored_messages

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLOW_DEADLINE = 20.0  # seconds from connect by which the server must have closed a slow socket
TRICKLE = 0.5  # seconds between two bytes of a slow client
NORMAL_REQUESTS = 200
NORMAL_LATENCY = 2.0  # seconds: the slowest acceptable answer to a normal request
SLOW = {"idle": 4, "headers": 8, "body": 8}
DISCONNECTS = 20


@dataclass
class SlowSocket:
    kind: str
    opened: float = 0.0
    closed_after: float | None = None
    received: bytes = b""
    sent: int = 0


@dataclass
class Scenario:
    slow: list[SlowSocket] = field(default_factory=list)
    normal: list[tuple[int | str, float]] = field(default_factory=list)  # (status, seconds)
    disconnect_uuids: list[str] = field(default_factory=list)
    server_alive_after: int | str | None = None
    crashes: list[str] = field(default_factory=list)
    stored: set[str] = field(default_factory=set)
    normal_uuids: set[str] = field(default_factory=set)


def _form_request(port: int, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /plivo/message HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n%s\r\n" % (port, len(body), extra)
    )


async def _slow_client(port: int, kind: str) -> SlowSocket:
    sock = SlowSocket(kind)
    body = b"x" * 2000
    if kind == "idle":
        prefix, trickle = b"", b""
    elif kind == "headers":
        prefix, trickle = b"", _form_request(port, body, b"X-Slow: " + b"a" * 1000 + b"\r\n")
    else:
        prefix, trickle = _form_request(port, body), body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock.opened = time.monotonic()
    try:
        writer.write(prefix)
        await writer.drain()
        while time.monotonic() - sock.opened < SLOW_DEADLINE + 1:
            if sock.sent < len(trickle):
                writer.write(trickle[sock.sent : sock.sent + 1])
                sock.sent += 1
                await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(4096), TRICKLE)
            except TimeoutError:
                continue
            if not data:
                sock.closed_after = time.monotonic() - sock.opened
                break
            sock.received += data
    except OSError:
        sock.closed_after = time.monotonic() - sock.opened
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return sock


async def _disconnect_mid_body(port: int, endpoint: str) -> str:
    uid = str(uuid.uuid4())
    _, headers, body = signed_request(endpoint, message_params(uid, "cut"), TOKEN, ("v2",))
    assert body is not None
    head = _form_request(port, body, b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()))
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()  # RST, mid-body
    return uid


async def _normal(endpoint: str, scenario: Scenario) -> None:
    sem = asyncio.Semaphore(10)
    async with httpx.AsyncClient() as client:

        async def one(i: int) -> None:
            uid = str(uuid.uuid4())
            scenario.normal_uuids.add(uid)
            full, headers, body = signed_request(
                endpoint, message_params(uid, f"normal {i}"), TOKEN, ("v2", "v3")
            )
            async with sem:
                started = time.monotonic()
                try:
                    response = await client.post(full, content=body, headers=headers, timeout=10)
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                scenario.normal.append((status, time.monotonic() - started))

        await asyncio.gather(*(one(i) for i in range(NORMAL_REQUESTS)))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, reliability) -> Scenario:
    url = f"sqlite:///{tmp_path_factory.mktemp('slow')}/slow.db"
    server = CheckedServer(url).start()
    endpoint = server.url + "/plivo/message"
    result = Scenario()

    async def run() -> None:
        slow = [
            asyncio.create_task(_slow_client(server.port, kind))
            for kind, n in SLOW.items()
            for _ in range(n)
        ]
        reliability.fault("slow_socket", len(slow))
        await asyncio.sleep(1.5)  # every slow socket is open and trickling
        normal = asyncio.create_task(_normal(endpoint, result))
        for _ in range(DISCONNECTS):
            result.disconnect_uuids.append(await _disconnect_mid_body(server.port, endpoint))
            await asyncio.sleep(0.02)
        reliability.fault("client_disconnect", DISCONNECTS)
        await normal
        result.slow = await asyncio.gather(*slow)

    try:
        asyncio.run(run())
        result.server_alive_after = httpx.get(server.url + "/healthz", timeout=5).status_code
        time.sleep(0.5)
        result.crashes = server.crashes()
        result.stored = {uid for uid, _ in stored_messages(url)}
    finally:
        server.stop()
    sent = NORMAL_REQUESTS + DISCONNECTS + len(result.slow)
    oks = [status for status, _ in result.normal if status == 200]
    reliability.traffic(sent=sent, ok=len(oks))
    acked = result.normal_uuids if len(oks) == NORMAL_REQUESTS else set()
    reliability.outcome(len(acked), len(acked & result.stored), len(acked - result.stored))
    for sock in result.slow:
        print(f"{sock.kind}: closed after {sock.closed_after}, {sock.sent} bytes sent, "
              f"got {sock.received[:40]!r}")  # fmt: skip
    return result


def test_normal_requests_are_answered_promptly_beside_slow_clients(scenario):
    statuses = {status for status, _ in scenario.normal}
    slowest = max(seconds for _, seconds in scenario.normal)
    print(f"{len(scenario.normal)} normal requests: {statuses}, slowest {slowest:.3f}s")
    assert len(scenario.normal) == NORMAL_REQUESTS
    assert statuses == {200}
    assert slowest < NORMAL_LATENCY, f"a normal request waited {slowest:.2f}s"
    assert scenario.normal_uuids <= scenario.stored


def test_clients_that_disconnect_mid_body_leave_no_trace(scenario):
    assert scenario.server_alive_after == 200
    assert scenario.crashes == []
    assert not set(scenario.disconnect_uuids) & scenario.stored, "a half-sent message was stored"


def _open_too_long(scenario: Scenario, kinds: set[str]) -> list[SlowSocket]:
    return [
        sock
        for sock in scenario.slow
        if sock.kind in kinds and (sock.closed_after is None or sock.closed_after > SLOW_DEADLINE)
    ]


@pytest.mark.parametrize("kind", ["idle", "headers"])
def test_slow_or_missing_headers_are_cut_off(scenario, kind):
    left = _open_too_long(scenario, {kind})
    assert not left, f"{len(left)} {kind} sockets still open after {SLOW_DEADLINE:.0f}s"


def test_trickled_bodies_are_cut_off(scenario):
    left = _open_too_long(scenario, {"body"})
    assert not left, f"{len(left)} trickling bodies still open after {SLOW_DEADLINE:.0f}s"
    for sock in scenario.slow:
        if sock.kind == "body" and sock.received:
            assert not sock.received.startswith(b"HTTP/1.1 200"), sock.received[:80]
