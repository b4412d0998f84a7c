"""The outbox on both backends: rows written with new records only, claims in conversation order,
leases, the worker's updates, the API's reads and retries (forward/outbox.py's contract)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson

from plivohook.forward.enqueue import Enqueuer
from plivohook.forward.event import MESSAGE_RECEIVED, MESSAGE_STATUS
from plivohook.store.base import Outcome, Store
from plivohook.web.api import message_json, status_json

from . import SENDER, arun, at, message, nonce, run, status
from .conftest import StoreFactory

HOOK, OTHER = "http://127.0.0.1:9/hook", "nats:PLIVOHOOK/plivohook"
enqueue = Enqueuer([HOOK, OTHER])
LEASE = 30.0


def queued(op: Any) -> Any:
    return enqueue(op)


async def rows(store: Any, **filters: Any) -> list[dict[str, Any]]:
    page = await store.list_deliveries(limit=500, **filters)
    return list(reversed(page.items))  # oldest first


def test_new_records_get_one_row_per_destination_and_duplicates_none(store: Store) -> None:
    async def body(s: Any) -> None:
        first = queued(message("m1", claim=nonce("n1", "fp1")))
        assert (await s.write(first)).outcome is Outcome.STORED
        # The same delivery again (a retry under its nonce), another delivery of the same
        # MessageUUID, and a replay of the nonce with other content: no second event.
        assert (await s.write(first)).outcome is Outcome.RETRY
        assert (await s.write(queued(message("m1")))).outcome is Outcome.DUPLICATE
        replay = queued(message("m2", claim=nonce("n1", "other")))
        assert (await s.write(replay)).outcome is Outcome.REPLAY
        report = queued(status("out-1", "delivered", reply_to="m1"))
        assert (await s.write(report)).outcome is Outcome.STORED
        assert (await s.write(report)).outcome is Outcome.DUPLICATE
        # A write without events (forwarding off) makes no row.
        assert (await s.write(message("m3"))).outcome is Outcome.STORED
        found = await rows(s)
        assert [(r["event_type"], r["destination"], r["message_uuid"]) for r in found] == [
            (MESSAGE_RECEIVED, HOOK, "m1"),
            (MESSAGE_RECEIVED, OTHER, "m1"),
            (MESSAGE_STATUS, HOOK, "out-1"),
            (MESSAGE_STATUS, OTHER, "out-1"),
        ]
        assert all(r["state"] == "pending" and r["attempts"] == 0 for r in found)
        assert found[0]["event_id"] == found[1]["event_id"] == first.events[0].id
        stats = await s.outbox_stats()
        assert stats["pending"] == 4 and stats["dead"] == 0
        assert stats["oldest_pending"] == first.received_at

    run(store, body)


def test_one_batch_keeps_the_first_and_the_order(store: Store) -> None:
    async def body(s: Any) -> None:
        ops = [queued(message(f"b{i}", received_at=at(i))) for i in range(20)]
        ops.append(queued(message("b3", text="again")))  # a duplicate in the same batch
        results = await asyncio.gather(*(s.write(op) for op in ops))
        assert [r.outcome for r in results].count(Outcome.STORED) == 20
        found = await rows(s, destination=HOOK)
        assert [r["message_uuid"] for r in found] == [f"b{i}" for i in range(20)]

    run(store, body)


def test_the_event_is_what_the_api_shows(store: Store) -> None:
    async def body(s: Any) -> None:
        op = queued(
            message(
                "m\x00nul",
                text="caf\u00e9 \x00 \udcff",
                media=[{"url": "https://x/1.jpg", "content_type": "image/jpeg"}],
            )
        )
        await s.write(op)
        report = queued(status("out-9", "failed", error_code="30", sequence=2, parent="p"))
        await s.write(report)
        [claimed, claimed_report] = await s.claim_due(HOOK, 10, LEASE, at(1))
        event = orjson.loads(claimed.payload)
        assert claimed.payload == op.events[0].payload  # the bytes signed, kept as they were
        shown = orjson.loads(
            orjson.dumps(message_json(await s.get_message("m\x00nul")), default=str)
        )
        assert event["type"] == MESSAGE_RECEIVED
        assert event["data"]["received_at"] == "2024-05-01T12:00:00.000000Z"
        shown["received_at"] = event["data"]["received_at"]
        assert event["data"] == shown
        history = await s.get_statuses("out-9")
        entry = orjson.loads(orjson.dumps(status_json(history[0]), default=str))
        data = orjson.loads(claimed_report.payload)["data"]
        entry["received_at"] = data["received_at"]
        assert data == entry

    run(store, body)


def test_claims_follow_each_conversation_in_stored_order(store: Store) -> None:
    async def body(s: Any) -> None:
        a = [queued(message(f"a{i}", from_number="1555000001")) for i in range(3)]
        b = [queued(message(f"b{i}", from_number="1555000002")) for i in range(2)]
        for op in (a[0], b[0], a[1], a[2], b[1]):
            await s.write(op)
        claimed = await s.claim_due(HOOK, 10, LEASE, at(1))
        assert [r.event_id for r in claimed] == [
            op.events[0].id for op in (a[0], b[0], a[1], a[2], b[1])
        ]
        assert await s.claim_due(HOOK, 10, LEASE, at(2)) == []  # all leased
        by_id = {r.event_id: r for r in claimed}
        head_a = by_id[a[0].events[0].id]
        # a0 fails: its conversation waits for it; b goes on.
        await s.mark_failed(
            head_a.id, now=at(2), next_attempt_at=at(60), status_code=500, error="HTTP 500"
        )
        await s.release([by_id[a[1].events[0].id].id, by_id[a[2].events[0].id].id])
        await s.mark_delivered(by_id[b[0].events[0].id].id, now=at(2), status_code=204)
        await s.release([by_id[b[1].events[0].id].id])
        again = await s.claim_due(HOOK, 10, LEASE, at(3))
        assert [r.event_id for r in again] == [b[1].events[0].id]
        await s.mark_delivered(again[0].id, now=at(3), status_code=204)
        # Due again: a0 first, then the rest of its conversation, attempts counted.
        later = await s.claim_due(HOOK, 10, LEASE, at(61))
        assert [r.event_id for r in later] == [op.events[0].id for op in a]
        assert later[0].attempts == 1 and later[1].attempts == 0
        # A limit keeps the head of the run, never a later row without it.
        await s.release([r.id for r in later])
        assert [r.event_id for r in await s.claim_due(HOOK, 1, LEASE, at(62))] == [
            a[0].events[0].id
        ]
        # The other destination is untouched by all this.
        assert len(await s.claim_due(OTHER, 10, LEASE, at(62))) == 5

    run(store, body)


def test_dead_rows_do_not_hold_a_conversation_and_can_be_retried(store: Store) -> None:
    async def body(s: Any) -> None:
        ops = [queued(message(f"d{i}")) for i in range(3)]
        for op in ops:
            await s.write(op)
        [head, *_rest] = await s.claim_due(HOOK, 1, LEASE, at(1))
        await s.mark_dead(head.id, now=at(2), status_code=None, error="connection refused")
        nxt = await s.claim_due(HOOK, 10, LEASE, at(3))
        assert [r.event_id for r in nxt] == [ops[1].events[0].id, ops[2].events[0].id]
        for row in nxt:
            await s.mark_delivered(row.id, now=at(4), status_code=200)
        dead = await rows(s, state="dead")
        assert [(d["id"], d["attempts"], d["last_error"]) for d in dead] == [
            (head.id, 1, "connection refused")
        ]
        assert dead[0]["next_attempt_at"] is None
        delivered = await rows(s, state="delivered", destination=HOOK)
        assert [d["last_status_code"] for d in delivered] == [200, 200]
        assert delivered[0]["delivered_at"] == at(4)
        assert await s.retry_delivery(delivered[0]["id"], at(5)) is False  # delivered: final
        assert await s.retry_delivery(10**12, at(5)) is False
        assert await s.retry_delivery(head.id, at(5)) is True
        retried = await s.get_delivery(head.id)
        assert retried["state"] == "pending" and retried["next_attempt_at"] == at(5)
        assert [r.id for r in await s.claim_due(HOOK, 10, LEASE, at(5))] == [head.id]
        await s.mark_dead(head.id, now=at(6), status_code=503, error="HTTP 503")
        assert await s.retry_dead(at(7)) == 1
        assert (await s.outbox_stats())["dead"] == 0
        assert len(await rows(s, message_uuid="d0")) == 2  # both destinations

    run(store, body)


def test_a_lease_that_expires_is_taken_over(make_store: StoreFactory) -> None:
    """A worker that died (its store never closed) leaves its rows to another after the lease."""

    async def body() -> None:
        dead, alive = make_store(), make_store()
        await dead.open()
        await alive.open()
        try:
            for i in range(3):
                await dead.write(queued(message(f"l{i}", from_number=f"1555{i}")))
            taken = await dead.claim_due(HOOK, 10, LEASE, at(1))
            assert len(taken) == 3
            assert await alive.claim_due(HOOK, 10, LEASE, at(1 + LEASE - 1)) == []
            after = await alive.claim_due(HOOK, 10, LEASE, at(1 + LEASE + 1))
            assert sorted(r.id for r in after) == sorted(r.id for r in taken)
            # The first worker, back, finds them leased by the second.
            assert await dead.claim_due(HOOK, 10, LEASE, at(1 + LEASE + 2)) == []
        finally:
            await alive.close()
            await dead.close()

    arun(body())


def test_concurrent_claims_never_share_a_row(make_store: StoreFactory) -> None:
    """Four workers at once: every row claimed by exactly one (SQLite: by the lease holder)."""

    async def body() -> None:
        stores = [make_store() for _ in range(4)]
        for s in stores:
            await s.open()
        try:
            writes = [queued(message(f"c{i}", from_number=f"1666{i % 40}")) for i in range(200)]
            await asyncio.gather(*(stores[0].write(op) for op in writes))
            seen: dict[int, int] = {}

            async def worker(index: int, s: Any) -> None:
                for step in range(30):
                    for row in await s.claim_due(HOOK, 16, LEASE, at(1 + step * 0.01)):
                        assert row.id not in seen, "claimed twice"
                        seen[row.id] = index
                        await s.mark_delivered(row.id, now=at(2), status_code=204)

            await asyncio.gather(*(worker(i, s) for i, s in enumerate(stores)))
            # SQLite delivers all 200 through the one lease holder; PostgreSQL through any.
            left = await stores[0].claim_due(HOOK, 500, LEASE, at(5))
            assert len(seen) + len(left) == 200
        finally:
            for s in stores:
                await s.close()

    arun(body())


def test_a_closed_sqlite_worker_hands_over_at_once(make_store: StoreFactory) -> None:
    async def body() -> None:
        first, second = make_store(), make_store()
        await first.open()
        await second.open()
        try:
            await first.write(queued(message("h1")))
            await first.write(queued(message("h2", from_number="1777")))
            claimed = await first.claim_due(HOOK, 1, LEASE, at(1))
            await first.mark_delivered(claimed[0].id, now=at(1), status_code=200)
            await first.release_outbox_lease()
            # No wait for a lease: the first one gave it up (PostgreSQL never had a file lease).
            assert len(await second.claim_due(HOOK, 10, LEASE, at(2))) == 1
        finally:
            await second.close()
            await first.close()

    arun(body())


def test_enqueued_writes_keep_their_other_fields(store: Store) -> None:
    op = message("x1")
    assert dataclasses.replace(queued(op), events=()) == op
    assert queued(op).events[0].destinations == (HOOK, OTHER)
    assert SENDER in orjson.loads(queued(op).events[0].payload)["data"]["from"]


def test_stats_age_and_pages(store: Store) -> None:
    async def body(s: Any) -> None:
        for i in range(5):
            await s.write(queued(message(f"p{i}", received_at=at(i))))
        page = await s.list_deliveries(limit=3, destination=HOOK)
        assert [d["message_uuid"] for d in page.items] == ["p4", "p3", "p2"]
        rest = await s.list_deliveries(limit=3, destination=HOOK, cursor=page.next_cursor)
        assert [d["message_uuid"] for d in rest.items] == ["p1", "p0"] and not rest.next_cursor
        assert (await s.outbox_stats())["oldest_pending"] == at(0)
        assert (await s.list_deliveries(state="pending", destination="nowhere")).items == []
        assert len((await s.list_deliveries(state="pending")).items) == 10

    run(store, body)
