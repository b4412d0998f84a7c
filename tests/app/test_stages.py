"""The request path's stages and its two plug points (web/webhooks.py)."""

from __future__ import annotations

import dataclasses
import uuid

from plivohook.store.base import MessageWrite, StatusWrite
from plivohook.web.webhooks import Webhooks
from tests.app.conftest import sms


def test_the_stages_run_in_their_documented_order():
    order = [
        name
        for name in ("read_request", "verify", "parse", "build_write", "commit", "answer")
        if callable(getattr(Webhooks, name, None))
    ]
    assert order == ["read_request", "verify", "parse", "build_write", "commit", "answer"]
    doc = Webhooks.__doc__ or ""
    assert "read_request -> verify -> parse -> build_write -> commit -> answer" in doc


def test_a_reply_decider_answers_and_its_reply_is_stored_with_the_message(harness):
    seen = []

    def decide(message):
        seen.append(message.text)
        return f"<Response><!-- {len(message.text)} --></Response>"

    harness.app.webhooks.decide_reply = decide
    uid = str(uuid.uuid1())
    first = harness.post("/plivo/message", sms(uid, text="four"))
    again = harness.post("/plivo/message", sms(uid, text="four"))  # Plivo's retry
    assert first.content == again.content == b"<Response><!-- 4 --></Response>"
    assert seen == ["four", "four"]  # decided each time, but the stored answer is what goes back
    assert harness.api(f"/api/messages/{uid}").json()["reply"] == first.text


def test_write_extensions_change_what_is_committed_for_messages_and_statuses(harness):
    kinds = []

    def extend(op):
        kinds.append(type(op).__name__)
        if isinstance(op, MessageWrite):
            return dataclasses.replace(op, text=op.text.upper())
        return op

    harness.app.webhooks.write_extensions.append(extend)
    uid = str(uuid.uuid1())
    assert harness.post("/plivo/message", sms(uid, text="shout")).status_code == 200
    report = [("MessageUUID", str(uuid.uuid1())), ("Status", "delivered"), ("Sequence", "1")]
    assert harness.post("/plivo/status", report).status_code == 200
    assert harness.api(f"/api/messages/{uid}").json()["text"] == "SHOUT"
    assert kinds == [MessageWrite.__name__, StatusWrite.__name__]


def test_the_retention_setting_prunes_with_the_hourly_task(db_url):
    from datetime import UTC, datetime, timedelta

    from tests.app.conftest import make_harness
    from tests.store import message

    for harness in make_harness(db_url, retention_days=30):
        store = harness.app.store
        old = datetime.now(UTC) - timedelta(days=31)
        harness.client.portal.call(store.write, message("ancient", received_at=old))
        uid = str(uuid.uuid1())
        assert harness.post("/plivo/message", sms(uid)).status_code == 200
        harness.client.portal.call(harness.app.prune)  # what the hourly task runs
        assert harness.api("/api/messages/ancient").status_code == 404
        assert harness.api(f"/api/messages/{uid}").status_code == 200
