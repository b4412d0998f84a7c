"""End-to-end: `plivohook serve` in a subprocess on a free loopback port, spoken to over HTTP."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

TOKEN = "e2e-auth-token-abcdef123456"
ADMIN = "e2e-admin-token-abcdef123456"
PLIVOHOOK = shutil.which("plivohook", path=str(Path(sys.executable).parent)) or "plivohook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `plivohook serve` process; its output is collected for the test's diagnostics."""

    def __init__(self, database: str, *args: str, port: int | None = None, env=None):
        self.port = port or free_port()
        self.database = database
        self.args = args
        self.env = env
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._ready: queue.Queue[str] = queue.Queue()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            PLIVOHOOK, "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--database", self.database, "--auth-token", TOKEN, "--admin-token", ADMIN,
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> Server:
        """Start (or start again), and wait for the ready line; a process that exits fails."""
        self._ready = queue.Queue()
        self.lines = []
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        # The queue goes with the thread: a killed process's pump, ending late, must not tell
        # the process started after it that it exited.
        threading.Thread(target=self._pump, args=(self.proc, self._ready), daemon=True).start()
        try:
            line = self._ready.get(timeout=timeout)
        except queue.Empty:
            line = "timed out"
        if not line.startswith("plivohook ready on "):
            self.stop()
            raise AssertionError(f"server not ready ({line}):\n" + "\n".join(self.lines[-40:]))
        return self

    def _pump(self, proc: subprocess.Popen[str], ready: queue.Queue[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("plivohook ready on "):
                ready.put(line)
        ready.put("exited")

    def kill(self) -> None:
        """SIGKILL the whole process group: no goodbye, no flush."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_factory() -> Iterator:
    started: list[Server] = []

    def make(database: str, *args: str, **kwargs) -> Server:
        server = Server(database, *args, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
