"""Running the app on uvicorn (uvloop + httptools), one process or several."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import logs
from .app import create_app
from .config import Settings
from .web.metrics import MULTIPROC_ENV

__all__ = ["run"]

log = logging.getLogger("plivohook")

# --workers N: the folder in which each worker leaves a file named after its pid once its
# application has started (store open, migrations done); the parent says "ready" at N files.
READY_DIR_ENV = "PLIVOHOOK_READY_DIR"


def _ready_line(host: str, port: int, workers: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    plural = f" ({workers} workers)" if workers > 1 else ""
    return f"plivohook ready on http://{shown}:{port}{plural}"


REQUEST_TIMEOUT = 10.0  # seconds from a connection's (or a request's) first byte to its last
MAX_HEADERS = 100  # header fields per request; Plivo sends about 15
LINGER = 1.0  # seconds a refused connection's input is read and dropped before closing


class _TooManyHeaders(Exception):
    """Raised inside the parser's callback to stop it at once."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline on receiving each request.

    uvicorn times out idle keep-alive connections only after a response; a client that connects
    and never completes its headers (slowloris) or trickles its body would hold a connection and a
    request forever. Every request (and a fresh connection's wait for its first request) must be
    received whole within REQUEST_TIMEOUT, else it is answered 408 and the connection closed.

    The request line and headers are also bounded as they arrive: httptools buffers a header
    whole before handing it over, with no limit of its own (a 16 MiB header was answered 200, an
    80 MB one held the loop for 6.8 s). Bytes are fed to the parser only up to
    ``max_header_bytes`` while a request's head is incomplete; past it, and past MAX_HEADERS
    fields, the answer is 431 and the connection is closed.
    """

    max_header_bytes = 32 * 1024  # set from Settings.max_header_bytes in each process
    _deadline: asyncio.TimerHandle | None = None
    _received = True
    _in_head = True  # the bytes being received belong to a request line or headers
    _head_bytes = 0
    _head_refused: str | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        self._received = False
        self._in_head, self._head_bytes, self._head_refused = True, 0, None
        self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)

    def data_received(self, data: bytes) -> None:
        while data:
            if self._head_refused is not None or self.transport.is_closing():
                return
            if not self._in_head:
                super().data_received(data)
                return
            room = self.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse_head(
                    f"request line and headers larger than {self.max_header_bytes} bytes"
                )
                return
            # Only what still fits is parsed; the rest waits for the head to end within it.
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
        if self._in_head and self._head_bytes >= self.max_header_bytes:
            self._refuse_head(f"request line and headers larger than {self.max_header_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(self.headers) > MAX_HEADERS:
            self._head_refused = f"more than {MAX_HEADERS} header fields"
            raise _TooManyHeaders  # uvicorn answers the parser error with send_400_response

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_refused is not None:
            self._send_431(self._head_refused)
            return
        super().send_400_response(msg)

    def _refuse_head(self, reason: str) -> None:
        self._head_refused = reason
        self._send_431(reason)

    def _send_431(self, reason: str) -> None:
        if self.transport.is_closing():
            return
        log.warning("refused a request from %s: 431 %s", _peer(self.client), reason)
        body = reason.encode() + b"\n"
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        # A lingering close: closing at once with the client's bytes unread would send a reset,
        # which can destroy the 431 before the client reads it. Say we are done, drop what still
        # comes (data_received ignores it) for a moment, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._received = False
        if self._deadline is None:
            self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # what follows is the next request's head
        self._received = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._received or self._head_refused is not None or self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            body = b"request not received in time\n"
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"connection: close\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        # Closing tells a handler still waiting for the body that the client is gone.
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


def _tune_runtime() -> None:
    # What exists at start-up (modules, the app) lives for ever: keep the collector off it, and
    # collect the young generation less often; a request makes no reference cycles of its own.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    # The commit thread needs the GIL back after each fsync to hand its batch to the loop; by
    # default it may wait 5 ms for a busy loop to let go. Measured with make bench: 0.5 ms gave
    # 11% more messages/s on SQLite (0.2 ms less again).
    sys.setswitchinterval(0.0005)


class _Server(uvicorn.Server):
    """Says it is ready only once the socket listens and the store is open."""

    def __init__(self, config: uvicorn.Config, line: str):
        super().__init__(config)
        self._line = line

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await super().startup(sockets=sockets)
        if not self.should_exit:
            _tune_runtime()
            print(self._line, flush=True)


def _config(app: object, host: str, port: int, log_level: str, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        lifespan="on",
        log_level=log_level,
        # Our logging (logs.configure) already holds uvicorn's loggers: no config of its own.
        log_config=None,
        access_log=False,
        server_header=False,
        # The app decides what X-Forwarded-* may change (--trust-forwarded-headers); uvicorn's
        # own proxy-header handling would trust them from 127.0.0.1 behind our back.
        proxy_headers=False,
        # Slow clients must not pin a worker: idle keep-alive connections are closed quickly.
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        **extra,  # type: ignore[arg-type]
    )


def run(settings: Settings) -> None:
    host, port, workers, log_level = (
        settings.host,
        settings.port,
        settings.workers,
        settings.log_level,
    )
    line = _ready_line(host, port, workers)
    GuardedHttpToolsProtocol.max_header_bytes = settings.max_header_bytes
    # SIGHUP reloads the rules once the app has started (it installs the handler); before that
    # it must not end the process, as its default action would.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if workers == 1:
        server = _Server(_config(create_app(settings), host, port, log_level), line)
        server.run()
        if not server.started:
            sys.exit(3)
        return
    # Worker processes are spawned afresh: they rebuild the settings from the environment.
    os.environ.update(settings.to_env())
    ready_dir = tempfile.mkdtemp(prefix="plivohook-ready-")  # 0700
    os.environ[READY_DIR_ENV] = ready_dir
    # prometheus-client's multiprocess mode: each worker writes its figures to files here and
    # /metrics adds them up. Our own folder (0700) every time, whatever the environment says: a
    # folder left by another run would add its counts to ours.
    metrics_dir = tempfile.mkdtemp(prefix="plivohook-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    config = _config(
        "plivohook.server:worker_app", host, port, log_level, factory=True, workers=workers
    )
    threading.Thread(
        target=_announce, args=(host, port, line, ready_dir, workers), daemon=True
    ).start()
    try:
        _run_multi(config)
    finally:
        shutil.rmtree(ready_dir, ignore_errors=True)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> object:
    """The app of one worker process of --workers N (uvicorn calls it in each process)."""
    from .app import create_app_from_env

    _tune_runtime()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app installs its reload handler
    app = create_app_from_env()
    # A fresh process: its logging is configured again, from the settings in the environment.
    logs.configure(app.settings.log_level, app.settings.log_format)
    GuardedHttpToolsProtocol.max_header_bytes = app.settings.max_header_bytes
    ready_dir = os.environ.get(READY_DIR_ENV)
    if ready_dir:
        startup = app.startup

        async def startup_then_say_so() -> None:
            await startup()
            with open(os.path.join(ready_dir, str(os.getpid())), "w"):
                pass

        app.startup = startup_then_say_so  # type: ignore[method-assign]
    return app


def workers_ready(ready_dir: str, workers: int) -> bool:
    """Whether ``workers`` distinct worker processes have started their application."""
    try:
        return len(os.listdir(ready_dir)) >= workers
    except FileNotFoundError:
        return False


def _run_multi(config: uvicorn.Config) -> None:
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            # uvicorn's supervisor restarts every worker on SIGHUP; a rules file that does not
            # load would then stop the new workers from starting. Each worker reloads its rules
            # on its own SIGHUP instead, keeping the old ones if the file is bad.
            log.info("SIGHUP: reloading the rules in %d workers", len(self.processes))
            for process in self.processes:
                if process.process.pid is not None and process.process.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.process.pid, signal.SIGHUP)

    # uvicorn's supervisor replaces a worker that dies (SIGKILL, crash) while the others serve.
    sock = config.bind_socket()
    Supervisor(config, sockets=[sock]).run()


def _announce(host: str, port: int, line: str, ready_dir: str, workers: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - the address we listen on, not one we bind
        shown = "127.0.0.1"
    deadline = time.monotonic() + 60
    # One worker answering /healthz is not all of them up: wait for every worker's file first.
    while not workers_ready(ready_dir, workers):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{shown}:{port}/healthz", timeout=1):
                print(line, flush=True)
                return
        except OSError:
            time.sleep(0.1)
