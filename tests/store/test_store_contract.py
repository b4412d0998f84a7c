"""The behaviour every backend must have (plivohook.store.base), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest

from plivohook.store.base import (
    Outcome,
    Store,
    StoreUnavailable,
    WriteOp,
    encode_cursor,
)

from . import (
    DEFAULT_REPLY,
    OUR_NUMBER,
    SENDER,
    T0,
    arun,
    at,
    message,
    nonce,
    rejection,
    run,
    status,
)

STORED, DUPLICATE, RETRY, REPLAY = Outcome.STORED, Outcome.DUPLICATE, Outcome.RETRY, Outcome.REPLAY
ZERO = {"messages": 0, "statuses": 0, "rejections": 0, "nonces": 0}


# -- every outcome of write(), one table -------------------------------------------------------


@dataclass
class Scenario:
    name: str
    steps: list[tuple[WriteOp, Outcome, str | None]]  # operation, outcome, reply, in this order
    counts: dict[str, int]
    absent: list[str] = field(default_factory=list)  # MessageUUIDs that must not be stored


M_NONCE = nonce("nonce-m", "fp-m")
S_NONCE = nonce("nonce-s", "fp-s")
R_NONCE = nonce("nonce-r", "fp-r")

SCENARIOS = [
    Scenario(
        "message-new-then-duplicate-gets-first-reply",
        [
            (message("m1", reply="<A/>"), STORED, "<A/>"),
            (message("m1", reply="<B/>", text="other"), DUPLICATE, "<A/>"),
            (message("m1", reply=None), DUPLICATE, "<A/>"),
        ],
        {**ZERO, "messages": 1},
    ),
    Scenario(
        "message-empty-reply-is-none",
        [
            (message("m1", reply=None), STORED, None),
            (message("m1", reply="<B/>"), DUPLICATE, None),
        ],
        {**ZERO, "messages": 1},
    ),
    Scenario(
        "message-same-nonce-same-content-is-retry",
        [
            (message("m1", reply="<A/>", claim=M_NONCE), STORED, "<A/>"),
            (message("m1", reply="<A/>", claim=M_NONCE), RETRY, "<A/>"),
            (message("m1", reply="<B/>", claim=M_NONCE), RETRY, "<A/>"),
        ],
        {**ZERO, "messages": 1, "nonces": 1},
    ),
    Scenario(
        "message-same-nonce-other-content-is-replay-and-writes-nothing",
        [
            (message("m1", claim=nonce("n", "fp-1")), STORED, DEFAULT_REPLY),
            (message("m2", claim=nonce("n", "fp-2")), REPLAY, None),
            (message("m1", text="changed", claim=nonce("n", "fp-3")), REPLAY, None),
        ],
        {**ZERO, "messages": 1, "nonces": 1},
        absent=["m2"],
    ),
    Scenario(
        "message-known-uuid-under-a-new-nonce-is-duplicate",
        [
            (message("m1", reply="<A/>"), STORED, "<A/>"),
            (message("m1", reply="<B/>", claim=nonce("n", "fp")), DUPLICATE, "<A/>"),
            (message("m1", reply="<B/>", claim=nonce("n", "fp")), RETRY, "<A/>"),
        ],
        {**ZERO, "messages": 1, "nonces": 1},
    ),
    Scenario(
        "nonce-families-v2-and-v3-are-separate",
        [
            (message("m1", claim=nonce("n", "fp-1", "v2")), STORED, DEFAULT_REPLY),
            (message("m2", claim=nonce("n", "fp-2", "v3")), STORED, DEFAULT_REPLY),
        ],
        {**ZERO, "messages": 2, "nonces": 2},
    ),
    Scenario(
        "status-new-then-duplicate",
        [
            (status("o1", "delivered", sequence=2), STORED, None),
            (status("o1", "delivered", sequence=2), DUPLICATE, None),
            (status("o1", "sent", sequence=1), STORED, None),
        ],
        {**ZERO, "statuses": 2},
    ),
    Scenario(
        "status-nonce-retry-and-replay",
        [
            (status("o1", "queued", claim=S_NONCE), STORED, None),
            (status("o1", "queued", claim=S_NONCE), RETRY, None),
            (status("o1", "failed", claim=nonce("nonce-s", "other")), REPLAY, None),
            (status("o1", "queued", claim=nonce("fresh", "fp")), DUPLICATE, None),
        ],
        {**ZERO, "statuses": 1, "nonces": 2},
    ),
    Scenario(
        "rejection-kept-each-time-without-nonce",
        [
            (rejection(b"x=1"), STORED, None),
            (rejection(b"x=1"), STORED, None),
        ],
        {**ZERO, "rejections": 2},
    ),
    Scenario(
        "rejection-nonce-retry-not-kept-again-replay-refused",
        [
            (rejection(b"x=1", claim=R_NONCE), STORED, None),
            (rejection(b"x=1", claim=R_NONCE), RETRY, None),
            (rejection(b"x=2", claim=nonce("nonce-r", "other")), REPLAY, None),
        ],
        {**ZERO, "rejections": 1, "nonces": 1},
    ),
    Scenario(
        "nonce-claimed-by-one-kind-replayed-by-another",
        [
            (message("m1", claim=nonce("n", "fp-m")), STORED, DEFAULT_REPLY),
            (status("o1", "sent", claim=nonce("n", "fp-s")), REPLAY, None),
            (rejection(claim=nonce("n", "fp-r")), REPLAY, None),
        ],
        {**ZERO, "messages": 1, "nonces": 1},
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_write_outcomes(store: Store, scenario: Scenario) -> None:
    async def body(s: Store) -> None:
        for index, (op, outcome, reply) in enumerate(scenario.steps):
            result = await s.write(op)
            assert (result.outcome, result.reply) == (outcome, reply), f"step {index}"
        assert await s.counts() == scenario.counts
        for uuid in scenario.absent:
            assert await s.get_message(uuid) is None
        assert s.stats.operations == len(scenario.steps)
        assert sum(s.stats.outcomes.values()) == len(scenario.steps)

    run(store, body)


def test_same_batch_duplicates_and_replays(store: Store) -> None:
    """Operations on one key in one batch: still one winner, identical replies."""

    async def body(s: Store) -> None:
        results = await asyncio.gather(
            s.write(message("m1", reply="<A/>")),
            s.write(message("m1", reply="<B/>")),
            s.write(message("m1", reply="<C/>")),
            s.write(message("m2", claim=nonce("n", "fp-1"))),
            s.write(message("m3", claim=nonce("n", "fp-2"))),
            s.write(status("o1", "sent", sequence=1)),
            s.write(status("o1", "sent", sequence=1)),
        )
        m1 = results[:3]
        assert sorted(r.outcome.value for r in m1) == ["duplicate", "duplicate", "stored"]
        assert len({r.reply for r in m1}) == 1
        assert (await s.get_message("m1"))["reply"] == m1[0].reply
        assert sorted(r.outcome.value for r in results[3:5]) == ["replay", "stored"]
        assert sorted(r.outcome.value for r in results[5:]) == ["duplicate", "stored"]
        assert await s.counts() == {"messages": 2, "statuses": 1, "rejections": 0, "nonces": 1}

    run(store, body)


def test_group_commit_many_concurrent_writes(store: Store) -> None:
    """500 writes at once, 300 distinct messages: fewer batches than writes, each stored once."""
    distinct = 300
    ops = []
    for i in range(500):
        n = i % distinct if i < distinct else (i * 7) % distinct
        if i >= distinct and i % 2:  # a retry of the same delivery under its nonce
            claim = nonce(f"n{n}", f"fp{n}")
        else:
            claim = nonce(f"n{n}", f"fp{n}") if i < distinct and n % 2 else None
        ops.append(message(f"uuid-{n:03d}", reply=f"<R{i}/>", text=f"t{n}", claim=claim))

    async def body(s: Store) -> None:
        results = await asyncio.gather(*(s.write(op) for op in ops))
        by_uuid: dict[str, list] = {}
        for op, result in zip(ops, results, strict=True):
            by_uuid.setdefault(op.message_uuid, []).append(result)
        assert len(by_uuid) == distinct
        for uuid, got in by_uuid.items():
            assert [r.outcome for r in got].count(STORED) == 1, uuid
            assert all(r.outcome in (STORED, DUPLICATE, RETRY) for r in got), uuid
            stored = await s.get_message(uuid)
            assert stored is not None
            assert {r.reply for r in got} == {stored["reply"]}, uuid
        counts = await s.counts()
        assert counts["messages"] == distinct
        assert s.stats.operations == 500
        assert 1 <= s.stats.batches < 500
        assert s.stats.largest_batch > 1
        assert s.stats.outcomes["stored"] == distinct

    run(store, body)


# -- reads -----------------------------------------------------------------------------------


def test_message_dict(store: Store) -> None:
    media = [
        {"url": "https://media.example/1.jpg", "content_type": "image/jpeg"},
        {"url": "https://media.example/2", "content_type": None},
    ]
    params = [("From", SENDER), ("Text", "hi"), ("Text", "dup key kept"), ("Empty", "")]
    received = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    op = message(
        "m1",
        text="hi",
        type="mms",
        media=media,
        params=params,
        received_at=received,
        scheme="ma-v2",
        method="GET",
        reply="<Response/>",
    )
    expected = {
        "message_uuid": "m1",
        "from": SENDER,
        "to": OUR_NUMBER,
        "type": "mms",
        "text": "hi",
        "media": media,
        "received_at": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        "params": [list(pair) for pair in params],
        "reply": "<Response/>",
        "status": None,
        "signature_scheme": "ma-v2",
        "method": "GET",
        "conflicting_duplicates": 0,
        "reply_source": None,
        "handler_error": None,
    }

    async def body(s: Store) -> None:
        await s.write(op)
        got = await s.get_message("m1")
        assert got == expected
        assert got["received_at"].utcoffset() == timedelta(0)
        page = await s.list_messages()
        assert page.items == [expected]
        assert page.next_cursor is None
        assert await s.get_message("nope") is None

    run(store, body)


def test_list_messages_pages_newest_first(store: Store) -> None:
    async def body(s: Store) -> None:
        for i in range(7):
            await s.write(message(f"m{i}", received_at=at(i)))
        seen = []
        cursor = None
        sizes = []
        while True:
            page = await s.list_messages(limit=3, cursor=cursor)
            sizes.append(len(page.items))
            seen += [item["message_uuid"] for item in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sizes == [3, 3, 1]
        assert seen == [f"m{i}" for i in reversed(range(7))]
        exact = await s.list_messages(limit=7)
        assert len(exact.items) == 7 and exact.next_cursor is None
        first = await s.list_messages(limit=6)
        last = await s.list_messages(limit=6, cursor=first.next_cursor)
        assert [m["message_uuid"] for m in last.items] == ["m0"]
        assert last.next_cursor is None

    run(store, body)


def test_list_messages_filters(store: Store) -> None:
    rows = [
        ("a1", "111", "900", "Hello World"),
        ("a2", "222", "900", "100% sure"),
        ("a3", "111", "901", "100 percent"),
        ("a4", "111", "900", "snake_case"),
        ("a5", "222", "901", "snakeXcase"),
        ("a6", "111", "900", "back\\slash"),
        ("a7", "333", "900", "HELLO again"),
    ]

    async def body(s: Store) -> None:
        for uuid, src, dst, text in rows:
            await s.write(message(uuid, from_number=src, to_number=dst, text=text))

        async def uuids(**filters: object) -> list[str]:
            page = await s.list_messages(**filters)  # type: ignore[arg-type]
            return [m["message_uuid"] for m in page.items]

        assert await uuids(from_number="111") == ["a6", "a4", "a3", "a1"]
        assert await uuids(to_number="901") == ["a5", "a3"]
        assert await uuids(from_number="111", to_number="900") == ["a6", "a4", "a1"]
        assert await uuids(q="hello") == ["a7", "a1"]
        assert await uuids(q="WORLD") == ["a1"]
        assert await uuids(q="%") == ["a2"]
        assert await uuids(q="0%") == ["a2"]
        assert await uuids(q="_") == ["a4"]
        assert await uuids(q="e_c") == ["a4"]
        assert await uuids(q="\\") == ["a6"]
        assert await uuids(q="100") == ["a3", "a2"]
        assert await uuids(q="hello", from_number="111") == ["a1"]
        assert await uuids(q="nothing like it") == []
        assert await uuids(from_number="nobody") == []

        first = await s.list_messages(from_number="111", limit=2)
        assert [m["message_uuid"] for m in first.items] == ["a6", "a4"]
        rest = await s.list_messages(from_number="111", limit=2, cursor=first.next_cursor)
        assert [m["message_uuid"] for m in rest.items] == ["a3", "a1"]
        assert rest.next_cursor is None

    run(store, body)


@pytest.mark.parametrize(
    "cursor", ["not a cursor", "!!!", "%%%", encode_cursor(2**70), "LTE"]
)  # "LTE" is base64 for "-1"
def test_bad_cursor_is_value_error(store: Store, cursor: str) -> None:
    async def body(s: Store) -> None:
        await s.write(message("m1"))
        await s.write(rejection())
        with pytest.raises(ValueError):
            await s.list_messages(cursor=cursor)
        with pytest.raises(ValueError):
            await s.list_rejections(cursor=cursor)

    run(store, body)


def test_statuses_in_sequence_order_and_latest_on_the_message(store: Store) -> None:
    """Our reply R answers inbound M: its reports carry reply_to=M; a late 'sent' stays old."""

    async def body(s: Store) -> None:
        await s.write(message("M"))
        await s.write(status("R", "queued", sequence=1, reply_to="M", received_at=at(1)))
        await s.write(status("R", "delivered", sequence=3, reply_to="M", received_at=at(2)))
        assert (await s.get_message("M"))["status"] == "delivered"
        await s.write(status("R", "sent", sequence=2, reply_to="M", received_at=at(3)))
        assert (await s.get_message("M"))["status"] == "delivered"
        assert (await s.list_messages()).items[0]["status"] == "delivered"

        history = await s.get_statuses("R")
        assert [h["status"] for h in history] == ["queued", "sent", "delivered"]
        assert history[1] == {
            "message_uuid": "R",
            "status": "sent",
            "sequence": 2,
            "parent_message_uuid": None,
            "error_code": None,
            "reply_to": "M",
            "params": [["MessageUUID", "R"], ["Status", "sent"], ["Sequence", "2"]],
            "received_at": at(3),
            "signature_scheme": "v3",
        }
        assert await s.get_statuses("M") == []
        assert await s.get_statuses("nope") == []

    run(store, body)


def test_statuses_without_sequence_come_first_in_arrival_order(store: Store) -> None:
    async def body(s: Store) -> None:
        await s.write(status("R", "delivered", sequence=5))
        await s.write(status("R", "queued"))
        await s.write(status("R", "failed", error_code="30003"))
        await s.write(status("R", "sent", sequence=0))
        history = await s.get_statuses("R")
        assert [(h["status"], h["sequence"]) for h in history] == [
            ("queued", None),
            ("failed", None),
            ("sent", 0),
            ("delivered", 5),
        ]
        assert history[1]["error_code"] == "30003"

    run(store, body)


def test_parts_tied_by_parent_message_uuid(store: Store) -> None:
    """A long reply went out as parts P1, P2 of parent R: R's history has them all."""

    async def body(s: Store) -> None:
        await s.write(message("M"))
        await s.write(status("P2", "sent", sequence=2, parent="R", reply_to="M"))
        await s.write(status("P1", "sent", sequence=2, parent="R", reply_to="M"))
        await s.write(status("P1", "delivered", sequence=4, parent="R", reply_to="M"))
        await s.write(status("P2", "delivered", sequence=3, parent="R", reply_to="M"))
        await s.write(status("other", "delivered", sequence=9, parent="X", reply_to="X"))
        history = await s.get_statuses("R")
        assert [(h["message_uuid"], h["status"]) for h in history] == [
            ("P2", "sent"),
            ("P1", "sent"),
            ("P2", "delivered"),
            ("P1", "delivered"),
        ]
        assert {h["parent_message_uuid"] for h in history} == {"R"}
        assert [h["status"] for h in await s.get_statuses("P1")] == ["sent", "delivered"]
        assert (await s.get_message("M"))["status"] == "delivered"

    run(store, body)


def test_rejections_keep_exact_bytes(store: Store) -> None:
    bodies = [b"", b"plain=text", b"\x00\xff\xfe binary \x80", "caf\u00e9=1".encode()]

    async def body(s: Store) -> None:
        for i, raw in enumerate(bodies):
            op = rejection(
                raw,
                reason=f"reason {i}",
                headers=[("content-type", "text/plain"), ("x-dup", "1"), ("x-dup", "2")],
                received_at=at(i),
            )
            assert (await s.write(op)).outcome is STORED
        page = await s.list_rejections()
        assert page.next_cursor is None
        items = page.items
        assert [item["reason"] for item in items] == [f"reason {i}" for i in (3, 2, 1, 0)]
        ids = [item["id"] for item in items]
        assert all(isinstance(i, int) for i in ids) and ids == sorted(ids, reverse=True)
        for item, raw in zip(items, reversed(bodies), strict=True):
            assert base64.b64decode(item["body_base64"]) == raw
            assert item["body"] == raw.decode("utf-8", "replace")
        assert items[0] == {
            "id": ids[0],
            "method": "POST",
            "path": "/plivo/message",
            "query": "a=1",
            "headers": [["content-type", "text/plain"], ["x-dup", "1"], ["x-dup", "2"]],
            "body": "café=1",
            "body_base64": base64.b64encode("café=1".encode()).decode(),
            "reason": "reason 3",
            "received_at": at(3),
            "signature_scheme": "v3",
        }
        first = await s.list_rejections(limit=3)
        assert len(first.items) == 3 and first.next_cursor is not None
        rest = await s.list_rejections(limit=3, cursor=first.next_cursor)
        assert [item["reason"] for item in rest.items] == ["reason 0"]
        assert rest.next_cursor is None

    run(store, body)


def test_text_that_text_columns_cannot_hold_is_kept_with_replacement_characters(
    store: Store,
) -> None:
    """NUL, and lone surrogates (undecodable bytes kept by surrogateescape), become U+FFFD."""

    async def body(s: Store) -> None:
        text = "a\x00b " + b"caf\xe9 \xe2\x82x".decode("utf-8", "surrogateescape")
        kept = "a\ufffdb caf\ufffd \ufffd\ufffdx"  # one U+FFFD per NUL or lone surrogate
        op = message("m1", text=text, params=[("Text", text)])
        assert (await s.write(op)).outcome is STORED
        assert (await s.write(op)).outcome is DUPLICATE
        got = await s.get_message("m1")
        assert got["text"] == kept
        assert got["params"] == [["Text", kept]]
        # lookups with such text find nothing rather than fail
        assert await s.get_message("m\x00") is None
        assert await s.get_statuses("m\udce9") == []
        assert (await s.list_messages(from_number="\x00", to_number="\udce9")).items == []

    run(store, body)


def test_prune_nonces(store: Store) -> None:
    async def body(s: Store) -> None:
        old = T0 - timedelta(days=2)
        for i in range(3):
            await s.write(message(f"old{i}", received_at=old, claim=nonce(f"old{i}", "fp")))
        await s.write(message("new", received_at=T0, claim=nonce("new", "fp")))
        assert (await s.counts())["nonces"] == 4
        assert await s.prune_nonces(T0 - timedelta(days=1)) == 3
        assert await s.prune_nonces(T0 - timedelta(days=1)) == 0
        assert await s.counts() == {"messages": 4, "statuses": 0, "rejections": 0, "nonces": 1}
        # A pruned nonce can be claimed again; the message itself is still known.
        again = await s.write(message("old0", claim=nonce("old0", "other")))
        assert again.outcome is DUPLICATE
        replay = await s.write(message("x", claim=nonce("new", "other")))
        assert replay.outcome is REPLAY

    run(store, body)


def test_counts_on_an_empty_store(store: Store) -> None:
    async def body(s: Store) -> None:
        assert await s.counts() == ZERO
        assert (await s.list_messages()).items == []
        assert (await s.list_rejections()).items == []
        assert await s.prune_nonces(T0) == 0
        await s.ping()

    run(store, body)


def test_everything_is_still_there_after_reopening(make_store) -> None:
    async def body() -> None:
        first = make_store()
        await first.open()
        await first.write(message("M", reply="<A/>", claim=nonce("n1", "fp1")))
        await first.write(status("R", "delivered", sequence=2, reply_to="M"))
        await first.write(rejection(b"\xff raw"))
        before = (
            await first.list_messages(),
            await first.get_statuses("R"),
            await first.list_rejections(),
            await first.counts(),
        )
        await first.close()

        second = make_store()
        await second.open()
        try:
            after = (
                await second.list_messages(),
                await second.get_statuses("R"),
                await second.list_rejections(),
                await second.counts(),
            )
            assert after == before
            assert after[0].items[0]["status"] == "delivered"
            retry = await second.write(message("M", reply="<B/>", claim=nonce("n1", "fp1")))
            assert (retry.outcome, retry.reply) == (RETRY, "<A/>")
            replay = await second.write(message("Z", claim=nonce("n1", "fp2")))
            assert replay.outcome is REPLAY
            dup = await second.write(status("R", "delivered", sequence=2, reply_to="M"))
            assert dup.outcome is DUPLICATE
        finally:
            await second.close()

    arun(body())


def test_close_finishes_the_writes_in_flight(make_store) -> None:
    async def body() -> None:
        first = make_store()
        await first.open()
        tasks = [asyncio.create_task(first.write(message(f"m{i}"))) for i in range(50)]
        await asyncio.sleep(0)  # the writes are queued, not committed yet
        await first.close()
        assert [t.result().outcome for t in tasks] == [STORED] * 50

        second = make_store()
        await second.open()
        try:
            assert (await second.counts())["messages"] == 50
        finally:
            await second.close()

    arun(body())


def test_write_outside_open_is_unavailable(make_store) -> None:
    async def body() -> None:
        store = make_store()
        with pytest.raises(StoreUnavailable):
            await store.write(message("early"))
        await store.open()
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.write(message("late"))

    arun(body())
