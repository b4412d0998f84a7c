"""The plivohook benchmark: throughput and latency against two baselines, on a 2-core machine.

Run by ``make bench`` (bench/run.sh installs wrk and the baselines' venv first). Each server is
pinned to core 0 with taskset, wrk to core 1; every request is a distinct, correctly signed Plivo
inbound SMS (bench/gen_requests.py) replayed once by bench/replay.lua. Rounds interleave the
servers; after each plivohook run the store is checked against what wrk saw. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gen_requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROJECT_BIN = ROOT / ".venv" / "bin"
BASELINE_BIN = BENCH / ".venv-baselines" / "bin"
BASELINES = BENCH / "baselines"
LUA = BENCH / "replay.lua"
PATH = "/plivo/message"
SERVER_CPUS = "0"
WRK_CPUS = "1"
RATE_GUESS = 20_000.0  # requests/s assumed for a server not measured yet (sizes its warm-up)
MIN_RATE = 5_000.0  # requests/s a run's requests are made for at least (cheap insurance)
WARMUP_MARGIN = 2.0  # request-file margin on a rate seen in a warm-up (on earlier runs: --margin)
LATENCY_TARGET_P99_MS = 20.0

Json = dict[str, Any]


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- configuration ------------------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


@dataclass(frozen=True, slots=True)
class Config:
    duration: int  # measured window of a run, seconds
    rounds: int
    connections: int
    threads: int
    warmup: int
    drain: int  # seconds after the window for the requests in flight to be answered
    margin: float
    servers: tuple[str, ...]
    latency_check: bool
    pg_url: str
    start_timeout: float
    stop_timeout: float
    results_dir: Path


def parse_config(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description="Benchmark plivohook against its baselines (see bench/README.md).",
        epilog="Each option defaults to its BENCH_* environment variable.",
    )
    parser.add_argument("--duration", type=int, default=_env_int("BENCH_DURATION", 8))
    parser.add_argument("--rounds", type=int, default=_env_int("BENCH_ROUNDS", 3))
    parser.add_argument("--connections", type=int, default=_env_int("BENCH_CONNECTIONS", 64))
    parser.add_argument("--threads", type=int, default=_env_int("BENCH_THREADS", 2))
    parser.add_argument("--warmup", type=int, default=_env_int("BENCH_WARMUP", 1))
    parser.add_argument("--drain", type=int, default=_env_int("BENCH_DRAIN", 1))
    parser.add_argument("--margin", type=float, default=_env_float("BENCH_MARGIN", 1.5))
    parser.add_argument(
        "--servers",
        default=os.environ.get("BENCH_SERVERS", ",".join(SERVERS)),
        help=f"comma-separated rows, of: {', '.join(SERVERS)}",
    )
    parser.add_argument(
        "--latency-check",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("BENCH_LATENCY", "1") not in ("0", "no", "false"),
    )
    parser.add_argument(
        "--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    )
    parser.add_argument(
        "--start-timeout", type=float, default=_env_float("BENCH_START_TIMEOUT", 60.0)
    )
    parser.add_argument("--stop-timeout", type=float, default=_env_float("BENCH_STOP_TIMEOUT", 15))
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path(os.environ.get("BENCH_RESULTS_DIR", BENCH / "results")),
    )
    args = parser.parse_args(argv)
    servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {list(SERVERS)}")
    for name in ("duration", "rounds", "warmup", "drain", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return Config(
        duration=args.duration,
        rounds=args.rounds,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        drain=args.drain,
        margin=args.margin,
        servers=servers,
        latency_check=args.latency_check,
        pg_url=args.pg_url.rstrip("/"),
        start_timeout=args.start_timeout,
        stop_timeout=args.stop_timeout,
        results_dir=args.results_dir,
    )


# -- the servers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What one run of a server gets: its port, a scratch folder, its database URL."""

    port: int
    tmpdir: Path
    auth_token: str
    database: str | None


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    label: str
    cpus: str
    command: Callable[[Target], list[str]]
    database: str | None = None  # "sqlite" or "postgresql" for plivohook rows
    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_plivohook(self) -> bool:
        return self.database is not None


RULES_COUNT = 100


def rules_file(path: Path, count: int = RULES_COUNT) -> Path:
    """A rules file of ``count`` rules, as a real one might look: four keywords to one regex.

    The regexes come first in the file, so that every message runs all of them (a keyword hit
    only skips the regexes after it): the costly case. Few bench texts match any rule, as few
    real messages would; no [default], so that both rows store the same empty answer and the
    difference is the cost of deciding it (compliance is on in both: it is always on).
    """
    regexes = count // 5
    lines = []
    for n in range(regexes):
        lines += [
            "[[rules]]",
            f'regex = "^order\\\\s+{n}(\\\\d+)$"',
            'reply = "Order {1}: shipped."',
        ]
    for n in range(count - regexes):
        lines += ["[[rules]]", f'keyword = "code{n}"', f'reply = "Your code {n} is noted."']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _plivohook(
    workers: int, rules: bool = False, bin_dir: Path = PROJECT_BIN
) -> Callable[[Target], list[str]]:
    def command(t: Target) -> list[str]:
        assert t.database is not None
        cmd = [str(bin_dir / "plivohook"), "serve", "--host", "127.0.0.1"]
        cmd += ["--port", str(t.port), "--database", t.database, "--auth-token", t.auth_token]
        if rules:
            cmd += ["--rules", str(rules_file(t.tmpdir / "rules.toml"))]
        return cmd + (["--workers", str(workers)] if workers > 1 else [])

    return command


FORWARD_SECRET = "whsec_YmVuY2gtZm9yd2FyZC1zZWNyZXQtMzItYnl0ZXMh"  # the bench's own, not a secret


def _plivohook_forwarding(t: Target) -> list[str]:
    """plivohook on SQLite forwarding every message to a destination that answers at once.

    bench/forward_sink.py starts plivohook and the destination (off plivohook's core), so that
    the row beside plivohook-sqlite shows what the outbox and the worker cost.
    """
    sink = free_port()
    serve = _plivohook(1)(t)
    serve += ["--forward-url", f"http://127.0.0.1:{sink}/", "--forward-secret", FORWARD_SECRET]
    return [sys.executable, str(BENCH / "forward_sink.py"), str(sink), "--", *serve]


def _gunicorn_flask(t: Target) -> list[str]:
    return [
        str(BASELINE_BIN / "gunicorn"),
        "--workers=1",
        "--worker-class=sync",
        f"--bind=127.0.0.1:{t.port}",
        f"--chdir={BASELINES}",
        "--no-control-socket",
        "--log-level=warning",
        "flask_sample:app",
    ]


def _uvicorn_noop(t: Target) -> list[str]:
    return [
        str(BASELINE_BIN / "uvicorn"),
        "noop_asgi:app",
        f"--app-dir={BASELINES}",
        "--host=127.0.0.1",
        f"--port={t.port}",
        "--loop=uvloop",
        "--http=httptools",
        "--no-access-log",
        "--log-level=warning",
    ]


def _granian_noop(t: Target) -> list[str]:
    return [
        str(BASELINE_BIN / "granian"),
        "--interface=asgi",
        "--host=127.0.0.1",
        f"--port={t.port}",
        "--workers=1",
        "--no-ws",
        "--log-level=warning",
        f"--working-dir={BASELINES}",
        "noop_asgi:app",
    ]


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        ServerSpec(
            "plivohook-sqlite",
            "plivohook, SQLite, 1 process",
            SERVER_CPUS,
            _plivohook(1),
            database="sqlite",
        ),
        ServerSpec(
            "plivohook-sqlite-fwd",
            "plivohook, SQLite, 1 process, forwarding to one destination that answers at once",
            SERVER_CPUS,
            _plivohook_forwarding,
            database="sqlite",
        ),
        ServerSpec(
            "plivohook-sqlite-rules",
            f"plivohook, SQLite, 1 process, --rules with {RULES_COUNT} rules",
            SERVER_CPUS,
            _plivohook(1, rules=True),
            database="sqlite",
        ),
        ServerSpec(
            "plivohook-pg",
            "plivohook, PostgreSQL, 1 process",
            SERVER_CPUS,
            _plivohook(1),
            database="postgresql",
        ),
        ServerSpec(
            "plivohook-pg-rules",
            f"plivohook, PostgreSQL, 1 process, --rules with {RULES_COUNT} rules",
            SERVER_CPUS,
            _plivohook(1, rules=True),
            database="postgresql",
        ),
        ServerSpec(
            "plivohook-pg-w2",
            "plivohook, PostgreSQL, --workers 2 on core 0",
            SERVER_CPUS,
            _plivohook(2),
            database="postgresql",
        ),
        ServerSpec(
            "plivohook-pg-w2-2cores",
            "plivohook, PostgreSQL, --workers 2 on cores 0+1 (wrk shares core 1)",
            "0,1",
            _plivohook(2),
            database="postgresql",
        ),
        ServerSpec(
            "flask-gunicorn",
            "Plivo's Flask sample (V2 check, stores nothing), gunicorn 1 sync worker",
            SERVER_CPUS,
            _gunicorn_flask,
        ),
        ServerSpec(
            "noop-uvicorn",
            "do-nothing ASGI app, uvicorn + uvloop + httptools",
            SERVER_CPUS,
            _uvicorn_noop,
        ),
        ServerSpec("noop-granian", "do-nothing ASGI app, granian", SERVER_CPUS, _granian_noop),
    ]
}
# BENCH_COMPARE=<git rev> (bench/run.sh builds that revision into a venv of its own): the same
# rows for that build, measured in the same run, so that a change's cost is read side by side.
COMPARE_BIN = os.environ.get("BENCH_COMPARE_BIN")
COMPARE_LABEL = os.environ.get("BENCH_COMPARE_LABEL", "compare")
if COMPARE_BIN:
    for _db, _row in (("sqlite", "plivohook-sqlite"), ("postgresql", "plivohook-pg")):
        SERVERS[f"{_row}@{COMPARE_LABEL}"] = ServerSpec(
            f"{_row}@{COMPARE_LABEL}",
            f"{SERVERS[_row].label}, at {COMPARE_LABEL}",
            SERVER_CPUS,
            _plivohook(1, bin_dir=Path(COMPARE_BIN)),
            database=_db,
        )
PLIVOHOOK_ROWS = ("plivohook-sqlite", "plivohook-sqlite-fwd", "plivohook-pg")
# Issue 13's budget: with a 100-rule file, at least 0.9x the same build without one.
RULES_ROWS = {"plivohook-sqlite-rules": "plivohook-sqlite", "plivohook-pg-rules": "plivohook-pg"}
RULES_TARGET = 0.9
BASELINE_ROWS = ("flask-gunicorn", "noop-uvicorn", "noop-granian")


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ready(port: int) -> bool:
    """True once something on the port answers an HTTP request (any status)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(
                f"GET /__bench_ready__ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ServerError(RuntimeError):
    pass


class Server:
    """A server under test in its own session (process group), pinned with taskset."""

    def __init__(self, spec: ServerSpec, target: Target, logfile: Path) -> None:
        self.spec = spec
        self.target = target
        self.logfile = logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> float:
        env = {**os.environ, "BENCH_AUTH_TOKEN": self.target.auth_token, **self.spec.env}
        env.pop("VIRTUAL_ENV", None)
        cmd = ["taskset", "-c", self.spec.cpus, *self.spec.command(self.target)]
        started = time.monotonic()
        with self.logfile.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.spec.name} exited with {self.proc.returncode} before it was ready:\n"
                    + tail(self.logfile)
                )
            if http_ready(self.target.port):
                return time.monotonic() - started
            time.sleep(0.05)
        raise ServerError(
            f"{self.spec.name} not ready after {timeout:.0f} s:\n{tail(self.logfile)}"
        )

    def cpu_seconds(self) -> float:
        """User+system CPU of every live process in the server's session."""
        if self.proc is None:
            return 0.0
        total = 0
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            if int(fields[3]) == self.proc.pid:  # session id
                total += int(fields[11]) + int(fields[12])
        return total / tick

    def stop(self, timeout: float) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.spec.name} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout)
        finally:
            # Workers that outlived their parent are still in the session: end them too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def cpu_busy_seconds() -> dict[str, float]:
    """Busy (non-idle) seconds of each core since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    result: dict[str, float] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            name, *values = line.split()
            numbers = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            result[name] = (sum(numbers) - numbers[3] - numbers[4]) / tick
    return result


def machine_busy(seconds: float = 1.0) -> dict[str, float]:
    """Each core's busy fraction over the next ``seconds``, nothing of ours running."""
    before = cpu_busy_seconds()
    time.sleep(seconds)
    after = cpu_busy_seconds()
    return {k: round((after[k] - before[k]) / seconds, 3) for k in before}


# -- wrk ----------------------------------------------------------------------------------------


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float  # time.monotonic()
    cores: dict[str, float]  # busy seconds of each core since boot
    server: float  # the server's CPU seconds


@dataclass(frozen=True, slots=True)
class Measured:
    stdout: str
    stderr: str
    returncode: int
    cpu_s: float  # the command's own user+system CPU
    window: tuple[CpuSample, CpuSample] | None  # at its start and ``window`` seconds later


def run_measured(
    cmd: list[str], timeout: float, window: float, sample: Callable[[], CpuSample] | None
) -> Measured:
    """Run a command to its end, sampling the CPU at its start and ``window`` seconds in."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        started = time.monotonic()
        first = sample() if sample else None
        second: CpuSample | None = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.monotonic() - started
            if sample and second is None and elapsed >= window:
                second = sample()
            if elapsed > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(min(0.05, max(window - elapsed, 0.001)) if second is None else 0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
        out.seek(0)
        err.seek(0)
        return Measured(
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            proc.returncode,
            usage.ru_utime + usage.ru_stime,
            (first, second) if first and second else None,
        )


def run_wrk(
    cfg: Config,
    port: int,
    requests_prefix: Path,
    window: int,
    rate: float | None = None,
    sample: Callable[[], CpuSample] | None = None,
) -> Json:
    """One wrk run: ``window`` seconds of load, then ``cfg.drain`` seconds of answers only."""
    cmd = [
        "taskset", "-c", WRK_CPUS, "wrk",
        f"--threads={cfg.threads}", f"--connections={cfg.connections}",
        f"--duration={window + cfg.drain}s", "--timeout=10s", f"--script={LUA}",
        f"http://127.0.0.1:{port}",
        "--", str(requests_prefix), str(window), str(cfg.threads),
    ]  # fmt: skip
    if rate is not None:
        cmd.append(f"{rate:.3f}")
    run = run_measured(cmd, timeout=window + cfg.drain + 60, window=window, sample=sample)
    stdout, stderr, returncode = run.stdout, run.stderr, run.returncode
    found = re.search(r"^BENCH_JSON (\{.*\})$", stdout, re.MULTILINE)
    if returncode != 0 or not found:
        raise WrkError(f"wrk failed ({returncode}):\n{stdout[-2000:]}\n{stderr[-2000:]}")
    result: Json = json.loads(found.group(1))
    statuses = {int(k): v for k, v in result["status"].items()}
    result["status"] = statuses
    result["ok_2xx"] = sum(v for k, v in statuses.items() if 200 <= k < 300)
    result["non_2xx"] = sum(v for k, v in statuses.items() if not 200 <= k < 300)
    e = result["errors"]
    result["socket_errors"] = e["connect"] + e["read"] + e["write"] + e["timeout"]
    result["window_s"] = window
    result["rps"] = round(result["in_window"] / window, 1)
    result["rps_2xx"] = round(result["in_window_2xx"] / window, 1)
    result["target_rps"] = rate
    result["wrk_cpu_s"] = round(run.cpu_s, 3)
    if run.window is not None:
        # CPU over the window, in cores: the server's processes, wrk (all of its CPU: it is
        # nearly idle after the window) and everything else that kept the cores busy
        # (PostgreSQL, the kernel's share of loopback networking, other people's work).
        start, end = run.window
        span = end.at - start.at
        busy = {k: (end.cores[k] - start.cores[k]) / span for k in start.cores}
        server = (end.server - start.server) / span
        result["cpu"] = {
            "cores_busy": {k: round(v, 3) for k, v in busy.items()},
            "server": round(server, 3),
            "wrk": round(run.cpu_s / span, 3),
            "other": round(max(sum(busy.values()) - server - run.cpu_s / span, 0.0), 3),
        }
    if stderr.strip():
        result["wrk_stderr"] = stderr.strip()[-2000:]
    return result


# -- databases and the store check --------------------------------------------------------------


class Postgres:
    """Fresh databases for the PostgreSQL rows, made and dropped through psycopg."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.seq = 0
        self.leftovers: list[str] = []  # databases that could not be dropped (yet)

    def _admin(self, sql: str) -> None:
        import psycopg

        admin = f"{self.base_url}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def available(self) -> str | None:
        """None when the server answers, else why not."""
        try:
            self._admin("select 1")
        except Exception as exc:
            return one_line(exc)
        return None

    def _drop(self, name: str) -> bool:
        try:
            self._admin(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
        except Exception as exc:
            log(f"could not drop database {name} (will retry at the end): {one_line(exc)}")
            return False
        return True

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        self.seq += 1
        name = f"plivohook_bench_{os.getpid()}_{self.seq}"
        self._admin(f"CREATE DATABASE {_quote_ident(name)}")
        try:
            yield f"{self.base_url}/{name}"
        finally:
            if not self._drop(name):
                self.leftovers.append(name)

    def drop_leftovers(self) -> list[str]:
        """Retry the drops that failed; returns the databases still there."""
        self.leftovers = [name for name in self.leftovers if not self._drop(name)]
        return self.leftovers


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def store_contents(database: str) -> tuple[dict[str, int], list[str] | None]:
    """Row counts of every table, and the stored MessageUUIDs when the column exists."""
    if database.startswith("sqlite:///"):
        conn = sqlite3.connect(database.removeprefix("sqlite:///"))
        try:
            names = [
                r[0]
                for r in conn.execute(
                    "select name from sqlite_master where type = 'table' "
                    "and name not like 'sqlite_%'"
                )
            ]
            counts = {
                n: int(conn.execute(f"select count(*) from {_quote_ident(n)}").fetchone()[0])  # noqa: S608
                for n in names
            }
            uuids: list[str] | None = None
            with contextlib.suppress(sqlite3.Error):
                uuids = [r[0] for r in conn.execute("select message_uuid from messages")]
            return counts, uuids
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(database, connect_timeout=5) as conn:
        rows = conn.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_type = 'BASE TABLE' "
            "and table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchall()
        counts = {}
        for schema, table in rows:
            key = table if schema == "public" else f"{schema}.{table}"
            query = f"select count(*) from {_quote_ident(schema)}.{_quote_ident(table)}"  # noqa: S608
            counts[key] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
        uuids = None
        with contextlib.suppress(psycopg.Error):
            uuids = [str(r[0]) for r in conn.execute("select message_uuid from messages")]
        return counts, uuids


def outbox_pending(database: str) -> int | None:
    """Events not delivered when the server stopped (the worker keeping up, or not)."""
    query = "select count(*) from outbox where state = 'pending'"
    with contextlib.suppress(Exception):
        if database.startswith("sqlite:///"):
            conn = sqlite3.connect(database.removeprefix("sqlite:///"))
            try:
                return int(conn.execute(query).fetchone()[0])
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(database, connect_timeout=5) as pg:
            return int(pg.execute(query).fetchone()[0])  # type: ignore[index]
    return None


def sent_uuids(files: list[Path]) -> set[str]:
    pattern = re.compile(r"MessageUUID=([0-9a-f-]{36})")
    found: set[str] = set()
    for path in files:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                match = pattern.search(line)
                if match:
                    found.add(match.group(1))
    return found


def check_store(database: str, wrk_runs: list[Json], files: list[Path]) -> Json:
    """Every 2xx answer is exactly one stored message; nothing else was stored."""
    ok_2xx = sum(r["ok_2xx"] for r in wrk_runs)
    sent = sum(r["sent"] for r in wrk_runs)
    counts, uuids = store_contents(database)
    problems: list[str] = []
    rows = counts.get("messages")
    if rows is None:
        problems.append(f"no 'messages' table (tables: {sorted(counts)})")
        rows = 0
    if rows != ok_2xx:
        problems.append(f"{rows} messages stored for {ok_2xx} 2xx answers")
    if rows > sent:
        problems.append(f"{rows} messages stored but only {sent} distinct requests sent")
    for table, count in counts.items():
        if count and re.search(r"status|rejection|failed|dead", table):
            problems.append(f"{count} rows in {table!r}: only messages were sent")
    uuid_check = "column message_uuid not found: skipped"
    if uuids is not None:
        known = sent_uuids(files)
        stray = [u for u in uuids if u not in known]
        if stray:
            problems.append(f"{len(stray)} stored MessageUUIDs were never generated")
        if len(set(uuids)) != len(uuids):
            problems.append(f"{len(uuids) - len(set(uuids))} MessageUUIDs stored twice")
        uuid_check = "ok" if not stray and len(set(uuids)) == len(uuids) else "failed"
    outbox = counts.get("outbox")
    if outbox is not None and outbox != rows:
        # Forwarding rows: one event per message, whatever happened to its delivery.
        problems.append(f"{outbox} outbox rows for {rows} messages")
    return {
        "ok": not problems,
        "problems": problems,
        "outbox_pending": outbox_pending(database) if outbox else None,
        "rows": rows,
        "ok_2xx": ok_2xx,
        "sent": sent,
        "tables": counts,
        "uuid_check": uuid_check,
    }


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Bench:
    cfg: Config
    out: Any  # the open .jsonl file
    auth_token: str
    pg: Postgres
    estimates: dict[str, float] = field(default_factory=dict)
    stream: int = 0
    failures: list[str] = field(default_factory=list)
    results: list[Json] = field(default_factory=list)

    def record(self, row: Json) -> None:
        self.out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self.out.flush()

    def generate(self, prefix: Path, port: int, count: int) -> tuple[int, float]:
        """``count`` requests in one file per wrk thread; returns (count, seconds taken)."""
        started = time.monotonic()
        parts = self.cfg.threads
        gen_requests.write_requests(
            prefix,
            count,
            port=port,
            auth_token=self.auth_token,
            parts=parts,
            path=PATH,
            stream=self.stream,
            workers=2,
        )
        self.stream = (self.stream + parts) % gen_requests.STREAMS
        return count, round(time.monotonic() - started, 3)

    def run(self, spec: ServerSpec, round_no: int, rate: float | None = None) -> Json:
        kind = "throughput" if rate is None else "latency"
        tmpdir = Path(tempfile.mkdtemp(prefix=f"plivohook-bench-{spec.name}-"))
        port = free_port()
        row: Json = {
            "kind": kind,
            "server": spec.name,
            "label": spec.label,
            "round": round_no,
            "cpus": spec.cpus,
            "port": port,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        }
        try:
            with contextlib.ExitStack() as stack:
                database: str | None = None
                if spec.database == "sqlite":
                    database = f"sqlite:///{tmpdir}/bench.db"
                elif spec.database == "postgresql":
                    database = stack.enter_context(self.pg.database())
                row["database"] = database
                self._run(spec, row, Target(port, tmpdir, self.auth_token, database), rate)
        except Exception as exc:  # a server that would not start, wrk, a database: report it
            row["error"] = f"{type(exc).__name__}: {exc}"
            self.failures.append(f"{spec.name} round {round_no}: {row['error'].splitlines()[0]}")
            log(f"ERROR {spec.name}: {row['error']}")
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        self.record(row)
        self.results.append(row)
        return row

    def _run(self, spec: ServerSpec, row: Json, target: Target, rate: float | None) -> None:
        cfg = self.cfg
        estimate = self.estimates.get(spec.name)
        warm_file = target.tmpdir / "warmup"
        main_file = target.tmpdir / "run"
        warm_rate = min(rate, estimate or rate) if rate else (estimate or RATE_GUESS)
        warm_count = math.ceil(warm_rate * cfg.warmup * cfg.margin) + 4 * cfg.threads
        row["warmup_generated"], row["warmup_gen_s"] = self.generate(
            warm_file, target.port, warm_count
        )
        server = Server(spec, target, target.tmpdir / "server.log")
        try:
            row["ready_s"] = round(server.start(cfg.start_timeout), 3)
            warm = run_wrk(cfg, target.port, warm_file, cfg.warmup, rate)
            row["warmup"] = warm
            if rate is not None:
                need = rate * cfg.margin
            else:  # a 1 s warm-up is a rough sample: it gets the larger margin
                need = max(warm["rps"] * WARMUP_MARGIN, (estimate or 0.0) * cfg.margin, MIN_RATE)
            count = math.ceil(need * cfg.duration) + 4 * cfg.threads
            row["generated"], row["gen_s"] = self.generate(main_file, target.port, count)

            def sample() -> CpuSample:
                return CpuSample(time.monotonic(), cpu_busy_seconds(), server.cpu_seconds())

            result = run_wrk(cfg, target.port, main_file, cfg.duration, rate, sample)
            row["wrk"] = result
            for label, w in (("warm-up", warm), ("run", result)):
                # Every request is valid and new: anything but a 2xx is worth a look.
                bad = {k: v for k, v in w["status"].items() if not 200 <= k < 300}
                if bad or w["socket_errors"] or w["overrun"]:
                    self.failures.append(
                        f"{spec.name} round {row['round']} {label}: answers {bad or 'all 2xx'}, "
                        f"socket errors {w['errors']}, overrun {w['overrun']}"
                    )
            if result["exhausted"]:
                self.failures.append(
                    f"{spec.name} round {row['round']}: ran out of requests "
                    f"({result['exhausted']} sends refused): its rate is understated"
                )
            if rate is None:
                self.estimates[spec.name] = max(estimate or 0.0, result["rps"])
        finally:
            row["exit_code"] = server.stop(cfg.stop_timeout)
            row["server_log_tail"] = tail(server.logfile, 20)
        if target.database is not None:
            runs = [row["warmup"], row["wrk"]]
            files = gen_requests.part_paths(warm_file, cfg.threads)
            files += gen_requests.part_paths(main_file, cfg.threads)
            check = check_store(target.database, runs, files)
            row["store_check"] = check
            if not check["ok"]:
                self.failures.append(
                    f"STORE CHECK FAILED {spec.name} round {row['round']}: "
                    + "; ".join(check["problems"])
                )
                log("!" * 78)
                log(f"STORE CHECK FAILED for {spec.name}: " + "; ".join(check["problems"]))
                log("!" * 78)


# -- reporting ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(results: list[Json]) -> dict[str, Json]:
    by_server: dict[str, list[Json]] = {}
    for row in results:
        if row["kind"] == "throughput" and "wrk" in row:
            by_server.setdefault(row["server"], []).append(row)
    summary: dict[str, Json] = {}
    for name, rows in by_server.items():
        runs = [r["wrk"] for r in rows]
        summary[name] = {
            "runs": len(rows),
            "rps": _median([w["rps"] for w in runs]),
            "rps_min": min(w["rps"] for w in runs),
            "rps_max": max(w["rps"] for w in runs),
            "p50_ms": _median([w["latency_ms"]["p50"] for w in runs]),
            "p99_ms": _median([w["latency_ms"]["p99"] for w in runs]),
            "socket_errors": sum(w["socket_errors"] for w in runs),
            "non_2xx": sum(w["non_2xx"] for w in runs),
            "requests": sum(w["requests"] for w in runs),
            "server_cpu": _median([w["cpu"]["server"] for w in runs if "cpu" in w]),
            "wrk_cpu": _median([w["cpu"]["wrk"] for w in runs if "cpu" in w]),
            "other_cpu": _median([w["cpu"]["other"] for w in runs if "cpu" in w]),
            "store_checks": sum(1 for r in rows if r.get("store_check", {}).get("ok")),
            "store_failed": sum(1 for r in rows if r.get("store_check", {}).get("ok") is False),
        }
    return summary


def ratios(summary: dict[str, Json]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mine in PLIVOHOOK_ROWS:
        if mine not in summary:
            continue
        for base in BASELINE_ROWS:
            if base in summary and summary[base]["rps"]:
                out.setdefault(mine, {})[base] = round(
                    summary[mine]["rps"] / summary[base]["rps"], 3
                )
    return out


def rules_ratios(summary: dict[str, Json]) -> dict[str, float]:
    """Req/s with the 100-rule file ÷ without, per backend measured in this run."""
    return {
        with_rules: round(summary[with_rules]["rps"] / summary[without]["rps"], 3)
        for with_rules, without in RULES_ROWS.items()
        if with_rules in summary
        and without in summary
        and summary[with_rules]["rps"]
        and summary[without]["rps"]
    }


def render_rules(summary: dict[str, Json], markdown: bool) -> str:
    found = rules_ratios(summary)
    if not found:
        return "(no rules row beside its row without rules: no ratio)"
    head = ["row", "÷ row", "ratio", f">= {RULES_TARGET}"]
    lines = [
        [row, RULES_ROWS[row], f"{ratio:.2f}x", "yes" if ratio >= RULES_TARGET else "NO"]
        for row, ratio in found.items()
    ]
    return _table(head, lines, markdown)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(summary: dict[str, Json], markdown: bool) -> str:
    head = ["row", "req/s (median)", "min-max", "p50 ms", "p99 ms", "err / non-2xx", "runs"]
    head += ["server CPU", "wrk CPU", "other CPU", "store checks"]
    lines: list[list[str]] = []
    for name in SERVERS:
        s = summary.get(name)
        if s is None:
            continue
        checks = "n/a"
        if SERVERS[name].is_plivohook:
            checks = f"{s['store_checks']}/{s['runs']} ok"
            if s["store_failed"]:
                checks += f", {s['store_failed']} FAILED"
        lines.append(
            [
                name,
                _fmt(s["rps"], 0),
                f"{_fmt(s['rps_min'], 0)}-{_fmt(s['rps_max'], 0)}",
                _fmt(s["p50_ms"], 2),
                _fmt(s["p99_ms"], 2),
                f"{s['socket_errors']} / {s['non_2xx']}",
                str(s["runs"]),
                f"{s['server_cpu']:.0%}" if s["server_cpu"] is not None else "-",
                f"{s['wrk_cpu']:.0%}" if s["wrk_cpu"] is not None else "-",
                f"{s['other_cpu']:.0%}" if s["other_cpu"] is not None else "-",
                checks,
            ]
        )
    return _table(head, lines, markdown)


def _table(head: list[str], lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        rule = ["---"] + ["---:"] * (len(head) - 1)
        rows = [head, rule, *lines]
        return "\n".join("| " + " | ".join(r) + " |" for r in rows)
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [head, *lines])


def render_ratios(rat: dict[str, dict[str, float]], markdown: bool) -> str:
    if not rat:
        return "(no plivohook row measured: no ratios)"
    head = ["plivohook req/s ÷", *BASELINE_ROWS]
    lines = [
        [mine, *(f"{rat[mine][b]:.2f}x" if b in rat[mine] else "-" for b in BASELINE_ROWS)]
        for mine in rat
    ]
    return _table(head, lines, markdown)


def render_latency(rows: list[Json], markdown: bool) -> str:
    if not rows:
        return "(latency check not run)"
    head = ["row", "target req/s", "achieved req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    head += ["err / non-2xx", "p99 < 20 ms"]
    lines = []
    for row in rows:
        w = row.get("wrk")
        if w is None:
            lines.append([row["server"], "-", "error", "-", "-", "-", "-", "-", "-"])
            continue
        lat = w["latency_ms"]
        verdict = "yes" if lat["p99"] < LATENCY_TARGET_P99_MS else "NO"
        if not SERVERS[row["server"]].is_plivohook:
            verdict = f"({verdict}: plivohook's target)"
        lines.append(
            [
                row["server"],
                _fmt(w["target_rps"], 0),
                _fmt(w["rps"], 0),
                _fmt(lat["p50"], 2),
                _fmt(lat["p90"], 2),
                _fmt(lat["p99"], 2),
                _fmt(lat["max"], 2),
                f"{w['socket_errors']} / {w['non_2xx']}",
                verdict,
            ]
        )
    return _table(head, lines, markdown)


def versions() -> Json:
    info: Json = {"python": platform.python_version(), "kernel": platform.release()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["wrk"] = (
            subprocess.run(
                ["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False
            )
            .stdout.split("Copyright")[0]
            .strip()
        )
    from importlib import metadata

    info["project"] = {}
    for name in ("plivohook", "starlette", "uvicorn", "uvloop", "httptools", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info["project"][name] = metadata.version(name)
    script = (
        "import json, importlib.metadata as m\n"
        "names = ['flask', 'gunicorn', 'plivo', 'uvicorn', 'uvloop', 'httptools', 'granian']\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    )
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        out = subprocess.run(
            [str(BASELINE_BIN / "python"), "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        info["baselines"] = json.loads(out)
    return info


def plivohook_serve_status() -> str | None:
    """None when ``plivohook serve`` exists, else why it cannot run."""
    exe = PROJECT_BIN / "plivohook"
    if not exe.exists():
        return f"{exe} is missing"
    try:
        proc = subprocess.run(
            [str(exe), "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()
        return f"'plivohook serve --help' exited {proc.returncode}: {last[-1] if last else ''}"
    return None


def preflight(cfg: Config, pg: Postgres) -> tuple[list[str], list[str]]:
    """The rows that can run, and why the others cannot."""
    skipped: list[str] = []
    selected = list(cfg.servers)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed (bench/run.sh installs wrk)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs 2 cores (server on core 0, wrk on core 1)")
    if not (BASELINE_BIN / "python").exists() and any(
        not SERVERS[s].is_plivohook for s in selected
    ):
        sys.exit("bench: bench/.venv-baselines is missing: run 'make bench' (bench/run.sh)")
    if any(SERVERS[s].is_plivohook for s in selected):
        why = plivohook_serve_status()
        if why:
            mine = [s for s in selected if SERVERS[s].is_plivohook]
            skipped += [f"{s}: plivohook serve unavailable ({why})" for s in mine]
            selected = [s for s in selected if s not in mine]
    if any(SERVERS[s].database == "postgresql" for s in selected):
        why = pg.available()
        if why:
            on_pg = [s for s in selected if SERVERS[s].database == "postgresql"]
            skipped += [f"{s}: PostgreSQL unavailable ({why})" for s in on_pg]
            selected = [s for s in selected if s not in on_pg]
    return selected, skipped


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    pg = Postgres(cfg.pg_url)
    selected, skipped = preflight(cfg, pg)
    for reason in skipped:
        log(f"SKIPPED {reason}")
    if not selected:
        log("nothing to run")
        return 3
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    jsonl = cfg.results_dir / f"{stamp}.jsonl"
    per_run = cfg.warmup + cfg.duration + 2 * cfg.drain + 4
    latency_runs = sum(1 for s in ("plivohook-sqlite", "flask-gunicorn") if s in selected)
    estimate = per_run * (len(selected) * cfg.rounds + latency_runs * cfg.latency_check)
    log(
        f"{len(selected)} servers x {cfg.rounds} rounds, {cfg.duration} s each "
        f"(-t{cfg.threads} -c{cfg.connections}), about {estimate / 60:.1f} min -> {jsonl}"
    )
    idle = machine_busy()
    log(f"machine before the runs, nothing of ours running: cores busy {idle}")
    if max(idle.values()) > 0.15:
        log("WARNING: the machine is busy with other work: the figures will be low and noisy")
    token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    with jsonl.open("w", encoding="utf-8") as out:
        bench = Bench(cfg, out, token, pg)
        bench.record(
            {
                "kind": "meta",
                "stamp": stamp,
                "config": _cfg_json(cfg),
                "selected": selected,
                "skipped": skipped,
                "versions": versions(),
                "cores": os.cpu_count(),
                "busy_before": idle,
            }
        )
        for round_no in range(1, cfg.rounds + 1):
            shift = (round_no - 1) % len(selected)
            order = selected[shift:] + selected[:shift]
            for name in order:
                row = bench.run(SERVERS[name], round_no)
                if "wrk" in row:
                    w = row["wrk"]
                    check = row.get("store_check")
                    verdict = ""
                    if check is not None:
                        verdict = "  store ok" if check["ok"] else "  STORE CHECK FAILED"
                    lat = w["latency_ms"]
                    log(
                        f"round {round_no} {name:24} {w['rps']:>9,.0f} req/s  "
                        f"p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms  "
                        f"errors {w['socket_errors']}  non-2xx {w['non_2xx']}{verdict}"
                    )
        summary = summarize(bench.results)
        latency_rows: list[Json] = []
        if cfg.latency_check:
            for name in ("plivohook-sqlite", "flask-gunicorn"):
                if name in summary and summary[name]["rps"]:
                    target = summary[name]["rps"] / 2
                    log(f"latency check: {name} at {target:,.0f} req/s (half its median)")
                    latency_rows.append(bench.run(SERVERS[name], 0, rate=target))
        left = pg.drop_leftovers()
        if left:
            bench.failures.append(f"PostgreSQL databases left behind: {', '.join(left)}")
        rat = ratios(summary)
        bench.record(
            {
                "kind": "summary",
                "servers": summary,
                "ratios": rat,
                "rules_ratios": rules_ratios(summary),
                "latency": [
                    {"server": r["server"], "wrk": r.get("wrk"), "error": r.get("error")}
                    for r in latency_rows
                ],
                "failures": bench.failures,
                "skipped": skipped,
            }
        )
    text = report(cfg, summary, rat, latency_rows, bench.failures, skipped, stamp, markdown=False)
    print("\n" + text, flush=True)
    latest = cfg.results_dir / "latest.md"
    latest.write_text(
        report(cfg, summary, rat, latency_rows, bench.failures, skipped, stamp, markdown=True),
        encoding="utf-8",
    )
    log(f"raw results: {jsonl}; table: {latest}")
    if any(f.startswith("STORE CHECK FAILED") for f in bench.failures):
        return 1
    if bench.failures:
        return 2
    if skipped:
        return 3
    return 0


def _cfg_json(cfg: Config) -> Json:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()}


def report(
    cfg: Config,
    summary: dict[str, Json],
    rat: dict[str, dict[str, float]],
    latency_rows: list[Json],
    failures: list[str],
    skipped: list[str],
    stamp: str,
    *,
    markdown: bool,
) -> str:
    title = "## Benchmark" if markdown else "== Benchmark"
    setup = (
        f"{stamp}; {cfg.rounds} rounds, {cfg.duration} s windows, wrk -t{cfg.threads} "
        f"-c{cfg.connections} on core {WRK_CPUS}; servers on core {SERVER_CPUS} unless noted; "
        "medians over rounds; err = socket errors, non-2xx summed over rounds."
    )
    parts = [title, "", setup, "", render_table(summary, markdown), ""]
    parts += ["Throughput ratios (plivohook ÷ baseline, medians from this run):", ""]
    parts += [render_ratios(rat, markdown), ""]
    parts += ["The cost of replies (compliance + a 100-rule file ÷ the same row without):", ""]
    parts += [render_rules(summary, markdown), ""]
    parts += [
        "Latency at a fixed rate (half the row's median throughput, paced by wrk's delay()):",
        "",
        render_latency(latency_rows, markdown),
        "",
    ]
    if skipped:
        parts += ["Skipped:", *(f"- {s}" for s in skipped), ""]
    if failures:
        parts += ["Problems:", *(f"- {f}" for f in failures), ""]
    else:
        parts += ["No problems: every run completed and every store check passed.", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
