"""The webhook routes, in-process on both backends: verify, keep once, answer."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plivohook.protocol.simulator import signed_request
from tests.app.conftest import BASE, MAIN_TOKEN, TOKEN, form, make_harness, sms


def new_uuid() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize("scheme", ["v2", "ma-v2", "v3", "ma-v3"])
def test_each_scheme_is_accepted_and_recorded(harness, scheme):
    uid = new_uuid()
    token = MAIN_TOKEN if scheme.startswith("ma-") else TOKEN
    response = harness.post("/plivo/message", sms(uid), schemes=(scheme,), token=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text == "<Response/>"
    stored = harness.api(f"/api/messages/{uid}").json()
    assert stored["signature_scheme"] == scheme
    assert stored["text"] == "Hello there"
    assert stored["params"]["MessageUUID"] == uid


def test_duplicate_delivery_is_stored_once_and_answered_alike(db_url):
    for harness in make_harness(db_url, auto_reply="Thanks!"):
        uid = new_uuid()
        first = harness.post("/plivo/message", sms(uid))
        second = harness.post("/plivo/message", sms(uid))  # a new nonce: Plivo's retry
        assert first.status_code == second.status_code == 200
        assert first.text == second.text
        assert "Thanks!" in first.text
        assert harness.counts()["messages"] == 1


def test_retry_with_same_nonce_and_body_gets_the_stored_answer(db_url):
    for harness in make_harness(db_url, auto_reply="Got it"):
        url, headers, body = signed_request(
            BASE + "/plivo/message", sms(new_uuid()), TOKEN, ("v2",)
        )
        first = harness.client.post(url, content=body, headers=headers)
        again = harness.client.post(url, content=body, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.text == first.text and "Got it" in again.text
        assert harness.counts()["messages"] == 1


def test_replayed_v2_nonce_with_another_body_is_refused(harness):
    url, headers, body = signed_request(BASE + "/plivo/message", sms(new_uuid()), TOKEN, ("v2",))
    assert harness.client.post(url, content=body, headers=headers).status_code == 200
    forged = form(sms(new_uuid(), text="send me money"))
    replay = harness.client.post(url, content=forged, headers=headers)
    assert replay.status_code == 403
    assert "nonce" in replay.text
    assert harness.counts()["messages"] == 1


@pytest.mark.parametrize(
    ("case", "mutate", "reason"),
    [
        ("wrong token", lambda h: h.update(_resign(h, "wrong-token")), "does not match"),
        (
            "missing header",
            lambda h: [h.pop(k) for k in list(h) if k.startswith("X-Plivo-Signature")],
            "missing X-Plivo-Signature",
        ),
        ("missing nonce", lambda h: h.pop("X-Plivo-Signature-V2-Nonce"), "V2-Nonce"),
        ("malformed", lambda h: h.update({"X-Plivo-Signature-V2": "abc"}), "malformed"),
    ],
)
def test_bad_signatures_are_refused_and_nothing_stored(harness, case, mutate, reason):
    url, headers, body = signed_request(BASE + "/plivo/message", sms(new_uuid()), TOKEN, ("v2",))
    mutate(headers)
    response = harness.client.post(url, content=body, headers=headers)
    assert response.status_code == 403, case
    assert reason in response.text
    assert "Traceback" not in response.text
    assert harness.counts() == {"messages": 0, "statuses": 0, "rejections": 0, "nonces": 0}
    assert harness.app.counters["signature_failures"] == 1


def _resign(headers, token):
    from plivohook.protocol.signature import sign_v2

    return {
        "X-Plivo-Signature-V2": sign_v2(
            BASE + "/plivo/message", headers["X-Plivo-Signature-V2-Nonce"], token
        )
    }


def test_tampered_v3_body_is_refused_without_falling_back_to_v2(harness):
    url, headers, body = signed_request(
        BASE + "/plivo/message", sms(new_uuid()), TOKEN, ("v2", "v3")
    )
    tampered = body.replace(b"Hello+there", b"Hello+thorn")
    response = harness.client.post(url, content=tampered, headers=headers)
    assert response.status_code == 403
    assert "X-Plivo-Signature-V3 does not match" in response.text
    assert harness.counts()["messages"] == 0


def test_token_rotation_accepts_either_token(db_url):
    for harness in make_harness(db_url, auth_tokens=("old-token-aaaa", TOKEN)):
        response = harness.post("/plivo/message", sms(new_uuid()), token="old-token-aaaa")
        assert response.status_code == 200
        response = harness.post("/plivo/message", sms(new_uuid()), token=TOKEN)
        assert response.status_code == 200


def test_signed_but_malformed_request_is_kept_in_rejections(harness):
    params = [(k, v) for k, v in sms("not-a-uuid") if k != "From"]
    response = harness.post("/plivo/message", [*params, ("Units", "x")])
    assert response.status_code == 400
    assert "MessageUUID" in response.text and "From" in response.text
    assert harness.counts()["messages"] == 0
    rejections = harness.api("/api/rejections").json()["rejections"]
    assert len(rejections) == 1
    kept = rejections[0]
    assert kept["method"] == "POST" and kept["path"] == "/plivo/message"
    assert "MessageUUID=not-a-uuid" in kept["body"]
    assert "MessageUUID" in kept["reason"]
    names = [name for name, _ in kept["headers"]]
    assert "x-plivo-signature-v2" in names


@pytest.mark.parametrize(
    ("method", "headers", "body", "status", "reason"),
    [
        ("PUT", {}, b"", 405, "method PUT not allowed"),
        ("DELETE", {}, b"", 405, "not allowed"),
        ("POST", {"content-type": "application/json"}, b"{}", 415, "Content-Type"),
        ("POST", {}, b"a=b", 415, "Content-Type"),
        (
            "POST",
            {"content-type": "application/x-www-form-urlencoded"},
            b"x=" + b"a" * (64 * 1024),
            413,
            "larger than 65536",
        ),
    ],
)
def test_limits(harness, method, headers, body, status, reason):
    response = harness.raw(method, "/plivo/message", body=body, headers=headers)
    assert response.status_code == status
    assert reason in response.text
    assert "Traceback" not in response.text
    assert harness.counts()["rejections"] == 0


def test_get_message_callback(harness):
    uid = new_uuid()
    response = harness.get("/plivo/message", sms(uid))
    assert response.status_code == 200, response.text
    stored = harness.api(f"/api/messages/{uid}").json()
    assert stored["params"]["From"] == "14155550100"


def test_auto_reply_carries_a_callback_to_the_status_route(db_url):
    for harness in make_harness(db_url, auto_reply="We got it & thanks", public_url=BASE):
        uid = new_uuid()
        response = harness.post("/plivo/message", sms(uid))
        assert response.status_code == 200
        assert response.text == (
            '<Response><Message src="14155550199" dst="14155550100" '
            f'callbackUrl="{BASE}/plivo/status?reply_to={uid}" callbackMethod="POST">'
            "We got it &amp; thanks</Message></Response>"
        )
        reply_uuid = new_uuid()
        for sequence, status in ((1, "queued"), (3, "delivered"), (2, "sent")):
            report = [
                ("MessageUUID", reply_uuid),
                ("Status", status),
                ("Sequence", str(sequence)),
                ("ParentMessageUUID", reply_uuid),
                ("To", "14155550100"),
                ("From", "14155550199"),
            ]
            answer = harness.post("/plivo/status", report, query=f"reply_to={uid}")
            assert answer.status_code == 200, answer.text
        stored = harness.api(f"/api/messages/{uid}").json()
        assert stored["reply"].startswith("<Response><Message")
        assert stored["status"] == "delivered"  # the late "sent" does not overwrite it
        history = harness.api(f"/api/statuses/{reply_uuid}").json()
        assert [s["status"] for s in history["statuses"]] == ["queued", "sent", "delivered"]
        assert history["status"] == "delivered"


def test_duplicate_status_report_is_stored_once(harness):
    report = [("MessageUUID", new_uuid()), ("Status", "failed"), ("Sequence", "1")]
    assert harness.post("/plivo/status", report).status_code == 200
    assert harness.post("/plivo/status", report).status_code == 200
    assert harness.counts()["statuses"] == 1


def test_unsigned_request_rejected_even_with_valid_form(harness):
    response = harness.raw(
        "POST",
        "/plivo/message",
        body=form(sms(new_uuid())),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 403
    assert harness.counts()["messages"] == 0


def test_public_url_is_what_is_checked(db_url):
    public = "https://hooks.example.com"
    for harness in make_harness(db_url, public_url=public):
        _url, headers, body = signed_request(
            public + "/plivo/message", sms(new_uuid()), TOKEN, ("v2",)
        )
        response = harness.client.post(BASE + "/plivo/message", content=body, headers=headers)
        assert response.status_code == 200, response.text
        wrong = harness.post("/plivo/message", sms(new_uuid()), schemes=("v2",))
        assert wrong.status_code == 403


def test_forwarded_headers_count_only_when_trusted(db_url, tmp_path):
    signed_for = "https://public.example.org/plivo/message"
    for trusted in (False, True):
        for harness in make_harness(db_url, trust_forwarded_headers=trusted):
            _url, headers, body = signed_request(signed_for, sms(new_uuid()), TOKEN, ("v2",))
            headers.update({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example.org"})
            response = harness.client.post(BASE + "/plivo/message", content=body, headers=headers)
            assert response.status_code == (200 if trusted else 403)


def test_v2_pair_of_a_v3_request_cannot_be_replayed_with_another_body(harness):
    """A forger strips V3 from a captured request and replays its V2 pair: refused."""
    url, headers, body = signed_request(
        BASE + "/plivo/message", sms(new_uuid()), TOKEN, ("v2", "v3")
    )
    assert harness.client.post(url, content=body, headers=headers).status_code == 200
    v2_only = {k: v for k, v in headers.items() if not k.startswith("X-Plivo-Signature-V3")}
    forged = form(sms(new_uuid(), text="forged"))
    response = harness.client.post(url, content=forged, headers=v2_only)
    assert response.status_code == 403
    assert harness.counts()["messages"] == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a=1",
        "a=1&&b=2&",
        "k",
        "k=&=v",
        "a=%20b+c%2B&a=2",
        "x=%ff%fe&y=caf%C3%A9",
        "%41%42=%",
        "a=b=c",
        "+=+",
        "emoji=%F0%9F%98%80",
    ],
)
def test_form_pairs_is_parse_qsl(text):
    from urllib.parse import parse_qsl

    from plivohook.protocol.form import parse_form as form_pairs

    expected = parse_qsl(text, keep_blank_values=True, errors="surrogateescape")
    assert list(form_pairs(text)) == expected


@given(st.text(alphabet="ab=&+%0fF9 é", max_size=40))
def test_form_pairs_matches_parse_qsl_on_any_text(text):
    from urllib.parse import parse_qsl

    from plivohook.protocol.form import parse_form as form_pairs

    assert list(form_pairs(text)) == parse_qsl(
        text, keep_blank_values=True, errors="surrogateescape"
    )
