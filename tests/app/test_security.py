"""Issue 11's security findings, in-process on both backends: each test failed before the fix."""

from __future__ import annotations

import uuid

import pytest

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
