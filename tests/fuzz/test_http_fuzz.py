"""Property fuzzing of every HTTP endpoint, in-process on a real SQLite file.

Unsigned requests of any shape (method, path, headers, query, body bytes, chunking, a client that
vanishes mid-body) get a 4xx with a reason, or 200 only where no signature is needed; never a 500,
never a stack trace, never a token echoed, never a stored row. Validly signed requests carrying
random parameters get 200 (stored) or 400 (kept in rejections), never a 500.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from plivohook.protocol.simulator import signed_request
from tests.backends import BACKENDS, database_url
from tests.fuzz.harness import (
    ADMIN,
    BASE,
    MAIN_TOKEN,
    TOKEN,
    Fuzzed,
    assert_clean,
    fuzzed_app,
)

FORM = b"application/x-www-form-urlencoded"
LIMIT = 64 * 1024
WEBHOOKS = ("/plivo/message", "/plivo/status")
# Host bytes kept out of the random values (none: '[' and ']', which once made urllib.parse
# refuse the URL and the webhook answer 500, have their own test below and are fuzzed too).
KNOWN_BAD_HOST_BYTES = b""
FUZZ_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Iterator[Fuzzed]:
    with fuzzed_app(tmp_path_factory.mktemp("fuzz")) as app:
        yield app


# -- strategies ---------------------------------------------------------------------------------

methods = st.sampled_from(
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "post"]
) | st.text(string.ascii_letters + "-_!", min_size=1, max_size=12)
paths = st.sampled_from(
    [
        *WEBHOOKS,
        "/healthz",
        "/openapi.json",
        "/api/messages",
        "/api/rejections",
        f"/api/messages/{uuid.uuid4()}",
        "/api/statuses/x",
        "/",
        "/plivo",
        "/plivo/message/",
        "/plivo/message;x=1",
        "/PLIVO/MESSAGE",
        "/api/messages/%00",
    ]
) | st.text(min_size=0, max_size=40).map(lambda s: "/" + s)
_no_crlf = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
b64ish = st.text(string.ascii_letters + string.digits + "+/=", min_size=0, max_size=60).map(
    str.encode
)
header_names = st.sampled_from(
    [
        b"content-type",
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-plivo-signature-v2",
        b"x-plivo-signature-v2-nonce",
        b"x-plivo-signature-ma-v2",
        b"x-plivo-signature-v3",
        b"x-plivo-signature-v3-nonce",
        b"x-plivo-signature-ma-v3",
        b"authorization",
        b"cookie",
        b"expect",
    ]
) | st.binary(min_size=1, max_size=20).map(
    lambda b: b.replace(b"\r", b"-").replace(b"\n", b"-").replace(b":", b"-")
)
header_values = (
    _no_crlf
    | b64ish
    | st.sampled_from(
        [
            FORM,
            FORM + b"; charset=utf-8",
            b"APPLICATION/X-WWW-FORM-URLENCODED",
            b"multipart/form-data; boundary=xyz",
            b"application/json",
            b"text/plain",
            b"",
            b"chunked",
            b"-1",
            b"1e3",
            b" 12 ",
            b"99999999999999999999999",
            "١٢".encode(),
            b"\x00",
            b"Bearer " + b"x" * 30,
            b"Bearer",
            b"Basic YWRtaW46YWRtaW4=",
            b"100-continue",
        ]
    )
)
form_keys = st.sampled_from(
    ["MessageUUID", "From", "To", "Text", "Type", "Status", "Media0", "Sequence", "Units", "a"]
) | st.text(max_size=20)
form_values = st.text(max_size=80) | st.binary(max_size=40)
form_bodies = st.lists(st.tuples(form_keys, form_values), max_size=12).map(
    lambda pairs: urlencode(pairs).encode()
)
huge_bodies = st.tuples(st.integers(LIMIT - 64, 3 * LIMIT), st.sampled_from([b"a", b"%", b"\x00"]))
bodies = st.one_of(
    st.binary(max_size=600),  # invalid UTF-8, NUL bytes, anything
    form_bodies,
    st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
    huge_bodies.map(lambda nb: b"Text=" + nb[1] * nb[0]),
)


def _clean_host(name: bytes, value: bytes) -> bytes:
    if name in (b"host", b"x-forwarded-host"):
        return bytes(c for c in value if c not in KNOWN_BAD_HOST_BYTES)
    return value


hosts = (
    st.sampled_from(
        [
            b"testserver",
            b"example.com:443",
            b"",
            b"[::1]",
            b"[",
            b"a]b",
            b"a b",
            b"\xff",
            b"x" * 300,
        ]
    )
    | _no_crlf
)
nonces = st.text(string.digits, min_size=0, max_size=30).map(str.encode) | _no_crlf
SIGNATURE_SETS = {
    "none": [],
    "v2": [b"x-plivo-signature-v2"],
    "ma-v2": [b"x-plivo-signature-ma-v2"],
    "v3": [b"x-plivo-signature-v3"],
    "ma-v3": [b"x-plivo-signature-ma-v3"],
    "all": [
        b"x-plivo-signature-v2",
        b"x-plivo-signature-ma-v2",
        b"x-plivo-signature-v3",
        b"x-plivo-signature-ma-v3",
    ],
}


@st.composite
def random_requests(draw):
    # Mostly the webhooks (the public, hot path), with their two methods; the rest at random.
    roll = draw(st.integers(0, 9))
    method = "POST" if roll < 5 else "GET" if roll < 7 else draw(methods)
    path = draw(st.sampled_from(WEBHOOKS)) if draw(st.integers(0, 9)) < 6 else draw(paths)
    query = draw(st.binary(max_size=120) | form_bodies)
    headers = [(name, draw(header_values)) for name in draw(st.lists(header_names, max_size=6))]
    # Signature headers that look right (Base64 of the right length, digit nonces) or not.
    for name in SIGNATURE_SETS[draw(st.sampled_from(sorted(SIGNATURE_SETS)))]:
        headers.append((name, draw(b64ish | st.just(b"A" * 43 + b"=") | _no_crlf)))
        nonce = b"x-plivo-signature-v2-nonce" if b"v2" in name else b"x-plivo-signature-v3-nonce"
        headers.append((nonce, draw(nonces)))
    if draw(st.booleans()):
        headers.append((b"host", draw(hosts)))
    headers = [(name, _clean_host(name, value)) for name, value in headers]
    body = draw(bodies) if draw(st.booleans()) else b""
    if draw(st.integers(0, 3)) != 0:  # usually say it is a form, to get past the 415
        headers.append((b"content-type", FORM))
    length = draw(st.sampled_from(["exact", "exact", "none", "wrong", "nan"]))
    if length == "exact":
        headers.append((b"content-length", str(len(body)).encode()))
    elif length == "wrong":
        headers.append((b"content-length", str(draw(st.integers(0, 10**6))).encode()))
    elif length == "nan":
        headers.append((b"content-length", draw(st.sampled_from([b"abc", b"", b"0x10", b"1.5"]))))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    pieces = draw(st.integers(1, 6))
    step = max(1, len(body) // pieces)
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    disconnect = draw(st.integers(0, 9)) == 0
    return method, path, query, headers, chunks, disconnect


# -- unsigned: refused with a reason, nothing stored ---------------------------------------------


@FUZZ_SETTINGS
@given(request=random_requests())
def test_random_unsigned_requests_are_refused_cleanly(fuzzed, reliability, request):
    method, path, query, headers, chunks, disconnect = request
    reliability.bad_input("unsigned_random_request")
    before = fuzzed.counts()
    answer = fuzzed.raw(
        method, path, query=query, headers=headers, chunks=chunks, disconnect=disconnect
    )
    assert_clean(answer.status, answer.body, method=method)
    event(f"{path if path in WEBHOOKS else 'other'} {answer.status}")
    if path in WEBHOOKS:
        assert answer.status in (400, 403, 405, 413, 415), (answer.status, answer.text)
        assert answer.header(b"content-type") is not None
    elif path.startswith("/api/"):
        assert answer.status != 200, "the admin API answered without the bearer token"
    assert fuzzed.counts() == before, "an unsigned request left a row behind"


@FUZZ_SETTINGS
@given(
    body=bodies,
    pieces=st.integers(1, 40),
    path=st.sampled_from(WEBHOOKS),
    signed=st.booleans(),
)
def test_chunked_bodies_without_content_length(fuzzed, reliability, body, pieces, path, signed):
    """Chunked, no Content-Length: the limit is enforced while reading, 413 past 64 KiB."""
    reliability.bad_input("chunked_body")
    headers = [(b"content-type", FORM), (b"transfer-encoding", b"chunked")]
    if signed:
        _, signature_headers, _ = signed_request(BASE + path, [], TOKEN, ("v2",))
        headers += [(k.encode(), v.encode()) for k, v in signature_headers.items()]
    step = max(1, len(body) // pieces)
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    before = fuzzed.counts()
    answer = fuzzed.raw("POST", path, headers=headers, chunks=chunks)
    assert_clean(answer.status, answer.body, method="POST")
    if len(body) > LIMIT:
        assert answer.status == 413, answer.text
    else:
        assert answer.status in (400, 403), answer.text
    if not signed or answer.status != 400:
        assert fuzzed.counts() == before


def test_generator_body_past_the_limit_is_413(fuzzed, reliability):
    """Through the HTTP client: a generator body is sent chunked, without Content-Length."""
    reliability.bad_input("chunked_body")
    url, headers, _ = signed_request(BASE + "/plivo/message", [], TOKEN, ("v2",))

    def chunks() -> Iterator[bytes]:
        yield b"Text="
        for _ in range(80):
            yield b"a" * 1024

    before = fuzzed.counts()
    response = fuzzed.client.post(url, content=chunks(), headers=headers)
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert response.status_code == 413, response.text
    assert "larger than 65536 bytes" in response.text
    assert fuzzed.counts() == before


@pytest.mark.parametrize("declared", [LIMIT + 1, 10**12, 2**70])
def test_declared_length_past_the_limit_is_413_before_reading(fuzzed, reliability, declared):
    reliability.bad_input("huge_content_length")
    headers = [(b"content-type", FORM), (b"content-length", str(declared).encode())]
    answer = fuzzed.raw("POST", "/plivo/message", headers=headers, chunks=[b"a=b"])
    assert answer.status == 413, answer.text


def test_client_gone_mid_body_is_400_and_nothing_stored(fuzzed, reliability):
    reliability.bad_input("disconnect_mid_body")
    _, headers, body = signed_request(
        BASE + "/plivo/message", [("MessageUUID", str(uuid.uuid4()))], TOKEN, ("v2",)
    )
    raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    before = fuzzed.counts()
    answer = fuzzed.raw(
        "POST", "/plivo/message", headers=raw_headers, chunks=[body[:10]], disconnect=True
    )
    assert answer.status == 400 and "disconnected" in answer.text
    assert fuzzed.counts() == before


@pytest.mark.parametrize("host", [b"[", b"a]b", b"[::1", b"example.com]"])
def test_bracketed_host_is_refused_not_500(fuzzed, reliability, host):
    reliability.bad_input("bracketed_host")
    _, headers, body = signed_request(BASE + "/plivo/message", [("a", "b")], TOKEN, ("v2",))
    raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    before = fuzzed.counts()
    answer = fuzzed.raw(
        "POST", "/plivo/message", headers=[(b"host", host), *raw_headers], chunks=[body or b""]
    )
    assert_clean(answer.status, answer.body, method="POST")
    assert answer.status in (400, 403), answer.text
    assert fuzzed.counts() == before


# -- validly signed, random parameters: 200 or 400, never 500 ------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def signed_app(request, tmp_path_factory) -> Iterator[Fuzzed]:
    with (
        database_url(request.param, tmp_path_factory.mktemp("signed")) as url,
        fuzzed_app(url) as app,
    ):
        yield app


plivo_keys = st.sampled_from(
    [
        "MessageUUID",
        "From",
        "To",
        "Text",
        "Body",
        "Type",
        "Units",
        "TotalRate",
        "TotalAmount",
        "MessageIntent",
        "PowerpackUUID",
        "MediaCount",
        "Media0",
        "Media1",
        "MediaContentType0",
        "ContentType1",
        "MimeType",
        "ErrorCode",
        "Status",
        "Sequence",
        "ParentMessageUUID",
        "PartInfo",
        "MCC",
        "MNC",
        "MessageTime",
        "QueuedTime",
        "SentTime",
        "DeliveryReportTime",
        "requester_ip",
    ]
)
text_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
param_values = (
    text_values
    | st.sampled_from(["", "0", "-1", "1" * 30, "NaN", "1e9", "2024-01-01 00:00:00", "http://x"])
    | st.binary(max_size=30)  # not UTF-8 once percent-decoded
    | st.integers(-(2**70), 2**70).map(str)
)


@st.composite
def signed_params(draw):
    kind = draw(st.sampled_from(["message", "status"]))
    pairs: list[tuple[str, object]] = []
    if draw(st.booleans()):  # start from a valid callback, then disturb it
        uid = str(uuid.uuid4())
        if kind == "message":
            pairs += [("MessageUUID", uid), ("From", "14155550100"), ("To", "14155550199")]
            pairs += [("Type", "sms"), ("Text", draw(text_values))]
        else:
            pairs += [
                ("MessageUUID", uid),
                ("Status", draw(st.sampled_from(["sent", "delivered"]))),
            ]
    pairs += draw(st.lists(st.tuples(plivo_keys | st.text(max_size=15), param_values), max_size=8))
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    scheme = draw(st.sampled_from(["v2", "ma-v2", "v3", "ma-v3", "v2+v3"]))
    method = draw(st.sampled_from(["POST", "POST", "GET"]))
    return kind, pairs, scheme, method


@FUZZ_SETTINGS
@given(case=signed_params())
def test_signed_random_params_get_200_or_400_never_500(signed_app, reliability, case):
    kind, pairs, scheme, method = case
    reliability.bad_input("signed_random_params")
    schemes = ("v2", "v3") if scheme == "v2+v3" else (scheme,)
    token = MAIN_TOKEN if scheme.startswith("ma-") else TOKEN
    path = "/plivo/message" if kind == "message" else "/plivo/status"
    try:
        url, headers, body = signed_request(BASE + path, pairs, token, schemes, method)
    except UnicodeEncodeError:
        assume(False)
    before = signed_app.counts()
    if method == "GET":
        response = signed_app.client.get(url, headers=headers)
    else:
        response = signed_app.client.post(url, content=body, headers=headers)
    assert_clean(response.status_code, response.content, method=method)
    assert response.status_code in (200, 400), (response.status_code, response.text)
    event(f"{kind} {method} {response.status_code}")
    after = signed_app.counts()
    if response.status_code == 400:
        assert after["rejections"] == before["rejections"] + 1, "a 400 not kept in rejections"
        assert (after["messages"], after["statuses"]) == (before["messages"], before["statuses"])
    else:
        assert response.headers["content-type"].startswith("application/xml")
        grew = after["messages"] - before["messages"] + after["statuses"] - before["statuses"]
        assert grew <= 1 and after["rejections"] == before["rejections"]
        uid = dict((k, v) for k, v in pairs if isinstance(v, str)).get("MessageUUID")
        if kind == "message" and uid:
            listed = signed_app.client.get(
                f"{BASE}/api/messages/{uid}", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert listed.status_code == 200, "200 answered but the message is not stored"
