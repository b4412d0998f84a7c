"""NatsPublisher against the real NATS JetStream on 127.0.0.1:4222, one new stream per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import nats
import pytest
from nats.js.errors import NotFoundError

from plivohook.forward.base import ForwardConfigError
from plivohook.forward.event import message_event, status_event
from plivohook.forward.jetstream import NatsPublisher, redact_nats_url
from plivohook.forward.worker import Worker

from .memory_outbox import MemoryOutbox
from .receiver import free_port
from .test_worker import Clock, fill

NATS_URL = os.environ.get("PLIVOHOOK_TEST_NATS_URL", "nats://127.0.0.1:4222")

MESSAGE = message_event(
    {
        "message_uuid": "m-nats",
        "from": "14155550100",
        "to": "14155550199",
        "type": "sms",
        "text": "hello",
        "media": [],
        "params": [["From", "14155550100"], ["To", "14155550199"]],
        "method": "POST",
        "received_at": datetime(2024, 5, 1, tzinfo=UTC),
        "reply": None,
        "signature_scheme": "v3",
        "status": None,
    }
)
STATUS = status_event(
    {
        "message_uuid": "r-nats",
        "status": "delivered",
        "sequence": 2,
        "parent_message_uuid": None,
        "error_code": None,
        "reply_to": "m-nats",
        "params": [["Status", "delivered"]],
        "received_at": datetime(2024, 5, 1, 0, 0, 1, tzinfo=UTC),
        "signature_scheme": "v3",
    },
    key=1,
)


async def _admin(action):
    nc = await nats.connect(NATS_URL, connect_timeout=3, allow_reconnect=False)
    try:
        return await action(nc.jetstream())
    finally:
        await nc.close()


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A stream and subject of this test's own, the stream deleted afterwards."""
    try:
        asyncio.run(_admin(lambda js: js.account_info()))
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"NATS JetStream unreachable at {NATS_URL}: {exc}")
        pytest.skip(f"NATS JetStream unreachable at {NATS_URL}: {exc}")
    tag = secrets.token_hex(4)
    stream, subject = f"PLIVOHOOK_TEST_{tag}", f"plivohook_test_{tag}"
    yield stream, subject

    async def delete(js):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)

    asyncio.run(_admin(delete))


def test_events_are_stored_under_their_subjects_with_their_ids(names):
    stream, subject = names

    async def scenario():
        publisher = NatsPublisher(NATS_URL, stream=stream, subject=subject, timeout=5)
        try:
            outcomes = [
                await publisher.deliver(MESSAGE.id, MESSAGE.type, MESSAGE.payload),
                await publisher.deliver(STATUS.id, STATUS.type, STATUS.payload),
                # A retry after a lost acknowledgement: JetStream drops it by its id.
                await publisher.deliver(MESSAGE.id, MESSAGE.type, MESSAGE.payload),
            ]
        finally:
            await publisher.aclose()

        async def read(js):
            info = await js.stream_info(stream)
            return info, [await js.get_msg(stream, seq) for seq in (1, 2)]

        return outcomes, *await _admin(read)

    outcomes, info, stored = asyncio.run(scenario())
    assert all(o.delivered for o in outcomes)
    assert info.config.subjects == [f"{subject}.>"]  # created, as it was missing
    assert info.state.messages == 2
    assert [m.subject for m in stored] == [
        f"{subject}.message.received",
        f"{subject}.message.status",
    ]
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [MESSAGE.id, STATUS.id]
    assert [m.data for m in stored] == [MESSAGE.payload, STATUS.payload]


def test_an_existing_stream_is_used_as_it_is(names):
    stream, subject = names

    async def scenario():
        await _admin(lambda js: js.add_stream(name=stream, subjects=[f"{subject}.>"], max_msgs=10))
        publisher = NatsPublisher(NATS_URL, stream=stream, subject=subject, timeout=5)
        try:
            outcome = await publisher.deliver(MESSAGE.id, MESSAGE.type, MESSAGE.payload)
        finally:
            await publisher.aclose()
        return outcome, await _admin(lambda js: js.stream_info(stream))

    outcome, info = asyncio.run(scenario())
    assert outcome.delivered
    assert info.config.max_msgs == 10
    assert info.state.messages == 1


def test_an_unreachable_server_is_a_retry_not_an_exception():
    async def scenario():
        publisher = NatsPublisher(f"nats://127.0.0.1:{free_port()}", timeout=2)
        try:
            first = await publisher.deliver(MESSAGE.id, MESSAGE.type, MESSAGE.payload)
            again = await publisher.deliver(MESSAGE.id, MESSAGE.type, MESSAGE.payload)
        finally:
            await publisher.aclose()
        # The failed connections left nothing running behind them.
        await asyncio.sleep(0)
        return first, again, asyncio.all_tasks() - {asyncio.current_task()}

    first, again, leftovers = asyncio.run(scenario())
    assert leftovers == set()
    for outcome in (first, again):
        assert not outcome.delivered
        assert outcome.error.startswith("NATS")


def test_bad_options_refuse_to_start_and_credentials_stay_out_of_names():
    for options, option in (
        ({"url": "http://127.0.0.1:4222"}, "--nats-url"),
        ({"url": "nats://127.0.0.1:port"}, "--nats-url"),
        ({"subject": "plivo.*"}, "--nats-subject"),
        ({"subject": "a..b"}, "--nats-subject"),
        ({"subject": "has space"}, "--nats-subject"),
        ({"stream": "A.B"}, "--nats-stream"),
        ({"stream": ""}, "--nats-stream"),
        ({"timeout": 0}, "--forward-timeout"),
    ):
        url = options.pop("url", NATS_URL)
        with pytest.raises(ForwardConfigError, match=option):
            NatsPublisher(url, **options)
    publisher = NatsPublisher("nats://alice:s3cret@127.0.0.1:4222")
    assert "s3cret" not in repr(publisher)
    assert "s3cret" not in publisher.destination
    assert redact_nats_url("nats://tok3n@127.0.0.1:4222") == "nats://***@127.0.0.1:4222"


class PrivateNats:
    """A nats-server of this test's own (-js, its store in a temporary folder), to restart."""

    def __init__(self, store: str):
        self.port = free_port()
        self.store = store
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.mark.skipif(shutil.which("nats-server") is None, reason="no nats-server on PATH")
def test_every_event_is_stored_once_through_a_nats_restart(tmp_path):
    server = PrivateNats(str(tmp_path / "jetstream"))
    server.start()
    outbox, clock = MemoryOutbox(), Clock()
    destination = "nats:PLIVOHOOK/plivohook"
    events = fill(outbox, destination, senders=4, per_sender=5)

    async def rounds(worker: Worker, until: int, most: int) -> None:
        for _ in range(most):
            if outbox.states().get("delivered", 0) >= until:
                return
            await worker.run_once()
            clock.advance(hours=1)

    async def scenario():
        publisher = NatsPublisher(server.url, timeout=2, max_in_flight=4)
        worker = Worker(outbox, {destination: publisher}, clock=clock, batch_size=3)
        try:
            await rounds(worker, until=1, most=1)  # a first batch, then NATS goes away
            before = outbox.states().get("delivered", 0)
            server.stop()
            await rounds(worker, until=20, most=2)
            failed = [e for e in outbox.entries.values() if e.last_error]
            server.start()
            await rounds(worker, until=20, most=30)
            return before, failed
        finally:
            await publisher.aclose()

    try:
        before, failed = asyncio.run(scenario())

        async def read(js):
            info = await js.stream_info("PLIVOHOOK")
            return [await js.get_msg("PLIVOHOOK", seq) for seq in range(1, info.state.messages + 1)]

        async def admin():
            nc = await nats.connect(server.url, allow_reconnect=False)
            try:
                return await read(nc.jetstream())
            finally:
                await nc.close()

        stored = asyncio.run(admin())
    finally:
        server.stop()
    assert 0 < before < 20
    assert failed  # the restart cost attempts ...
    assert all(e.last_error.startswith("NATS") for e in failed)
    assert outbox.states() == {"delivered": 20}  # ... and lost nothing
    ids = [m.headers["Nats-Msg-Id"] for m in stored]
    assert sorted(ids) == sorted(e.id for e in events)  # each once
    assert outbox.violations == []
