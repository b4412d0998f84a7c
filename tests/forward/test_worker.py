"""The worker with real HttpDeliverers and a real receiving app, over an in-memory outbox.

The clock is the test's: it jumps forward between rounds, so days of retries take no real time
and nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from plivohook.forward.event import message_event
from plivohook.forward.http import HttpDeliverer
from plivohook.forward.retry import RetryPolicy
from plivohook.forward.worker import Worker

from .memory_outbox import MemoryOutbox
from .receiver import SECRET, Receiver, Served, free_port

T0 = datetime(2024, 5, 1, tzinfo=UTC)
OUR_NUMBER = "14155550199"


class Clock:
    def __init__(self, start: datetime = T0, step: timedelta = timedelta(0)):
        self.now = start
        self.step = step  # added on every reading: time passing while the worker works

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def inbound(uuid: str, sender: str, text: str = "hi") -> dict:
    return {
        "message_uuid": uuid,
        "from": sender,
        "to": OUR_NUMBER,
        "type": "sms",
        "text": text,
        "media": [],
        "params": [["From", sender], ["To", OUR_NUMBER], ["Text", text]],
        "method": "POST",
        "received_at": T0,
        "reply": None,
        "signature_scheme": "v3",
        "status": None,
    }


def fill(outbox: MemoryOutbox, destination: str, senders: int, per_sender: int) -> list:
    """Events interleaved across conversations, as they would arrive; returns them in order."""
    events = []
    for n in range(per_sender):
        for s in range(senders):
            event = message_event(inbound(f"m-{s}-{n}", f"1415555{s:04d}", f"#{n}"))
            outbox.add(event, destination, T0)
            events.append(event)
    return events


def order_by_conversation(ids: list[str], events: list) -> dict[str, list[str]]:
    conversation = {e.id: e.conversation for e in events}
    result: dict[str, list[str]] = {}
    for event_id in ids:
        result.setdefault(conversation[event_id], []).append(event_id)
    return result


async def _rounds(worker: Worker, clock: Clock, count: int, **advance: float) -> None:
    for _ in range(count):
        await worker.run_once()
        clock.advance(**advance)


def test_down_then_failing_then_healthy_every_event_arrives_in_order_and_verifies():
    port = free_port()
    destination = f"http://127.0.0.1:{port}/hook"
    outbox, clock, state = MemoryOutbox(), Clock(), Receiver()
    events = fill(outbox, destination, senders=5, per_sender=6)

    async def scenario(phase: str) -> None:
        deliverer = HttpDeliverer(destination, SECRET, timeout=5, max_in_flight=3)
        worker = Worker(outbox, {destination: deliverer}, clock=clock, rand=random.Random(1))
        try:
            if phase == "healthy":
                for _ in range(40):
                    if outbox.states() == {"delivered": len(events)}:
                        break
                    await _rounds(worker, clock, 1, hours=1)
            else:
                await _rounds(worker, clock, 3, hours=1)
        finally:
            await deliverer.aclose()

    # Down: nothing listens. Every conversation's head fails; the rest wait behind it.
    asyncio.run(scenario("down"))
    assert outbox.states() == {"pending": 30}
    heads = [e for e in outbox.entries.values() if e.row.attempts]
    assert len(heads) == 5
    assert all(e.last_error.startswith("connection failed") for e in heads)
    assert all(e.row.attempts == 3 for e in heads)

    served = Served(state.app(), port)
    try:
        state.mode = "500"
        asyncio.run(scenario("failing"))
        assert outbox.states() == {"pending": 30}
        assert {r.answered for r in state.received} == {500}
        assert all(e.last_status == 500 for e in heads)

        state.mode = "ok"
        asyncio.run(scenario("healthy"))
    finally:
        served.stop()

    assert outbox.states() == {"delivered": 30}
    assert outbox.violations == []
    assert state.forged == 0
    accepted = state.accepted()
    # Every event arrived once accepted; the receiver saw the retried ones again, by the same id.
    assert sorted(r.event_id for r in accepted) == sorted(e.id for e in events)
    assert max(state.seen.values()) >= 4
    assert {r.event_id: r.body for r in accepted} == {e.id: e.body for e in events}
    # Per conversation, in the order stored.
    got = order_by_conversation([r.event_id for r in accepted], events)
    assert got == order_by_conversation([e.id for e in events], events)


def test_a_conversation_stays_in_order_when_its_events_fail_one_by_one(receiver):
    state, base = receiver
    state.mode = "fail-first"  # every event is refused once, then accepted
    destination = f"{base}/hook"
    outbox, clock = MemoryOutbox(), Clock()
    events = fill(outbox, destination, senders=3, per_sender=5)

    async def scenario():
        deliverer = HttpDeliverer(destination, SECRET, max_in_flight=4)
        worker = Worker(outbox, {destination: deliverer}, clock=clock, rand=random.Random(2))
        try:
            for _ in range(30):
                if outbox.states() == {"delivered": 15}:
                    return
                await _rounds(worker, clock, 1, hours=1)
        finally:
            await deliverer.aclose()

    asyncio.run(scenario())
    assert outbox.states() == {"delivered": 15}
    assert outbox.violations == []
    # A later event was never sent while an earlier one of its conversation was undelivered:
    # every request the receiver got, in arrival order, keeps each conversation's order.
    sent = [r.event_id for r in state.received]
    for ids in order_by_conversation(sent, events).values():
        assert ids == sorted(ids, key=[e.id for e in events].index)
    assert all(count == 2 for count in state.seen.values())


def test_a_dead_event_stops_holding_its_conversation_back(receiver):
    state, base = receiver
    state.mode = "500"
    destination = f"{base}/hook"
    outbox, clock = MemoryOutbox(), Clock()
    events = [message_event(inbound(f"m-{n}", "14155550100", f"#{n}")) for n in range(3)]
    outbox.add(events[0], destination, T0)
    # The later two were stored two hours on: they are young when the first one dies.
    outbox.add(events[1], destination, T0 + timedelta(hours=2))
    outbox.add(events[2], destination, T0 + timedelta(hours=2))
    policy = RetryPolicy(max_age=timedelta(hours=2))

    async def rounds(count):
        deliverer = HttpDeliverer(destination, SECRET)
        worker = Worker(outbox, {destination: deliverer}, clock=clock, policy=policy)
        try:
            await _rounds(worker, clock, count, minutes=50)
        finally:
            await deliverer.aclose()

    asyncio.run(rounds(4))  # T0, +50 min, +100 min, +150 min: past the first one's two hours
    first, second, third = (outbox.entries[i] for i in (1, 2, 3))
    assert first.state == "dead"
    assert first.last_status == 500
    assert first.row.attempts == 4
    assert (second.state, second.row.attempts) == ("pending", 1)  # tried once the head died
    assert (third.state, third.row.attempts) == ("pending", 0)  # still behind the second

    state.mode = "ok"
    asyncio.run(rounds(1))
    assert [e.state for e in (first, second, third)] == ["dead", "delivered", "delivered"]
    assert [r.event_id for r in state.accepted()] == [events[1].id, events[2].id]
    assert outbox.violations == []


def test_slow_and_redirecting_destinations_cost_one_attempt_each(receiver):
    state, base = receiver
    slow, moved = f"{base}/slow", f"{base}/redirect"
    outbox, clock = MemoryOutbox(), Clock()
    fill(outbox, slow, senders=2, per_sender=1)
    fill(outbox, moved, senders=2, per_sender=1)

    async def scenario():
        deliverers = {
            slow: HttpDeliverer(slow, SECRET, timeout=0.3),
            moved: HttpDeliverer(moved, SECRET, timeout=2),
        }
        worker = Worker(outbox, deliverers, clock=clock)
        try:
            return await worker.run_once()
        finally:
            for deliverer in deliverers.values():
                await deliverer.aclose()

    assert asyncio.run(scenario()) == 4
    by_destination = {}
    for entry in outbox.entries.values():
        by_destination.setdefault(entry.row.destination, []).append(entry)
    for entry in by_destination[slow]:
        assert (entry.state, entry.row.attempts) == ("pending", 1)
        assert entry.last_error == "no answer within 0.3 s"
        assert entry.next_attempt_at > clock.now
    for entry in by_destination[moved]:
        assert (entry.state, entry.row.attempts, entry.last_status) == ("pending", 1, 307)
    assert state.hits["hook"] == 0
    assert outbox.violations == []


def test_a_batch_that_would_outlive_its_lease_is_given_back(receiver):
    state, base = receiver
    destination = f"{base}/hook"
    outbox = MemoryOutbox()
    # Every reading of the clock moves it 4 s on: the worker's time runs out within the batch.
    clock = Clock(step=timedelta(seconds=4))
    events = fill(outbox, destination, senders=1, per_sender=8)

    async def scenario():
        deliverer = HttpDeliverer(destination, SECRET, timeout=10)
        worker = Worker(outbox, {destination: deliverer}, clock=clock, lease_seconds=30)
        try:
            first = await worker.run_once()
            after_first = [
                (e.leased_until, e.row.attempts)
                for e in outbox.entries.values()
                if e.state == "pending"
            ]
            for _ in range(20):
                if outbox.states() == {"delivered": 8}:
                    break
                await worker.run_once()
            return first, after_first
        finally:
            await deliverer.aclose()

    first, after_first = asyncio.run(scenario())
    assert 0 < first < 8  # it started only what could end within the lease ...
    assert after_first == [(None, 0)] * (8 - first)  # ... and gave the rest back untried
    assert outbox.states() == {"delivered": 8}
    assert [r.event_id for r in state.accepted()] == [e.id for e in events]
    assert outbox.violations == []


def test_requests_in_flight_stay_within_the_destination_limit(receiver):
    state, base = receiver
    destination = f"{base}/busy"
    outbox, clock = MemoryOutbox(), Clock()
    fill(outbox, destination, senders=12, per_sender=1)

    async def scenario():
        deliverer = HttpDeliverer(destination, SECRET, max_in_flight=3)
        worker = Worker(outbox, {destination: deliverer}, clock=clock, batch_size=12)
        try:
            return await worker.run_once()
        finally:
            await deliverer.aclose()

    assert asyncio.run(scenario()) == 12
    assert outbox.states() == {"delivered": 12}
    assert 1 <= state.most_in_flight <= 3


def test_run_forever_delivers_what_is_stored_and_stops_when_asked(receiver):
    state, base = receiver
    destination = f"{base}/hook"
    outbox = MemoryOutbox()
    events = fill(outbox, destination, senders=4, per_sender=3)

    async def scenario():
        deliverer = HttpDeliverer(destination, SECRET)
        worker = Worker(outbox, {destination: deliverer}, idle_seconds=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))
        try:
            async with asyncio.timeout(30):
                while outbox.states() != {"delivered": 12}:
                    await asyncio.sleep(0.02)
                # One more stored while it idles: wake() makes it look at once.
                more = message_event(inbound("m-late", "14155559999"))
                outbox.add(more, destination, datetime.now(UTC))
                worker.wake()
                while outbox.states() != {"delivered": 13}:
                    await asyncio.sleep(0.02)
            stop.set()
            async with asyncio.timeout(10):
                await task
            return more
        finally:
            task.cancel()
            await deliverer.aclose()

    more = asyncio.run(scenario())
    assert sorted(r.event_id for r in state.accepted()) == sorted(
        [*(e.id for e in events), more.id]
    )
    assert outbox.violations == []


def test_a_failing_outbox_pauses_the_loop_without_killing_it(receiver):
    _state, base = receiver
    destination = f"{base}/hook"

    class Unavailable(MemoryOutbox):
        """The real outbox, failing its first claims as a store that lost its database does."""

        failures = 2

        async def claim_due(self, *args, **kwargs):
            if self.failures:
                self.failures -= 1
                raise ConnectionError("database unreachable")
            return await super().claim_due(*args, **kwargs)

    outbox = Unavailable()
    fill(outbox, destination, senders=1, per_sender=2)

    async def scenario():
        deliverer = HttpDeliverer(destination, SECRET)
        worker = Worker(outbox, {destination: deliverer}, error_seconds=0.05, idle_seconds=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))
        try:
            async with asyncio.timeout(30):
                while outbox.states() != {"delivered": 2}:
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
            await deliverer.aclose()

    asyncio.run(scenario())
    assert outbox.failures == 0
    assert outbox.states() == {"delivered": 2}


def test_a_lease_shorter_than_an_attempt_is_refused():
    deliverer = HttpDeliverer("http://127.0.0.1:9/", SECRET, timeout=10)
    with pytest.raises(ValueError, match="lease"):
        Worker(MemoryOutbox(), {"d": deliverer}, lease_seconds=10)
    with pytest.raises(ValueError, match="at least one destination"):
        Worker(MemoryOutbox(), {})
