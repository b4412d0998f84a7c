"""The admin API and health, in-process on both backends."""

from __future__ import annotations

import uuid

from tests.app.conftest import make_harness, sms


def test_api_requires_the_bearer_token(harness):
    assert harness.api("/api/messages", token=None).status_code == 401
    assert harness.api("/api/messages", token="wrong-wrong-wrong-wrong").status_code == 401
    ok = harness.api("/api/messages")
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"
    assert ok.json() == {"messages": [], "next_cursor": None}


def test_api_is_closed_without_an_admin_token(db_url):
    for harness in make_harness(db_url, admin_token=None):
        assert harness.api("/api/messages").status_code == 404
        assert harness.api("/api/rejections").status_code == 404


def test_listing_newest_first_with_cursor_and_filters(harness):
    uuids = []
    for i in range(7):
        uid = str(uuid.uuid4())
        uuids.append(uid)
        sender = "14155550100" if i % 2 else "14155550111"
        params = sms(uid, text=f"vote {i} 50%_off")
        params = [(k, sender if k == "From" else v) for k, v in params]
        assert harness.post("/plivo/message", params).status_code == 200
    page = harness.api("/api/messages?limit=3").json()
    assert [m["message_uuid"] for m in page["messages"]] == uuids[::-1][:3]
    rest = harness.api(f"/api/messages?limit=10&cursor={page['next_cursor']}").json()
    assert [m["message_uuid"] for m in rest["messages"]] == uuids[::-1][3:]
    assert rest["next_cursor"] is None
    only = harness.api("/api/messages?from=14155550111").json()["messages"]
    assert len(only) == 4
    assert [m["text"] for m in harness.api("/api/messages?q=VOTE%203").json()["messages"]] == [
        "vote 3 50%_off"
    ]
    assert harness.api("/api/messages?q=50%25_").json()["messages"][0]["text"].endswith("off")
    message = page["messages"][0]
    assert set(message) >= {
        "message_uuid",
        "from",
        "to",
        "type",
        "text",
        "media",
        "received_at",
        "params",
        "reply",
        "status",
        "signature_scheme",
    }
    assert message["received_at"].endswith("Z")


def test_bad_api_parameters(harness):
    for query in ("limit=0", "limit=501", "limit=x", "cursor=%%%", "cursor=bm9wZQ"):
        response = harness.api(f"/api/messages?{query}")
        assert response.status_code == 400, query
        assert "error" in response.json()
    assert harness.api("/api/messages/unknown").status_code == 404


def test_healthz(harness):
    response = harness.client.get("/healthz")
    assert response.status_code == 200
    answer = response.json()
    assert (answer["status"], answer["database"]) == ("ok", "ok")
    # Nothing forwarded here: an empty outbox, and no age for what is not there.
    assert answer["outbox"] == {"pending": 0, "dead": 0, "oldest_pending_age_seconds": None}


def test_mms_media_listed(harness):
    uid = str(uuid.uuid4())
    params = [
        ("From", "14155550100"),
        ("To", "14155550199"),
        ("Type", "mms"),
        ("Body", "pic"),
        ("MessageUUID", uid),
        ("MediaCount", "2"),
        ("Media0", "https://media.plivo.com/Account/X/Media/1"),
        ("Media1", "https://media.plivo.com/Account/X/Media/2"),
    ]
    assert harness.post("/plivo/message", params).status_code == 200
    stored = harness.api(f"/api/messages/{uid}").json()
    assert stored["type"] == "mms" and stored["text"] == "pic"
    assert [m["url"] for m in stored["media"]] == [
        v for k, v in params if k.startswith("Media") and k != "MediaCount"
    ]


def test_security_headers_on_the_api_and_health(harness):
    for response in (harness.api("/api/messages"), harness.client.get("/healthz")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
