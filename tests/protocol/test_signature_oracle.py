"""Property tests: plivohook's V2/V3 signatures against the official Python SDK as the oracle.

The SDK (``plivo`` 4.63.0) crashes on non-ASCII URLs and on percent-encoded non-ASCII in a query,
and drops ``;params`` from the last path segment (which plivohook deliberately tries both ways), so
the URLs compared with it are ASCII and carry no ``;`` in their last segment. Unicode URLs get their
own round-trip test, where only plivohook is involved.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from dataclasses import dataclass, fields, replace
from urllib.parse import parse_qsl, quote, urlparse, urlunparse

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import (
    construct_get_url,
    construct_post_url,
    get_signature_v3,
    validate_v3_signature,
)

from plivohook.protocol import signature

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALNUM = string.ascii_letters + string.digits
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
B64 = string.ascii_letters + string.digits + "+/"

# -- URLs ---------------------------------------------------------------------------------------

_PATH_SAFE = ALNUM + "-._~!$&'()*+,=:@"  # no '/', '?', '#', ';' or '%' on their own
_QUERY_SAFE = ALNUM + "-._~!$'()*,/:@?=+"  # '+' means a space; '=' after the first is data


def _escape(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.tuples(st.integers(lo, hi), st.booleans()).map(
        lambda t: f"%{t[0]:02X}" if t[1] else f"%{t[0]:02x}"
    )


_path_char = st.one_of(st.sampled_from(_PATH_SAFE), _escape(0, 255))
_segment = st.lists(_path_char, max_size=8).map("".join)
# The SDK raises on percent-encoded non-ASCII in the query: escapes stay below %80 there.
_query_char = st.one_of(st.sampled_from(_QUERY_SAFE), _escape(0, 127))
_query_text = st.lists(_query_char, max_size=6).map("".join)
_query_key = st.one_of(st.sampled_from(["From", "To", "Text", "a", "tenant"]), _query_text)


@dataclass(frozen=True)
class Url:
    """A URL kept in parts so that a test can change exactly one of them."""

    scheme: str
    netloc: str
    path: str
    query: str | None
    fragment: str | None

    def __str__(self) -> str:
        url = f"{self.scheme}://{self.netloc}{self.path}"
        if self.query is not None:
            url += "?" + self.query
        if self.fragment is not None:
            url += "#" + self.fragment
        return url


@st.composite
def _netloc(draw: st.DrawFn) -> str:
    label = st.text(ALNUM + "-", min_size=1, max_size=10).filter(
        lambda s: s[0] != "-" and s[-1] != "-"
    )
    host = draw(
        st.one_of(
            st.lists(label, min_size=1, max_size=3).map(".".join),
            st.sampled_from(["localhost", "127.0.0.1", "Example.COM", "example.com"]),
        )
    )
    port = draw(
        st.one_of(
            st.just(""),
            st.sampled_from([":80", ":443", ":8080"]),
            st.integers(0, 65535).map(lambda p: f":{p}"),
        )
    )
    userinfo = draw(st.sampled_from(["", "", "", "user@", "user:pa$$@"]))
    return userinfo + host + port


@st.composite
def _path(draw: st.DrawFn, last_may_have_params: bool = False) -> str:
    segments = draw(st.lists(_segment, max_size=4))
    rendered = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if (not last or last_may_have_params) and draw(st.booleans()):
            segment += ";" + draw(st.text(ALNUM + "=", max_size=6))
        rendered.append("/" + segment)
    trailing = "/" if draw(st.booleans()) else ""
    return "".join(rendered) + trailing


@st.composite
def _query(draw: st.DrawFn) -> str | None:
    if draw(st.booleans()):
        return None
    parts = []
    for key, value in draw(st.lists(st.tuples(_query_key, st.none() | _query_text), max_size=5)):
        parts.append(key if value is None else f"{key}={value}")
    # Repeated keys: sometimes write the first pair again with another value.
    if parts and draw(st.booleans()):
        parts.append(parts[0].split("=", 1)[0] + "=" + draw(_query_text))
    return "&".join(parts)


_fragment = st.none() | st.text(ALNUM + "?/#&=;%", max_size=8)


@st.composite
def ascii_urls(draw: st.DrawFn, last_segment_params: bool = False) -> Url:
    return Url(
        draw(st.sampled_from(["http", "https"])),
        draw(_netloc()),
        draw(_path(last_may_have_params=last_segment_params)),
        draw(_query()),
        draw(_fragment),
    )


# -- other inputs -------------------------------------------------------------------------------

nonces = st.one_of(
    st.text(string.digits, min_size=1, max_size=24),
    st.text(PRINTABLE, max_size=24),
)
tokens = st.text(st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=40)
long_tokens = st.text(ALNUM, min_size=16, max_size=40)
methods = st.sampled_from(["GET", "POST"])
_unicode = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_param_key = st.one_of(st.sampled_from(["From", "To", "Text", "Media10", "Media2", "a"]), _unicode)
params_strategy = st.dictionaries(
    _param_key,
    st.one_of(_unicode, st.lists(_unicode, min_size=1, max_size=3)),
    max_size=6,
)


# -- the oracle ---------------------------------------------------------------------------------


def sdk_v2_signature(uri: str, nonce: str, token: str) -> str:
    """The signature ``plivo.utils.validate_signature`` expects, computed exactly as it does."""
    parsed = urlparse(uri.encode("utf-8"))
    base = urlunparse(
        (
            parsed.scheme.decode("utf-8"),
            parsed.netloc.decode("utf-8"),
            parsed.path.decode("utf-8"),
            "",
            "",
            "",
        )
    ).encode("utf-8")
    digest = hmac.new(token.encode("utf-8"), base + nonce.encode("utf-8"), hashlib.sha256)
    return base64.encodebytes(digest.digest()).strip().decode("ascii")


def sdk_v3_signature(method: str, uri: str, params: dict, nonce: str, token: str) -> str:
    """The signature ``plivo.utils.signature_v3.validate_v3_signature`` expects."""
    copy = dict(params)
    if method == "GET":
        base_url = construct_get_url(uri, copy).decode("utf-8")
    else:
        base_url = construct_post_url(uri, copy).decode("utf-8")
    return get_signature_v3(token.encode("utf-8"), base_url, nonce.encode("utf-8")).decode()


def sdk_accepts_v2(uri: str, nonce: str, sig: str, token: str) -> bool:
    return validate_signature(uri, nonce, sig, token)


def sdk_accepts_v3(method: str, uri: str, params: dict, nonce: str, sig: str, token: str) -> bool:
    return validate_v3_signature(method, uri, nonce, token, sig, params=dict(params))


# -- sign with plivohook, the SDK accepts -------------------------------------------------------


@SETTINGS
@given(url=ascii_urls(), nonce=nonces, token=tokens)
def test_v2_plivohook_signature_accepted_by_sdk(url, nonce, token):
    produced = signature.sign_v2(str(url), nonce, token)
    assert produced == sdk_v2_signature(str(url), nonce, token)
    assert sdk_accepts_v2(str(url), nonce, produced, token)


@SETTINGS
@given(method=methods, url=ascii_urls(), params=params_strategy, nonce=nonces, token=tokens)
def test_v3_plivohook_signature_accepted_by_sdk(method, url, params, nonce, token):
    produced = signature.sign_v3(method, str(url), params, nonce, token)
    assert produced == sdk_v3_signature(method, str(url), params, nonce, token)
    assert sdk_accepts_v3(method, str(url), params, nonce, produced, token)


# -- what the SDK would accept, plivohook accepts -----------------------------------------------


@SETTINGS
@given(url=ascii_urls(), nonce=nonces, token=tokens)
def test_v2_sdk_signature_accepted_by_plivohook(url, nonce, token):
    sig = sdk_v2_signature(str(url), nonce, token)
    assert sdk_accepts_v2(str(url), nonce, sig, token)
    result = signature.verify_v2(str(url), nonce, sig, token)
    assert result, result.reason
    assert (result.scheme, result.token_index, result.variant) == ("v2", 0, "canonical")
    assert signature.verify_v2(str(url), nonce, sig, [token], main=True).scheme == "ma-v2"


@SETTINGS
@given(method=methods, url=ascii_urls(), params=params_strategy, nonce=nonces, token=tokens)
def test_v3_sdk_signature_accepted_by_plivohook(method, url, params, nonce, token):
    sig = sdk_v3_signature(method, str(url), params, nonce, token)
    assert sdk_accepts_v3(method, str(url), params, nonce, sig, token)
    result = signature.verify_v3(method, str(url), params, nonce, sig, token)
    assert result, result.reason
    assert (result.scheme, result.token_index, result.variant) == ("v3", 0, "canonical")
    # Params given as pairs (what a form parser yields) sign the same as the dict with lists.
    pairs = [
        (key, value)
        for key, values in params.items()
        for value in (values if isinstance(values, list) else [values])
    ]
    assert signature.verify_v3(method.lower(), str(url), pairs, nonce, sig, token)


@SETTINGS
@given(method=methods, url=ascii_urls(last_segment_params=True), nonce=nonces, token=tokens)
def test_sdk_form_of_path_params_accepted_by_plivohook(method, url, nonce, token):
    """The SDK drops ``;params`` from the last segment; plivohook tries that form as well."""
    sig2 = sdk_v2_signature(str(url), nonce, token)
    sig3 = sdk_v3_signature(method, str(url), {"a": "b"}, nonce, token)
    v2 = signature.verify_v2(str(url), nonce, sig2, token)
    v3 = signature.verify_v3(method, str(url), {"a": "b"}, nonce, sig3, token)
    assert v2, v2.reason
    assert v3, v3.reason
    last_segment = url.path.rsplit("/", 1)[-1]
    expected = "sdk-path-params-dropped" if ";" in last_segment else "canonical"
    assert v2.variant == v3.variant == expected


# -- one change anywhere that is signed: refused by both ----------------------------------------


def _replace_char(draw: st.DrawFn, text: str, alphabet: str) -> str:
    if not text:
        return draw(st.sampled_from(alphabet))
    index = draw(st.integers(0, len(text) - 1))
    new = draw(st.sampled_from(alphabet).filter(lambda c: c != text[index]))
    return text[:index] + new + text[index + 1 :]


@st.composite
def url_mutation(draw: st.DrawFn, url: Url, v3: bool) -> Url:
    """``url`` changed in a part that the signed string covers."""
    kinds = ["path", "netloc", "scheme"]
    segments = [s for s in (url.query or "").split("&") if s]
    if v3 and segments:
        kinds.append("query")
    kind = draw(st.sampled_from(kinds))
    if kind == "path":
        if not url.path:
            return replace(url, path="/")
        return replace(url, path=_replace_char(draw, url.path, ALNUM))
    if kind == "netloc":
        return replace(url, netloc=_replace_char(draw, url.netloc, ALNUM))
    if kind == "scheme":
        return replace(url, scheme={"http": "https", "https": "http"}[url.scheme])
    # Appending a literal character to one non-empty segment changes its decoded key or value.
    parts = (url.query or "").split("&")
    index = draw(st.sampled_from([i for i, s in enumerate(parts) if s]))
    parts[index] += draw(st.sampled_from(ALNUM))
    return replace(url, query="&".join(parts))


@SETTINGS
@given(url=ascii_urls(), nonce=nonces, token=tokens, data=st.data())
def test_v2_one_change_refused_by_both(url, nonce, token, data):
    sig = signature.sign_v2(str(url), nonce, token)
    what = data.draw(st.sampled_from(["url", "nonce", "token", "signature"]))
    u, n, t, s = str(url), nonce, token, sig
    if what == "url":
        u = str(data.draw(url_mutation(url, v3=False)))
    elif what == "nonce":
        n = _replace_char(data.draw, nonce, PRINTABLE)
    elif what == "token":
        t = _replace_char(data.draw, token, PRINTABLE)
    else:
        s = _replace_char(data.draw, sig[:43], B64) + "="
    assert not sdk_accepts_v2(u, n, s, t)
    result = signature.verify_v2(u, n, s, t)
    assert not result
    assert result.reason


def _flat(params: dict) -> list[tuple[str, int]]:
    return [
        (key, i)
        for key, values in params.items()
        for i in range(len(values) if isinstance(values, list) else 1)
    ]


def _query_keys(url: Url) -> set[str]:
    return {key for key, _ in parse_qsl(url.query or "", keep_blank_values=True)}


@SETTINGS
@given(
    method=methods,
    url=ascii_urls(),
    params=params_strategy,
    nonce=nonces,
    token=tokens,
    data=st.data(),
)
def test_v3_one_change_refused_by_both(method, url, params, nonce, token, data):
    sig = signature.sign_v3(method, str(url), params, nonce, token)
    # In a GET, a key of the URL's query replaces the params' one: changing it changes nothing.
    changeable = [
        (key, i) for key, i in _flat(params) if method == "POST" or key not in _query_keys(url)
    ]
    choices = ["url", "nonce", "token", "signature"] + (["param"] if changeable else [])
    what = data.draw(st.sampled_from(choices))
    u, p, n, t, s = str(url), dict(params), nonce, token, sig
    if what == "url":
        u = str(data.draw(url_mutation(url, v3=True)))
    elif what == "nonce":
        n = _replace_char(data.draw, nonce, PRINTABLE)
    elif what == "token":
        t = _replace_char(data.draw, token, PRINTABLE)
    elif what == "signature":
        s = _replace_char(data.draw, sig[:43], B64) + "="
    else:
        key, i = data.draw(st.sampled_from(changeable))
        alphabet = ALNUM + "é€ "
        if isinstance(p[key], list):
            values = list(p[key])
            values[i] = _replace_char(data.draw, values[i], alphabet)
            p[key] = values
        else:
            p[key] = _replace_char(data.draw, p[key], alphabet)
    assert not sdk_accepts_v3(method, u, p, n, s, t)
    result = signature.verify_v3(method, u, p, n, s, t)
    assert not result
    assert result.reason


# -- several tokens -----------------------------------------------------------------------------


@SETTINGS
@given(
    method=methods,
    url=ascii_urls(),
    params=params_strategy,
    nonce=nonces,
    right=long_tokens,
    wrong=long_tokens,
    as_bytes=st.booleans(),
)
def test_rotation_reports_index_never_token(method, url, params, nonce, right, wrong, as_bytes):
    assume(right != wrong)
    ring = [wrong.encode(), right.encode()] if as_bytes else [wrong, right]
    v2 = signature.verify_v2(str(url), nonce, sdk_v2_signature(str(url), nonce, right), ring)
    v3 = signature.verify_v3(
        method,
        str(url),
        params,
        nonce,
        sdk_v3_signature(method, str(url), params, nonce, right),
        ring,
    )
    headers = {
        "X-Plivo-Signature-V3": sdk_v3_signature(method, str(url), params, nonce, right),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }
    whole = signature.verify_request(method, str(url), headers, params, ring)
    for result in (v2, v3, whole):
        assert result, result.reason
        assert result.token_index == 1
        for secret in (right, wrong):
            assert secret not in repr(result)
            assert secret not in str(result)
            assert all(secret not in str(getattr(result, f.name)) for f in fields(result))
    refused = signature.verify_v2(
        str(url), nonce, sdk_v2_signature(str(url), nonce, right), [wrong]
    )
    assert not refused
    assert right not in repr(refused)
    assert wrong not in repr(refused)


# -- unicode URLs: plivohook alone ---------------------------------------------------------------

_iri_letter = st.characters(categories=("L", "N"))
_iri_segment = st.lists(st.one_of(_iri_letter, st.sampled_from(_PATH_SAFE)), max_size=8).map(
    "".join
)
# Query text that means the same raw and percent-encoded: no separators, '+', '%' or spaces.
_iri_value = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="&#=+%;"),
    max_size=8,
)


@st.composite
def unicode_urls(draw: st.DrawFn) -> tuple[str, str]:
    """A URL with non-ASCII in the path and query, and its percent-encoded (URI) form."""
    scheme = draw(st.sampled_from(["http", "https"]))
    netloc = draw(_netloc())
    path = "".join("/" + s for s in draw(st.lists(_iri_segment, min_size=1, max_size=3)))
    pairs = draw(st.lists(st.tuples(_iri_value, _iri_value), max_size=3))
    query = "&".join(f"{k}={v}" for k, v in pairs if k or v)
    iri = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
    safe = "".join(chr(c) for c in range(0x21, 0x7F))
    encoded_query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs if k or v)
    uri = f"{scheme}://{netloc}{quote(path, safe=safe)}" + (
        f"?{encoded_query}" if encoded_query else ""
    )
    return iri, uri


@SETTINGS
@given(
    urls=unicode_urls(),
    method=methods,
    params=params_strategy,
    nonce=st.one_of(nonces, _unicode),
    token=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20),
)
def test_unicode_url_round_trip(urls, method, params, nonce, token):
    iri, uri = urls
    for url in (iri, uri):
        v2 = signature.verify_v2(url, nonce, signature.sign_v2(url, nonce, token), token)
        v3 = signature.verify_v3(
            method, url, params, nonce, signature.sign_v3(method, url, params, nonce, token), token
        )
        assert v2, v2.reason
        assert v3, v3.reason
        assert v2.variant == v3.variant == "canonical"
    # Signed over one form, received in the other: the IRI/URI variants bridge the two.
    for signed, received in ((iri, uri), (uri, iri)):
        sig2 = signature.sign_v2(signed, nonce, token)
        sig3 = signature.sign_v3(method, signed, params, nonce, token)
        assert signature.verify_v2(received, nonce, sig2, token)
        assert signature.verify_v3(method, received, params, nonce, sig3, token)
        assert not signature.verify_v2(received, nonce, sig2, token + "x")
