"""Every sample Plivo request (tests/data/plivo-requests.json) is verified, kept and shown alike."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import plivo_requests

CASES = plivo_requests()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_each_sample_is_kept_and_shown_as_sent(harness, case):
    # A fresh MessageUUID per run: the PostgreSQL database outlives the test.
    fresh = str(uuid.uuid1())
    params = [
        (k, fresh if k in ("MessageUUID", "ParentMessageUUID") else v) for k, v in case["params"]
    ]
    response = harness.post(case["route"], params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    expect = case["expect"]
    if case["route"] == "/plivo/message":
        shown = harness.api(f"/api/messages/{fresh}").json()
        for key in ("type", "from", "to", "text"):
            assert shown[key] == expect[key]
        if "media_count" in expect:
            assert len(shown["media"]) == expect["media_count"]
        else:
            assert shown["media"] == expect["media"]
        # Every field as received, nothing added or lost.
        assert set(shown["params"]) == {k for k, _ in params}
    else:
        shown = harness.api(f"/api/statuses/{fresh}").json()
        assert shown["status"] == expect["status"]
        (report,) = shown["statuses"]
        assert report["sequence"] == expect["sequence"]
        if "error_code" in expect:
            assert report["error_code"] == expect["error_code"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_each_sample_is_answered_alike_when_plivo_retries_it(harness, case):
    fresh = str(uuid.uuid1())
    params = [
        (k, fresh if k in ("MessageUUID", "ParentMessageUUID") else v) for k, v in case["params"]
    ]
    first = harness.post(case["route"], params)
    again = harness.post(case["route"], params)  # a new nonce: Plivo's retry of the same event
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
