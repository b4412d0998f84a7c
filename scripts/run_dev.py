"""`make run`: start plivohook on SQLite, making a token when none is set.

The tokens are kept in .plivohook-dev.env (git-ignored) so that a second `make run` keeps them.
"""

from __future__ import annotations

import os
import secrets
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


def save(path: Path, values: dict[str, str]) -> None:
    """Write the tokens to a file that is 0600 from its first byte.

    Writing then chmod-ing leaves a moment in which another user may open it (and keep the open
    file after the chmod). An existing file is made 0600 before anything is written to it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)
        out.write("".join(f"{key}={value}\n" for key, value in values.items()))


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
        save(ENV_FILE, {"PLIVO_AUTH_TOKEN": token, "PLIVOHOOK_ADMIN_TOKEN": admin})
    host = os.environ.get("PLIVOHOOK_HOST", "127.0.0.1")
    port = os.environ.get("PLIVOHOOK_PORT", "8080")
    database = os.environ.get("PLIVOHOOK_DATABASE_URL", "sqlite:///plivohook.db")
    from plivohook.cli import port_problem

    # Before the banner: a busy port is one line, not a banner and then an error.
    problem = port_problem(host, int(port)) if port.isdigit() else None
    if problem:
        print(f"make run: {problem}", file=sys.stderr)
        raise SystemExit(2)
    base = f"http://{host}:{port}"
    bin_dir = Path(sys.executable).parent
    print(f"plivohook development server (database: {database})")
    print(f"  auth token (kept in {ENV_FILE}):  {token}")
    print(f"  admin token:                       {admin}")
    print("Try it from another terminal (the tokens go through the environment, not ps):")
    print(f"  set -a; . ./{ENV_FILE}; set +a")
    print(f"  {bin_dir}/plivohook send {base}/plivo/message --text 'Hello!'")
    print(f"  {bin_dir}/plivohook messages --database {database}")
    print(f'  curl -H "Authorization: Bearer $PLIVOHOOK_ADMIN_TOKEN" {base}/api/messages')
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
