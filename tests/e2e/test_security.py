"""Issue 11 against `plivohook serve` in a subprocess: the Host forgery, header floods, refusals."""

from __future__ import annotations

import select
import socket
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


def send_head(port: int, head_size: int) -> bytes:
    """A request whose one header is ``head_size`` bytes, sent as long as the server reads it."""

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /plivo/message HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * 65536
        sent = 0
        try:
            while sent < head_size:
                sock.sendall(chunk)
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered: stop sending
            else:
                sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        return answer


def test_huge_header_is_refused_with_431_and_the_server_still_serves(server_factory, tmp_path):
    server = server_factory(f"sqlite:///{tmp_path}/flood.db").start()
    answer = send_head(server.port, 16 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"larger than 32768 bytes" in answer
    response = httpx.get(server.url + "/healthz")
    assert response.status_code == 200
    assert any("431" in line and "larger than" in line for line in server.lines)


def test_max_header_bytes_and_header_count(server_factory, tmp_path):
    server = server_factory(f"sqlite:///{tmp_path}/count.db", "--max-header-bytes", "4096").start()
    assert send_head(server.port, 8192).startswith(b"HTTP/1.1 431 ")
    assert httpx.get(server.url + "/healthz", headers={"X-Small": "a" * 2000}).status_code == 200
    many = {f"X-H{i}": "1" for i in range(150)}
    response = httpx.get(server.url + "/healthz", headers=many)
    assert response.status_code == 431
    assert "more than 100 header fields" in response.text
    assert httpx.get(server.url + "/healthz").status_code == 200
