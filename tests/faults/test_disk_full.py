"""The SQLite database's disk fills up, then space comes back.

The database lives on a tiny tmpfs mounted for this test. Once the disk is full the service must
answer 503 (so that Plivo retries) and never 200: a 200 would acknowledge what it could not
commit. Once space is freed it answers 200 again by itself, without a restart, and every message
it acknowledged is stored exactly once in a database that passes ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import (
    CheckedServer,
    Ledger,
    check_ledger,
    deliver_all,
    make_rng,
    plivo_load,
    send_one,
    settle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECOVERY_DEADLINE = 15.0


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str = "16m") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={size},mode=0700",
                "plivohook-faults",
                str(where),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        reason = (
            f"cannot mount a tmpfs for the disk-full test (needs root or CAP_SYS_ADMIN): "
            f"{exc} {detail.decode(errors='replace').strip()}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        result = subprocess.run(["umount", str(where)], capture_output=True, timeout=30)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(path: Path) -> int:
    """Write ``path`` until the file system has no byte left; return how many were written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    written += os.write(fd, b"\xff" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return written


async def _one_by_one(endpoint: str, ledger: Ledger, rng: random.Random, n: int, label: str):
    async with httpx.AsyncClient() as client:
        answers = []
        for i in range(n):
            sent = ledger.new(f"{label} {i}")
            answers.append(await send_one(client, endpoint, ledger, sent, rng))
        return answers


async def _until_200(endpoint: str, ledger: Ledger, rng: random.Random, deadline: float):
    end = time.monotonic() + deadline
    answers: list[int | str] = []
    async with httpx.AsyncClient() as client:
        while time.monotonic() < end:
            sent = ledger.new(f"after {len(answers)}")
            answers.append(await send_one(client, endpoint, ledger, sent, rng))
            if answers[-1] == 200:
                break
            await asyncio.sleep(0.2)
    return answers


def test_sqlite_disk_full_answers_503_then_recovers_by_itself(tmp_path, reliability):
    """The disk fills up while the service is idle: from then on no commit can get a block, so
    every answer must be 503 until space comes back."""
    rng, _ = make_rng("disk-full")
    with tiny_tmpfs(tmp_path / "tiny") as disk:
        url = f"sqlite:///{disk}/plivohook.db"
        server = CheckedServer(url).start()
        ledger = Ledger()
        endpoint = server.url + "/plivo/message"
        try:
            before = asyncio.run(_one_by_one(endpoint, ledger, rng, 20, "before"))
            assert before == [200] * 20, before

            filler = disk / "filler"
            written = fill(filler)
            reliability.fault("disk_full")
            print(f"disk full after {written} filler bytes")
            full = asyncio.run(_one_by_one(endpoint, ledger, rng, 30, "full"))

            async def retries() -> list[int | str]:  # Plivo's retries, the very same requests
                async with httpx.AsyncClient() as client:
                    return [
                        await send_one(client, endpoint, ledger, sent, rng, same_nonce=True)
                        for sent in ledger.unacknowledged()[:10]
                    ]

            full += asyncio.run(retries())
            print(f"answers while full: {sorted(set(map(str, full)))}")
            assert 200 not in full, "200 while the disk was full"
            assert set(full) == {503}, f"answers other than 503 while full: {set(full)}"
            health = httpx.get(server.url + "/healthz", timeout=10)
            print(f"/healthz while full: {health.status_code} {health.text}")
            assert health.status_code == 503, "health must say writes fail"
            assert "last write failed" in health.json()["database"]

            filler.unlink()
            _recovers(server, url, ledger, rng)
            assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        finally:
            server.stop()


def test_sqlite_disk_fills_up_under_load_loses_nothing_acknowledged(tmp_path, reliability):
    """The disk fills up in the middle of group commits. A commit that got its blocks before the
    disk was full may still succeed (and be answered 200); whatever was answered 200 must be
    stored, and once space comes back the service answers 200 again by itself."""
    rng, _ = make_rng("disk-full-under-load")
    with tiny_tmpfs(tmp_path / "tiny") as disk:
        url = f"sqlite:///{disk}/plivohook.db"
        server = CheckedServer(url).start()
        ledger = Ledger()
        endpoint = server.url + "/plivo/message"
        filler = disk / "filler"

        async def fill_under_load() -> int:
            stop = asyncio.Event()
            load = asyncio.create_task(plivo_load(endpoint, ledger, rng, stop, concurrency=8))
            await asyncio.sleep(0.3)
            written = await asyncio.to_thread(fill, filler)
            await asyncio.sleep(0.5)
            stop.set()
            await load
            return written

        try:
            written = asyncio.run(fill_under_load())
            reliability.fault("disk_full")
            statuses = ledger.statuses()
            print(f"disk full after {written} filler bytes; answers {statuses}")
            assert 503 in statuses, "the disk never looked full to the service"
            check_ledger(url, ledger)
            filler.unlink()
            _recovers(server, url, ledger, rng)
        finally:
            server.stop()


def _recovers(server: CheckedServer, url: str, ledger: Ledger, rng: random.Random) -> None:
    endpoint = server.url + "/plivo/message"
    started = time.monotonic()
    after = asyncio.run(_until_200(endpoint, ledger, rng, RECOVERY_DEADLINE))
    assert after and after[-1] == 200, f"no 200 after space came back: {after[-5:]}"
    print(f"200 again {time.monotonic() - started:.2f}s after space came back")
    check_ledger(url, ledger)
    asyncio.run(deliver_all(endpoint, ledger, rng))
    assert server.crashes() == []
    settle(url, ledger, everything_delivered=True)
