"""Durable storage: one interface (:mod:`.base`), two backends (SQLite, PostgreSQL)."""

from __future__ import annotations

from .base import Store, StoreError, StoreUnavailable

__all__ = ["Store", "StoreError", "StoreUnavailable", "open_store"]


def open_store(url: str, **options: object) -> Store:
    """A store for a database URL: ``sqlite:///path`` (default) or ``postgresql://…``.

    The store is not connected yet: ``await store.open()``.
    """
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url, **options)  # type: ignore[arg-type]
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresStore

        return PostgresStore(url, **options)  # type: ignore[arg-type]
    raise ValueError(
        f"unsupported database URL scheme in {url.split(':', 1)[0]!r}: "
        "use sqlite:///path or postgresql://…"
    )
