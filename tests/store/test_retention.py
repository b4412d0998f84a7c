"""Retention on SQLite and PostgreSQL: what is kept, what goes, in small batches."""

from __future__ import annotations

from datetime import timedelta

from plivohook.store.base import Store

from . import at, message, nonce, rejection, run, status


def test_old_messages_reports_and_rejections_go_and_the_rest_stays(store: Store) -> None:
    async def body(s: Store) -> None:
        for i in range(7):  # days 0..6
            await s.write(message(f"m{i}", received_at=at(i * 86400)))
            await s.write(status(f"r{i}", "delivered", sequence=1, received_at=at(i * 86400)))
            await s.write(rejection(body=f"x={i}".encode(), received_at=at(i * 86400)))
        removed = await s.prune_messages(at(3 * 86400))  # older than day 3 goes
        assert removed == {"messages": 3, "statuses": 3, "rejections": 3}
        page = await s.list_messages(limit=50)
        assert sorted(m["message_uuid"] for m in page.items) == ["m3", "m4", "m5", "m6"]
        assert await s.get_statuses("r2") == []
        assert [r["status"] for r in await s.get_statuses("r3")] == ["delivered"]
        assert len((await s.list_rejections(limit=50)).items) == 4
        # Again: nothing more is old, and a round that finds nothing is cheap and harmless.
        assert await s.prune_messages(at(3 * 86400)) == {
            "messages": 0,
            "statuses": 0,
            "rejections": 0,
        }

    run(store, body)


def test_pruning_goes_in_batches_and_stops_at_the_first_new_row(store: Store) -> None:
    async def body(s: Store) -> None:
        for i in range(25):
            await s.write(message(f"b{i}", received_at=at(i)))
        # A late arrival with an old timestamp after a new one: ids, not times, order the
        # rounds, so it waits for the next round rather than making this one scan the table.
        removed = await s.prune_table("messages", at(20), batch=4)  # type: ignore[attr-defined]
        assert removed == 20
        left = sorted(m["message_uuid"] for m in (await s.list_messages(limit=50)).items)
        assert left == [f"b{i}" for i in range(20, 25)]

    run(store, body)


def test_everything_old_goes_but_the_newest_rejection(store: Store) -> None:
    async def body(s: Store) -> None:
        for i in range(3):
            await s.write(rejection(body=f"y={i}".encode(), received_at=at(i)))
        assert await s.prune_rejections(at(10)) == 2
        assert len((await s.list_rejections()).items) == 1

    run(store, body)


def test_nonces_are_pruned_in_batches(store: Store) -> None:
    async def body(s: Store) -> None:
        from plivohook.store import retention

        for i in range(retention.BATCH + 7):
            claim = nonce(f"n{i}", f"f{i}")
            await s.write(message(f"u{i}", received_at=at(i), claim=claim))
        late = nonce("late", "late")
        await s.write(message("late", received_at=at(10**6), claim=late))
        removed = await s.prune_nonces(at(10**5))
        assert removed == retention.BATCH + 7
        assert (await s.counts())["nonces"] == 1

    run(store, body)


def test_retention_keeps_what_is_young(store: Store) -> None:
    async def body(s: Store) -> None:
        await s.write(message("young", received_at=at(0)))
        assert await s.prune_messages(at(0) - timedelta(days=1)) == {
            "messages": 0,
            "statuses": 0,
            "rejections": 0,
        }
        assert await s.get_message("young") is not None

    run(store, body)
