"""Opening a store: the files it creates are private, and a bad database URL says how to fix it."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator

import pytest

from plivohook.store.sqlite import SQLiteStore
from tests.store.test_sqlite import message


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_database_its_wal_and_shm_and_new_folders_are_private(tmp_path, usual_umask):
    path = tmp_path / "new" / "deeper" / "p.db"

    async def go() -> None:
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        await store.write(message("a"))
        # While it is open the WAL and the shared-memory index exist: check them now.
        for name in (path, f"{path}-wal", f"{path}-shm"):
            assert mode(name) == 0o600, (name, oct(mode(name)))
        await store.close()

    asyncio.run(go())
    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "new" / "deeper") == 0o700


def test_migrate_alone_creates_a_private_file(tmp_path, usual_umask):
    path = tmp_path / "m.db"
    assert asyncio.run(SQLiteStore(f"sqlite:///{path}").migrate())
    assert mode(path) == 0o600


def test_an_existing_file_keeps_its_mode(tmp_path, usual_umask):
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)

    async def go() -> None:
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        await store.close()

    asyncio.run(go())
    assert mode(path) == 0o640
