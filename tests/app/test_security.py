"""Issue 11's security findings, in-process on both backends: each test failed before the fix."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from plivohook.cli import signed_request
from plivohook.config import ConfigError, Settings, is_host
from plivohook.protocol.signature import sign_v2
from tests.app.conftest import BASE, TOKEN, form, make_harness, sms

FORGED_FOR = "http://voice.example.org/voice/answer"  # e.g. a voice answer_url of the account


def forged_headers(host: str, nonce: str = "31627761595286130198") -> dict[str, str]:
    """A genuine V2 signature, made for another URL, and a Host that makes us check that URL."""
    return {
        "Host": host,
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Plivo-Signature-V2": sign_v2(FORGED_FOR, nonce, TOKEN),
        "X-Plivo-Signature-V2-Nonce": nonce,
    }


@pytest.mark.parametrize(
    "host",
    [
        "voice.example.org/voice/answer?",
        "voice.example.org/voice/answer#",
        "voice.example.org/voice/answer?x=",
    ],
)
def test_host_header_forgery_is_refused_and_nothing_stored(harness, host):
    body = form(sms(str(uuid.uuid4()), text="attacker's text", From="19995550100"))
    response = harness.client.post(
        BASE + "/plivo/message", content=body, headers=forged_headers(host)
    )
    assert response.status_code == 400, response.text
    assert "Host header" in response.text
    assert harness.counts() == {"messages": 0, "statuses": 0, "rejections": 0, "nonces": 0}


def test_forwarded_host_forgery_is_refused_when_trusted(db_url):
    for harness in make_harness(db_url, trust_forwarded_headers=True):
        headers = forged_headers("testserver")
        headers["X-Forwarded-Host"] = "voice.example.org/voice/answer?"
        body = form(sms(str(uuid.uuid4())))
        response = harness.client.post(BASE + "/plivo/message", content=body, headers=headers)
        assert response.status_code == 400
        assert "X-Forwarded-Host header" in response.text
        headers["X-Forwarded-Host"] = "voice.example.org"
        headers["X-Forwarded-Proto"] = "http://voice.example.org/voice/answer?"
        response = harness.client.post(BASE + "/plivo/message", content=body, headers=headers)
        assert response.status_code == 400
        assert "X-Forwarded-Proto" in response.text
        assert harness.counts()["messages"] == 0


def test_allowed_hosts_refuse_other_hosts(db_url):
    for harness in make_harness(db_url, allowed_hosts=("testserver",)):
        assert harness.post("/plivo/message", sms(str(uuid.uuid4()))).status_code == 200
        body = form(sms(str(uuid.uuid4())))
        nonce = "1234"
        headers = {
            "Host": "elsewhere.example.org",
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Plivo-Signature-V2": sign_v2(
                "http://elsewhere.example.org/plivo/message", nonce, TOKEN
            ),
            "X-Plivo-Signature-V2-Nonce": nonce,
        }
        response = harness.client.post(BASE + "/plivo/message", content=body, headers=headers)
        assert response.status_code == 400
        assert "--allowed-hosts" in response.text
        assert harness.counts()["messages"] == 1


@pytest.mark.parametrize(
    "value",
    ["example.org", "example.org:8080", "127.0.0.1:80", "[::1]", "[::1]:8443", "xn--bcher-kva.ch",
     "a%2Db", "[v1.x:y]"],
)  # fmt: skip
def test_is_host_accepts_host_and_port(value):
    assert is_host(value)


@pytest.mark.parametrize(
    "value",
    ["", "a/b", "a?", "a#", "user@a", "a b", "a\tb", "a:", "a:x", "a:123456", "[::1", "[zz]",
     "[::1]x", "[fe80::1%eth0]", "a:1:2", "%zz", "caf\u00e9.example"],
)  # fmt: skip
def test_is_host_refuses_anything_else(value):
    assert not is_host(value)


def test_allowed_hosts_are_checked_at_start():
    with pytest.raises(ConfigError, match="allowed-hosts"):
        Settings(auth_tokens=("t",), allowed_hosts=("a/b",)).validated()
    settings = Settings(auth_tokens=("t",), allowed_hosts=(" Example.org ", "")).validated()
    assert settings.allowed_hosts == ("example.org",)
    assert Settings.from_env(settings.to_env()).allowed_hosts == ("example.org",)


def test_start_warns_when_the_host_header_is_trusted(db_url, caplog):
    with caplog.at_level("WARNING", logger="plivohook"):
        for _harness in make_harness(db_url):
            pass
    assert any("--allowed-hosts" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="plivohook"):
        for _harness in make_harness(db_url, public_url="https://hooks.example.com"):
            pass
    assert not any("--allowed-hosts" in r.getMessage() for r in caplog.records)


# -- item 3: only nonces a verified signature covers are recorded --------------------------------


def _random_v2_nonce(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "X-Plivo-Signature-V2-Nonce": uuid.uuid4().hex}


def test_unsigned_v2_nonces_beside_a_verified_v3_are_not_recorded(harness):
    url, headers, body = signed_request(
        BASE + "/plivo/message", sms(str(uuid.uuid4())), TOKEN, ("v3",)
    )
    assert harness.client.post(url, content=body, headers=headers).status_code == 200
    for _ in range(5):  # a captured V3 request, replayed with nonces nothing signed
        again = harness.client.post(url, content=body, headers=_random_v2_nonce(headers))
        assert again.status_code == 200
    assert harness.counts() == {"messages": 1, "statuses": 0, "rejections": 0, "nonces": 1}


def test_v3_re_split_replays_are_refused_and_not_kept(harness):
    """V3 joins key and value unseparated: To=14155550199 and To1=4155550199 sign alike."""
    params = sms(str(uuid.uuid4()))
    url, headers, body = signed_request(BASE + "/plivo/message", params, TOKEN, ("v3",))
    assert harness.client.post(url, content=body, headers=headers).status_code == 200
    re_split = form([("To1", "4155550199") if k == "To" else (k, v) for k, v in params])
    for _ in range(3):
        replay = harness.client.post(url, content=re_split, headers=_random_v2_nonce(headers))
        assert replay.status_code == 403, replay.text
        assert "nonce already used" in replay.text
    assert harness.counts()["rejections"] == 0


def test_a_rejected_request_is_not_kept_twice(harness):
    params = [(k, v) for k, v in sms("not-a-uuid") if k != "From"]
    url, headers, body = signed_request(BASE + "/plivo/message", params, TOKEN, ("v2", "v3"))
    assert harness.client.post(url, content=body, headers=headers).status_code == 400
    v3_only = {k: v for k, v in headers.items() if "V2" not in k}
    for replay in (headers, v3_only, _random_v2_nonce(v3_only)):
        assert harness.client.post(url, content=body, headers=replay).status_code == 400
    assert harness.counts()["rejections"] == 1
    # Both nonces were verified, so both are recorded: neither can carry another body.
    assert harness.counts()["nonces"] == 2


def test_rejections_are_pruned_with_their_retention(db_url):
    for harness in make_harness(db_url, rejection_retention=timedelta(0)):
        for text in ("a", "b"):
            params = [(k, v) for k, v in sms("not-a-uuid", text=text)]
            assert harness.post("/plivo/message", params).status_code == 400
        assert harness.counts()["rejections"] == 2
        harness.client.portal.call(harness.app.prune)  # what the hourly task runs
        assert harness.counts()["rejections"] == 1  # the newest always stays
    settings = Settings(auth_tokens=("t",), rejection_retention=timedelta(days=2)).validated()
    assert Settings.from_env(settings.to_env()).rejection_retention == timedelta(days=2)


# -- item 8: every refusal is logged once, and counted --------------------------------------------


def test_a_wrong_token_is_logged_without_token_or_signature(harness, caplog):
    url, headers, body = signed_request(
        BASE + "/plivo/message", sms(str(uuid.uuid4())), "wrong-token-123456", ("v2",)
    )
    with caplog.at_level("WARNING", logger="plivohook"):
        response = harness.client.post(url, content=body, headers=headers)
    assert response.status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(lines) == 1, lines
    line = lines[0]
    assert "POST /plivo/message: 403" in line
    assert "X-Plivo-Signature-V2 does not match" in line
    assert "checked against http://testserver/plivo/message" in line
    assert "headers V2" in line
    for secret in (TOKEN, "wrong-token-123456", headers["X-Plivo-Signature-V2"]):
        assert secret not in caplog.text
    assert harness.app.counters["refused_403"] == 1
    assert harness.app.counters["verification_failure:mismatch"] == 1


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"content-type": "application/json"}, b"{}", 415),
        ({"content-type": "application/x-www-form-urlencoded"}, b"x" * 70_000, 413),
        ({"content-type": "application/x-www-form-urlencoded"}, b"a=1", 403),
    ],
)
def test_other_refusals_are_logged_and_counted(harness, caplog, headers, body, status):
    with caplog.at_level("WARNING", logger="plivohook"):
        response = harness.raw("POST", "/plivo/message", body=body, headers=headers)
    assert response.status_code == status
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(lines) == 1 and f": {status} " in lines[0], lines
    assert harness.app.counters[f"refused_{status}"] == 1


# -- item 14 (server side) ------------------------------------------------------------------------


def test_a_body_that_is_not_utf8_says_so(harness):
    url, headers, _ = signed_request(
        BASE + "/plivo/message", sms(str(uuid.uuid4())), TOKEN, ("v2",)
    )
    body = form(sms(str(uuid.uuid4()))).replace(b"Text=Hello+there", b"Text=caf%E9")
    response = harness.client.post(url, content=body, headers=headers)
    assert response.status_code == 400
    assert "Text: is not valid UTF-8" in response.text
    assert "surrogate" not in response.text


def test_a_duplicate_with_another_text_is_logged_and_flagged(harness, caplog):
    uid = str(uuid.uuid4())
    assert harness.post("/plivo/message", sms(uid, text="first")).status_code == 200
    with caplog.at_level("WARNING", logger="plivohook"):
        assert harness.post("/plivo/message", sms(uid, text="second")).status_code == 200
    assert any(uid in r.getMessage() and "another text" in r.getMessage() for r in caplog.records)
    stored = harness.api(f"/api/messages/{uid}").json()
    assert (stored["text"], stored["conflicting_duplicates"]) == ("first", 1)
    listed = harness.api("/api/messages").json()["messages"]
    assert listed[0]["conflicting_duplicates"] == 1
    assert harness.post("/plivo/message", sms(uid, text="first")).status_code == 200
    assert harness.api(f"/api/messages/{uid}").json()["conflicting_duplicates"] == 1
