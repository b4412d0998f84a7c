"""SQLite-only behaviour: a stalled commit is bounded, another process's lock is waited for."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime

import pytest

from plivohook.store import sqlite as sqlite_store
from plivohook.store.base import MessageWrite, Outcome, StoreUnavailable
from plivohook.store.migrate import load_migrations
from plivohook.store.sqlite import SQLiteStore


def message(uuid: str) -> MessageWrite:
    return MessageWrite(
        message_uuid=uuid,
        from_number="14155550100",
        to_number="14155550199",
        type="sms",
        text="hi",
        media=[],
        params=[("MessageUUID", uuid)],
        method="POST",
        received_at=datetime.now(UTC),
        reply=None,
        signature_scheme="v2",
        fingerprint=uuid,
    )


def test_a_stalled_commit_answers_unavailable_within_the_timeout(tmp_path, monkeypatch):
    real_commit = sqlite_store._commit

    def slow_commit(conn):
        time.sleep(0.6)
        real_commit(conn)

    monkeypatch.setattr(sqlite_store, "_commit", slow_commit)

    async def go():
        store = SQLiteStore(f"sqlite:///{tmp_path}/t.db", timeout=0.2)
        await store.open()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"longer than 0\.2 s"):
            await store.write(message("a"))
        assert time.monotonic() - started < 0.5
        await store.close()
        # It did commit in the end: a retry gets DUPLICATE, as Plivo's retry would.
        monkeypatch.setattr(sqlite_store, "_commit", real_commit)
        again = SQLiteStore(f"sqlite:///{tmp_path}/t.db")
        await again.open()
        assert (await again.write(message("a"))).outcome is Outcome.DUPLICATE
        await again.close()

    asyncio.run(go())


def test_waits_off_the_loop_for_another_writer(tmp_path):
    """Another process holding the write lock: the batch waits in the commit thread."""
    path = tmp_path / "t.db"

    async def go():
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        pending = asyncio.ensure_future(store.write(message("b")))
        ticks = 0
        for _ in range(20):  # the loop keeps running meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert not pending.done()
        other.execute("COMMIT")
        other.close()
        assert (await pending).outcome is Outcome.STORED
        assert ticks == 20
        await store.close()

    asyncio.run(go())


def test_a_message_uuid_with_unstorable_characters_is_stored_once(tmp_path):
    async def go():
        store = SQLiteStore(f"sqlite:///{tmp_path}/t.db")
        await store.open()
        uuid = "m\x00" + b"\xe9".decode("utf-8", "surrogateescape")
        assert (await store.write(message(uuid))).outcome is Outcome.STORED
        assert (await store.write(message(uuid))).outcome is Outcome.DUPLICATE
        await store.close()

    asyncio.run(go())


def test_a_file_made_by_the_first_schema_loses_the_sender_index_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    first = [(m.version, m.sql) for m in load_migrations("sqlite") if m.version == 1]
    assert first, "the first migration is missing"
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
    for statement in sqlite_store._split_sql(first[0][1]):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES (1, '2026-01-01T00:00:00+00:00')")
    conn.execute(
        "INSERT INTO messages (message_uuid, from_number, to_number, type, text, media, params,"
        " method, received_at, reply, signature_scheme, fingerprint) VALUES"
        " ('old-1', '111', '900', 'sms', 'kept', '[]', '[]', 'POST',"
        " '2026-01-01T00:00:00.000000+00:00', NULL, 'v2', 'f')"
    )
    conn.close()

    async def go():
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        try:
            page = await store.list_messages(from_number="111")
            assert [m["message_uuid"] for m in page.items] == ["old-1"]
            assert page.items[0]["conflicting_duplicates"] == 0  # migration 3's default
        finally:
            await store.close()

    asyncio.run(go())
    conn = sqlite3.connect(path)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    conn.close()
    assert "messages_from" not in indexes
    assert versions == [m.version for m in load_migrations("sqlite")]
