"""Versioned schema migrations, shared by the backends.

Each backend keeps its scripts in ``migrations/<backend>/NNNN_name.sql`` (package data). A backend
applies the pending ones in version order, in one transaction that also records each version in
its ``schema_migrations`` table; this module only finds and orders the scripts, it runs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "load_migrations", "pending_migrations"]

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file name, e.g. "0001_initial.sql"
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    """Every script of ``backend`` ("sqlite" or "postgres"), in version order.

    Raises ValueError for a ``.sql`` file whose name is not ``NNNN_name.sql`` or for two scripts
    with one version: a packaging mistake must stop the start, not skip a migration.
    """
    if not re.fullmatch(r"[a-z0-9_]+", backend):
        raise ValueError(f"bad backend name {backend!r}")
    folder = resources.files(__package__) / "migrations" / backend
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql") or not entry.is_file():
            continue
        match = _NAME.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migration file name is not NNNN_name.sql: {entry.name}")
        version = int(match.group(1))
        if version < 1:
            raise ValueError(f"migration versions start at 0001: {entry.name}")
        if version in found:
            raise ValueError(f"two migrations with version {version}: {entry.name}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    if not found:
        raise ValueError(f"no migrations for backend {backend!r}")
    return [found[version] for version in sorted(found)]


def pending_migrations(migrations: Iterable[Migration], applied: Iterable[int]) -> list[Migration]:
    """The migrations not applied yet, in version order.

    Versions recorded in the database but unknown here (a newer release migrated it) are ignored:
    migrations only add, so an older release can go on running during a rolling deploy.
    """
    done = set(applied)
    return sorted((m for m in migrations if m.version not in done), key=lambda m: m.version)
