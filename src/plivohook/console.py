"""The ``plivohook`` console script: the command line, once the server extra is known to be there.

The core install carries only what ``plivohook.protocol`` and ``plivohook.integrations.flask``
need (nothing but the standard library, and Flask for the latter); the command needs the
``server`` extra. Its subcommands import their packages lazily, so without this check
``plivohook --help`` would work and ``plivohook serve`` would end in a traceback. This module
imports nothing outside the standard library before the check.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ["SERVER_MODULES", "main", "missing_server_modules"]

# The top-level modules of the server extra's packages (psycopg[pool] adds psycopg_pool).
SERVER_MODULES = (
    "click",
    "starlette",
    "uvicorn",
    "rich",
    "httpx",
    "psycopg",
    "psycopg_pool",
    "orjson",
)


def missing_server_modules() -> list[str]:
    """The server extra's modules that cannot be found, without importing any of them."""
    missing = []
    for name in SERVER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses it, or a None in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


def _install_target() -> str:
    # Nothing is published on PyPI: name the checkout when running from one (an editable install).
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "plivohook").is_dir():
        return str(root)
    return "/path/to/plivohook"


def main() -> None:
    missing = missing_server_modules()
    if missing:
        print(
            "the plivohook command needs the server extra: "
            f"pip install '{_install_target()}[server]' (missing: {', '.join(missing)})",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from plivohook.cli import main as cli_main

    cli_main()
