"""GET /metrics and the request log lines, in-process on both backends (issue 14, items 2 and 3).

The metric objects are the process's own (module level), shared by every app a test run builds:
each test reads them before and after its own traffic and compares the difference.
"""

from __future__ import annotations

import json
import logging
import uuid
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plivohook.logs import REQUEST_FIELDS, JSONFormatter, TextFormatter
from plivohook.protocol.simulator import signed_request
from plivohook.web.webhooks import REDACTED
from tests.app.conftest import ADMIN, BASE, TOKEN, make_harness, sms


def scrape(harness, token: str | None = ADMIN) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    response = harness.api("/metrics", token=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_admin_token_as_a_bearer(harness):
    assert harness.api("/metrics", token=None).status_code == 401
    wrong = harness.api("/metrics", token="not-the-admin-token-at-all")
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert "not-the-admin-token-at-all" not in wrong.text
    assert harness.api("/metrics").status_code == 200


def test_metrics_open_needs_no_token(db_url):
    for harness in make_harness(db_url, metrics_open=True):
        assert harness.api("/metrics", token=None).status_code == 200


def test_without_an_admin_token_metrics_are_off_and_say_how_to_turn_them_on(db_url):
    for harness in make_harness(db_url, admin_token=None):
        response = harness.api("/metrics", token=None)
        assert response.status_code == 404
        assert "--metrics-open" in response.json()["error"]


def test_counts_follow_what_was_sent(harness):
    before = scrape(harness)
    uids = [str(uuid.uuid4()) for _ in range(3)]
    for uid in uids:
        assert harness.post("/plivo/message", sms(uid)).status_code == 200
    assert harness.post("/plivo/message", sms(uids[0])).status_code == 200  # a duplicate
    # A replay: the captured V2 signature and nonce with another body (V2 does not sign it).
    url, headers, body = signed_request(BASE + "/plivo/message", sms(uids[1]), TOKEN, ("v2",))
    harness.client.post(url, content=body, headers=headers)
    replayed = urlencode(sms(str(uuid.uuid4()), text="forged")).encode()
    assert harness.client.post(url, content=replayed, headers=headers).status_code == 403
    # A forgery, and a signed request that is not a message (kept as a rejection).
    assert harness.post("/plivo/message", sms(str(uuid.uuid4())), token="x" * 20).status_code == 403
    assert harness.post("/plivo/message", [("MessageUUID", "nope")]).status_code == 400
    after = scrape(harness)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("plivohook_messages_stored_total") == 3
    # The replayed request's original is a Plivo retry of uids[1] (a new nonce): a duplicate too.
    assert grew("plivohook_duplicates_total", route="message") == 2
    assert grew("plivohook_replays_refused_total") == 1
    assert grew("plivohook_verification_failures_total", reason="mismatch") == 1
    assert grew("plivohook_rejections_total") == 1
    assert grew("plivohook_requests_total", route="message", status="200") == 5
    assert grew("plivohook_requests_total", route="message", status="403") == 2
    assert grew("plivohook_requests_total", route="message", status="400") == 1
    # Every write went through a group commit (the rejection and the replay's too).
    assert grew("plivohook_commit_batch_size_sum") == 7
    assert grew("plivohook_commit_seconds_count") >= 1
    assert grew("plivohook_commit_batch_size_count") == grew("plivohook_commit_seconds_count")


def test_the_hooks_for_replies_and_forwarding_are_exposed(harness):
    from plivohook.web import metrics

    metrics.HANDLER_SECONDS.observe(0.002)
    metrics.HANDLER_ERRORS.inc()
    metrics.OUTBOX_DEPTH.set(7)
    metrics.DELIVERIES.labels(outcome="delivered").inc()
    samples = scrape(harness)
    assert value(samples, "plivohook_handler_seconds_count") >= 1
    assert value(samples, "plivohook_handler_errors_total") >= 1
    assert value(samples, "plivohook_outbox_depth") == 7
    assert value(samples, "plivohook_deliveries_total", outcome="delivered") >= 1


def test_one_line_per_request_with_its_fields(harness, caplog):
    uid = str(uuid.uuid4())
    with caplog.at_level("INFO", logger="plivohook"):
        assert harness.post("/plivo/message", sms(uid)).status_code == 200
        assert harness.post("/plivo/message", sms(uid)).status_code == 200
        assert harness.post("/plivo/message", sms(uid), token="y" * 20).status_code == 403
    lines = [r for r in caplog.records if hasattr(r, REQUEST_FIELDS)]
    assert len(lines) == 3, [r.getMessage() for r in caplog.records]
    stored, duplicate, forged = (json.loads(JSONFormatter().format(r)) for r in lines)
    assert stored["route"] == "message" and stored["method"] == "POST"
    assert (stored["status"], stored["outcome"], stored["message_uuid"]) == (200, "stored", uid)
    assert (duplicate["status"], duplicate["outcome"]) == (200, "duplicate")
    assert (forged["status"], forged["outcome"], forged["message_uuid"]) == (
        403,
        "verification_failed",
        None,
    )
    for entry in (stored, duplicate, forged):
        assert {"ts", "level", "logger", "msg"} <= set(entry)
        assert entry["duration_ms"] >= 0
    assert stored["level"] == "INFO" and forged["level"] == "WARNING"
    text = TextFormatter().format(lines[0])
    assert f"answered POST /plivo/message: 200 stored, MessageUUID {uid} in " in text


def test_a_json_line_stays_one_line_whatever_the_client_sent():
    record = logging.LogRecord(
        "plivohook", logging.WARNING, __file__, 1, "x %s", ("\n\x00\udce9",), None
    )
    line = JSONFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line)["msg"] == "x \n\x00\udce9"


@pytest.mark.parametrize("family", [("v2",), ("v3",)])
def test_a_rejection_keeps_which_signature_came_but_not_its_value(harness, family):
    url, headers, body = signed_request(
        BASE + "/plivo/message", [("MessageUUID", "nope")], TOKEN, family
    )
    assert harness.client.post(url, content=body, headers=headers).status_code == 400
    [rejection] = harness.api("/api/rejections").json()["rejections"]
    kept = dict(rejection["headers"])  # [name, value] pairs
    name = f"x-plivo-signature-{family[0]}"
    assert kept[name] == REDACTED
    assert headers[f"X-Plivo-Signature-{family[0].upper()}"] not in str(rejection)
