"""The user's handler: loading by name, and running sync and async ones with a time limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from plivohook.protocol.params import parse_message
from plivohook.protocol.xml import Response
from plivohook.replies import HandlerError, IncomingMessage, load_handler, run_handler

from . import sample_handlers

MODULE = "tests.replies.sample_handlers"
PARAMS = {
    "MessageUUID": "2f6d2f0a-5e5b-11ee-8c99-0242ac120002",
    "From": "14155550111",
    "To": "14155550100",
    "Text": "hello",
    "Type": "sms",
    "MessageIntent": "",
    "Units": "1",
}


@pytest.fixture
def message() -> IncomingMessage:
    return IncomingMessage.from_inbound(parse_message(PARAMS), datetime(2024, 3, 1, tzinfo=UTC))


def run(fn, message, timeout=3.0):
    return asyncio.run(run_handler(fn, message, timeout))


def test_message_fields(message: IncomingMessage) -> None:
    assert (message.message_uuid, message.from_number, message.to_number) == (
        PARAMS["MessageUUID"],
        "14155550111",
        "14155550100",
    )
    assert (message.text, message.type, message.units, message.message_intent) == (
        "hello",
        "sms",
        1,
        None,
    )
    assert message.param("MessageIntent") == ""
    assert message.param("Nope") is None
    assert message.as_dict()["received_at"] == "2024-03-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("echo", "you said: hello"),
        ("async_echo", "async: hello"),
        ("nothing", None),
        ("callable_object", "from an object"),
    ],
)
def test_replies(name: str, reply: str | None, message: IncomingMessage) -> None:
    outcome = run(load_handler(f"{MODULE}:{name}"), message)
    assert (outcome.reply, outcome.error) == (reply, None)


def test_response(message: IncomingMessage) -> None:
    outcome = run(load_handler(f"{MODULE}:response"), message)
    assert isinstance(outcome.reply, Response)
    assert outcome.reply.to_xml() == (
        '<Response><Message src="14155550100" dst="14155550111">built</Message></Response>'
    )
    assert outcome.error is None


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("raises", "handler raised RuntimeError: no answer for hello"),
        ("async_raises", "handler raised KeyError: 'missing'"),
        ("wrong_type", "handler returned int; expected None, str or Response"),
    ],
)
def test_faults_become_errors(name: str, error: str, message: IncomingMessage) -> None:
    outcome = run(load_handler(f"{MODULE}:{name}"), message)
    assert (outcome.reply, outcome.error) == (None, error)


@pytest.mark.parametrize("name", ["sleeps", "async_sleeps"])
def test_past_the_limit(name: str, message: IncomingMessage) -> None:
    outcome = run(load_handler(f"{MODULE}:{name}"), message, timeout=0.2)
    assert (outcome.reply, outcome.error) == (None, "handler timed out after 0.2s")


def test_sync_handler_does_not_block_the_loop(message: IncomingMessage) -> None:
    sample_handlers.release.clear()
    sample_handlers.started.clear()

    async def scenario():
        task = asyncio.create_task(run_handler(sample_handlers.blocks_until_released, message, 30))
        # The loop keeps running while the handler blocks its thread...
        while not sample_handlers.started.is_set():
            await asyncio.sleep(0.01)
        sample_handlers.release.set()  # ...so this line is reached and unblocks it.
        return await task

    outcome = asyncio.run(scenario())
    assert (outcome.reply, outcome.error) == ("released", None)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("nocolon", "expected 'package.module:function'"),
        ("a b:c", "expected 'package.module:function'"),
        ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'"),
        (f"{MODULE}:missing", "has no 'missing'"),
        (f"{MODULE}:not_callable", r"not_callable is not callable \(it is int\)"),
    ],
)
def test_load_errors(spec: str, error: str) -> None:
    with pytest.raises(HandlerError, match=error):
        load_handler(spec)


def test_import_failure_inside_the_module(tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_handler_mod.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HandlerError, match="importing broken_handler_mod failed"):
        load_handler("broken_handler_mod:f")
