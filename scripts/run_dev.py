"""`make run`: start plivohook on SQLite, making a token when none is set.

The tokens are kept in .plivohook-dev.env (git-ignored) so that a second `make run` keeps them.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path

ENV_FILE = Path(".plivohook-dev.env")


def _load() -> dict[str, str]:
    values: dict[str, str] = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
    return values


def main() -> None:
    saved = _load()
    token = os.environ.get("PLIVO_AUTH_TOKEN") or saved.get("PLIVO_AUTH_TOKEN")
    admin = os.environ.get("PLIVOHOOK_ADMIN_TOKEN") or saved.get("PLIVOHOOK_ADMIN_TOKEN")
    made = False
    if not token:
        token, made = secrets.token_urlsafe(30), True
    if not admin:
        admin, made = secrets.token_urlsafe(24), True
    if made:
        ENV_FILE.write_text(f"PLIVO_AUTH_TOKEN={token}\nPLIVOHOOK_ADMIN_TOKEN={admin}\n")
        ENV_FILE.chmod(0o600)
    host = os.environ.get("PLIVOHOOK_HOST", "127.0.0.1")
    port = os.environ.get("PLIVOHOOK_PORT", "8080")
    database = os.environ.get("PLIVOHOOK_DATABASE_URL", "sqlite:///plivohook.db")
    base = f"http://{host}:{port}"
    bin_dir = Path(sys.executable).parent
    print(f"plivohook development server (database: {database})")
    print(f"  auth token (kept in {ENV_FILE}):  {token}")
    print(f"  admin token:                       {admin}")
    print("Try it from another terminal:")
    print(
        f"  {bin_dir}/plivohook send {base}/plivo/message --auth-token {shlex.quote(token)}"
        " --text 'Hello!'"
    )
    print(f"  {bin_dir}/plivohook messages --database {database}")
    print(f"  curl -H 'Authorization: Bearer {admin}' {base}/api/messages")
    print(flush=True)
    env = dict(os.environ, PLIVO_AUTH_TOKEN=token, PLIVOHOOK_ADMIN_TOKEN=admin)
    argv = [
        str(bin_dir / "plivohook"),
        "serve",
        "--host",
        host,
        "--port",
        port,
        "--database",
        database,
    ]
    os.execvpe(argv[0], argv, env)  # noqa: S606 - our own executable, fixed argv


if __name__ == "__main__":
    main()
