"""The SQLite backend: zero set-up, WAL mode, ``synchronous=FULL``, group commit.

One writer thread owns the write connection. Requests in flight queue their operations; the writer
takes everything queued (up to ``batch_max``), applies it in one ``BEGIN IMMEDIATE`` transaction,
commits (one fsync for the whole batch), and only then resolves each request's future. While a
commit is in progress new operations queue up for the next batch, so under load batches grow by
themselves and durability costs one fsync per batch rather than per message.

Several processes may share one file (``--workers``): ``BEGIN IMMEDIATE`` plus a busy timeout
serialises their writers, and uniqueness is decided by the constraints, never by memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from . import outbox as ob
from .base import (
    MessageWrite,
    Outcome,
    RejectionWrite,
    StatusWrite,
    Store,
    StoreStats,
    StoreUnavailable,
    WriteOp,
    WriteResult,
    claims,
    clean,
)
from .migrate import load_migrations, pending_migrations
from .reads import Dialect, SQLReads
from .retention import SQLMaintenance

__all__ = ["SQLiteStore", "path_from_url"]

log = logging.getLogger("plivohook.store")


def path_from_url(url: str) -> str:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``."""
    if not url.startswith("sqlite:///"):
        raise ValueError("a SQLite URL looks like sqlite:///plivohook.db (three slashes)")
    path = url[len("sqlite:///") :]
    if not path:
        raise ValueError("the SQLite URL names no file")
    return path


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


_clean = clean  # the hot path calls it per value: a module-level name is the fast lookup


def _row(*values: Any) -> tuple[Any, ...]:
    # Nearly every value is plain ASCII without NUL: two C-speed checks skip the regex.
    return tuple(
        _clean(v) if v.__class__ is str and not (v.isascii() and "\x00" not in v) else v
        for v in values
    )


def _json(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate: not UTF-8
        return orjson.dumps(_clean(value)).decode()
    return orjson.dumps(_clean(value)).decode() if "\\u0000" in text else text


def _make_private(path: str) -> None:
    """Create the database file 0600 (and any missing folder 0700) before SQLite opens it.

    The file holds phone numbers and message texts; under the usual umask SQLite would create it
    0644. SQLite gives the -wal and -shm files the mode of the database file, so they follow.
    An existing file keeps the mode its owner chose.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    missing = []
    folder = Path(path).absolute().parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        # mkdir's mode is filtered by the umask, which only removes bits: 0700 stays 0700.
        with contextlib.suppress(FileExistsError):  # another worker made it first
            new.mkdir(mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    # Small pages (for a new file; an existing one keeps its own): each message updates a few
    # random index leaves, and every dirty page goes whole to the WAL and to the checkpoint.
    # Measured against 4096: a third less WAL, no checkpoint holding up the writer, p99 halved.
    conn.execute("PRAGMA page_size=2048")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA mmap_size=268435456")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _migrate(conn: sqlite3.Connection) -> list[int]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied = []
        for migration in pending_migrations(load_migrations("sqlite"), done):
            # executescript would COMMIT the open transaction; run statements one by one.
            for statement in _split_sql(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (migration.version, _iso(datetime.now(UTC))),
            )
            applied.append(migration.version)
        conn.execute("COMMIT")
        return applied
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _split_sql(sql: str) -> list[str]:
    statements, current = [], []
    for line in sql.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped:
            continue
        current.append(stripped)
        if stripped.endswith(";") and sqlite3.complete_statement("\n".join(current)):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


# -- the write semantics (base.Store.write), applied inside the writer's transaction -----------
#
# A batch is applied with a handful of multi-row statements rather than several statements per
# operation: the writer shares one core with the event loop, and each statement is a trip through
# the sqlite3 module. Order within the batch is kept: when two operations claim the same nonce or
# MessageUUID, the first one wins, exactly as if they had come in separate transactions.

_CHUNK = 200  # rows per statement: well under SQLite's limit on bound variables


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _insert_returning(
    conn: sqlite3.Connection, head: str, width: int, rows: list[tuple], tail: str
) -> set[Any]:
    inserted: set[Any] = set()
    one = "(" + ", ".join("?" * width) + ")"
    for chunk in _chunks(rows):
        sql = f"{head} VALUES {', '.join([one] * len(chunk))} {tail}"
        args = [value for row in chunk for value in row]
        inserted.update(row[0] for row in conn.execute(sql, args))
    return inserted


def _select_in(conn: sqlite3.Connection, sql: str, keys: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for chunk in _chunks(sorted(set(keys))):
        marks = ", ".join("?" * len(chunk))
        found.update(conn.execute(sql.format(marks=marks), chunk).fetchall())
    return found


def _insert_first(
    conn: sqlite3.Connection,
    items: list[tuple[int, str, tuple[Any, ...]]],
    head: str,
    width: int,
    tail: str,
) -> set[int]:
    """Insert ``(index, unique key, row)`` items; return the indexes whose row went in.

    Among items sharing a key only the first is offered, so the first in the batch wins, as if
    each had come in a transaction of its own; ``tail`` must be ``ON CONFLICT … RETURNING key``.
    """
    first: dict[str, int] = {}
    rows = []
    for i, key, row in items:
        if key not in first:
            first[key] = i
            rows.append(row)
    inserted = _insert_returning(conn, head, width, rows, tail)
    return {i for key, i in first.items() if key in inserted}


def _claims(conn: sqlite3.Connection, ops: list[WriteOp], stamps: list[str]) -> list[str]:
    """Per operation: 'new', 'retry' (same nonce, same content) or 'replay'."""
    states = ["new"] * len(ops)
    claimed = [(i, n) for i, op in enumerate(ops) for n in claims(op)]
    if not claimed:
        return states
    # Keyed by the claim's position, not the operation's: one operation may claim two nonces.
    won = _insert_first(
        conn,
        [(j, n.key, (n.key, n.fingerprint, stamps[i])) for j, (i, n) in enumerate(claimed)],
        "INSERT INTO nonces (key, fingerprint, seen_at)",
        3,
        "ON CONFLICT DO NOTHING RETURNING key",
    )
    lost = [(i, n) for j, (i, n) in enumerate(claimed) if j not in won]
    seen = _select_in(
        conn, "SELECT key, fingerprint FROM nonces WHERE key IN ({marks})", [n.key for _, n in lost]
    )
    for i, nonce in lost:
        if seen.get(nonce.key) != nonce.fingerprint:
            states[i] = "replay"
        elif states[i] == "new":
            states[i] = "retry"
    return states


def _apply_optouts(
    conn: sqlite3.Connection, items: list[tuple[int, MessageWrite]], stamps: list[str]
) -> dict[int, tuple[str | None, str | None]]:
    """The opt-out side of the new messages ``items`` (in batch order), already inserted with
    their opted-in reply: one SELECT for the batch's (to, from) pairs, an UPDATE for those whose
    sender has opted out, and each STOP/START applied in order (a later message of the batch
    sees an earlier one's). Returns the (reply, source) chosen per index."""
    pairs = sorted({(_clean(op.to_number), _clean(op.from_number)) for _, op in items})
    opted: set[tuple[str, str]] = set()
    for chunk in _chunks(pairs):
        marks = ", ".join(["(?, ?)"] * len(chunk))  # placeholders only: values are parameters
        sql = f"SELECT to_number, from_number FROM opt_outs WHERE (to_number, from_number) IN (VALUES {marks})"  # noqa: S608, E501
        opted.update(
            conn.execute(
                sql,
                [value for pair in chunk for value in pair],
            ).fetchall()
        )
    chosen: dict[int, tuple[str | None, str | None]] = {}
    updates: list[tuple[str | None, str | None, str]] = []
    for i, op in items:
        pair = (_clean(op.to_number), _clean(op.from_number))
        if pair in opted:
            chosen[i] = (op.opted_out_reply, op.opted_out_source)
            if chosen[i] != (op.reply, op.reply_source):
                updates.append((*chosen[i], _clean(op.message_uuid)))
        if op.optout_action == "optout" and pair not in opted:
            opted.add(pair)
            conn.execute(
                "INSERT INTO opt_outs (to_number, from_number, opted_out_at, message_uuid)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (*pair, stamps[i], _clean(op.message_uuid)),
            )
        elif op.optout_action == "optin" and pair in opted:
            opted.discard(pair)
            conn.execute("DELETE FROM opt_outs WHERE to_number = ? AND from_number = ?", pair)
    if updates:
        conn.executemany(
            "UPDATE messages SET reply = ?, reply_source = ? WHERE message_uuid = ?", updates
        )
    return chosen


def _stored_reply(payload: bytes, op: WriteOp, result: WriteResult) -> bytes:
    """An event's payload with the reply the store chose (an opted-out sender's differs)."""
    if not isinstance(op, MessageWrite) or (result.reply, result.source) == (
        op.reply,
        op.reply_source,
    ):
        return payload
    doc = orjson.loads(payload)
    doc["data"]["reply"], doc["data"]["reply_source"] = result.reply, result.source
    return orjson.dumps(doc)


def _apply_batch(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[WriteResult]:
    stamps = [_iso(op.received_at) for op in ops]  # once per operation, for both its rows
    states = _claims(conn, ops, stamps)
    results: list[WriteResult | None] = [None] * len(ops)
    messages: list[tuple[int, MessageWrite]] = []
    statuses: list[tuple[int, StatusWrite]] = []
    rejections: list[tuple] = []
    for i, op in enumerate(ops):
        if states[i] == "replay":
            results[i] = WriteResult(Outcome.REPLAY)
        elif isinstance(op, MessageWrite):
            messages.append((i, op))
        elif isinstance(op, StatusWrite):
            statuses.append((i, op))
        elif isinstance(op, RejectionWrite):
            if states[i] == "retry":
                results[i] = WriteResult(Outcome.RETRY)
            else:
                results[i] = WriteResult(Outcome.STORED)
                rejections.append(
                    _row(
                        op.method,
                        op.path,
                        op.query,
                        _json([list(h) for h in op.headers]),
                        bytes(op.body),
                        op.reason,
                        stamps[i],
                        op.signature_scheme,
                        op.fingerprint,
                    )
                )
        else:
            raise TypeError(f"unknown operation {type(op).__name__}")

    def again(i: int) -> Outcome:
        return Outcome.RETRY if states[i] == "retry" else Outcome.DUPLICATE

    if messages:
        won = _insert_first(
            conn,
            [
                (
                    i,
                    _clean(op.message_uuid),  # as stored, hence as RETURNING gives it back
                    _row(
                        op.message_uuid,
                        op.from_number,
                        op.to_number,
                        op.type,
                        op.text,
                        _json(list(op.media)),
                        _json(list(op.params)),
                        op.method,
                        stamps[i],
                        op.reply,
                        op.signature_scheme,
                        op.fingerprint,
                        op.reply_source,
                    ),
                )
                for i, op in messages
            ],
            "INSERT INTO messages (message_uuid, from_number, to_number, type, text, media,"
            " params, method, received_at, reply, signature_scheme, fingerprint, reply_source)",
            13,
            "ON CONFLICT (message_uuid) DO NOTHING RETURNING message_uuid",
        )
        lookups = [(i, op) for i, op in messages if i in won and op.opted_out_source is not None]
        chosen = _apply_optouts(conn, lookups, stamps) if lookups else {}
        # After the opt-outs: a duplicate of a new message in this batch reads its final reply.
        stored = _select_in(
            conn,
            "SELECT message_uuid, json_array(reply, text, reply_source) FROM messages"
            " WHERE message_uuid IN ({marks})",
            [_clean(op.message_uuid) for i, op in messages if i not in won],
        )
        conflicts: list[str] = []
        for i, op in messages:
            if i in won:
                reply, source = chosen.get(i) or (op.reply, op.reply_source)
                results[i] = WriteResult(Outcome.STORED, reply, source=source)
                continue
            uuid = _clean(op.message_uuid)
            reply, text, source = orjson.loads(stored[uuid])
            conflicting = text != _clean(op.text)
            if conflicting:
                conflicts.append(uuid)
            results[i] = WriteResult(again(i), reply, conflicting, source)
        if conflicts:
            conn.executemany(
                "UPDATE messages SET conflicting_duplicates = conflicting_duplicates + 1"
                " WHERE message_uuid = ?",
                [(uuid,) for uuid in conflicts],
            )

    if statuses:
        won = _insert_first(
            conn,
            [
                (
                    i,
                    op.fingerprint,
                    _row(
                        op.fingerprint,
                        op.message_uuid,
                        op.status,
                        op.sequence,
                        op.parent_message_uuid,
                        op.error_code,
                        op.reply_to,
                        _json(list(op.params)),
                        op.method,
                        stamps[i],
                        op.signature_scheme,
                    ),
                )
                for i, op in statuses
            ],
            "INSERT INTO statuses (fingerprint, message_uuid, status, sequence,"
            " parent_message_uuid, error_code, reply_to, params, method, received_at,"
            " signature_scheme)",
            11,
            "ON CONFLICT (fingerprint) DO NOTHING RETURNING fingerprint",
        )
        for i, _op in statuses:
            results[i] = WriteResult(Outcome.STORED) if i in won else WriteResult(again(i))

    # The outbox rows of what was stored now, in batch order (the conversation's order).
    outbox = [
        (
            ev.id,
            ev.type,
            dest,
            _stored_reply(ev.payload, op, results[i]),  # type: ignore[arg-type]
            ev.conversation,
            op.message_uuid,
            stamps[i],
            stamps[i],
        )
        for i, op in enumerate(ops)
        if op.kind != "rejection" and op.events and results[i].outcome is Outcome.STORED  # type: ignore[union-attr]
        for ev in op.events  # type: ignore[union-attr]
        for dest in ev.destinations
    ]
    if outbox:
        conn.executemany(
            "INSERT INTO outbox (event_id, event_type, destination, payload, conversation,"
            " message_uuid, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (destination, event_id) DO NOTHING",
            [_row(*row) for row in outbox],
        )

    if rejections:
        conn.executemany(
            "INSERT INTO rejections (method, path, query, headers, body, reason, received_at,"
            " signature_scheme, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rejections,
        )
    return results  # type: ignore[return-value]


class SQLiteStore(SQLMaintenance, SQLReads, Store):
    # JSON is kept as text, timestamps as ISO 8601 text (UTC). SQLite's LIKE ignores case for
    # ASCII letters only (ICU is not in the stdlib build); PostgreSQL's ILIKE for every letter.
    dialect = Dialect(placeholder="?", ilike="LIKE", json=orjson.loads, time=_dt, time_param=_iso)

    def __init__(
        self, url: str, *, batch_max: int = 512, timeout: float = 5.0, **_ignored: object
    ) -> None:
        self.url = url
        self.path = path_from_url(url)
        self.batch_max = batch_max
        self.timeout = timeout
        self.stats = StoreStats()
        self._pending: list[tuple[WriteOp, asyncio.Future[WriteResult]]] = []
        self._busy = False  # a batch is between BEGIN and the end of its COMMIT
        self._batch_started = 0.0  # time.perf_counter() when the batch in flight was taken
        self._last_failure: str | None = None  # until a batch commits again
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._committer: ThreadPoolExecutor | None = None
        self._checkpointed_at = 0.0  # time.monotonic() of the last checkpoint
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._writer_conn: sqlite3.Connection | None = None
        # The outbox's own connection and its small group commit (see _outbox_tx).
        self._outbox_conn: sqlite3.Connection | None = None
        self._outbox_queue: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future]] = []
        self._outbox_drainer: asyncio.Task[None] | None = None
        self._outbox_lock = threading.Lock()
        self.holder = ob.holder_name()

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        try:
            _make_private(self.path)
            conn = _connect(self.path)
            _migrate(conn)
            self._reader = _connect(self.path)
            self._outbox_conn = _connect(self.path)
            # Losing an outbox update to a power cut (not to a crash: WAL keeps it) only means an
            # event delivered again or a lease taken again, which at-least-once allows; sparing
            # its fsync keeps the worker's updates out of the message writer's way.
            self._outbox_conn.execute("PRAGMA synchronous=NORMAL")
            # The loop never waits on a lock: when another process holds the write lock, the
            # batch is handed whole to the commit thread, which may wait (see _flush).
            conn.execute("PRAGMA busy_timeout=0")
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open the SQLite database {self.path}: {exc}") from exc
        self._writer_conn = conn
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="plivohook-sqlite-commit")
        # Checkpoints copy the WAL back into the database file. SQLite runs them inside a
        # COMMIT, and a checkpointer of our own on another connection would hold the write lock
        # in the writer's way; the writer takes its own turn instead, a small one (see _finish).
        conn.execute("PRAGMA wal_autocheckpoint=0")

    async def migrate(self) -> list[int]:
        def run() -> list[int]:
            try:
                _make_private(self.path)
                conn = _connect(self.path)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(
                    f"cannot open the SQLite database {self.path}: {exc}"
                ) from exc
            try:
                return _migrate(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        while self._pending or self._busy:  # let the writes in flight finish
            await asyncio.sleep(0.005)
        if self._outbox_conn is not None:
            with contextlib.suppress(StoreUnavailable):
                await self.release_outbox_lease()
            while self._outbox_drainer is not None:
                await asyncio.sleep(0.005)
        if self._committer is not None:
            if self._writer_conn is not None:
                with contextlib.suppress(Exception):
                    await self._loop.run_in_executor(
                        self._committer, _checkpoint, self._writer_conn, "TRUNCATE"
                    )
            self._committer.shutdown(wait=True)
            self._committer = None
        for conn in (self._reader, self._writer_conn, self._outbox_conn):
            if conn is not None:
                conn.close()
        self._reader = self._writer_conn = self._outbox_conn = None

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())
        if self._last_failure is not None:
            # Reads may work while writes fail (a full disk): health is about what Plivo needs.
            raise StoreUnavailable(f"the last write failed: {self._last_failure}")

    # -- group commit ---------------------------------------------------------------------------
    #
    # The batch's statements run on the event loop's thread: they are CPU work in SQLite's C code,
    # like parsing a request, and handing them to a thread would cost more in GIL hand-offs than
    # they take. Only the COMMIT, whose fsync can take milliseconds, runs on the commit thread;
    # the loop goes on serving requests meanwhile, and they queue up for the next batch.

    async def write(self, op: WriteOp) -> WriteResult:
        if self._writer_conn is None:
            raise StoreUnavailable("the store is not open")
        future: asyncio.Future[WriteResult] = self._loop.create_future()
        self._pending.append((op, future))
        if not self._busy and not self._scheduled:
            self._scheduled = True
            # call_soon: the requests already running in this turn of the loop join the batch.
            self._loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._pending:
            return
        batch = self._pending[: self.batch_max]
        del self._pending[: self.batch_max]
        self._busy = True
        self._batch_started = time.perf_counter()
        self._begin(batch, 0)

    def _begin(self, batch: list[Any], attempt: int) -> None:
        conn = self._writer_conn
        committer = self._committer
        if conn is None or committer is None:
            self._finish(batch, [StoreUnavailable("the store is closed")] * len(batch))
            return
        ops = [op for op, _future in batch]
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            # Another process (--workers) holds the write lock. Try again shortly from the loop
            # (SQLite's own busy handler sleeps in steps of up to 100 ms), then, if it lasts,
            # wait for it on the commit thread.
            if attempt < BEGIN_RETRIES:
                self._loop.call_later(BEGIN_RETRY_DELAY, self._begin, batch, attempt + 1)
                return
            timer = self._loop.call_later(self.timeout, _expire, batch, self.timeout)
            done = self._loop.run_in_executor(committer, _apply_and_commit_waiting, conn, ops)
            done.add_done_callback(lambda f: self._finish(batch, _outcome(f, len(batch)), timer))
            return
        except sqlite3.Error as exc:
            self._finish(batch, [StoreUnavailable(f"the write failed: {exc}")] * len(batch))
            return
        try:
            results = _apply_batch(conn, ops)
        except Exception as exc:  # any failure fails the batch (503), never stalls the writer
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._finish(batch, [StoreUnavailable(f"the write failed: {exc}")] * len(batch))
            return
        # One timer per batch, not per request: a stalled disk answers 503 rather than hang.
        timer = self._loop.call_later(self.timeout, _expire, batch, self.timeout)
        done = self._loop.run_in_executor(committer, _commit, conn)
        done.add_done_callback(
            lambda f: self._finish(batch, _outcome(f, len(batch), results), timer)
        )

    def _finish(
        self,
        batch: list[Any],
        results: list[WriteResult | BaseException],
        timer: asyncio.TimerHandle | None = None,
    ) -> None:
        try:
            if timer is not None:
                # Cancelling drops the timer's hold on the batch: left for its full 5 s, every
                # request's objects would outlive it by that long and swell the GC's generations.
                timer.cancel()
            self._count(results)
            failed = results and isinstance(results[0], BaseException)
            self._last_failure = str(results[0]) if failed else None
            for (_op, future), result in zip(batch, results, strict=True):
                if future.done():  # the request gave up (timeout, disconnect)
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            # Whatever happened above, the writer must move on: to a checkpoint when one is
            # due (a short one, every CHECKPOINT_EVERY seconds), then to the next batch.
            now = time.monotonic()
            conn, committer = self._writer_conn, self._committer
            if now - self._checkpointed_at >= CHECKPOINT_EVERY and conn and committer:
                self._checkpointed_at = now
                done = self._loop.run_in_executor(committer, _checkpoint, conn, "PASSIVE")
                done.add_done_callback(self._checkpointed)
            else:
                self._busy = False
                if self._pending:
                    self._flush()

    def _checkpointed(self, done: asyncio.Future[Any]) -> None:
        if done.exception() is not None:  # a full disk, say: the next turn tries again
            log.warning("WAL checkpoint failed: %s", done.exception())
        self._busy = False
        if self._pending:
            self._flush()

    def _count(self, results: list[WriteResult | BaseException]) -> None:
        stats = self.stats
        stats.batches += 1
        stats.operations += len(results)
        stats.largest_batch = max(stats.largest_batch, len(results))
        for result in results:
            key = result.outcome.value if isinstance(result, WriteResult) else "error"
            stats.outcomes[key] = stats.outcomes.get(key, 0) + 1
        on_commit = self.on_commit
        if on_commit is not None and results and isinstance(results[0], WriteResult):
            # From the batch's start (waits for another process's write lock included).
            on_commit(len(results), time.perf_counter() - self._batch_started)

    # -- reads ----------------------------------------------------------------------------------

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = conn.execute(sql, args)
            names = [column[0] for column in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        return await self._read(run)

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            if self._reader is None:
                raise StoreUnavailable("the store is not open")
            with self._read_lock:
                try:
                    return fn(self._reader)
                except sqlite3.Error as exc:
                    raise StoreUnavailable(f"the database cannot be read: {exc}") from exc

        return await asyncio.to_thread(run)

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return await self._submit(lambda conn: conn.execute(sql, args).rowcount)  # type: ignore[no-any-return]

    async def set_reply(
        self, message_uuid: str, reply: str | None, source: str, error: str | None
    ) -> tuple[str | None, str | None]:
        key = _clean(message_uuid)

        def run(conn: sqlite3.Connection) -> tuple[str | None, str | None]:
            conn.execute(
                "UPDATE messages SET reply = ?, reply_source = ?, handler_error = ?"
                " WHERE message_uuid = ? AND reply_source = 'handler-pending'",
                _row(reply, source, error, key),
            )
            row = conn.execute(
                "SELECT reply, reply_source FROM messages WHERE message_uuid = ?", (key,)
            ).fetchone()
            return (row[0], row[1]) if row else (None, None)

        return await self._submit(run)  # type: ignore[no-any-return]

    async def add_optout(self, to_number: str, from_number: str, at: datetime) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "INSERT INTO opt_outs (to_number, from_number, opted_out_at) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    _row(to_number, from_number, _iso(at)),
                ).rowcount
                > 0
            )

        return await self._submit(run)  # type: ignore[no-any-return]

    async def remove_optout(self, to_number: str, from_number: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "DELETE FROM opt_outs WHERE to_number = ? AND from_number = ?",
                    _row(to_number, from_number),
                ).rowcount
                > 0
            )

        return await self._submit(run)  # type: ignore[no-any-return]

    async def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """A maintenance write on a connection of its own, beside the group-commit writer."""

        def run() -> Any:
            conn = _connect(self.path)
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"the maintenance write failed: {exc}") from exc
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    # -- the outbox (forward.outbox.Outbox): one worker per database file ---------------------
    #
    # Updates from the worker go through a small group commit of their own on their own
    # connection: the outcomes of one round's deliveries arrive together and share a commit.

    async def _outbox_tx(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._outbox_conn
        if conn is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        drainer = self._outbox_drainer
        if drainer is not None and drainer.get_loop() is not loop:
            # Called from another event loop than the batch's (a test client's portal, say):
            # a transaction of its own rather than a future the other loop would resolve.
            try:
                return (await asyncio.to_thread(self._outbox_locked, conn, [fn]))[0]
            except Exception as exc:
                raise StoreUnavailable(f"the outbox update failed: {exc}") from exc
        future: asyncio.Future[Any] = loop.create_future()
        self._outbox_queue.append((fn, future))
        if drainer is None:
            self._outbox_drainer = loop.create_task(self._outbox_drain())
        return await future

    def _outbox_locked(
        self, conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[Any]:
        with self._outbox_lock:  # one transaction at a time on the outbox's connection
            return _outbox_batch(conn, fns)

    async def _outbox_drain(self) -> None:
        try:
            while self._outbox_queue and self._outbox_conn is not None:
                batch, self._outbox_queue = self._outbox_queue, []
                conn = self._outbox_conn
                try:
                    fns = [fn for fn, _future in batch]
                    results = await asyncio.to_thread(self._outbox_locked, conn, fns)
                except Exception as exc:
                    failure = StoreUnavailable(f"the outbox update failed: {exc}")
                    for _fn, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                for (_fn, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._outbox_drainer = None

    async def claim_due(
        self, destination: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[Any]:
        stamp, until, holder = _iso(now), _iso(now + timedelta(seconds=lease_seconds)), self.holder

        def claim(conn: sqlite3.Connection) -> list[Any]:
            lease = conn.execute(
                "SELECT holder, expires_at FROM outbox_lease WHERE id = 1"
            ).fetchone()
            if lease is not None and lease[0] != holder and lease[1] > stamp:
                return []  # another worker delivers from this file until its lease expires
            conn.execute(
                "INSERT INTO outbox_lease (id, holder, expires_at) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at",
                (holder, until),
            )
            ids = [
                row[0]
                for row in conn.execute(
                    ob.CLAIM_CANDIDATES, (destination, stamp, stamp, stamp, stamp, limit)
                )
            ]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            conn.execute(
                f"UPDATE outbox SET leased_until = ?, leased_by = ? WHERE id IN ({marks})",  # noqa: S608
                [until, holder, *ids],
            )
            cur = conn.execute(
                f"SELECT {ob.ROW_COLUMNS} FROM outbox WHERE id IN ({marks}) ORDER BY id",  # noqa: S608
                ids,
            )
            names = [column[0] for column in cur.description]
            return [
                ob.outbox_row(dict(zip(names, row, strict=True)), _dt) for row in cur.fetchall()
            ]

        return await self._outbox_tx(claim)

    async def release_outbox_lease(self) -> None:
        """Give up the file-wide lease (at shutdown), so that another worker starts at once."""
        holder = self.holder
        await self._outbox_tx(
            lambda conn: conn.execute("DELETE FROM outbox_lease WHERE holder = ?", (holder,))
        )

    async def mark_delivered(self, row_id: int, *, now: datetime, status_code: int | None) -> None:
        args = (_iso(now), status_code, row_id)
        await self._outbox_tx(lambda conn: conn.execute(ob.MARK_DELIVERED, args))

    async def mark_failed(
        self,
        row_id: int,
        *,
        now: datetime,
        next_attempt_at: datetime,
        status_code: int | None,
        error: str | None,
    ) -> None:
        args = (_iso(next_attempt_at), status_code, _clean(error), row_id)
        await self._outbox_tx(lambda conn: conn.execute(ob.MARK_FAILED, args))

    async def mark_dead(
        self, row_id: int, *, now: datetime, status_code: int | None, error: str | None
    ) -> None:
        args = (status_code, _clean(error), row_id)
        await self._outbox_tx(lambda conn: conn.execute(ob.MARK_DEAD, args))

    async def release(self, row_ids: Sequence[int]) -> None:
        ids = list(row_ids)
        if not ids:
            return
        marks = ", ".join("?" * len(ids))
        sql = f"UPDATE outbox SET leased_until = NULL, leased_by = NULL WHERE id IN ({marks})"  # noqa: S608
        await self._outbox_tx(lambda conn: conn.execute(sql, ids))

    async def retry_delivery(self, delivery_id: int, now: datetime) -> bool:
        """A dead or pending row due now; False when there is no such row (or it was delivered)."""
        args = (_iso(now), delivery_id)
        return await self._outbox_tx(lambda conn: conn.execute(ob.RETRY_ONE, args).rowcount > 0)

    async def retry_dead(self, now: datetime) -> int:
        """Every dead row due now; returns how many."""
        args = (_iso(now),)
        return await self._outbox_tx(lambda conn: conn.execute(ob.RETRY_DEAD, args).rowcount)


def _outbox_batch(
    conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
) -> list[Any]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [fn(conn) for fn in fns]
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return results


BEGIN_RETRIES = 50  # times BEGIN_RETRY_DELAY: how long the loop retries a taken write lock
BEGIN_RETRY_DELAY = 0.001
CHECKPOINT_EVERY = 0.1  # seconds: small, frequent copies rather than large stalls
WAL_LIMIT = 50_000  # pages (about 200 MB): past it, writers wait for a full checkpoint


def _checkpoint(conn: sqlite3.Connection, mode: str) -> None:
    _busy, wal_pages, _done = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    if mode == "PASSIVE" and wal_pages > WAL_LIMIT:
        # Readers kept the WAL from being reset for long: make room, waiting for them.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        # All or nothing: every request of the batch answers 503 and Plivo retries it; a retry
        # of a request that did commit meanwhile (elsewhere) gets its stored answer.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _apply_and_commit_waiting(conn: sqlite3.Connection, ops: list[WriteOp]) -> list[WriteResult]:
    conn.execute("PRAGMA busy_timeout=30000")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = _apply_batch(conn, ops)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        _commit(conn)
        return results
    finally:
        conn.execute("PRAGMA busy_timeout=0")


def _expire(batch: list[Any], timeout: float) -> None:
    for _op, future in batch:
        if not future.done():
            future.set_exception(StoreUnavailable(f"the commit took longer than {timeout:g} s"))


def _outcome(
    done: asyncio.Future[Any], size: int, results: list[WriteResult] | None = None
) -> list[WriteResult | BaseException]:
    exc = done.exception()
    if exc is not None:
        return [StoreUnavailable(f"the commit failed: {exc}")] * size
    return list(results if results is not None else done.result())
