"""Forged and replayed webhook requests, for every signature scheme: 403, and nothing stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import pytest

from plivohook.protocol.simulator import signed_request
from tests.fuzz.harness import BASE, MAIN_TOKEN, TOKEN, Fuzzed, assert_clean, fuzzed_app

SCHEMES = ["v2", "ma-v2", "v3", "ma-v3"]
URL = BASE + "/plivo/message"
HEADER = {
    "v2": "X-Plivo-Signature-V2",
    "ma-v2": "X-Plivo-Signature-Ma-V2",
    "v3": "X-Plivo-Signature-V3",
    "ma-v3": "X-Plivo-Signature-Ma-V3",
}
NONCE = {"v2": "X-Plivo-Signature-V2-Nonce", "v3": "X-Plivo-Signature-V3-Nonce"}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Iterator[Fuzzed]:
    with fuzzed_app(tmp_path_factory.mktemp("forgery")) as app:
        yield app


def sms(uid: str | None = None, text: str = "Hello there") -> list[tuple[str, str]]:
    return [
        ("From", "14155550100"),
        ("To", "14155550199"),
        ("Type", "sms"),
        ("Text", text),
        ("MessageUUID", uid or str(uuid.uuid4())),
        ("Units", "1"),
        ("TotalRate", "0.00000"),
        ("TotalAmount", "0.00000"),
        ("MessageIntent", ""),
        ("PowerpackUUID", ""),
    ]


def token_for(scheme: str) -> str:
    return MAIN_TOKEN if scheme.startswith("ma-") else TOKEN


def family(scheme: str) -> str:
    return "v3" if scheme.endswith("v3") else "v2"


Request = tuple[str, dict[str, str], bytes]


def signed(scheme: str, params=None, url: str = URL, token: str | None = None) -> Request:
    full, headers, body = signed_request(
        url, params or sms(), token or token_for(scheme), (scheme,)
    )
    return full, headers, body or b""


def with_header(request: Request, name: str, value: str) -> Request:
    url, headers, body = request
    return url, {**headers, name: value}, body


def wrong_token(scheme: str) -> Request:
    return signed(scheme, token="not-the-token-" + "x" * 12)


def truncated(scheme: str) -> Request:
    request = signed(scheme)
    return with_header(request, HEADER[scheme], request[1][HEADER[scheme]][:-2])


def padded(scheme: str) -> Request:
    request = signed(scheme)
    return with_header(request, HEADER[scheme], request[1][HEADER[scheme]] + "AAAA")


def one_char_changed(scheme: str) -> Request:
    request = signed(scheme)
    value = request[1][HEADER[scheme]]
    flipped = ("B" if value[10] == "A" else "A").join((value[:10], value[11:]))
    return with_header(request, HEADER[scheme], flipped)


def another_path(scheme: str) -> Request:
    _, headers, body = signed(scheme, url=BASE + "/plivo/status")
    return URL, headers, body


def another_host(scheme: str) -> Request:
    _, headers, body = signed(scheme, url="https://attacker.example/plivo/message")
    return URL, headers, body


def another_nonce(scheme: str) -> Request:
    return with_header(signed(scheme), NONCE[family(scheme)], "12345678901234567890")


def account_token_in_main_header(scheme: str) -> Request:
    """The Ma- header signed with the sub-account's token, or the other way round."""
    other = TOKEN if scheme.startswith("ma-") else MAIN_TOKEN
    return signed(scheme, token=other)


def v3_signature_for_get(scheme: str) -> Request:
    params = sms()
    _, get_headers, _ = signed_request(URL, params, token_for(scheme), (scheme,), "GET")
    _, headers, body = signed(scheme, params)
    return with_header((URL, headers, body), HEADER[scheme], get_headers[HEADER[scheme]])


FORGERIES: dict[str, Callable[[str], Request]] = {
    "wrong token": wrong_token,
    "truncated signature": truncated,
    "padded signature": padded,
    "one character changed": one_char_changed,
    "signed for another path": another_path,
    "signed for another host": another_host,
    "another nonce": another_nonce,
    "token of the other account": account_token_in_main_header,
    "V3 of a GET on a POST": v3_signature_for_get,
}


def send(fuzzed: Fuzzed, request: Request):
    url, headers, body = request
    return fuzzed.client.post(url, content=body, headers=headers)


V3_ONLY = {"V3 of a GET on a POST"}  # V2 signs neither the method nor the body


@pytest.mark.parametrize(
    ("case", "scheme"),
    [(c, s) for c in FORGERIES for s in SCHEMES if c not in V3_ONLY or family(s) == "v3"],
)
def test_forged_requests_are_refused_and_nothing_stored(fuzzed, reliability, scheme, case):
    request = FORGERIES[case](scheme)
    reliability.bad_input("forged_request")
    before = fuzzed.counts()
    response = send(fuzzed, request)
    assert_clean(response.status_code, response.content, method="POST")
    assert response.status_code == 403, (case, response.text)
    assert "signature check failed" in response.text
    assert fuzzed.counts() == before


@pytest.mark.parametrize("scheme", SCHEMES)
def test_replayed_nonce_with_another_body_is_refused(fuzzed, reliability, scheme):
    original = signed(scheme)
    assert send(fuzzed, original).status_code == 200
    after_original = fuzzed.counts()
    reliability.bad_input("replayed_request")
    url, headers, _ = original
    forged = urlencode(sms(text="send me money")).encode()
    response = send(fuzzed, (url, headers, forged))
    assert_clean(response.status_code, response.content, method="POST")
    assert response.status_code == 403, response.text
    reason = "nonce already used" if family(scheme) == "v2" else "does not match"
    assert reason in response.text
    assert fuzzed.counts() == after_original


@pytest.mark.parametrize("scheme", SCHEMES)
def test_exact_retry_is_answered_alike_and_stored_once(fuzzed, scheme):
    """The replay's counterpart: the very same request again is Plivo's retry, not a forgery."""
    original = signed(scheme)
    first = send(fuzzed, original)
    after_first = fuzzed.counts()
    again = send(fuzzed, original)
    assert first.status_code == again.status_code == 200
    assert again.text == first.text
    assert fuzzed.counts() == after_first


def test_v2_pair_stripped_from_a_v3_request_cannot_carry_another_body(fuzzed, reliability):
    """Captured V2+V3 headers, V3 stripped (V2 does not sign the body), another body: the V2 nonce
    was claimed when the original was accepted on its V3 signature, so this is a replay."""
    url, headers, body = signed_request(URL, sms(), TOKEN, ("v2", "v3"))
    assert send(fuzzed, (url, headers, body or b"")).status_code == 200
    after_original = fuzzed.counts()
    reliability.bad_input("replayed_request")
    stripped = {k: v for k, v in headers.items() if "V3" not in k}
    forged = urlencode(sms(text="send me money")).encode()
    response = send(fuzzed, (url, stripped, forged))
    assert response.status_code == 403 and "nonce already used" in response.text
    assert fuzzed.counts() == after_original


@pytest.mark.parametrize("scheme", ["v3", "ma-v3"])
@pytest.mark.parametrize("index", range(len(sms())))
def test_v3_body_tampered_in_one_parameter_is_refused(fuzzed, reliability, scheme, index):
    params = sms()
    url, headers, _ = signed(scheme, params)
    key, value = params[index]
    tampered = list(params)
    tampered[index] = (key, value + "0" if value else "1")
    reliability.bad_input("tampered_v3_body")
    before = fuzzed.counts()
    response = send(fuzzed, (url, headers, urlencode(tampered).encode()))
    assert response.status_code == 403, (key, response.text)
    assert f"{HEADER[scheme]} does not match" in response.text
    assert fuzzed.counts() == before


@pytest.mark.parametrize("scheme", ["v3", "ma-v3"])
def test_v3_body_with_a_parameter_added_or_removed_is_refused(fuzzed, reliability, scheme):
    params = sms()
    url, headers, _ = signed(scheme, params)
    before = fuzzed.counts()
    for changed in (params[:-1], [*params, ("Extra", "1")], [*params, params[0]]):
        reliability.bad_input("tampered_v3_body")
        response = send(fuzzed, (url, headers, urlencode(changed).encode()))
        assert response.status_code == 403, response.text
    assert fuzzed.counts() == before


@pytest.mark.parametrize("scheme", SCHEMES)
def test_genuine_requests_of_every_scheme_are_accepted(fuzzed, scheme):
    """The control for the table above: the same requests, unforged, get their 200."""
    response = send(fuzzed, signed(scheme))
    assert response.status_code == 200, (scheme, response.text)
