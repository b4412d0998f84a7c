"""PostgreSQL only: several processes on one database, concurrent migrations, outages."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from plivohook.store.base import Outcome, StoreError, StoreUnavailable
from plivohook.store.migrate import load_migrations
from plivohook.store.postgres import PostgresStore

from . import arun, message, nonce, status
from .conftest import create_database, database_url, drop_database

STORED, DUPLICATE, RETRY, REPLAY = Outcome.STORED, Outcome.DUPLICATE, Outcome.RETRY, Outcome.REPLAY
VERSIONS = [m.version for m in load_migrations("postgres")]


def with_port(url: str, port: int, password: str | None = None) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    auth = f"{user}:{password}" if password else user
    return urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{port}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


async def terminate_store_backends(url: str) -> int:
    """pg_terminate_backend every other connection to the test database; wait until gone."""
    dbname = urlsplit(url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )
        (killed,) = await cur.fetchone()
        for _ in range(100):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND pid <> pg_backend_pid()",
                [dbname],
            )
            if (await cur.fetchone())[0] == 0:
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # let the FATAL message and EOF reach the pooled sockets
    return killed


async def wait_for_lock_wait(url: str, deadline: float = 5.0) -> int:
    """The pid of the store backend waiting on a lock (held by the test's own transaction)."""
    dbname = urlsplit(url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            cur = await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                " AND application_name = 'plivohook' AND wait_event_type = 'Lock'",
                [dbname],
            )
            row = await cur.fetchone()
            if row:
                return row[0]
            await asyncio.sleep(0.02)
    raise AssertionError("the store never waited on the lock")


class Proxy:
    """A TCP proxy to PostgreSQL that can go away (refusing and cutting connections) and return."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.BaseTransport] = set()
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for transport in list(self.transports):
            transport.abort()
        self.transports.clear()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.transports |= {writer.transport, up_writer.transport}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


# -- several processes ---------------------------------------------------------------------------


def test_two_processes_store_each_message_once(postgres_url: str) -> None:
    """Two pools (two processes) get the same 300 deliveries at once, in opposite orders."""
    distinct = 300

    def deliveries(side: str) -> list:
        ops = []
        for n in range(distinct):
            uuid = f"uuid-{n:03d}"
            if n % 3 == 0:  # the very same request, nonce and all, reached both processes
                op = message(uuid, reply=f"<R{n}/>", claim=nonce(f"n{n}", f"fp{n}"))
            elif n % 3 == 1:  # Plivo retried with a new nonce
                op = message(uuid, reply=f"<R{n}/>", claim=nonce(f"{side}{n}", f"fp{n}"))
            else:  # no nonce (V2 without one); each process decided its own reply
                op = message(uuid, reply=f"<{side}{n}/>")
            ops.append(op)
        for k in range(20):  # a nonce replayed with other content, one per process
            ops.append(message(f"replay-{side}-{k}", claim=nonce(f"rp{k}", f"{side}{k}")))
        # interleaved duplicates: each delivery again a little later
        return [op for pair in zip(ops, ops[5:] + ops[:5], strict=True) for op in pair]

    ops_a = deliveries("a")
    ops_b = list(reversed(deliveries("b")))

    async def body() -> None:
        a = PostgresStore(postgres_url, batch_max=16, pool_max=3)
        b = PostgresStore(postgres_url, batch_max=16, pool_max=3)
        await asyncio.gather(a.open(), b.open())
        try:
            res_a, res_b = await asyncio.gather(
                asyncio.gather(*(a.write(op) for op in ops_a)),
                asyncio.gather(*(b.write(op) for op in ops_b)),
            )
            results: dict[str, list] = {}
            for op, res in [*zip(ops_a, res_a, strict=True), *zip(ops_b, res_b, strict=True)]:
                results.setdefault(op.message_uuid, []).append(res)
            for n in range(distinct):
                uuid = f"uuid-{n:03d}"
                got = results[uuid]
                assert len(got) == 4
                assert [r.outcome for r in got].count(STORED) == 1, uuid
                stored = await a.get_message(uuid)
                assert stored is not None
                assert {r.reply for r in got} == {stored["reply"]}, uuid
                if n % 3 == 0:
                    assert sorted(r.outcome.value for r in got) == ["retry"] * 3 + ["stored"]
                if n % 3 == 2:
                    assert stored["reply"] in (f"<a{n}/>", f"<b{n}/>")
            for k in range(20):
                got = results[f"replay-a-{k}"] + results[f"replay-b-{k}"]
                # one process claims the nonce (and retries it); the other's are replays
                outcomes = sorted(r.outcome.value for r in got)
                assert outcomes == ["replay", "replay", "retry", "stored"]
            counts = await b.counts()
            assert counts["messages"] == distinct + 20
            assert counts["nonces"] == distinct // 3 + 2 * (distinct // 3) + 20
            assert a.stats.batches < len(ops_a) and b.stats.batches < len(ops_b)
        finally:
            await asyncio.gather(a.close(), b.close())

    arun(body())


def test_migrations_from_many_processes_at_once(postgres_server: str) -> None:
    fresh = [create_database(), create_database()]
    try:
        first, second = (database_url(name) for name in fresh)

        async def body() -> None:
            stores = [PostgresStore(first) for _ in range(6)]
            applied = await asyncio.gather(*(s.migrate() for s in stores))
            assert sorted(applied) == [[]] * 5 + [VERSIONS]
            assert await stores[0].migrate() == []

            opened = [PostgresStore(second) for _ in range(6)]
            await asyncio.gather(*(s.open() for s in opened))
            try:
                results = await asyncio.gather(
                    *(s.write(message(f"m{i}")) for i, s in enumerate(opened))
                )
                assert {r.outcome for r in results} == {STORED}
            finally:
                await asyncio.gather(*(s.close() for s in opened))

        arun(body())
        for url in (first, second):
            with admin(url) as conn:
                rows = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
                assert [r[0] for r in rows] == VERSIONS
                assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] in (0, 6)
    finally:
        for name in fresh:
            drop_database(name)


# -- outages -------------------------------------------------------------------------------------


def test_nothing_listening(postgres_server: str) -> None:
    url = with_port(postgres_server, free_port(), password="s3cret-pw")

    async def body() -> None:
        store = PostgresStore(url, timeout=1)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as opening:
            await store.open()
        assert time.monotonic() - started < 5
        assert "s3cret-pw" not in str(opening.value)
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.write(message("m1"))
        with pytest.raises(StoreUnavailable) as migrating:
            await store.migrate()
        assert "s3cret-pw" not in str(migrating.value)
        await store.close()

    arun(body())


def test_database_goes_away_and_comes_back(postgres_url: str) -> None:
    """Connections refused and cut: StoreUnavailable; back again: the same store recovers."""
    target = urlsplit(postgres_url).port or 5432

    async def body() -> None:
        proxy = Proxy(target)
        await proxy.start()
        store = PostgresStore(
            with_port(postgres_url, proxy.port, password="s3cret-pw"), timeout=1, pool_max=4
        )
        await store.open()
        try:
            assert (await store.write(message("before"))).outcome is STORED
            await proxy.stop()

            for uuid in ("down-1", "down-2"):
                with pytest.raises(StoreUnavailable) as failed:
                    await store.write(message(uuid))
                assert "s3cret-pw" not in str(failed.value)
            with pytest.raises(StoreUnavailable):
                await store.ping()
            with pytest.raises(StoreUnavailable):
                await store.counts()

            await proxy.start()
            deadline = time.monotonic() + 20
            while True:
                try:
                    result = await store.write(message("after"))
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "the store did not recover"
                    await asyncio.sleep(0.2)
            assert result.outcome is STORED
            await store.ping()
            assert await store.get_message("down-1") is None
            assert (await store.counts())["messages"] == 2
        finally:
            await store.close()
            await proxy.stop()

    arun(body())


def test_recovery_after_pg_terminate_backend(postgres_url: str) -> None:
    async def body() -> None:
        store = PostgresStore(postgres_url, pool_min=2, pool_max=4)
        await store.open()
        try:
            await asyncio.gather(*(store.counts() for _ in range(8)))  # several connections
            await store.write(message("m1"))
            for round_ in range(2):
                assert await terminate_store_backends(postgres_url) >= 1
                # The dead connections are noticed before use: no write fails.
                result = await store.write(message(f"after-{round_}"))
                assert result.outcome is STORED
                await store.ping()
                assert (await store.counts())["messages"] == 2 + round_
        finally:
            await store.close()

    arun(body())


def test_batch_cut_off_mid_flight_is_not_reported_as_written(postgres_url: str) -> None:
    """Our own transaction holds MessageUUID "held": the store's batch waits on it; we kill it."""

    async def body() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            async with await psycopg.AsyncConnection.connect(postgres_url) as holder:
                await holder.execute(
                    "INSERT INTO messages (message_uuid, from_number, to_number, type, text,"
                    " media, params, method, received_at, signature_scheme, fingerprint)"
                    " VALUES ('held', '', '', 'sms', '', '[]', '[]', 'POST', now(), 'v3', '')"
                )
                batch = asyncio.gather(
                    store.write(message("held")),
                    store.write(message("companion")),
                    return_exceptions=True,
                )
                pid = await wait_for_lock_wait(postgres_url)
                await holder.execute("SELECT pg_terminate_backend(%s)", [pid])
                results = await batch
                assert all(isinstance(r, StoreUnavailable) for r in results), results
                await holder.rollback()
            assert await store.get_message("companion") is None
            assert (await store.write(message("held"))).outcome is STORED
            assert (await store.write(message("companion"))).outcome is STORED
        finally:
            await store.close()

    arun(body())


def test_a_stuck_lock_times_out_instead_of_hanging(postgres_url: str) -> None:
    async def body() -> None:
        store = PostgresStore(postgres_url, timeout=1)
        await store.open()
        try:
            async with await psycopg.AsyncConnection.connect(postgres_url) as holder:
                await holder.execute(
                    "INSERT INTO nonces (key, fingerprint, seen_at) VALUES ('v3:stuck', 'x', now())"
                )
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.write(message("m1", claim=nonce("stuck", "fp")))
                assert time.monotonic() - started < 4
                await holder.rollback()
            result = await store.write(message("m1", claim=nonce("stuck", "fp")))
            assert result.outcome is STORED
        finally:
            await store.close()

    arun(body())


def test_an_operation_the_database_refuses_fails_alone(postgres_url: str) -> None:
    """A MessageUUID too long for its unique index: that write fails, its batch-mates commit."""
    huge = secrets.token_hex(8000)

    async def body() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        try:
            results = await asyncio.gather(
                store.write(message("ok-1")),
                store.write(message(huge)),
                store.write(message("ok-2")),
                return_exceptions=True,
            )
            assert [getattr(r, "outcome", None) for r in results] == [STORED, None, STORED]
            assert isinstance(results[1], StoreError)
            assert not isinstance(results[1], StoreUnavailable)
            assert huge not in str(results[1])
            assert (await store.counts())["messages"] == 2
            too_big = dataclasses.replace(status("o1", "sent", sequence=1), sequence=2**63)
            with pytest.raises(StoreError):
                await store.write(too_big)
        finally:
            await store.close()

    arun(body())
