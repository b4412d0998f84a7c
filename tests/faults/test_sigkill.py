"""SIGKILL at random moments under load, restart on the same database, again and again.

After every restart and at the end: every message that was answered 200 is stored exactly once
with its text, nothing unsent is stored, no MessageUUID appears twice and SQLite's
``PRAGMA integrity_check`` says ok. At the end every message is redelivered (as Plivo retries)
until it gets its 200, and then every message sent is stored exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.backends import database_url
from tests.faults.harness import (
    CheckedServer,
    Ledger,
    check_ledger,
    children,
    deliver_all,
    make_rng,
    plivo_load,
    settle,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILLS = {"sqlite": 10, "postgres": 4}


async def _load_then_kill(
    endpoint: str, ledger: Ledger, rng: random.Random, kill, delay: float, tail: float
) -> None:
    stop = asyncio.Event()
    load = asyncio.create_task(plivo_load(endpoint, ledger, rng, stop))
    await asyncio.sleep(delay)
    await asyncio.to_thread(kill)
    await asyncio.sleep(tail)
    stop.set()
    await load


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_at_random_moments_loses_nothing_acknowledged(backend, tmp_path, reliability):
    rng, _ = make_rng(f"sigkill-{backend}")
    with database_url(backend, tmp_path) as url:
        ledger = Ledger()
        server = CheckedServer(url)
        try:
            for round_no in range(KILLS[backend]):
                server.start()
                check_ledger(url, ledger)  # what the previous kill left is whole
                before = len(ledger.shots)
                delay = rng.uniform(0.1, 1.2)
                asyncio.run(
                    _load_then_kill(
                        server.url + "/plivo/message", ledger, rng, server.kill, delay, 0.1
                    )
                )
                reliability.fault(f"sigkill_{backend}")
                answers = [s.status for s in ledger.shots[before:]]
                print(
                    f"round {round_no}: killed after {delay:.2f}s, {len(answers)} requests, "
                    f"{answers.count(200)} answered 200, "
                    f"{sum(1 for a in answers if a != 200)} not"
                )
                assert server.crashes() == []
            server.start()
            check_ledger(url, ledger)
            asyncio.run(deliver_all(server.url + "/plivo/message", ledger, rng))
            assert server.crashes() == []
            result = settle(url, ledger, everything_delivered=True)
            print(f"{backend}: {result}, answers {ledger.statuses()}")
            assert any(s.status != 200 for s in ledger.shots), "no kill ever hit a request"
        finally:
            server.stop()


def _workers(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            found.append(child)
    return found


def test_sigkill_one_of_two_workers_under_load(tmp_path, reliability):
    """One worker dies; the other keeps answering, the supervisor starts a new one, and nothing
    either of them acknowledged is lost."""
    rng, _ = make_rng("sigkill-worker")
    url = f"sqlite:///{tmp_path}/workers.db"
    ledger = Ledger()
    server = CheckedServer(url, "--workers", "2")
    try:
        server.start()
        assert server.proc is not None
        assert wait_until(lambda: len(_workers(server.proc.pid)) == 2, 30), server.lines[-20:]
        endpoint = server.url + "/plivo/message"
        for _ in range(2):
            victims = _workers(server.proc.pid)
            victim = rng.choice(victims)
            before = len(ledger.shots)

            def kill(victim: int = victim) -> None:
                os.kill(victim, signal.SIGKILL)

            killed_at = time.monotonic()
            asyncio.run(_load_then_kill(endpoint, ledger, rng, kill, rng.uniform(0.3, 1.0), 1.5))
            reliability.fault("sigkill_worker")
            after_kill = [s for s in ledger.shots[before:] if s.started > killed_at + 0.2]
            assert any(s.status == 200 for s in after_kill), "nobody answered after one worker died"
            assert wait_until(
                lambda victims=victims: (
                    len(now := _workers(server.proc.pid)) == 2 and set(now) != set(victims)
                ),
                30,
            ), "the supervisor did not replace the dead worker"
            assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        asyncio.run(deliver_all(endpoint, ledger, rng))
        assert server.crashes() == []
        settle(url, ledger, everything_delivered=True)
    finally:
        server.stop()
