"""The Plivo simulator signs what it sends exactly as Plivo does (checked by our verifier)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from plivohook.protocol import signature
from plivohook.protocol.simulator import (
    SCHEMES,
    inbound_sms_params,
    new_nonce,
    signed_request,
    status_params,
)

TOKEN = "simulator-token-0123456789"


def _verify(method, url, headers, body):
    params = parse_qsl(body.decode(), keep_blank_values=True) if body else []
    lowered = {k.lower(): v for k, v in headers.items()}
    return signature.verify_request(method, url, lowered, params, (TOKEN,), (TOKEN,))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_each_scheme_and_method_verifies(scheme, method):
    url, headers, body = signed_request(
        "https://example.com/plivo/message",
        inbound_sms_params("u-1", "hi"),
        TOKEN,
        (scheme,),
        method,
    )
    verification = _verify(method, url, headers, body)
    assert verification, verification.reason
    assert verification.scheme == scheme


def test_sign_url_signs_for_the_public_url_and_posts_to_the_local_one():
    local, public = "http://127.0.0.1:8080/plivo/message", "https://hooks.example.com/plivo/message"
    url, headers, body = signed_request(
        local, inbound_sms_params("u-2", "hi"), TOKEN, ("v2", "v3"), sign_url=public
    )
    assert url == local
    assert _verify("POST", public, headers, body)
    assert not _verify("POST", local, headers, body)


def test_get_puts_the_fields_in_the_query_of_both_urls():
    url, headers, body = signed_request(
        "http://127.0.0.1/plivo/message?x=1",
        [("Text", "a b")],
        TOKEN,
        ("v3",),
        "GET",
        sign_url="https://example.com/plivo/message?x=1",
    )
    assert body is None and "Content-Type" not in headers
    assert parse_qsl(urlsplit(url).query) == [("x", "1"), ("Text", "a b")]
    assert _verify("GET", "https://example.com/plivo/message?x=1&Text=a+b", headers, None)


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="unknown signature scheme"):
        signed_request("http://x/plivo/message", [], TOKEN, ("v9",))


def test_nonces_are_plivo_shaped_and_fresh():
    nonces = {new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 20 and n.isdigit() for n in nonces)


def test_status_params_carry_an_error_code_only_for_failures():
    failed = dict(status_params("u-3", "failed", sequence=2))
    delivered = dict(status_params("u-3", "delivered"))
    assert failed["ErrorCode"] == "300" and failed["Sequence"] == "2"
    assert delivered["ErrorCode"] == "" and delivered["ParentMessageUUID"] == "u-3"
