"""The command line around the server, as a user runs it: subprocesses, real files, real output."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.conftest import PLIVOHOOK, TOKEN

pytestmark = pytest.mark.e2e


def plivohook(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    """Run the command with a wide, piped output (so Rich neither wraps nor styles)."""
    full_env = dict(os.environ, COLUMNS="250", **(env or {}))
    for name in ("PLIVO_AUTH_TOKEN", "PLIVOHOOK_ADMIN_TOKEN", "PLIVOHOOK_DATABASE_URL"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [PLIVOHOOK, *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


# -- item 4: stored text never drives the terminal -----------------------------------------------

HOSTILE = {
    "ok then [/bold] oops": "ok then [/bold] oops",
    "[link=http://x]y[/link]": "[link=http://x]y[/link]",
    "\x1b]0;title\x07": "\ufffd]0;title\ufffd",
}


def test_messages_prints_markup_and_escapes_literally(server_factory, tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    server = server_factory(url).start()
    for text in HOSTILE:
        sent = plivohook(
            "send", server.url + "/plivo/message", "--text", text, env={"PLIVO_AUTH_TOKEN": TOKEN}
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
    shown = plivohook("messages", "--database", url)
    assert shown.returncode == 0, shown.stderr
    for expected in HOSTILE.values():
        assert expected in shown.stdout
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "MarkupError" not in shown.stderr
    # --json escapes control characters itself (JSON strings cannot hold them raw).
    as_json = plivohook("messages", "--database", url, "--json")
    assert "\x1b" not in as_json.stdout and "\\u001b]0;title\\u0007" in as_json.stdout
