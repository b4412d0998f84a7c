"""Issue 11's store changes, on SQLite and PostgreSQL: two nonce claims per operation, the count
of conflicting duplicates, and the retention of rejections."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from plivohook.store.base import Outcome, Store

from . import at, message, nonce, rejection, run

STORED, DUPLICATE, RETRY, REPLAY = Outcome.STORED, Outcome.DUPLICATE, Outcome.RETRY, Outcome.REPLAY


def test_a_duplicate_with_another_text_is_flagged_and_counted(store: Store) -> None:
    async def body(s: Store) -> None:
        first = await s.write(message("m1", text="hello", reply="<A/>"))
        assert first.outcome is STORED and not first.conflicting
        same = await s.write(message("m1", text="hello", reply="<B/>"))
        assert same.outcome is DUPLICATE and not same.conflicting
        other = await s.write(message("m1", text="send money", reply="<B/>"))
        assert (other.outcome, other.reply, other.conflicting) == (DUPLICATE, "<A/>", True)
        await s.write(message("m1", text="again other"))
        got = await s.get_message("m1")
        assert got is not None
        assert got["text"] == "hello"
        assert got["conflicting_duplicates"] == 2
        # In one batch: the first wins, the second clashes with it.
        a, b = await asyncio.gather(
            s.write(message("m2", text="a")), s.write(message("m2", text="b"))
        )
        assert (a.outcome, a.conflicting, b.outcome, b.conflicting) == (
            STORED,
            False,
            DUPLICATE,
            True,
        )
        page = await s.list_messages()
        assert {m["message_uuid"]: m["conflicting_duplicates"] for m in page.items} == {
            "m1": 2,
            "m2": 1,
        }

    run(store, body)


def test_both_nonces_of_an_operation_are_claimed(store: Store) -> None:
    v2, v3 = nonce("n2", "fp-1", "v2"), nonce("n3", "fp-1", "v3")

    async def body(s: Store) -> None:
        op = replace(rejection(b"To1=4155550199"), nonce=v2, extra_nonce=v3)
        assert (await s.write(op)).outcome is STORED
        # The same request again (a retry), or with only one of its nonces: not kept twice.
        assert (await s.write(op)).outcome is RETRY
        only_v3 = replace(op, nonce=v3, extra_nonce=None)
        assert (await s.write(only_v3)).outcome is RETRY
        fresh_v2 = replace(op, nonce=nonce("random", "fp-1", "v2"))
        assert (await s.write(fresh_v2)).outcome is RETRY
        # Another request under the V3 nonce: a replay, whatever the other nonce.
        other = replace(rejection(b"To=14155550199"), nonce=nonce("new", "fp-2", "v2"))
        other = replace(other, extra_nonce=nonce("n3", "fp-2", "v3"))
        assert (await s.write(other)).outcome is REPLAY
        counts = await s.counts()
        assert counts["rejections"] == 1
        m = replace(message("m9"), nonce=nonce("n9", "fp-9", "v2"))
        m = replace(m, extra_nonce=nonce("n3", "fp-9", "v3"))
        assert (await s.write(m)).outcome is REPLAY
        assert await s.get_message("m9") is None

    run(store, body)


def test_rejections_are_pruned_but_the_newest_stays(store: Store) -> None:
    async def body(s: Store) -> None:
        for second in (0, 10, 20):
            await s.write(rejection(f"n={second}".encode(), received_at=at(second)))
        assert await s.prune_rejections(at(15)) == 2
        left = (await s.list_rejections()).items
        assert [r["body"] for r in left] == ["n=20"]
        assert await s.prune_rejections(at(3600)) == 0  # the newest row keeps ids growing
        await s.write(rejection(b"n=30", received_at=at(30)))
        ids = [r["id"] for r in (await s.list_rejections()).items]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 2

    run(store, body)
