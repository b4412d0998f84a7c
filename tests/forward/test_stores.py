"""The worker over the real outbox of each backend, delivering to a real receiving app.

Messages and reports are written through the store with their events (as the webhooks write
them); the receiver verifies every request with ``standardwebhooks``. The worker's clock is the
test's and jumps between rounds, so hours of retries take no real time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest

from plivohook.forward.enqueue import Enqueuer
from plivohook.forward.http import HttpDeliverer
from plivohook.forward.worker import Worker
from plivohook.store import open_store
from tests.backends import BACKENDS, database_url
from tests.store import message, status

from .receiver import SECRET, Receiver, Served, free_port
from .test_worker import T0, Clock, order_by_conversation


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


def _writes(destination: str) -> list[Any]:
    enqueue = Enqueuer([destination])
    ops: list[Any] = []
    for n in range(4):
        for s in range(5):
            sender = f"1415555{s:04d}"
            ops.append(enqueue(message(f"m-{s}-{n}", from_number=sender, received_at=T0)))
            ops.append(enqueue(status(f"out-{s}-{n}", "delivered", received_at=T0)))
    return ops


def test_down_then_failing_then_healthy_every_event_arrives_once_accepted(db_url):
    port = free_port()
    destination = f"http://127.0.0.1:{port}/hook"
    ops = _writes(destination)
    events = [op.events[0] for op in ops]
    clock, state = Clock(), Receiver()

    async def phase(name: str) -> dict[str, int]:
        store: Any = open_store(db_url)
        await store.open()
        deliverer = HttpDeliverer(destination, SECRET, timeout=5, max_in_flight=4)
        worker = Worker(store, {destination: deliverer}, clock=clock, rand=random.Random(7))
        try:
            if name == "down":
                results = await asyncio.gather(*(store.write(op) for op in ops))
                assert {r.outcome.value for r in results} == {"stored"}
                # Plivo delivers some again: no second event.
                await asyncio.gather(*(store.write(op) for op in ops[:10]))
            rounds = 60 if name == "healthy" else 3
            for _ in range(rounds):
                await worker.run_once()
                clock.advance(hours=1)
                if (await store.outbox_stats())["pending"] == 0:
                    break
            stats = await store.outbox_stats()
            return {"pending": stats["pending"], "dead": stats["dead"]}
        finally:
            await deliverer.aclose()
            await store.close()

    # Down: nothing listens; every conversation's head fails, the rest wait behind it.
    assert asyncio.run(phase("down")) == {"pending": 40, "dead": 0}
    served = Served(state.app(), port)
    try:
        state.mode = "500"
        assert asyncio.run(phase("failing")) == {"pending": 40, "dead": 0}
        assert {r.answered for r in state.received} == {500}
        state.mode = "ok"
        assert asyncio.run(phase("healthy")) == {"pending": 0, "dead": 0}
    finally:
        served.stop()

    assert state.forged == 0
    accepted = state.accepted()
    assert sorted(r.event_id for r in accepted) == sorted(e.id for e in events)
    assert max(state.seen.values()) >= 2  # retried ones came again, under the same id
    assert {r.event_id: r.body for r in accepted} == {e.id: orjson.loads(e.payload) for e in events}
    got = order_by_conversation([r.event_id for r in accepted], events)
    assert got == order_by_conversation([e.id for e in events], events)


def test_a_destination_down_past_the_max_age_leaves_dead_events_that_a_retry_revives(db_url):
    port = free_port()
    destination = f"http://127.0.0.1:{port}/hook"
    ops = _writes(destination)[:4]
    clock, state = Clock(), Receiver()

    async def scenario() -> None:
        store: Any = open_store(db_url)
        await store.open()
        deliverer = HttpDeliverer(destination, SECRET, timeout=5)
        worker = Worker(store, {destination: deliverer}, clock=clock, rand=random.Random(3))
        try:
            for op in ops:
                await store.write(op)
            for _ in range(100):
                await worker.run_once()
                clock.advance(hours=2)
                if (await store.outbox_stats())["pending"] == 0:
                    break
            assert (await store.outbox_stats())["dead"] == 4
            page = await store.list_deliveries(state="dead")
            assert all(d["last_error"].startswith("connection failed") for d in page.items)
            served = Served(state.app(), port)
            try:
                assert await store.retry_dead(clock()) == 4
                for _ in range(5):
                    await worker.run_once()
                    clock.advance(seconds=1)
            finally:
                served.stop()
            stats = await store.outbox_stats()
            assert (stats["pending"], stats["dead"]) == (0, 0)
        finally:
            await deliverer.aclose()
            await store.close()

    asyncio.run(scenario())
    assert sorted(r.event_id for r in state.accepted()) == sorted(op.events[0].id for op in ops)
    assert clock.now - T0 > timedelta(days=3)
