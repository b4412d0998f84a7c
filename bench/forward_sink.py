"""A forwarding destination that answers at once, and plivohook beside it: one bench row.

    python bench/forward_sink.py SINK_PORT -- plivohook serve ... --forward-url http://127.0.0.1:SINK_PORT/

Starts the command (it inherits this process's CPU pinning, core 0 under bench.py), then moves
itself to the other cores and answers every HTTP request with 204 on a bare asyncio protocol:
the cheapest destination there is, so that the row measures what forwarding costs plivohook,
not what a receiving app costs. SIGTERM goes on to the command; this exits with it. The number
of requests answered is printed at the end (the server's log in the bench's scratch folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys

ANSWER = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


class Sink(asyncio.Protocol):
    answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        # Requests are small JSON bodies with a content-length: answer each once it is whole.
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            Sink.answered += 1
            self.transport.write(ANSWER)  # type: ignore[attr-defined]


async def main(port: int, command: list[str]) -> int:
    child = subprocess.Popen(command)
    with contextlib.suppress(OSError, AttributeError):
        others = os.sched_getaffinity(0) if len(os.sched_getaffinity(0)) > 1 else set()
        all_cpus = set(range(os.cpu_count() or 1))
        os.sched_setaffinity(0, (all_cpus - {0}) or others or all_cpus)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", port)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, child.send_signal, signum)
    code = await asyncio.to_thread(child.wait)
    server.close()
    print(f"forward sink: {Sink.answered} events answered", file=sys.stderr)
    return code


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: forward_sink.py SINK_PORT -- COMMAND...")
    sys.exit(asyncio.run(main(int(args[0]), args[2:])))
