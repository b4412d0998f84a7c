"""The command line around the server, as a user runs it: subprocesses, real files, real output."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest

from tests.backends import ADMIN_URL, _with_database, postgres_or_skip
from tests.e2e.conftest import ADMIN, PLIVOHOOK, TOKEN, Server

pytestmark = pytest.mark.e2e


def plivohook(*args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd=None):
    """Run the command with a wide, piped output (so Rich neither wraps nor styles)."""
    full_env = dict(os.environ, COLUMNS="250", **(env or {}))
    for name in ("PLIVO_AUTH_TOKEN", "PLIVOHOOK_ADMIN_TOKEN", "PLIVOHOOK_DATABASE_URL"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [PLIVOHOOK, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd
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


# -- item 6: tokens out of the process list ------------------------------------------------------


class BareServer(Server):
    """`plivohook serve` given no token flag: the tokens come from the environment or files."""

    def command(self) -> list[str]:
        return [
            PLIVOHOOK, "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--database", self.database, *self.args,
        ]  # fmt: skip


@pytest.fixture
def bare_server() -> Iterator:
    started: list[Server] = []

    def make(database: str, *args: str, **kwargs) -> Server:
        server = BareServer(database, *args, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_tokens_from_files_named_in_the_environment(bare_server, tmp_path):
    (tmp_path / "auth").write_text(f"old-token-0123456789\n{TOKEN}\n")
    (tmp_path / "admin").write_text(ADMIN + "\n")
    server = bare_server(
        f"sqlite:///{tmp_path}/f.db",
        env={
            "PLIVO_AUTH_TOKEN_FILE": str(tmp_path / "auth"),
            "PLIVOHOOK_ADMIN_TOKEN_FILE": str(tmp_path / "admin"),
        },
    ).start()
    assert not any("WARNING: --" in line for line in server.lines), server.lines
    (tmp_path / "send-token").write_text(TOKEN)
    sent = plivohook(
        "send", server.url + "/plivo/message", "--auth-token-file", str(tmp_path / "send-token")
    )
    assert sent.returncode == 0 and "200: 1" in sent.stdout, sent.stdout + sent.stderr
    assert "WARNING" not in sent.stderr
    api = httpx.get(server.url + "/api/messages", headers={"Authorization": f"Bearer {ADMIN}"})
    assert api.status_code == 200 and len(api.json()["messages"]) == 1


def test_a_token_given_as_a_flag_is_warned_about_and_never_shown(server_factory, tmp_path):
    server = server_factory(f"sqlite:///{tmp_path}/w.db").start()
    output = "\n".join(server.lines)
    assert "WARNING: --auth-token on the command line is visible" in output
    assert "WARNING: --admin-token on the command line is visible" in output
    assert TOKEN not in output and ADMIN not in output
    sent = plivohook("send", server.url + "/plivo/message", "--auth-token", TOKEN)
    assert sent.returncode == 0
    assert "--auth-token on the command line" in sent.stderr and TOKEN not in sent.stderr


def test_an_unreadable_or_empty_token_file_is_a_usage_error(tmp_path):
    (tmp_path / "empty").write_text("\n")
    for path, says in ((tmp_path / "missing", "does not exist"), (tmp_path / "empty", "no token")):
        result = plivohook(
            "serve", "--database", f"sqlite:///{tmp_path}/x.db", "--auth-token-file", str(path)
        )
        assert result.returncode == 2
        assert "--auth-token-file" in result.stderr and says in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# -- item 9: a wrong database is one line, exit 2, before uvicorn starts -------------------------


def one_line_refusal(result, *says: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING")]
    assert len(lines) == 1, result.stderr
    assert "--database (PLIVOHOOK_DATABASE_URL)" in lines[0]
    for text in says:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert "Application startup failed" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("database", "says"),
    [
        ("mysql://x/y", ("unsupported database 'mysql'", "postgresql://user@host/dbname")),
        ("plivohook.db", ("sqlite:///plivohook.db",)),
        ("sqlite://plivohook.db", ("three slashes", "sqlite:///plivohook.db")),
        ("postgresql://postgres@127.0.0.1:1/x", ("cannot connect to PostgreSQL",)),
    ],
)
def test_serve_refuses_a_wrong_database_in_one_line(tmp_path, database, says):
    result = plivohook(
        "serve", "--database", database, env={"PLIVO_AUTH_TOKEN": TOKEN}, cwd=tmp_path
    )
    one_line_refusal(result, *says)
    assert list(tmp_path.iterdir()) == []


def test_serve_refuses_a_missing_postgres_database(tmp_path):
    postgres_or_skip()
    missing = _with_database(ADMIN_URL, f"plivohook_missing_{uuid.uuid4().hex[:8]}")
    result = plivohook("serve", "--database", missing, env={"PLIVO_AUTH_TOKEN": TOKEN})
    one_line_refusal(result, "does not exist")


def test_migrate_on_a_missing_folder_refuses(tmp_path):
    result = plivohook("migrate", "--database", f"sqlite:///{tmp_path}/nowhere/x.db")
    one_line_refusal(result, f"the folder {tmp_path}/nowhere does not exist")
    assert not (tmp_path / "nowhere").exists()
    result = plivohook("migrate", "--database", "sqlite://x.db")
    one_line_refusal(result, "three slashes")


# -- item 11: reading never creates a database ----------------------------------------------------


def test_messages_refuses_a_database_that_does_not_exist(tmp_path):
    result = plivohook("messages", "--database", "sqlite:///typo.db", cwd=tmp_path)
    one_line_refusal(result, "no SQLite database at", "nothing was created")
    assert "no messages yet" not in result.stdout
    assert list(tmp_path.iterdir()) == []


# -- item 10: ports -------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_serve_refuses_a_port_out_of_range(tmp_path, port):
    result = plivohook(
        "serve", "--database", "sqlite:///x.db", "--port", port, env={"PLIVO_AUTH_TOKEN": TOKEN},
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--port" in result.stderr and "1<=x<=65535" in result.stderr, result.stderr
    assert "ready on" not in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_port_from_the_environment_is_checked_too(tmp_path):
    result = plivohook(
        "serve", "--database", "sqlite:///x.db",
        env={"PLIVO_AUTH_TOKEN": TOKEN, "PLIVOHOOK_PORT": "70000"}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "1<=x<=65535" in result.stderr, result.stderr


# -- item 13: from make run to real Plivo ---------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_busy_port_is_one_line_not_errno_98(tmp_path, busy_port):
    result = plivohook(
        "serve", "--database", "sqlite:///x.db", "--port", str(busy_port),
        env={"PLIVO_AUTH_TOKEN": TOKEN}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: --port (PLIVOHOOK_PORT): port {busy_port} on 127.0.0.1 is already in use "
        "(another plivohook or make run?); stop it or choose another port"
    ]
    assert "Errno" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before the database was created


def test_make_run_on_a_busy_port_says_so_before_its_banner(tmp_path, busy_port):
    script = Path(__file__).resolve().parents[2] / "scripts" / "run_dev.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLIVO", "PLIVOHOOK"))}
    old = os.umask(0o022)
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env=dict(env, PLIVOHOOK_PORT=str(busy_port)),
        )  # fmt: skip
    finally:
        os.umask(old)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"make run: --port (PLIVOHOOK_PORT): port {busy_port} on 127.0.0.1 is already in use "
        "(another plivohook or make run?); stop it or choose another port"
    ]
    env_file = tmp_path / ".plivohook-dev.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_start_up_names_the_urls_signatures_are_checked_against(server_factory, tmp_path):
    direct = server_factory(f"sqlite:///{tmp_path}/a.db").start()
    said = "\n".join(direct.lines)
    assert "signatures are checked against" in said and "Host header" in said
    assert f"http://127.0.0.1:{direct.port}/plivo/message" in said
    assert "--public-url" in said
    public = server_factory(
        f"sqlite:///{tmp_path}/b.db", "--public-url", "https://hooks.example.com/"
    ).start()
    said = "\n".join(public.lines)
    assert (
        "signatures are checked against https://hooks.example.com/plivo/message and "
        "https://hooks.example.com/plivo/status"
    ) in said
    assert "--trust-forwarded-headers is ignored" not in said


def test_public_url_with_trust_forwarded_headers_warns(server_factory, tmp_path):
    server = server_factory(
        f"sqlite:///{tmp_path}/c.db",
        "--public-url", "https://hooks.example.com", "--trust-forwarded-headers",
    ).start()  # fmt: skip
    assert any(
        line.startswith("WARNING: --trust-forwarded-headers is ignored: --public-url")
        for line in server.lines
    ), server.lines


# -- item 14: send, --help, verify, --workers ------------------------------------------------------


def test_send_to_no_server_says_it_is_not_reachable():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"http://127.0.0.1:{port}/plivo/message"
    result = plivohook("send", url, env={"PLIVO_AUTH_TOKEN": TOKEN})
    assert result.returncode == 1
    assert f"the server is not reachable at {url}" in result.stderr, result.stderr
    assert "ConnectError" not in result.stdout + result.stderr
    assert "not reachable: 1" in result.stdout


def test_send_signs_for_the_public_url_while_posting_locally(server_factory, tmp_path):
    server = server_factory(
        f"sqlite:///{tmp_path}/p.db", "--public-url", "https://hooks.example.com"
    ).start()
    local = server.url + "/plivo/message"
    public = "https://hooks.example.com/plivo/message"
    env = {"PLIVO_AUTH_TOKEN": TOKEN}
    refused = plivohook("send", local, env=env)
    assert refused.returncode == 1 and "403: 1" in refused.stdout
    for method in ("POST", "GET"):
        signed = plivohook("send", local, "--sign-url", public, "--method", method, env=env)
        assert signed.returncode == 0 and "200: 1" in signed.stdout, signed.stdout + signed.stderr


def test_serve_help_names_the_environment_variable_of_every_option():
    from plivohook.cli import serve

    result = plivohook("serve", "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())  # undo the wrapping
    options = [p for p in serve.params if isinstance(p, click.Option) and p.name != "help"]
    assert len(options) >= 15
    for option in options:
        assert option.envvar, f"{option.opts[0]} reads no environment variable"
        assert f"env var: {option.envvar}" in help_text, option.envvar


@pytest.mark.parametrize("command", ["sign", "verify"])
def test_sign_and_verify_show_their_defaults(command):
    result = plivohook(command, "--help")
    help_text = " ".join(result.stdout.split())
    assert "--method [POST|GET] [default: POST]" in help_text
    assert "--version [v2|v3] [default: v3]" in help_text
    assert "env var: PLIVO_AUTH_TOKEN" in help_text


def test_verify_prints_every_string_it_tried():
    from plivohook.protocol import signature

    url = "https://exämple.com/plivo/sms;v=1"
    nonce = "12345678901234567890"
    tried = signature.strings_to_sign("v2", "POST", url, [], nonce)
    assert len(tried) >= 3
    wrong = "A" * 43 + "="
    result = plivohook(
        "verify", url, "--nonce", nonce, "--signature", wrong, "--version", "v2",
        env={"PLIVO_AUTH_TOKEN": f"{TOKEN},other-token-0123456789"},
    )  # fmt: skip
    assert result.returncode == 1
    assert f"tried {len(tried)} strings (one per form of the URL), each with 2 tokens:" in (
        result.stdout
    )
    for name, text in tried:
        assert f"tried ({name}): {text}\n" in result.stdout


SLOW_FIRST_WORKER = """
import os, sys, time
# The first worker process to get here starts 3 s late: a slow machine, made certain.
if "--multiprocessing-fork" in sys.argv:
    try:
        os.close(os.open(os.path.join(os.path.dirname(__file__), "slow"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        pass
    else:
        time.sleep(3)
"""


def test_workers_2_says_ready_only_once_every_worker_has_started(server_factory, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_FIRST_WORKER)
    database = tmp_path / "w.db"
    server = server_factory(
        f"sqlite:///{database}", "--workers", "2", env={"PYTHONPATH": str(hook)}
    ).start(timeout=60)
    assert (hook / "slow").exists(), "no worker was slowed down"
    # At the ready line both workers have opened the database (they do during their startup).
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    workers = [
        pid
        for pid in children.split()
        if b"--multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 2, (children, server.lines)
    for pid in workers:
        fds = Path(f"/proc/{pid}/fd")
        opened = {os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()}
        assert str(database) in opened, f"worker {pid} has not opened the database yet"
