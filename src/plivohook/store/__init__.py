"""Durable storage: one interface (:mod:`.base`), two backends (SQLite, PostgreSQL)."""

from __future__ import annotations

from .base import Store, StoreError, StoreUnavailable

__all__ = [
    "ACCEPTED_URLS",
    "DatabaseURLError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "check_database_url",
    "open_store",
]

ACCEPTED_URLS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://user@host/dbname"
)


class DatabaseURLError(ValueError):
    """A database URL no backend takes; the message gives the accepted forms."""


def check_database_url(url: str) -> str:
    """The backend a database URL names ("sqlite" or "postgres"), or DatabaseURLError.

    The message never repeats a URL that may hold a password: only a scheme, or a SQLite path.
    """
    scheme, sep, rest = url.partition(":")
    if not url.strip():
        raise DatabaseURLError(f"no database URL given; use {ACCEPTED_URLS}")
    if not sep or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        # A bare file name (plivohook.db, ./data/x.db) is the usual slip.
        raise DatabaseURLError(
            f"{url!r} is not a database URL: for a SQLite file write sqlite:///{url}; "
            f"accepted: {ACCEPTED_URLS}"
        )
    if scheme == "sqlite":
        if not rest.startswith("///"):
            path = rest.lstrip("/")
            raise DatabaseURLError(
                f"a SQLite URL has three slashes: sqlite:///{path} (relative) or "
                f"sqlite:////{path} (absolute), not {url!r}"
            )
        if not rest[3:]:
            raise DatabaseURLError(f"the SQLite URL names no file; use {ACCEPTED_URLS}")
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    raise DatabaseURLError(f"unsupported database {scheme!r}: use {ACCEPTED_URLS}")


def open_store(url: str, **options: object) -> Store:
    """A store for a database URL: ``sqlite:///path`` (default) or ``postgresql://…``.

    The store is not connected yet: ``await store.open()``. A URL no backend takes raises
    DatabaseURLError (a ValueError) saying which forms are accepted.
    """
    if check_database_url(url) == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, **options)  # type: ignore[arg-type]
    from .postgres import PostgresStore

    try:
        return PostgresStore(url, **options)  # type: ignore[arg-type]
    except ValueError as exc:
        if "PostgreSQL URL" not in str(exc):
            raise
        raise DatabaseURLError(f"invalid PostgreSQL URL; use {ACCEPTED_URLS}") from None
