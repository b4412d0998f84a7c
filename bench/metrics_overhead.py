"""CPU microseconds per webhook request, in process: what metrics and logs add to the hot path.

Drives the app's ASGI callable directly (no HTTP, no uvicorn) with distinct, correctly signed
inbound SMS, ``--concurrency`` at a time so that the group commit batches as it does under load,
on a real SQLite file. It reports CPU time (this process, commit thread included) per request,
the best of ``--rounds``: the figure that a change on the hot path moves, free of the disk's
fsync latency. Signing happens before the clock starts.

Compare two trees by running the same script against each (``PYTHONPATH=<tree>/src``); the log
lines go to /dev/null through the configured formatter, so their formatting and write count.
``make bench`` measures the whole server over HTTP instead.

    .venv/bin/python bench/metrics_overhead.py --requests 4000 --rounds 5 --log-format text
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid

from plivohook.app import PlivohookApp
from plivohook.config import Settings
from plivohook.protocol.simulator import inbound_sms_params, signed_request

TOKEN = "bench-auth-token-0123456789"
BASE = "http://bench.example"


def configure_logs(fmt: str, level: str) -> None:
    """Log lines to /dev/null through the real formatter ('none': logging off)."""
    if fmt == "none":
        logging.disable(logging.CRITICAL)
        return
    stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    try:
        from plivohook import logs  # absent before the metrics and logs work
    except ImportError:
        logging.basicConfig(
            level=level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=stream,
        )
        return
    logs.configure(level, fmt, stream=stream)


def requests(count: int) -> list[tuple[dict, bytes]]:
    made = []
    for _ in range(count):
        params = inbound_sms_params(str(uuid.uuid4()), "Hello there")
        _url, headers, body = signed_request(BASE + "/plivo/message", params, TOKEN, ("v2", "v3"))
        made.append((headers, body or b""))
    return made


async def one(app: PlivohookApp, headers: dict, body: bytes) -> int:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/plivo/message",
        "raw_path": b"/plivo/message",
        "query_string": b"",
        "scheme": "http",
        "server": ("bench.example", 80),
        "client": ("127.0.0.1", 40000),
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
        + [(b"host", b"bench.example")],
    }
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def round_(app: PlivohookApp, batch: list[tuple[dict, bytes]], concurrency: int) -> float:
    """CPU seconds for the whole batch."""
    cpu = time.process_time()
    for start in range(0, len(batch), concurrency):
        chunk = batch[start : start + concurrency]
        statuses = await asyncio.gather(*(one(app, h, b) for h, b in chunk))
        if any(s != 200 for s in statuses):
            raise SystemExit(f"unexpected answers: {sorted(set(statuses))}")
    return time.process_time() - cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--log-format", default="text", choices=("text", "json", "none"))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    configure_logs(args.log_format, args.log_level)
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite:///{folder}/bench.db", auth_tokens=(TOKEN,), public_url=BASE
        )
        app = PlivohookApp(settings)
        await app.startup()
        try:
            await round_(app, requests(500), args.concurrency)  # warm-up
            per_request = []
            for _ in range(args.rounds):
                batch = requests(args.requests)
                seconds = await round_(app, batch, args.concurrency)
                per_request.append(seconds / len(batch) * 1e6)
        finally:
            await app.shutdown()
    print(
        f"{args.log_format} logs: CPU µs/request best {min(per_request):.1f}, median "
        f"{statistics.median(per_request):.1f} over {args.rounds} rounds of {args.requests}"
        f" (python {sys.version.split()[0]})"
    )


if __name__ == "__main__":
    asyncio.run(main())
