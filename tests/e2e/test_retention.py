"""Retention from the command line (plivohook prune) and from serve's own setting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plivohook.store.sqlite import SQLiteStore
from tests.store import message

PLIVOHOOK = str(Path(sys.executable).with_name("plivohook"))


def _fill(url: str) -> None:
    async def go() -> None:
        store = SQLiteStore(url)
        await store.open()
        now = datetime.now(UTC)
        for i, days in enumerate((40, 31, 2, 0)):
            await store.write(message(f"m{i}", received_at=now - timedelta(days=days)))
        await store.close()

    asyncio.run(go())


def test_prune_deletes_what_is_older_than_asked(tmp_path):
    url = f"sqlite:///{tmp_path}/p.db"
    _fill(url)
    env = {**os.environ, "PLIVOHOOK_DATABASE_URL": url}
    done = subprocess.run(
        [PLIVOHOOK, "prune", "--older-than", "30"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "messages: 2 deleted" in done.stdout

    async def left() -> list[str]:
        store = SQLiteStore(url)
        await store.open()
        try:
            return sorted(m["message_uuid"] for m in (await store.list_messages()).items)
        finally:
            await store.close()

    assert asyncio.run(left()) == ["m2", "m3"]


def test_prune_refuses_a_database_that_does_not_exist(tmp_path):
    done = subprocess.run(
        [PLIVOHOOK, "prune", "--older-than", "1", "--database", f"sqlite:///{tmp_path}/no.db"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "no SQLite database" in done.stderr
    assert not (tmp_path / "no.db").exists()
