"""Real databases for tests: a SQLite file, and a fresh PostgreSQL database per test.

PostgreSQL comes from PLIVOHOOK_TEST_POSTGRES_URL (default: the local server). When it cannot be
reached the PostgreSQL cases are skipped, except where PLIVOHOOK_REQUIRE_POSTGRES=1 (CI), where
they fail: a silently skipped backend is a defect.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

BACKENDS = ["sqlite", "postgres"]
ADMIN_URL = os.environ.get(
    "PLIVOHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def postgres_or_skip() -> None:
    import psycopg

    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL unreachable at {ADMIN_URL}: {exc}"
        if os.environ.get("PLIVOHOOK_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    import psycopg

    postgres_or_skip()
    name = f"plivohook_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/plivohook.db"
    else:
        with fresh_postgres_database() as url:
            yield url
