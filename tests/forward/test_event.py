"""Events: built from what the store really returns, valid against the shipped JSON Schema."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from plivohook.forward.event import (
    MESSAGE_RECEIVED,
    MESSAGE_STATUS,
    conversation_key,
    event_id,
    load_schema,
    message_event,
    message_view,
    rfc3339,
    status_event,
)
from plivohook.store import open_store
from tests.store import message, status

FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _rfc3339(value: object) -> bool:
    # jsonschema checks date-time only with an optional package; RFC 3339 needs an offset.
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value).tzinfo is not None


VALIDATOR = Draft202012Validator(load_schema(), format_checker=FORMATS)


def test_the_schema_is_a_valid_draft_2020_12_schema():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


async def _stored(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    await store.open()
    try:
        await store.write(
            message(
                "m-1",
                text="héllo",
                media=[{"url": "https://example.com/a.jpg", "content_type": "image/jpeg"}],
                params=[("From", "14155550100"), ("To", "14155550199"), ("Tag", "a"), ("Tag", "b")],
            )
        )
        await store.write(status("m-1", "sent", sequence=1))
        await store.write(status("m-1", "delivered", sequence=2))
        return await store.get_message("m-1"), await store.get_statuses("m-1")
    finally:
        await store.close()


def test_events_from_a_real_store_validate_and_carry_the_api_view(tmp_path):
    stored, statuses = asyncio.run(_stored(tmp_path))
    event = message_event(stored)
    body = orjson.loads(event.payload)
    VALIDATOR.validate(body)
    assert body["type"] == MESSAGE_RECEIVED == event.type
    assert body["data"]["params"]["Tag"] == ["a", "b"]  # as the API shows repeated parameters
    assert body["data"]["text"] == "héllo"
    assert body["timestamp"] == body["data"]["received_at"] == rfc3339(stored["received_at"])
    assert body["data"] == orjson.loads(orjson.dumps(message_view(stored)))

    reports = [status_event(s, key=i) for i, s in enumerate(statuses)]
    for report in reports:
        VALIDATOR.validate(report.body)
        assert report.type == MESSAGE_STATUS
    assert [r.body["data"]["status"] for r in reports] == ["sent", "delivered"]
    assert len({r.id for r in reports}) == 2


def test_a_rebuilt_event_is_byte_for_byte_the_same_with_the_same_id(tmp_path):
    stored, statuses = asyncio.run(_stored(tmp_path))
    assert message_event(stored) == message_event(dict(stored))
    # A view passes through unchanged: building from the API's answer gives the same event.
    assert message_event(message_view(stored)) == message_event(stored)
    assert status_event(statuses[0], key=7) == status_event(statuses[0], key=7)
    assert status_event(statuses[0], key=7).id != status_event(statuses[0], key=8).id


def test_ids_are_stable_short_and_differ_by_type():
    assert event_id(MESSAGE_RECEIVED, "m-1") == event_id(MESSAGE_RECEIVED, "m-1")
    assert event_id(MESSAGE_RECEIVED, "1") != event_id(MESSAGE_STATUS, "1")
    evt = event_id(MESSAGE_RECEIVED, "weird\u2028 id\x00")
    assert evt.startswith("evt_")
    assert len(evt) == 36
    assert evt[4:].isalnum()
    with pytest.raises(ValueError, match="unknown event type"):
        event_id("message.deleted", "m-1")


def test_a_message_and_the_reports_of_its_reply_are_one_conversation():
    inbound = {
        "message_uuid": "m-2",
        "from": "14155550100",
        "to": "14155550199",
        "type": "sms",
        "text": "hi",
        "media": [],
        "params": [["From", "14155550100"], ["To", "14155550199"]],
        "method": "POST",
        "received_at": datetime(2024, 5, 1, tzinfo=UTC),
        "reply": None,
        "signature_scheme": "v3",
        "status": None,
    }
    report = {
        "message_uuid": "r-2",
        "status": "delivered",
        "sequence": None,
        "parent_message_uuid": None,
        "error_code": None,
        "reply_to": "m-2",
        "params": [["From", "14155550199"], ["To", "14155550100"], ["Status", "delivered"]],
        "received_at": datetime(2024, 5, 1, 0, 0, 1, tzinfo=UTC),
        "signature_scheme": "v3",
    }
    assert message_event(inbound).conversation == status_event(report, key=1).conversation
    assert conversation_key("a", "b") != conversation_key("a", "c")
    VALIDATOR.validate(status_event(report, key=1).body)
    # A report without From/To is ordered with its message's other reports.
    bare = {**report, "params": [["Status", "sent"]]}
    assert status_event(bare, key=2).conversation == "message\x1fr-2"


def test_a_broken_event_fails_the_schema():
    good = message_event(
        {
            "message_uuid": "m-3",
            "from": "1",
            "to": "2",
            "type": "sms",
            "text": "",
            "media": [],
            "params": {},
            "method": "POST",
            "received_at": datetime(2024, 5, 1, tzinfo=timezone_plus_two()),
            "reply": None,
            "signature_scheme": "v3",
            "status": None,
        }
    ).body
    assert good["timestamp"] == "2024-04-30T22:00:00.000000Z"  # always written in UTC
    VALIDATOR.validate(good)
    for broken in (
        {**good, "type": "message.status"},  # a message's data is not a report
        {**good, "timestamp": "yesterday"},
        {k: v for k, v in good.items() if k != "data"},
        {**good, "data": {**good["data"], "params": {"Tag": 3}}},
    ):
        assert not VALIDATOR.is_valid(broken), broken


def timezone_plus_two():
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_a_naive_time_is_refused():
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2024, 5, 1))
