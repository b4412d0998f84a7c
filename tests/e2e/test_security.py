"""Issue 11 against `plivohook serve` in a subprocess: the Host forgery, header floods, refusals."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import httpx
import pytest

from plivohook.protocol.signature import sign_v2
from tests.e2e.conftest import TOKEN

pytestmark = pytest.mark.e2e


def sms(text: str = "Hello") -> bytes:
    params = {
        "From": "14155550100",
        "To": "14155550199",
        "Type": "sms",
        "Text": text,
        "MessageUUID": str(uuid.uuid4()),
    }
    return urlencode(params).encode()


def test_host_header_forgery_is_refused(server_factory, tmp_path):
    server = server_factory(f"sqlite:///{tmp_path}/forgery.db").start()
    nonce = "31627761595286130198"
    headers = {
        "Host": "voice.example.org/voice/answer?",
        "Content-Type": "application/x-www-form-urlencoded",
        # A genuine signature for another URL of the account (a voice answer_url, say).
        "X-Plivo-Signature-V2": sign_v2("http://voice.example.org/voice/answer", nonce, TOKEN),
        "X-Plivo-Signature-V2-Nonce": nonce,
    }
    response = httpx.post(server.url + "/plivo/message", content=sms("forged"), headers=headers)
    assert response.status_code == 400, response.text
    assert "Host header is not a valid host[:port]" in response.text
    import sqlite3

    with sqlite3.connect(f"{tmp_path}/forgery.db") as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM nonces").fetchone()[0] == 0
    assert any("--allowed-hosts" in line and "WARNING" in line for line in server.lines)
