"""HttpDeliverer against a real receiving app that verifies with standardwebhooks."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import pytest

from plivohook.forward.event import message_event
from plivohook.forward.http import (
    ForwardConfigError,
    HttpDeliverer,
    generate_secret,
    parse_secret,
    redact_url,
    validate_url,
)

from .receiver import SECRET, free_port

EVENT = message_event(
    {
        "message_uuid": "m-http",
        "from": "14155550100",
        "to": "14155550199",
        "type": "sms",
        "text": "hello",
        "media": [],
        "params": [["From", "14155550100"], ["To", "14155550199"]],
        "method": "POST",
        "received_at": datetime(2024, 5, 1, tzinfo=UTC),
        "reply": None,
        "signature_scheme": "v3",
        "status": None,
    }
)


async def _deliver(url: str, *, secret: str = SECRET, **options):
    deliverer = HttpDeliverer(url, secret, **options)
    try:
        return await deliverer.deliver(EVENT.id, EVENT.type, EVENT.payload)
    finally:
        await deliverer.aclose()


def test_a_delivered_event_verifies_on_the_receiving_side(receiver):
    state, base = receiver
    outcome = asyncio.run(_deliver(f"{base}/hook"))
    assert outcome.delivered
    assert outcome.status_code == 204
    assert state.forged == 0
    [got] = state.received
    assert got.event_id == EVENT.id
    assert got.body == EVENT.body


def test_a_wrong_secret_is_refused_by_the_receiver(receiver):
    state, base = receiver
    outcome = asyncio.run(_deliver(f"{base}/hook", secret=generate_secret()))
    assert not outcome.delivered
    assert outcome.status_code == 400
    assert state.forged == 1


def test_a_server_error_is_a_retry_with_its_status(receiver):
    state, base = receiver
    state.mode = "500"
    outcome = asyncio.run(_deliver(f"{base}/hook"))
    assert (outcome.delivered, outcome.status_code, outcome.error) == (False, 500, "HTTP 500")


def test_a_refused_connection_is_a_retry_with_the_error():
    outcome = asyncio.run(_deliver(f"http://127.0.0.1:{free_port()}/hook"))
    assert not outcome.delivered
    assert outcome.status_code is None
    assert outcome.error.startswith("connection failed")


def test_a_slow_destination_costs_one_timeout(receiver):
    state, base = receiver
    outcome = asyncio.run(_deliver(f"{base}/slow", timeout=0.3))
    assert not outcome.delivered
    assert outcome.error == "no answer within 0.3 s"
    assert state.hits["slow"] == 1


def test_a_redirect_is_not_followed_and_counts_as_a_failure(receiver):
    state, base = receiver
    outcome = asyncio.run(_deliver(f"{base}/redirect"))
    assert not outcome.delivered
    assert outcome.status_code == 307
    assert "redirect not followed" in outcome.error
    assert state.hits["redirect"] == 1
    assert state.hits["hook"] == 0  # the signed event went nowhere else


def test_a_huge_answer_is_read_only_up_to_the_bound(receiver):
    state, base = receiver
    outcome = asyncio.run(_deliver(f"{base}/huge", timeout=5))
    assert outcome.delivered
    assert outcome.status_code == 200
    # The app would send 1 GiB; the deliverer stopped after 64 KiB and dropped the connection,
    # so the app got no further than what the sockets' buffers hold.
    assert state.huge_sent < 32 * 1024 * 1024, state.huge_sent


def test_an_accepted_event_whose_body_drips_is_delivered_at_the_deadline(receiver):
    state, base = receiver
    assert state.hits["drip"] == 0
    outcome = asyncio.run(_deliver(f"{base}/drip", timeout=0.5))
    assert outcome.delivered
    assert outcome.status_code == 200
    assert state.hits["drip"] == 1


def test_requests_in_flight_stay_within_the_limit(receiver):
    state, base = receiver

    async def many():
        deliverer = HttpDeliverer(f"{base}/busy", SECRET, max_in_flight=2)
        try:
            return await asyncio.gather(
                *(deliverer.deliver(f"evt_{i}", EVENT.type, EVENT.payload) for i in range(8))
            )
        finally:
            await deliverer.aclose()

    outcomes = asyncio.run(many())
    assert all(o.delivered for o in outcomes)
    assert len(state.received) == 8
    assert 1 <= state.most_in_flight <= 2


def test_secrets_parse_strictly_and_errors_never_quote_them():
    key = parse_secret(SECRET)
    assert key == base64.b64decode(SECRET.removeprefix("whsec_"))
    assert len(parse_secret(generate_secret())) == 32
    # Unpadded base64 is accepted, as the receiving library accepts it.
    assert parse_secret("whsec_" + base64.b64encode(b"k" * 25).decode().rstrip("=")) == b"k" * 25
    cases = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw": "must be a Standard Webhooks secret",
        "whsec_": "24 to 64 bytes",
        "whsec_c2hvcnQ=": "24 to 64 bytes",
        "whsec_MfKQ9r8GKYqrTwjUPD8I!PZIo2LaLaSw": "not valid base64",
        "whsec_" + base64.b64encode(b"k" * 65).decode(): "24 to 64 bytes",
    }
    for secret, reason in cases.items():
        with pytest.raises(ForwardConfigError, match=reason) as caught:
            parse_secret(secret)
        assert secret.removeprefix("whsec_") not in str(caught.value) or secret == "whsec_"
        assert caught.value.__cause__ is None


def test_forward_urls_must_be_http_or_https():
    assert validate_url("https://app.example.com/hooks?x=1") == "https://app.example.com/hooks?x=1"
    assert validate_url("HTTP://127.0.0.1:8080/") == "HTTP://127.0.0.1:8080/"
    for url, reason in {
        "ftp://example.com/": "http:// or https://",
        "example.com/hook": "http:// or https://",
        "https:///path": "has no host",
        "http://example.com:port/": "not a valid URL",
        "http://exa mple.com/": "without spaces",
    }.items():
        with pytest.raises(ForwardConfigError, match=reason):
            validate_url(url)
    with pytest.raises(ForwardConfigError, match="--forward-url") as caught:
        validate_url("http://user:hunter2@example.com:x/")
    assert "hunter2" not in str(caught.value)


def test_a_password_in_the_url_is_kept_out_of_names_and_errors():
    url = f"http://user:hunter2@127.0.0.1:{free_port()}/hook"
    assert redact_url(url) == url.replace("hunter2", "***")

    async def attempt():
        deliverer = HttpDeliverer(url, SECRET)
        try:
            assert "hunter2" not in repr(deliverer)
            assert "hunter2" not in deliverer.destination
            return await deliverer.deliver(EVENT.id, EVENT.type, EVENT.payload)
        finally:
            await deliverer.aclose()

    outcome = asyncio.run(attempt())
    assert not outcome.delivered
    assert "hunter2" not in outcome.error


def test_bad_numbers_refuse_to_start():
    with pytest.raises(ForwardConfigError, match="--forward-timeout"):
        HttpDeliverer("http://127.0.0.1/", SECRET, timeout=0)
    with pytest.raises(ForwardConfigError, match="in flight"):
        HttpDeliverer("http://127.0.0.1/", SECRET, max_in_flight=0)
