"""Fixtures: every contract test runs on SQLite and on PostgreSQL, each time on a new database.

PostgreSQL comes from PLIVOHOOK_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/
test): each test gets a new database ``plivohook_test_<random>`` there, dropped afterwards. When
the server cannot be reached the PostgreSQL tests are skipped with the reason, or fail when
PLIVOHOOK_REQUIRE_POSTGRES=1 (CI).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from plivohook.store.base import Store

ADMIN_URL = os.environ.get(
    "PLIVOHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("PLIVOHOOK_REQUIRE_POSTGRES") == "1"

StoreFactory = Callable[..., Store]


def database_url(name: str) -> str:
    """ADMIN_URL with its database replaced by ``name``."""
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))


def create_database() -> str:
    name = f"plivohook_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name)
            )
        )
    return name


def drop_database(name: str) -> None:
    assert name.startswith("plivohook_test_")
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL, once the server answered (checked once per session)."""
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        where = urlsplit(ADMIN_URL)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"PostgreSQL at {where.hostname}:{where.port or 5432} unreachable: {first}"
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} (PLIVOHOOK_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    return ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty database for one test; dropped after it."""
    name = create_database()
    try:
        yield database_url(name)
    finally:
        drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Any) -> StoreFactory:
    """Makes new (unopened) store instances on the same new database, as a restart would."""
    if request.param == "sqlite":
        from plivohook.store.sqlite import SQLiteStore

        url = f"sqlite:///{tmp_path}/t.db"

        def make_sqlite(**options: Any) -> Store:
            return SQLiteStore(url, **options)

        return make_sqlite

    from plivohook.store.postgres import PostgresStore

    pg_url: str = request.getfixturevalue("postgres_url")

    def make_postgres(**options: Any) -> Store:
        return PostgresStore(pg_url, **options)

    return make_postgres


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    """A new store (not opened yet: use ``tests.store.run``)."""
    return make_store()
