"""Forwarding end to end: `plivohook serve` (and `plivohook forward`) in subprocesses, a real
receiving app verifying with standardwebhooks, real databases, the real NATS JetStream.

What is checked is what issue 15 promises: every event stored arrives (at least once, by id),
through a SIGKILL of the server in the middle of deliveries, and two `forward` processes on one
PostgreSQL never deliver one event at the same time, one killed mid-claim leaving nothing stuck
past its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from plivohook.forward.event import MESSAGE_RECEIVED, event_id
from plivohook.protocol.simulator import signed_request
from tests.backends import database_url, fresh_postgres_database
from tests.e2e.conftest import ADMIN, PLIVOHOOK, TOKEN
from tests.forward.receiver import SECRET, Receiver, Served, free_port

FORWARD = ("--forward-secret", SECRET, "--forward-timeout", "2", "--forward-lease", "4")


def send_messages(
    base: str, count: int, senders: int = 7, uuids: list[str] | None = None
) -> list[str]:
    """``count`` signed messages (or these again), a few conversations; their MessageUUIDs."""
    uuids = uuids or [str(uuid.uuid4()) for _ in range(count)]
    with httpx.Client(timeout=10) as client:
        for n, uid in enumerate(uuids):
            params = [
                ("From", f"1415555{n % senders:04d}"),
                ("To", "14155550199"),
                ("Type", "sms"),
                ("Text", f"#{n}"),
                ("MessageUUID", uid),
            ]
            url, headers, body = signed_request(f"{base}/plivo/message", params, TOKEN)
            answer = client.post(url, content=body, headers=headers)
            assert answer.status_code == 200, answer.text
    return uuids


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def api(base: str, path: str) -> dict:
    answer = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_serve_sigkilled_mid_delivery_still_delivers_every_event(server_factory, tmp_path, backend):
    state = Receiver(busy_seconds=0.1)
    port = free_port()
    served = Served(state.app(), port)
    try:
        with database_url(backend, tmp_path) as db:
            server = server_factory(
                db, "--forward-url", f"http://127.0.0.1:{port}/busy", *FORWARD
            ).start()
            uuids = send_messages(server.url, 60)
            send_messages(server.url, 10, uuids=uuids[:10])  # duplicates: no second event
            wanted = {event_id(MESSAGE_RECEIVED, u) for u in uuids}
            wait_for(lambda: len(state.seen) >= 5, 30, "the first deliveries")
            server.kill()  # mid-delivery: some events are leased, some in flight
            assert len({r.event_id for r in state.received}) < len(wanted)
            server.start()
            wait_for(lambda: wanted <= {r.event_id for r in state.received}, 60, "every event")
            assert state.forged == 0
            wait_for(
                lambda: api(server.url, "/healthz")["outbox"]["pending"] == 0, 30, "an empty outbox"
            )
            delivered = api(server.url, "/api/deliveries?state=delivered&limit=500")["deliveries"]
            assert {d["event_id"] for d in delivered} == wanted
            assert all(d["attempts"] >= 1 and d["last_status_code"] == 200 for d in delivered)
            server.stop()
    finally:
        served.stop()
    # Delivered at least once: a duplicate is told apart by its id, never a lost one.
    assert {r.event_id for r in state.received} == wanted


class Forwarder:
    """One `plivohook forward` process."""

    def __init__(self, database: str, url: str):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [PLIVOHOOK, "forward", "--database", database, "--forward-url", url, *FORWARD],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def test_two_forward_processes_on_postgres_never_deliver_one_event_at_once(server_factory):
    state = Receiver(busy_seconds=0.05)
    port = free_port()
    served = Served(state.app(), port)
    hook = f"http://127.0.0.1:{port}/busy"
    forwarders: list[Forwarder] = []
    try:
        with fresh_postgres_database() as db:
            server = server_factory(db, "--forward-url", hook, *FORWARD, "--no-forward-worker")
            server.start()
            uuids = send_messages(server.url, 150, senders=30)
            wanted = {event_id(MESSAGE_RECEIVED, u) for u in uuids}
            assert state.received == []  # serve only stores
            forwarders = [Forwarder(db, hook), Forwarder(db, hook)]
            wait_for(lambda: len(state.seen) >= 20, 30, "the first deliveries")
            forwarders[0].kill()  # mid-claim: its leased rows wait for the lease, no longer
            killed_at = time.monotonic()
            wait_for(lambda: wanted <= {r.event_id for r in state.received}, 60, "every event")
            # The lease is 4 s: what the killed one held was taken over soon after it.
            assert time.monotonic() - killed_at < 40
            health = api(server.url, "/healthz")["outbox"]
            wait_for(
                lambda: api(server.url, "/healthz")["outbox"]["pending"] == 0, 20, "empty outbox"
            )
            assert health["dead"] == 0
            for forwarder in forwarders:
                forwarder.stop()
            server.stop()
    finally:
        for forwarder in forwarders:
            forwarder.kill()
        served.stop()
    assert state.overlaps == 0, "an event was delivered by both at the same time"
    assert state.forged == 0


def test_jetstream_gets_every_event_once_per_id(server_factory, tmp_path):
    nats = pytest.importorskip("nats")
    tag = uuid.uuid4().hex[:10]
    stream, subject = f"PLIVOHOOK_E2E_{tag}", f"plivohook_e2e_{tag}"

    async def stored() -> list[str]:
        nc = await nats.connect(
            "nats://127.0.0.1:4222", connect_timeout=3, max_reconnect_attempts=0
        )
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            ids = []
            for seq in range(1, info.state.last_seq + 1):
                message = await js.get_msg(stream, seq)
                ids.append(message.headers["Nats-Msg-Id"])
            return ids
        finally:
            await nc.close()

    async def delete() -> None:
        nc = await nats.connect(
            "nats://127.0.0.1:4222", connect_timeout=3, max_reconnect_attempts=0
        )
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    try:
        with database_url("sqlite", tmp_path) as db:
            server = server_factory(
                db,
                "--nats-url",
                "nats://127.0.0.1:4222",
                "--nats-stream",
                stream,
                "--nats-subject",
                subject,
            ).start()
            uuids = send_messages(server.url, 40)
            send_messages(server.url, 5, uuids=uuids[:5])  # Plivo delivers again: no new event
            wanted = sorted(event_id(MESSAGE_RECEIVED, u) for u in uuids)

            def all_there() -> bool:
                try:
                    return len(asyncio.run(stored())) >= len(wanted)
                except Exception:
                    return False

            wait_for(all_there, 30, "every event in the stream")
            time.sleep(1)  # a second event, if any, would have come by now
            assert sorted(asyncio.run(stored())) == wanted
            server.stop()
    finally:
        with contextlib.suppress(Exception):  # never created, if the server failed first
            asyncio.run(delete())
