"""Forwarding inside the app: events stored with the message, the deliveries API, health.

The worker is off here (``--no-forward-worker``): these tests look at what is stored and how it
is shown; delivery itself is tested in tests/forward and tests/e2e.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest

from plivohook.config import ConfigError, Settings
from plivohook.forward.event import MESSAGE_RECEIVED, MESSAGE_STATUS, event_id
from plivohook.web.asgi import now

from .conftest import ADMIN, BASE, TOKEN, make_harness, sms

HOOK = "http://127.0.0.1:9/hook"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def forwarding(db_url) -> Iterator:
    yield from make_harness(
        db_url, forward_urls=(HOOK,), forward_secret=SECRET, forward_worker_off=True
    )


def post_api(harness, path, token=ADMIN):
    return harness.client.post(BASE + path, headers={"Authorization": f"Bearer {token}"})


def test_a_message_and_a_report_are_stored_with_one_event_each(forwarding):
    uid = str(uuid.uuid4())
    assert forwarding.post("/plivo/message", sms(uid)).status_code == 200
    assert forwarding.post("/plivo/message", sms(uid)).status_code == 200  # Plivo again
    out = str(uuid.uuid4())
    report = [("MessageUUID", out), ("Status", "delivered"), ("From", "1"), ("To", "2")]
    assert forwarding.post("/plivo/status", report).status_code == 200
    assert forwarding.post("/plivo/status", report).status_code == 200
    found = forwarding.api("/api/deliveries").json()
    assert [(d["event_type"], d["message_uuid"]) for d in found["deliveries"]] == [
        (MESSAGE_STATUS, out),
        (MESSAGE_RECEIVED, uid),
    ]
    first = found["deliveries"][1]
    assert first["event_id"] == event_id(MESSAGE_RECEIVED, uid)
    assert (first["state"], first["attempts"], first["destination"]) == ("pending", 0, HOOK)
    assert first["next_attempt_at"] and first["last_error"] is None
    only = forwarding.api(f"/api/deliveries?message_uuid={uid}&state=pending").json()
    assert [d["id"] for d in only["deliveries"]] == [first["id"]]
    assert forwarding.api("/api/deliveries?state=dead").json()["deliveries"] == []
    assert forwarding.api("/api/deliveries?destination=elsewhere").json()["deliveries"] == []
    outbox = forwarding.client.get("/healthz").json()["outbox"]
    assert outbox["pending"] == 2 and outbox["oldest_pending_age_seconds"] >= 0


def test_the_event_is_the_message_as_the_api_shows_it(forwarding):
    uid = str(uuid.uuid4())
    forwarding.post("/plivo/message", sms(uid, "caf\u00e9 \u2603"))
    store = forwarding.app.store
    [row] = forwarding.client.portal.call(store.claim_due, HOOK, 10, 30.0, now())
    event = orjson.loads(row.payload)
    assert event["type"] == MESSAGE_RECEIVED
    assert event["data"] == forwarding.api(f"/api/messages/{uid}").json()
    assert event["timestamp"] == event["data"]["received_at"]


def test_an_opted_out_senders_event_carries_the_reply_the_store_chose(db_url, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[default]\nreply = "Thanks!"\n', encoding="utf-8")
    for harness in make_harness(
        db_url,
        forward_urls=(HOOK,),
        forward_secret=SECRET,
        forward_worker_off=True,
        rules=str(rules),
    ):
        stop, hello, other = (str(uuid.uuid4()) for _ in range(3))
        sender = f"1415555{uuid.uuid4().int % 10000:04d}"
        assert harness.post("/plivo/message", sms(stop, "STOP", From=sender)).status_code == 200
        answered = harness.post("/plivo/message", sms(hello, "hello", From=sender))
        assert b"Thanks!" not in answered.content  # opted out: no rule reply
        harness.post("/plivo/message", sms(other, "hello"))  # someone else: the rule answers
        rows = harness.client.portal.call(harness.app.store.claim_due, HOOK, 10, 30.0, now())
        events = {orjson.loads(r.payload)["data"]["message_uuid"]: r for r in rows}
        for uid in (stop, hello, other):
            shown = harness.api(f"/api/messages/{uid}").json()
            assert orjson.loads(events[uid].payload)["data"] == shown
        assert orjson.loads(events[hello].payload)["data"]["reply_source"] == "opted-out"


def test_retry_makes_an_event_due_and_refuses_what_cannot_be_retried(forwarding):
    uid = str(uuid.uuid4())
    forwarding.post("/plivo/message", sms(uid))
    [delivery] = forwarding.api("/api/deliveries").json()["deliveries"]
    answer = post_api(forwarding, f"/api/deliveries/{delivery['id']}/retry")
    assert answer.status_code == 200 and answer.json()["state"] == "pending"
    store = forwarding.app.store
    [row] = forwarding.client.portal.call(store.claim_due, HOOK, 10, 30.0, now())
    forwarding.client.portal.call(lambda: store.mark_delivered(row.id, now=now(), status_code=204))
    again = post_api(forwarding, f"/api/deliveries/{delivery['id']}/retry")
    assert again.status_code == 409 and "delivered" in again.json()["error"]
    for bad in ("999999", "abc", "\u0661", "1_0", "-1", "9" * 40):
        missing = post_api(forwarding, f"/api/deliveries/{bad}/retry")
        assert missing.status_code == 404, bad
        assert missing.json() == {"error": "no delivery with that id"}
    assert post_api(forwarding, "/api/deliveries/1/retry", token="wrong-token-x").status_code == 401
    assert forwarding.api("/api/deliveries?state=lost").status_code == 400
    assert forwarding.api("/api/deliveries?limit=0").status_code == 400


def test_nothing_is_stored_for_forwarding_when_it_is_off(harness):
    harness.post("/plivo/message", sms(str(uuid.uuid4())))
    assert harness.api("/api/deliveries").json() == {"deliveries": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"forward_urls": ("ftp://x/y",)}, "--forward-url must start with http"),
        ({"forward_urls": ("http://",)}, "has no host"),
        ({"forward_urls": (HOOK,), "forward_secret": None}, "needs --forward-secret"),
        ({"forward_urls": (HOOK,), "forward_secret": "whsec_" + "A" * 8}, "24 to 64 bytes"),
        ({"forward_urls": (HOOK,), "forward_secret": "whsec_not!base64@@"}, "not valid base64"),
        ({"forward_urls": (HOOK,), "forward_secret": "sk_live_secret"}, "whsec_"),
        ({"forward_urls": (HOOK, HOOK)}, "twice"),
        ({"nats_url": "http://x"}, "--nats-url"),
        ({"nats_url": "nats://x", "nats_subject": "a.*"}, "--nats-subject"),
        ({"forward_urls": (HOOK,), "forward_timeout": 30.0}, "--forward-lease"),
    ],
)
def test_bad_forwarding_options_refuse_to_start_without_showing_the_secret(options, says):
    values = {"auth_tokens": (TOKEN,), "forward_secret": SECRET, **options}
    with pytest.raises(ConfigError) as raised:
        Settings(**values).validated()
    message = str(raised.value)
    assert says in message and "\n" not in message
    secret = values["forward_secret"]
    assert not secret or secret[6:] not in message
    assert SECRET[6:] not in repr(Settings(**values))
