"""plivohook.protocol.signature's public API, table-driven: inputs, tokens, headers, verdicts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools

import pytest

from plivohook.protocol import signature
from plivohook.protocol.signature import (
    sign_v2,
    sign_v3,
    verify_request,
    verify_v2,
    verify_v3,
)

URL = "https://example.com/plivo/sms"
NONCE = "05429567804466091622"
TOKEN = "SUBACCOUNT_TOKEN_0123456789abcdef"
MAIN = "MAINACCOUNT_TOKEN_fedcba9876543210"
OTHER = "SOMEBODY_ELSES_TOKEN_000000000000"
PARAMS = {
    "From": "14155550100",
    "To": "14155550199",
    "Type": "sms",
    "Text": "Hello from a handset",
    "MessageUUID": "2f6d4c6e-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
}


def b(text: str) -> bytes:
    return text.encode("utf-8")


def hmac_b64(key: bytes, message: str) -> str:
    return base64.b64encode(hmac.digest(key, b(message), hashlib.sha256)).decode()


def v2_headers(token: str = TOKEN, *, ma_token: str | None = None, url: str = URL) -> dict:
    headers = {
        "X-Plivo-Signature-V2": sign_v2(url, NONCE, token),
        "X-Plivo-Signature-V2-Nonce": NONCE,
    }
    if ma_token:
        headers["X-Plivo-Signature-Ma-V2"] = sign_v2(url, NONCE, ma_token)
    return headers


def v3_headers(
    token: str = TOKEN, *, ma_token: str | None = None, method: str = "POST", params=PARAMS
) -> dict:
    headers = {
        "X-Plivo-Signature-V3": sign_v3(method, URL, params, NONCE, token),
        "X-Plivo-Signature-V3-Nonce": NONCE,
    }
    if ma_token:
        headers["X-Plivo-Signature-Ma-V3"] = sign_v3(method, URL, params, NONCE, ma_token)
    return headers


# -- bytes and str ------------------------------------------------------------------------------

KINDS = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize(
    ("url_b", "nonce_b", "sig_b", "token_b"),
    KINDS,
    ids=["".join("B" if k else "s" for k in kinds) for kinds in KINDS],
)
def test_bytes_and_str_inputs_are_interchangeable(url_b, nonce_b, sig_b, token_b):
    def pick(text: str, as_bytes: bool) -> str | bytes:
        return b(text) if as_bytes else text

    url, nonce, token = pick(URL, url_b), pick(NONCE, nonce_b), pick(TOKEN, token_b)
    sig2, sig3 = sign_v2(url, nonce, token), sign_v3("POST", url, PARAMS, nonce, token)
    assert sig2 == sign_v2(URL, NONCE, TOKEN)
    assert sig3 == sign_v3("POST", URL, PARAMS, NONCE, TOKEN)
    assert verify_v2(url, nonce, pick(sig2, sig_b), token)
    assert verify_v3(b"POST" if url_b else "POST", url, PARAMS, nonce, pick(sig3, sig_b), token)
    assert verify_v3("POST", url, PARAMS, nonce, pick(sig3, sig_b), [b"wrong", token])
    assert not verify_v2(url, nonce, pick(sig2, sig_b), pick(OTHER, token_b))


def test_bytes_params_sign_like_text():
    as_bytes = {b(k): b(v) for k, v in {**PARAMS, "Text": "Olá ✓"}.items()}
    as_text = {**PARAMS, "Text": "Olá ✓"}
    assert sign_v3("POST", URL, as_bytes, NONCE, TOKEN) == sign_v3(
        "POST", URL, as_text, NONCE, TOKEN
    )


# -- tokens -------------------------------------------------------------------------------------

EMPTY_TOKENS = [
    pytest.param("", id="empty-str"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param([""], id="list-of-empty"),
    pytest.param([b""], id="list-of-empty-bytes"),
    pytest.param(["", ""], id="two-empty"),
    pytest.param(("",), id="tuple-of-empty"),
    pytest.param([], id="empty-list"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("tokens", EMPTY_TOKENS)
def test_empty_or_missing_token_never_accepts(tokens):
    # What a forger would send if an empty key were accepted: the HMAC under b"".
    forged2 = hmac_b64(b"", signature.string_to_sign_v2(URL, NONCE))
    forged3 = hmac_b64(b"", signature.string_to_sign_v3("POST", URL, PARAMS, NONCE))
    r2 = verify_v2(URL, NONCE, forged2, tokens)
    r3 = verify_v3("POST", URL, PARAMS, NONCE, forged3, tokens)
    assert not r2
    assert not r3
    assert "no auth token" in r2.reason
    assert "no auth token" in r3.reason
    headers = {"X-Plivo-Signature-V3": forged3, "X-Plivo-Signature-V3-Nonce": NONCE}
    whole = verify_request("POST", URL, headers, PARAMS, tokens, tokens)
    assert not whole
    assert "token" in whole.reason


@pytest.mark.parametrize(
    ("tokens", "signed_with", "index"),
    [
        (["", TOKEN], TOKEN, 1),
        ([TOKEN, ""], TOKEN, 0),
        (["", OTHER, TOKEN], TOKEN, 2),
        ([OTHER, TOKEN], TOKEN, 1),
        ((b"", b(TOKEN)), TOKEN, 1),
        (["", TOKEN], "", None),
        ([OTHER, TOKEN], MAIN, None),
    ],
)
def test_token_lists_report_the_index(tokens, signed_with, index):
    key = b(signed_with)
    sig2 = hmac_b64(key, signature.string_to_sign_v2(URL, NONCE))
    sig3 = hmac_b64(key, signature.string_to_sign_v3("POST", URL, PARAMS, NONCE))
    for result in (
        verify_v2(URL, NONCE, sig2, tokens),
        verify_v3("POST", URL, PARAMS, NONCE, sig3, tokens),
    ):
        assert bool(result) is (index is not None)
        assert result.token_index == index
        for token in (TOKEN, OTHER, MAIN):
            assert token not in repr(result)


@pytest.mark.parametrize("empty", ["", b""])
def test_signing_with_an_empty_token_is_refused(empty):
    with pytest.raises(ValueError, match="empty"):
        sign_v2(URL, NONCE, empty)
    with pytest.raises(ValueError, match="empty"):
        sign_v3("POST", URL, PARAMS, NONCE, empty)


# -- signature header lists ---------------------------------------------------------------------

WRONG = sign_v3("POST", URL, PARAMS, NONCE, OTHER)
WRONG2 = sign_v3("POST", URL, PARAMS, "1", OTHER)


@pytest.mark.parametrize(
    ("template", "accepted"),
    [
        ("{good}", True),
        ("{wrong},{good}", True),
        ("{good},{wrong}", True),
        ("{wrong}, {good}", True),
        ("{wrong} ,\t{good}", True),
        (" {good} ", True),
        ("{wrong},,{good},", True),
        ("not-a-signature,{good}", True),
        ("{wrong},{wrong2},{good},{wrong}", True),
        ("{wrong}", False),
        ("{wrong},{wrong2}", False),
        ("{wrong}, {wrong2}, garbage", False),
        ("{good}{good}", False),
        ("{good};{wrong}", False),
    ],
)
@pytest.mark.parametrize("scheme", ["v2", "v3"])
def test_signature_lists(template, accepted, scheme):
    if scheme == "v2":
        good = sign_v2(URL, NONCE, TOKEN)
        wrong, wrong2 = sign_v2(URL, NONCE, OTHER), sign_v2(URL, "1", OTHER)
        verify = lambda header: verify_v2(URL, NONCE, header, TOKEN)  # noqa: E731
    else:
        good, wrong, wrong2 = sign_v3("POST", URL, PARAMS, NONCE, TOKEN), WRONG, WRONG2
        verify = lambda header: verify_v3("POST", URL, PARAMS, NONCE, header, TOKEN)  # noqa: E731
    result = verify(template.format(good=good, wrong=wrong, wrong2=wrong2))
    assert bool(result) is accepted
    assert (result.reason is None) is accepted


@pytest.mark.parametrize("scheme", ["v2", "v3"])
def test_signature_lists_are_capped(scheme):
    """Ten entries are enough for any rotation; a longer list is refused before any HMAC."""
    if scheme == "v2":
        good, wrong = sign_v2(URL, NONCE, TOKEN), sign_v2(URL, NONCE, OTHER)
        verify = lambda header: verify_v2(URL, NONCE, header, TOKEN)  # noqa: E731
    else:
        good, wrong = sign_v3("POST", URL, PARAMS, NONCE, TOKEN), WRONG
        verify = lambda header: verify_v3("POST", URL, PARAMS, NONCE, header, TOKEN)  # noqa: E731
    assert verify(",".join([wrong] * 9 + [good]))
    result = verify(",".join([wrong] * 2000 + [good]))
    assert not result
    assert "more than 10 signatures" in (result.reason or "")
    assert not verify(",".join([wrong] * 10 + [good]))


# -- malformed headers --------------------------------------------------------------------------


def _digest() -> tuple[str, bytes]:
    """A nonce whose V3 signature has '+' or '/' in it, so its URL-safe Base64 form differs."""
    for n in itertools.count():
        nonce = f"{n:020d}"
        message = signature.string_to_sign_v3("POST", URL, PARAMS, nonce)
        digest = hmac.digest(b(TOKEN), b(message), hashlib.sha256)
        if b"+" in base64.b64encode(digest) or b"/" in base64.b64encode(digest):
            return nonce, digest
    raise AssertionError("unreachable")


ODD_NONCE, DIGEST = _digest()
STANDARD = base64.b64encode(DIGEST).decode()

MALFORMED = [
    pytest.param(DIGEST.hex(), "malformed", id="hex"),
    pytest.param(DIGEST.hex().upper(), "malformed", id="hex-upper"),
    pytest.param(base64.urlsafe_b64encode(DIGEST).decode(), "malformed", id="base64url"),
    pytest.param(STANDARD.rstrip("="), "malformed", id="padding-stripped"),
    pytest.param(
        base64.urlsafe_b64encode(DIGEST).decode().rstrip("="), "malformed", id="b64url-nopad"
    ),
    pytest.param(STANDARD + "=", "malformed", id="extra-padding"),
    pytest.param(base64.b64encode(DIGEST[:20]).decode(), "malformed", id="sha1-length"),
    pytest.param("sha256=" + STANDARD, "malformed", id="prefixed"),
    pytest.param("garbage", "malformed", id="garbage"),
    pytest.param("é" * 44, "malformed", id="non-ascii"),
    pytest.param("A" * 1_000_000, "malformed", id="very-long"),
    pytest.param(",".join(["x"] * 100_000), "more than 10 signatures", id="very-many-entries"),
    pytest.param(",".join([WRONG] * 20_000), "more than 10 signatures", id="many-wrong-entries"),
    pytest.param(STANDARD.swapcase(), "does not match", id="wrong-case"),
    pytest.param("A" * 43 + "=", "does not match", id="well-formed-zero"),
    pytest.param("", "missing", id="empty"),
    pytest.param(" , ,\t", "missing", id="only-separators"),
    pytest.param(None, "missing", id="none"),
]


@pytest.mark.parametrize(("header", "why"), MALFORMED)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_malformed_headers_are_refused_with_a_reason(header, why, as_bytes):
    if as_bytes and header is not None:
        header = b(header)
    result = verify_v3("POST", URL, PARAMS, ODD_NONCE, header, TOKEN)
    assert not result
    assert why in result.reason
    assert "X-Plivo-Signature-V3" in result.reason
    assert len(result.reason) < 120  # the header is never echoed back
    assert verify_v3("POST", URL, PARAMS, ODD_NONCE, STANDARD, TOKEN)  # the genuine one passes


# -- method -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "ok"),
    [("POST", True), ("post", True), (b"POST", True), ("Post", True), ("PUT", False), ("", False)],
)
def test_v3_method(method, ok):
    sig = sign_v3("POST", URL, PARAMS, NONCE, TOKEN)
    result = verify_v3(method, URL, PARAMS, NONCE, sig, TOKEN)
    assert bool(result) is ok
    if not ok:
        assert "method" in result.reason


def test_get_full_url_equals_configured_url_with_query_params():
    query = "&".join(f"{k}={v.replace(' ', '+')}" for k, v in PARAMS.items())
    sig = sign_v3("GET", URL, PARAMS, NONCE, TOKEN)
    assert verify_v3("GET", f"{URL}?{query}", {}, NONCE, sig, TOKEN)
    # A POST without body fields signs exactly like the GET; with them, the body is signed apart.
    assert verify_v3("POST", f"{URL}?{query}", {}, NONCE, sig, TOKEN)
    assert not verify_v3("POST", f"{URL}?{query}", PARAMS, NONCE, sig, TOKEN)


# -- verify_request: which family, which tokens -------------------------------------------------


def test_v3_is_preferred_when_both_families_are_valid():
    result = verify_request("POST", URL, {**v2_headers(), **v3_headers()}, PARAMS, TOKEN)
    assert result
    assert result.scheme == "v3"


NO_FALLBACK = [
    pytest.param({"X-Plivo-Signature-V3": WRONG, "X-Plivo-Signature-V3-Nonce": NONCE}, id="wrong"),
    pytest.param({"X-Plivo-Signature-V3": "junk", "X-Plivo-Signature-V3-Nonce": NONCE}, id="junk"),
    pytest.param({"X-Plivo-Signature-V3": "", "X-Plivo-Signature-V3-Nonce": NONCE}, id="empty"),
    pytest.param(
        {"X-Plivo-Signature-V3": sign_v3("POST", URL, PARAMS, NONCE, TOKEN)}, id="no-nonce"
    ),
    pytest.param(
        {
            "X-Plivo-Signature-V3": sign_v3(
                "POST", URL, {**PARAMS, "Text": "forged"}, NONCE, TOKEN
            ),
            "X-Plivo-Signature-V3-Nonce": NONCE,
        },
        id="other-body",
    ),
    pytest.param(
        {"X-Plivo-Signature-Ma-V3": WRONG, "X-Plivo-Signature-V3-Nonce": NONCE}, id="ma-only-wrong"
    ),
    pytest.param(
        {
            "X-Plivo-Signature-Ma-V3": sign_v3("POST", URL, PARAMS, NONCE, MAIN),
            "X-Plivo-Signature-V3-Nonce": NONCE,
        },
        id="ma-valid-but-no-main-tokens",
    ),
]


@pytest.mark.parametrize("v3", NO_FALLBACK)
def test_no_fallback_to_v2_after_v3_fails(v3):
    # The V2 headers are genuine (they cover only URL and nonce, so they do not protect the body).
    headers = {**v2_headers(TOKEN, ma_token=MAIN), **v3}
    result = verify_request("POST", URL, headers, PARAMS, [TOKEN])
    assert not result
    assert result.scheme in ("v3", "ma-v3", None)
    assert "V3" in result.reason
    # The same V2 headers alone pass: the refusal above is the V3 header's doing.
    assert verify_request("POST", URL, v2_headers(TOKEN, ma_token=MAIN), PARAMS, [TOKEN], MAIN)


MA_TABLE = [
    # (headers, auth_tokens, main_tokens, expected scheme or None when refused)
    pytest.param(
        {
            "X-Plivo-Signature-Ma-V2": sign_v2(URL, NONCE, TOKEN),
            "X-Plivo-Signature-V2-Nonce": NONCE,
        },
        TOKEN,
        MAIN,
        None,
        id="ma-v2-signed-with-sub-token",
    ),
    pytest.param(
        {"X-Plivo-Signature-Ma-V2": sign_v2(URL, NONCE, MAIN), "X-Plivo-Signature-V2-Nonce": NONCE},
        TOKEN,
        MAIN,
        "ma-v2",
        id="ma-v2-signed-with-main-token",
    ),
    pytest.param(
        {"X-Plivo-Signature-Ma-V2": sign_v2(URL, NONCE, MAIN), "X-Plivo-Signature-V2-Nonce": NONCE},
        MAIN,
        None,
        None,
        id="ma-v2-without-main-tokens",
    ),
    pytest.param(
        {"X-Plivo-Signature-V2": sign_v2(URL, NONCE, MAIN), "X-Plivo-Signature-V2-Nonce": NONCE},
        TOKEN,
        MAIN,
        None,
        id="v2-signed-with-main-token",
    ),
    pytest.param(
        {**v2_headers(TOKEN), "X-Plivo-Signature-Ma-V2": "junk"},
        TOKEN,
        MAIN,
        "v2",
        id="v2-good-ma-junk",
    ),
    pytest.param(
        {**v2_headers(OTHER, ma_token=MAIN)},
        TOKEN,
        MAIN,
        "ma-v2",
        id="v2-wrong-ma-good",
    ),
    pytest.param(
        {
            "X-Plivo-Signature-Ma-V3": sign_v3("POST", URL, PARAMS, NONCE, TOKEN),
            "X-Plivo-Signature-V3-Nonce": NONCE,
        },
        TOKEN,
        MAIN,
        None,
        id="ma-v3-signed-with-sub-token",
    ),
    pytest.param(
        {
            "X-Plivo-Signature-Ma-V3": sign_v3("POST", URL, PARAMS, NONCE, MAIN),
            "X-Plivo-Signature-V3-Nonce": NONCE,
        },
        TOKEN,
        [OTHER, MAIN],
        "ma-v3",
        id="ma-v3-signed-with-main-token",
    ),
    pytest.param(
        {
            "X-Plivo-Signature-V3": sign_v3("POST", URL, PARAMS, NONCE, MAIN),
            "X-Plivo-Signature-V3-Nonce": NONCE,
        },
        TOKEN,
        MAIN,
        None,
        id="v3-signed-with-main-token",
    ),
    pytest.param(v3_headers(OTHER, ma_token=MAIN), TOKEN, MAIN, "ma-v3", id="v3-wrong-ma-good"),
    pytest.param(v3_headers(TOKEN, ma_token=OTHER), TOKEN, MAIN, "v3", id="v3-good-ma-wrong"),
]


@pytest.mark.parametrize(("headers", "tokens", "main_tokens", "scheme"), MA_TABLE)
def test_ma_headers_are_checked_against_main_tokens_only(headers, tokens, main_tokens, scheme):
    result = verify_request("POST", URL, headers, PARAMS, tokens, main_tokens)
    assert bool(result) is (scheme is not None)
    if scheme:
        assert result.scheme == scheme
        assert result.reason is None
    else:
        assert result.reason


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({}, ["X-Plivo-Signature-V3", "V2"]),
        ({"Content-Type": "application/x-www-form-urlencoded"}, ["X-Plivo-Signature-V3", "V2"]),
        ({"X-Plivo-Signature-V2-Nonce": NONCE}, ["X-Plivo-Signature-V3", "V2"]),
        ({"X-Plivo-Signature-V3-Nonce": NONCE}, ["X-Plivo-Signature-V3", "V2"]),
        ({"X-Plivo-Signature-V2": sign_v2(URL, NONCE, TOKEN)}, ["X-Plivo-Signature-V2-Nonce"]),
        ({"X-Plivo-Signature-V3": WRONG}, ["X-Plivo-Signature-V3-Nonce"]),
        (
            {"X-Plivo-Signature-V3": WRONG, "X-Plivo-Signature-V2-Nonce": NONCE},
            ["X-Plivo-Signature-V3-Nonce"],
        ),
        (
            {"X-Plivo-Signature-V3": "", "X-Plivo-Signature-V3-Nonce": NONCE},
            ["missing X-Plivo-Signature-V3 header"],
        ),
        (
            {"X-Plivo-Signature-V3": WRONG, "X-Plivo-Signature-V3-Nonce": NONCE},
            ["X-Plivo-Signature-V3 does not match"],
        ),
    ],
)
def test_missing_headers_give_reasons_naming_them(headers, named):
    result = verify_request("POST", URL, headers, PARAMS, TOKEN, MAIN)
    assert not result
    for name in named:
        assert name in result.reason


@pytest.mark.parametrize(
    "case", [str.lower, str.upper, str.title, str.swapcase, lambda s: s], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("family", ["v2", "v3"])
def test_header_keys_in_any_case(case, family):
    headers = v2_headers(ma_token=MAIN) if family == "v2" else v3_headers(ma_token=MAIN)
    result = verify_request(
        "POST", URL, {case(k): v for k, v in headers.items()}, PARAMS, [OTHER, TOKEN], MAIN
    )
    assert result
    assert (result.scheme, result.token_index) == (family, 1)


# -- the Verification's fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "signed_url", "variant"),
    [
        (URL, URL, "canonical"),
        (URL + "?tenant=42#frag", URL + "?tenant=42", "canonical"),
        (
            "https://example.com/plivo/sms;jsessionid=x",
            "https://example.com/plivo/sms",
            "sdk-path-params-dropped",
        ),
        (
            "https://example.com/plivo/sms;jsessionid=x",
            "https://example.com/plivo/sms;jsessionid=x",
            "canonical",
        ),
        (
            "https://example.com/caf%C3%A9/sms",
            "https://example.com/café/sms",
            "canonical+iri-decoded",
        ),
        (
            "https://example.com/café/sms",
            "https://example.com/caf%C3%A9/sms",
            "canonical+iri-encoded",
        ),
    ],
)
def test_verification_names_the_variant(url, signed_url, variant):
    v2 = verify_v2(url, NONCE, hmac_b64(b(TOKEN), signed_url.split("?")[0] + NONCE), [OTHER, TOKEN])
    v3_string = signature.string_to_sign_v3("POST", signed_url, PARAMS, NONCE)
    v3 = verify_v3("POST", url, PARAMS, NONCE, hmac_b64(b(TOKEN), v3_string), [OTHER, TOKEN])
    for result, scheme in ((v2, "v2"), (v3, "v3")):
        assert result
        assert result.ok is True
        assert (result.scheme, result.token_index, result.variant, result.reason) == (
            scheme,
            1,
            variant,
            None,
        )


def test_refusal_fields():
    result = verify_v2(URL, NONCE, sign_v2(URL, NONCE, OTHER), TOKEN, main=True)
    assert result.ok is False
    assert not result
    assert (result.scheme, result.token_index, result.variant) == ("ma-v2", None, None)
    assert result.reason == "X-Plivo-Signature-Ma-V2 does not match"
    with pytest.raises(AttributeError):
        result.ok = True  # frozen


# -- regressions: non-UTF-8 URLs round-trip; an empty trailing ;params is kept -----------------


@pytest.mark.parametrize("url", [b"https://example.com/\xff/sms", "https://example.com/\udcff"])
def test_non_utf8_url_round_trip(url):
    assert verify_v2(url, NONCE, sign_v2(url, NONCE, TOKEN), TOKEN)
    assert verify_v3("POST", url, PARAMS, NONCE, sign_v3("POST", url, PARAMS, NONCE, TOKEN), TOKEN)


def test_empty_path_params_are_kept():
    url = "https://example.com/plivo/sms;"
    assert signature.string_to_sign_v2(url, NONCE) == url + NONCE
    assert verify_v2(url, NONCE, hmac_b64(b(TOKEN), url + NONCE), TOKEN)


# -- strings_to_sign: what a check tries, for tools that show it -----------------------------------


def _hmac(token: str, message: str) -> str:
    digest = hmac.new(token.encode(), message.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


@pytest.mark.parametrize(
    "url",
    [
        URL,
        "https://example.com/plivo/sms;v=1?x=2",
        "https://exämple.com/plivo/sms%C3%A9",
    ],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_strings_to_sign_are_exactly_what_verification_tries(url, method):
    params = [] if method == "GET" else list(PARAMS.items())
    v2 = signature.strings_to_sign("v2", method, url, params, NONCE)
    v3 = signature.strings_to_sign("v3", method, url, params, NONCE)
    assert v2[0] == ("canonical", signature.string_to_sign_v2(url, NONCE))
    assert v3[0] == ("canonical", signature.string_to_sign_v3(method, url, params, NONCE))
    assert [name for name, _ in v2] == [name for name, *_ in signature.base_url_variants(url)]
    # Each listed string is one that verification accepts a signature of, under that form's name.
    for name, text in v2:
        result = verify_v2(url, NONCE, _hmac(TOKEN, text), [TOKEN])
        assert result and result.variant == name
    for name, text in v3:
        result = verify_v3(method, url, params, NONCE, _hmac(TOKEN, text), [TOKEN])
        assert result and result.variant == name


def test_strings_to_sign_of_an_unparsable_url_is_empty():
    assert signature.strings_to_sign("v2", "POST", "http://[bad/x", [], NONCE) == []
