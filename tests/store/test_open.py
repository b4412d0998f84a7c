"""Opening a store: the files it creates are private, and a bad database URL says how to fix it."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator

import pytest

from plivohook.store import DatabaseURLError, StoreUnavailable, check_database_url, open_store
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


# -- a database URL no backend takes: the message says which forms are accepted ------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://x/y", "unsupported database 'mysql'"),
        ("plivohook.db", "for a SQLite file write sqlite:///plivohook.db"),
        ("sqlite://plivohook.db", "three slashes: sqlite:///plivohook.db"),
        ("sqlite:///", "names no file"),
        ("", "no database URL"),
    ],
)
def test_a_bad_url_is_refused_with_the_accepted_forms(url, says):
    with pytest.raises(DatabaseURLError) as caught:
        open_store(url)
    message = str(caught.value)
    assert says in message
    assert "postgresql://" in message or "sqlite:///" in message


def test_an_unsupported_url_does_not_repeat_its_password():
    with pytest.raises(DatabaseURLError) as caught:
        open_store("mysql://user:s3cret-pass@db/x")
    assert "s3cret-pass" not in str(caught.value)


def test_good_urls_name_their_backend(tmp_path):
    assert check_database_url(f"sqlite:///{tmp_path}/a.db") == "sqlite"
    assert check_database_url("sqlite:///:memory:") == "sqlite"
    assert check_database_url("postgresql://u@h/db") == "postgres"
    assert check_database_url("postgres://u@h/db") == "postgres"
    assert isinstance(open_store(f"sqlite:///{tmp_path}/a.db"), SQLiteStore)


def test_a_folder_that_cannot_be_made_is_store_unavailable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable, match="cannot open the SQLite database"):
        asyncio.run(SQLiteStore(f"sqlite:///{blocker}/sub/x.db").migrate())
