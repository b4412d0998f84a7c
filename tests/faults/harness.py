"""Tools for the fault tests: a server process that must really start, a ledger of every message
sent and its answers, a Plivo-shaped load that retries like Plivo, and database checks."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from plivohook.protocol.simulator import inbound_sms_params, signed_request
from tests.e2e.conftest import TOKEN, Server
from tests.faults.report import REPORT

__all__ = ["TOKEN", "CheckedServer", "Ledger", "check_ledger", "make_rng", "plivo_load", "settle"]

SCHEMES = [("v2",), ("v3",), ("v2", "v3")]


def make_rng(name: str) -> tuple[random.Random, int]:
    """A seeded RNG; the seed is printed (and kept in the report) so a failure can be replayed
    with PLIVOHOOK_FAULT_SEED=<seed>."""
    raw = os.environ.get("PLIVOHOOK_FAULT_SEED")
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"{name}: seed {seed} (replay with PLIVOHOOK_FAULT_SEED={seed})")
    REPORT.seed(name, seed)
    return random.Random(seed), seed


class CheckedServer(Server):
    """`plivohook serve`, with a look at its log for unexpected errors."""

    def crashes(self) -> list[str]:
        """Log lines that mean a request met an unexpected error (a 500) or a traceback."""
        return [line for line in self.lines if "unexpected error" in line or "Traceback" in line]


def message_params(uid: str, text: str) -> list[tuple[str, str]]:
    return inbound_sms_params(uid, text)


@dataclass
class Sent:
    uid: str
    text: str
    answers: list[int | str] = field(default_factory=list)
    last: tuple[str, dict[str, str], bytes] | None = (
        None  # the last request, for a same-nonce retry
    )

    @property
    def acknowledged(self) -> bool:
        return 200 in self.answers


@dataclass
class Shot:
    started: float
    ended: float
    uid: str
    status: int | str


class Ledger:
    """Every message sent, every answer it got, and when."""

    def __init__(self) -> None:
        self.messages: dict[str, Sent] = {}
        self.shots: list[Shot] = []
        self.requests = 0

    def new(self, text: str) -> Sent:
        sent = Sent(str(uuid.uuid4()), text)
        self.messages[sent.uid] = sent
        return sent

    def acknowledged(self) -> set[str]:
        return {uid for uid, sent in self.messages.items() if sent.acknowledged}

    def unacknowledged(self) -> list[Sent]:
        return [sent for sent in self.messages.values() if not sent.acknowledged]

    def statuses(self) -> dict[int | str, int]:
        counts: dict[int | str, int] = {}
        for shot in self.shots:
            counts[shot.status] = counts.get(shot.status, 0) + 1
        return counts

    def account(self) -> None:
        """Add this ledger's traffic to the reliability report (call once, at the end)."""
        REPORT.traffic(sent=self.requests, ok=sum(1 for s in self.shots if s.status == 200))


async def send_one(
    client: httpx.AsyncClient,
    url: str,
    ledger: Ledger,
    sent: Sent,
    rng: random.Random,
    *,
    same_nonce: bool = False,
    timeout: float = 10.0,
) -> int | str:
    if same_nonce and sent.last is not None:
        full, headers, body = sent.last
    else:
        full, headers, raw = signed_request(
            url, message_params(sent.uid, sent.text), TOKEN, rng.choice(SCHEMES)
        )
        body = raw or b""
        sent.last = (full, headers, body)
    ledger.requests += 1
    started = time.monotonic()
    try:
        response = await client.post(full, content=body, headers=headers, timeout=timeout)
        status: int | str = response.status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    sent.answers.append(status)
    ledger.shots.append(Shot(started, time.monotonic(), sent.uid, status))
    return status


async def plivo_load(
    url: str,
    ledger: Ledger,
    rng: random.Random,
    stop: asyncio.Event,
    *,
    concurrency: int = 16,
    label: str = "msg",
) -> None:
    """Until ``stop``: new messages, Plivo's retries of unanswered ones (same nonce or a new one)
    and duplicate deliveries of answered ones, from ``concurrency`` connections."""

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        local = random.Random(rng.random())
        n = 0
        while not stop.is_set():
            roll = local.random()
            pending = [s for s in ledger.messages.values() if not s.acknowledged and s.answers]
            acked = [s for s in ledger.messages.values() if s.acknowledged]
            same_nonce = False
            if roll < 0.15 and pending:
                sent = local.choice(pending)
                same_nonce = local.random() < 0.5
            elif roll < 0.25 and acked:
                sent = local.choice(acked)
            else:
                n += 1
                sent = ledger.new(f"{label} {index}-{n} ✓")
            status = await send_one(client, url, ledger, sent, local, same_nonce=same_nonce)
            if not isinstance(status, int) or status >= 500:
                await asyncio.sleep(0.02)  # the server is down or busy: do not spin

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        await asyncio.gather(*(worker(i, client) for i in range(concurrency)))


async def deliver_all(url: str, ledger: Ledger, rng: random.Random, deadline: float = 60.0) -> None:
    """Plivo's eventual retries: resend every unanswered message until it gets its 200."""
    end = time.monotonic() + deadline
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient() as client:

        async def one(sent: Sent) -> None:
            async with sem:
                await send_one(client, url, ledger, sent, rng, same_nonce=rng.random() < 0.5)

        while (pending := ledger.unacknowledged()) and time.monotonic() < end:
            await asyncio.gather(*(one(s) for s in pending))
            if ledger.unacknowledged():
                await asyncio.sleep(0.2)
    left = ledger.unacknowledged()
    assert not left, f"{len(left)} messages never answered 200, e.g. {left[0].answers[-5:]}"


# -- the database, read directly ----------------------------------------------------------------


def sqlite_path(url: str) -> str:
    return url[len("sqlite:///") :]


def stored_messages(url: str) -> list[tuple[str, str]]:
    """(MessageUUID, Text) of every stored message, duplicates included."""
    sql = "SELECT message_uuid, text FROM messages"
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(sqlite_path(url), timeout=30)
        try:
            return [tuple(r) for r in conn.execute(sql)]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def sqlite_integrity(url: str) -> list[str]:
    conn = sqlite3.connect(sqlite_path(url), timeout=30)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def check_ledger(url: str, ledger: Ledger, *, everything_delivered: bool = False) -> dict[str, int]:
    """Every acknowledged message stored exactly once with its text; nothing else stored."""
    rows = stored_messages(url)
    uuids = [uid for uid, _ in rows]
    duplicates = len(uuids) - len(set(uuids))
    texts = dict(rows)
    acked = ledger.acknowledged()
    missing = acked - texts.keys()
    foreign = texts.keys() - ledger.messages.keys()
    wrong = [uid for uid in acked & texts.keys() if texts[uid] != ledger.messages[uid].text]
    assert duplicates == 0, f"{duplicates} MessageUUIDs stored more than once"
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:3]}"
    assert not foreign, f"{len(foreign)} stored messages were never sent"
    assert not wrong, f"{len(wrong)} acknowledged messages stored with another text"
    if everything_delivered:
        assert texts.keys() == ledger.messages.keys()
    if url.startswith("sqlite:///"):
        assert sqlite_integrity(url) == ["ok"]
    return {"stored": len(texts), "acknowledged": len(acked), "duplicates": duplicates}


def settle(url: str, ledger: Ledger, *, everything_delivered: bool = True) -> dict[str, int]:
    """The final check of a fault test; its figures go to the reliability report."""
    try:
        result = check_ledger(url, ledger, everything_delivered=everything_delivered)
    except AssertionError:
        rows = {uid for uid, _ in stored_messages(url)}
        acked = ledger.acknowledged()
        REPORT.outcome(len(acked), len(acked & rows), len(acked - rows))
        ledger.account()
        raise
    REPORT.outcome(result["acknowledged"], result["acknowledged"], 0, result["duplicates"])
    ledger.account()
    return result


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return found
