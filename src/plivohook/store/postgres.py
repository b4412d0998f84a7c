"""The PostgreSQL backend: several workers and machines share one database and one truth.

Driver: psycopg 3 (async, libpq binary build). Measured on the hot path, the write path
(``select plivohook_apply($1)``, one group commit per call, local server, both pooled):
0.34-0.42 ms per one-op batch and 9-10 ms per 256-op batch with psycopg against 0.44-0.52 ms and
8-11 ms with asyncpg 0.32 -- the same within noise, as the server's commit and the function
dominate (asyncpg's bare round trip is ~25 us faster, its pool's reset costs a round trip per
acquire). psycopg is already a declared dependency, so it is the one. Connections come from a
small pool of our own (:class:`_Pool`): it fails at once while the database is down and serves
at once when it is back, which psycopg_pool's background reconnect with backoff did not.

Group commit: :meth:`PostgresStore.write` encodes its operation to a JSON fragment, queues it with
a future and waits. One writer task takes everything queued (up to ``batch_max``), sends it as one
JSON array to ``plivohook_apply(ops jsonb)`` (migration 0001) in ONE statement on an autocommit
connection -- one round trip, one transaction -- and resolves the futures once the result, hence
the commit, is back. Ops arriving meanwhile queue up for the next batch. The function applies
Store.write's semantics with INSERT ... ON CONFLICT against the unique constraints, so duplicates
and replays are decided by the database, also between processes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb, set_json_loads

from . import outbox as ob
from .base import (
    MessageWrite,
    Outcome,
    RejectionWrite,
    StatusWrite,
    Store,
    StoreError,
    StoreStats,
    StoreUnavailable,
    WriteOp,
    WriteResult,
    clean,
)
from .migrate import load_migrations, pending_migrations
from .reads import Dialect, SQLReads
from .retention import SQLMaintenance

__all__ = ["PostgresStore"]

log = logging.getLogger("plivohook.store")

# pg_advisory_xact_lock key serializing migrations between processes ("plivohok" in ASCII).
MIGRATION_LOCK = 0x706C69766F686F6B
# pg_advisory_xact_lock(OUTBOX_LOCK, hashtext(destination)): one claim per destination at a time.
OUTBOX_LOCK = 0x706C6F62  # "plob"
_MAX_BIGINT = 2**63 - 1
_OUTCOMES = {outcome.value: outcome for outcome in Outcome}
# SQLSTATE classes that belong to one operation's data, not to the database's health.
_DATA_ERROR_CLASSES = {"22", "23", "54"}
_TRANSIENT = {"40001", "40P01"}  # serialization failure, deadlock: rolled back, safe to redo
_ATTEMPTS = 3


def _raw_json(payload: bytes) -> bytes:
    return payload


def _pairs(pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    return [[key, value] for key, value in pairs]


def _op_document(op: WriteOp) -> dict[str, Any]:
    if isinstance(op, MessageWrite):
        doc: dict[str, Any] = {
            "k": "m",
            "u": op.message_uuid,
            "from": op.from_number,
            "to": op.to_number,
            "type": op.type,
            "text": op.text,
            "media": [dict(item) for item in op.media],
            "params": _pairs(op.params),
            "method": op.method,
            "at": op.received_at,
            "reply": op.reply,
            "scheme": op.signature_scheme,
            "fp": op.fingerprint,
        }
        # Read by plivohook_apply from migration 0003 on (replies); absent keys cost nothing.
        if op.reply_source is not None:
            doc["src"] = op.reply_source
        if op.opted_out_source is not None:
            doc["oreply"] = op.opted_out_reply
            doc["osrc"] = op.opted_out_source
            if op.optout_action is not None:
                doc["act"] = op.optout_action
    elif isinstance(op, StatusWrite):
        if op.sequence is not None and not -_MAX_BIGINT <= op.sequence <= _MAX_BIGINT:
            raise StoreError(f"status sequence out of range: {op.sequence}")
        doc = {
            "k": "s",
            "u": op.message_uuid,
            "status": op.status,
            "seq": op.sequence,
            "parent": op.parent_message_uuid,
            "error": op.error_code,
            "reply_to": op.reply_to,
            "params": _pairs(op.params),
            "method": op.method,
            "at": op.received_at,
            "scheme": op.signature_scheme,
            "fp": op.fingerprint,
        }
    elif isinstance(op, RejectionWrite):
        doc = {
            "k": "r",
            "method": op.method,
            "path": op.path,
            "query": op.query,
            "headers": _pairs(op.headers),
            "body": base64.b64encode(op.body).decode("ascii"),
            "reason": op.reason,
            "at": op.received_at,
            "scheme": op.signature_scheme,
            "fp": op.fingerprint,
        }
    else:
        raise TypeError(f"not a write operation: {type(op).__name__}")
    events = getattr(op, "events", ())
    if events:  # read by plivohook_apply from migration 0004 on (its "forward" block)
        doc["ev"] = [
            {
                "id": ev.id,
                "t": ev.type,
                "c": ev.conversation,
                "p": ev.payload.decode("utf-8"),  # orjson's output: UTF-8, kept byte for byte
                "d": list(ev.destinations),
            }
            for ev in events
        ]
    if op.nonce is not None:
        doc["nk"] = op.nonce.key
        doc["nf"] = op.nonce.fingerprint
    if op.extra_nonce is not None:  # read by plivohook_apply from migration 0002 on
        doc["xk"] = op.extra_nonce.key
        doc["xf"] = op.extra_nonce.fingerprint
    return doc


def encode_op(op: WriteOp) -> bytes:
    """One operation as the JSON object plivohook_apply() reads (naive datetimes taken as UTC)."""
    doc = _op_document(op)
    try:
        data = orjson.dumps(doc, option=orjson.OPT_NAIVE_UTC)
    except orjson.JSONEncodeError:  # lone surrogates: invalid UTF-8
        data = b""
    if not data or b"\\u0000" in data:  # jsonb refuses \u0000 (may be a false alarm: harmless)
        try:
            data = orjson.dumps(clean(doc), option=orjson.OPT_NAIVE_UTC)
        except orjson.JSONEncodeError as exc:
            raise StoreError(f"operation cannot be stored: {exc}") from None
    return data


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _alive(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection is still up, without a round trip.

    A terminated backend leaves its FATAL message and then EOF in the socket: reading what is
    there (twice: the message, then the EOF) marks the connection bad before we send anything.
    """
    pgconn = conn.pgconn
    try:
        for _ in range(2):
            if pgconn.status != pq.ConnStatus.OK:
                return False
            pgconn.consume_input()
    except psycopg.OperationalError:
        return False
    return pgconn.status == pq.ConnStatus.OK


class _Pool:
    """Connections made on demand, at most ``max_size``; no background task.

    psycopg_pool reconnects in the background with an exponential backoff: measured with a proxy
    cut for 8 s, every write waited out the whole timeout during the outage and writes still
    failed for 6.5 s after the database was back. Here a request that finds no live idle
    connection connects itself: refused at once while the database is down, served at once when
    it is back. Idle connections are checked without a round trip before use (see _alive).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        *,
        min_size: int,
        max_size: int,
        max_lifetime: float = 3600.0,
        max_idle: float = 600.0,
    ) -> None:
        self._connect = connect
        self._min_size = min_size
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[tuple[psycopg.AsyncConnection[Any], float]] = []  # (conn, idle since)
        self._born: dict[psycopg.AsyncConnection[Any], float] = {}
        self._max_lifetime = max_lifetime
        self._max_idle = max_idle
        self._closed = False

    async def fill(self) -> None:
        """Open ``min_size`` connections now (so that open() fails early if it cannot)."""
        conns = await asyncio.gather(*(self._new() for _ in range(self._min_size)))
        now = time.monotonic()
        self._idle.extend((conn, now) for conn in conns)

    async def _new(self) -> psycopg.AsyncConnection[Any]:
        conn = await self._connect()
        self._born[conn] = time.monotonic()
        return conn

    async def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._born.pop(conn, None)
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()

    async def acquire(self) -> psycopg.AsyncConnection[Any]:
        if self._closed:
            raise psycopg.OperationalError("the connection pool is closed")
        await self._slots.acquire()
        try:
            while self._idle:
                conn, _ = self._idle.pop()  # the most recently used: the others may expire
                born = self._born.get(conn, 0.0)
                if time.monotonic() - born < self._max_lifetime and _alive(conn):
                    return conn
                await self._discard(conn)
            return await self._new()
        except BaseException:
            self._slots.release()
            raise

    async def release(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            pgconn = conn.pgconn
            if (
                self._closed
                or pgconn.status != pq.ConnStatus.OK
                or pgconn.transaction_status != pq.TransactionStatus.IDLE
            ):
                await self._discard(conn)
                return
            now = time.monotonic()
            self._idle.append((conn, now))
            while len(self._idle) > self._min_size and now - self._idle[0][1] > self._max_idle:
                stale, _ = self._idle.pop(0)
                await self._discard(stale)
        finally:
            self._slots.release()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await self._discard(conn)


class _Pending:
    __slots__ = ("data", "future")

    def __init__(self, data: bytes, future: asyncio.Future[WriteResult]) -> None:
        self.data = data
        self.future = future


class PostgresStore(SQLMaintenance, SQLReads, Store):
    """A :class:`Store` on PostgreSQL 12 or newer (tested on 15).

    ``pool_min`` connections are opened by :meth:`open`, at most ``pool_max`` are ever open (the
    writer uses one at a time, reads the others). ``batch_max`` bounds a group commit and
    ``batch_wait`` (seconds) lets the writer wait for more operations before each one (0: never).
    ``timeout`` (seconds) bounds the wait for a connection and every statement (server
    ``statement_timeout``), so that a write fails with StoreUnavailable instead of hanging.
    """

    # psycopg hands jsonb back decoded (orjson, see set_json_loads) and timestamptz as datetime.
    dialect = Dialect(placeholder="%s", ilike="ILIKE", json=lambda value: value, time=_utc)

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        batch_max: int = 256,
        batch_wait: float = 0.0,
        timeout: float = 5.0,
    ) -> None:
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise ValueError("need 0 <= pool_min <= pool_max and pool_max >= 1")
        if batch_max < 1 or batch_wait < 0 or timeout <= 0:
            raise ValueError("need batch_max >= 1, batch_wait >= 0 and timeout > 0")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise ValueError("invalid PostgreSQL URL") from None
        self._url = url
        self._password = str(params.get("password") or "")
        # No server-side prepared statements: nothing to gain for one-statement batches, and
        # it keeps the store usable behind PgBouncer in transaction mode.
        self._kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        if "application_name" not in params:
            self._kwargs["application_name"] = "plivohook"
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._batch_max = batch_max
        self._batch_wait = batch_wait
        self._timeout = timeout
        self.stats = StoreStats()
        self._pool: _Pool | None = None
        self._queue: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._state = "new"  # new -> open -> closing -> closed
        self._warned_at = float("-inf")
        self._failed_ops = 0
        self.holder = ob.holder_name()

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._state == "open":
            return
        if self._state != "new":
            raise StoreError("a closed store cannot be opened again: make a new one")
        await self.migrate()
        pool = _Pool(self._new_connection, min_size=self._pool_min, max_size=self._pool_max)
        try:
            async with asyncio.timeout(self._timeout):
                await pool.fill()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await pool.close()
            raise StoreUnavailable(self._reason("cannot connect to PostgreSQL", exc)) from None
        self._pool = pool
        self._wake = asyncio.Event()
        self._state = "open"
        self._writer = asyncio.create_task(self._write_loop(), name="plivohook-pg-writer")

    async def close(self) -> None:
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        if self._state == "closing":
            return
        self._state = "closing"
        assert self._wake is not None and self._writer is not None and self._pool is not None
        self._wake.set()
        try:
            await self._writer
        finally:
            await self._pool.close()
            self._state = "closed"

    async def _new_connection(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self._url, **self._kwargs)
        try:
            set_json_loads(orjson.loads, conn)
            # One round trip: UTC, the statement bound, and durable commits even where the
            # server says synchronous_commit=off (a stronger setting such as remote_apply stays).
            await conn.execute(
                f"SET TIME ZONE 'UTC'; SET statement_timeout = {int(self._timeout * 1000)};"
                " SELECT set_config('synchronous_commit', 'on', false)"
                " WHERE current_setting('synchronous_commit') = 'off'"
            )
        except BaseException:
            await conn.close()
            raise
        return conn

    async def migrate(self) -> list[int]:
        """Apply the pending migrations; return the versions this call applied (maybe none).

        Safe to run from several processes at once: one transaction holding
        ``pg_advisory_xact_lock`` applies them, the others wait and then find nothing to do.
        """
        migrations = load_migrations("postgres")
        try:
            async with asyncio.timeout(self._timeout):
                conn = await psycopg.AsyncConnection.connect(self._url, **self._kwargs)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailable(self._reason("cannot connect to PostgreSQL", exc)) from None
        applied: list[int] = []
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                cur = await conn.execute("SELECT version FROM schema_migrations")
                done = [row[0] for row in await cur.fetchall()]
                for migration in pending_migrations(migrations, done):
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", [migration.version]
                    )
                    applied.append(migration.version)
                    log.info("applied migration %s", migration.name)
        except psycopg.Error as exc:
            raise StoreUnavailable(self._reason("migration failed", exc)) from None
        finally:
            await conn.close()
        return applied

    # -- connections ---------------------------------------------------------------------------

    def _reason(self, what: str, exc: BaseException, seconds: float | None = None) -> str:
        """A short, secret-free reason for StoreUnavailable."""
        if isinstance(exc, TimeoutError):
            detail = f"no answer within {seconds or self._timeout:g} s"
        else:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            detail = lines[0] if lines else type(exc).__name__
            if self._password:
                detail = detail.replace(self._password, "***")
            detail = detail[:200]
        return f"{what}: {detail}"

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A live pooled connection; connection trouble becomes StoreUnavailable."""
        pool = self._pool
        if self._state not in ("open", "closing") or pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with asyncio.timeout(self._timeout):
                conn = await pool.acquire()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailable(self._reason("PostgreSQL unavailable", exc)) from None
        try:
            yield conn
        finally:
            await pool.release(conn)

    async def ping(self) -> None:
        seconds = min(self._timeout, 2.0)
        try:
            async with asyncio.timeout(seconds), self._connection() as conn:
                await conn.execute("SELECT 1")
        except StoreUnavailable:
            raise
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailable(self._reason("PostgreSQL unavailable", exc, seconds)) from None

    # -- writes --------------------------------------------------------------------------------

    async def write(self, op: WriteOp) -> WriteResult:
        if self._state != "open" or self._wake is None:
            raise StoreUnavailable("the store is not open")
        data = encode_op(op)
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(data, future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._state != "open":
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._batch_wait and len(self._queue) < self._batch_max:
                await asyncio.sleep(self._batch_wait)
            batch: list[_Pending] = []
            while self._queue and len(batch) < self._batch_max:
                pending = self._queue.popleft()
                if not pending.future.done():  # a cancelled caller has answered nobody
                    batch.append(pending)
            if not batch:
                continue
            try:
                await self._commit(batch)
            except Exception as exc:  # never let the writer die: fail this batch only
                log.exception("group commit failed unexpectedly")
                self._fail(batch, StoreError(f"internal store error: {type(exc).__name__}"))

    def _warn_unavailable(self, size: int, exc: StoreUnavailable) -> None:
        """Log failed batches, at most once a second: an outage must not flood the log."""
        self._failed_ops += size
        now = time.monotonic()
        if now - self._warned_at >= 1.0:
            log.warning("%d operations not stored: %s", self._failed_ops, exc)
            self._warned_at = now
            self._failed_ops = 0

    @staticmethod
    def _fail(batch: Sequence[_Pending], exc: StoreError) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)

    async def _commit(self, batch: list[_Pending]) -> None:
        """Apply a batch in one transaction; on a data error, each operation on its own."""
        started = time.perf_counter()
        try:
            results = await self._apply([pending.data for pending in batch])
        except StoreUnavailable as exc:
            self._warn_unavailable(len(batch), exc)
            self._fail(batch, exc)
            return
        except psycopg.Error as exc:
            if len(batch) == 1:
                log.warning("operation refused by the database: %s", exc.sqlstate)
                self._fail(batch, StoreError(self._reason("operation refused", exc)))
                return
            for pending in batch:  # find the operation at fault; the others go through
                await self._commit([pending])
            return
        self._record(results, time.perf_counter() - started)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _apply(self, ops: list[bytes]) -> list[WriteResult]:
        """One round trip: ``select plivohook_apply(ops)``, committed when it returns.

        Raises StoreUnavailable, or psycopg.Error for an error in the operations' data.
        """
        payload = Jsonb(b"[" + b",".join(ops) + b"]", dumps=_raw_json)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._connection() as conn:
                    async with asyncio.timeout(self._timeout + 2):
                        cur = await conn.execute(b"SELECT plivohook_apply(%s)", [payload])
                        row = await cur.fetchone()
            except psycopg.Error as exc:
                state = exc.sqlstate or ""
                if state in _TRANSIENT and attempt < _ATTEMPTS:
                    continue
                if state[:2] in _DATA_ERROR_CLASSES:
                    raise
                raise StoreUnavailable(self._reason("PostgreSQL unavailable", exc)) from None
            except (OSError, TimeoutError) as exc:
                raise StoreUnavailable(self._reason("PostgreSQL unavailable", exc)) from None
            break
        assert row is not None
        answer = row[0]
        size = len(answer["o"])
        conflicts = answer.get("c") or [False] * size
        sources = answer.get("s") or [None] * size
        return [
            WriteResult(_OUTCOMES[outcome], reply, bool(conflict), source)
            for outcome, reply, conflict, source in zip(
                answer["o"], answer["r"], conflicts, sources, strict=True
            )
        ]

    def _record(self, results: list[WriteResult], seconds: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.operations += len(results)
        stats.largest_batch = max(stats.largest_batch, len(results))
        for result in results:
            key = result.outcome.value
            stats.outcomes[key] = stats.outcomes.get(key, 0) + 1
        if self.on_commit is not None:
            self.on_commit(len(results), seconds)

    # -- reads: the queries are store/reads.py's; this is the one primitive they need -------------

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            async with self._connection() as conn:
                async with asyncio.timeout(self._timeout + 2):
                    cur = await conn.execute(sql.encode(), args)
                    if cur.description is None:
                        return []
                    names = [column.name for column in cur.description]
                    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailable(self._reason("PostgreSQL unavailable", exc)) from None

    async def _execute_row(self, sql: str, args: Sequence[Any]) -> tuple[int, Any]:
        """One statement in its own transaction: its rowcount and first row (if any)."""
        try:
            async with self._connection() as conn:
                async with asyncio.timeout(self._timeout + 2):
                    cur = await conn.execute(sql.encode(), args)
                    row = await cur.fetchone() if cur.description is not None else None
                    return cur.rowcount, row
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailable(self._reason("PostgreSQL unavailable", exc)) from None

    async def set_reply(
        self, message_uuid: str, reply: str | None, source: str, error: str | None
    ) -> tuple[str | None, str | None]:
        # One statement: the conditional update, then the row as it is (either writer's).
        _, row = await self._execute_row(
            "WITH updated AS (UPDATE messages SET reply = %s, reply_source = %s,"
            " handler_error = %s WHERE message_uuid = %s AND reply_source = 'handler-pending'"
            " RETURNING reply, reply_source)"
            " SELECT reply, reply_source FROM updated"
            " UNION ALL SELECT reply, reply_source FROM messages WHERE message_uuid = %s"
            " AND NOT EXISTS (SELECT 1 FROM updated)",
            [clean(reply), source, clean(error), clean(message_uuid), clean(message_uuid)],
        )
        return (row[0], row[1]) if row else (None, None)

    async def add_optout(self, to_number: str, from_number: str, at: datetime) -> bool:
        count, _ = await self._execute_row(
            "INSERT INTO opt_outs (to_number, from_number, opted_out_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (to_number, from_number) DO NOTHING",
            [clean(to_number), clean(from_number), at],
        )
        return count > 0

    async def remove_optout(self, to_number: str, from_number: str) -> bool:
        count, _ = await self._execute_row(
            "DELETE FROM opt_outs WHERE to_number = %s AND from_number = %s",
            [clean(to_number), clean(from_number)],
        )
        return count > 0

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            async with self._connection() as conn:
                async with asyncio.timeout(self._timeout + 2):
                    cur = await conn.execute(sql.encode(), args)
                    return cur.rowcount
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailable(self._reason("PostgreSQL unavailable", exc)) from None

    # -- the outbox (forward.outbox.Outbox): any number of workers, anywhere -------------------

    async def _outbox_exec(
        self, sql: str, args: Sequence[Any], *, lock: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """One statement (after the destination's claim lock, if given): its rows and rowcount."""
        try:
            async with (
                self._connection() as conn,
                asyncio.timeout(self._timeout + 2),
                conn.transaction(),
            ):
                if lock is not None:
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [OUTBOX_LOCK, lock]
                    )
                cur = await conn.execute(self.dialect.sql(sql).encode(), args)
                rows: list[dict[str, Any]] = []
                if cur.description is not None:
                    names = [column.name for column in cur.description]
                    rows = [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
                return rows, cur.rowcount
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailable(self._reason("PostgreSQL unavailable", exc)) from None

    async def claim_due(
        self, destination: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[Any]:
        # The claim lock makes claims of one destination take turns: without it, a row locked
        # by a claim in progress would be skipped and the next row of its conversation, which
        # looks free, claimed beside it, out of order. SKIP LOCKED still passes over rows that a
        # worker is updating (its lease, in the snapshot, holds their conversation back anyway).
        sql = (
            f"UPDATE outbox SET leased_until = ?, leased_by = ? WHERE id IN ("  # noqa: S608
            f"{ob.CLAIM_CANDIDATES} FOR UPDATE OF o SKIP LOCKED) RETURNING {ob.ROW_COLUMNS}"
        )
        until = now + timedelta(seconds=lease_seconds)
        rows, _ = await self._outbox_exec(
            sql, [until, self.holder, destination, now, now, now, now, limit], lock=destination
        )
        return sorted((ob.outbox_row(row, _utc) for row in rows), key=lambda r: r.id)

    async def mark_delivered(self, row_id: int, *, now: datetime, status_code: int | None) -> None:
        await self._outbox_exec(ob.MARK_DELIVERED, [now, status_code, row_id])

    async def mark_failed(
        self,
        row_id: int,
        *,
        now: datetime,
        next_attempt_at: datetime,
        status_code: int | None,
        error: str | None,
    ) -> None:
        await self._outbox_exec(
            ob.MARK_FAILED, [next_attempt_at, status_code, clean(error), row_id]
        )

    async def mark_dead(
        self, row_id: int, *, now: datetime, status_code: int | None, error: str | None
    ) -> None:
        await self._outbox_exec(ob.MARK_DEAD, [status_code, clean(error), row_id])

    async def release(self, row_ids: Sequence[int]) -> None:
        if row_ids:
            await self._outbox_exec(
                "UPDATE outbox SET leased_until = NULL, leased_by = NULL WHERE id = ANY(?)",
                [list(row_ids)],
            )

    async def retry_delivery(self, delivery_id: int, now: datetime) -> bool:
        """A dead or pending row due now; False when there is no such row (or it was delivered)."""
        _, count = await self._outbox_exec(ob.RETRY_ONE, [now, delivery_id])
        return count > 0

    async def retry_dead(self, now: datetime) -> int:
        """Every dead row due now; returns how many."""
        _, count = await self._outbox_exec(ob.RETRY_DEAD, [now])
        return count

    async def release_outbox_lease(self) -> None:
        """Nothing to give up: PostgreSQL's leases are per row."""
