"""Plivo request signatures: V2, Ma-V2, V3 and Ma-V3.

Pure functions, no I/O. The string to sign is built exactly as the official Python SDK builds it
wherever the SDK gives a verdict (see shared/reference/plivo-protocol.md, section 3). Where the SDK
crashes or rejects for no reason of security (non-ASCII URLs, ``;params`` in a path, an upper-case
scheme, spaces in a signature list) we try each plausible form of the same URL; every form is still
an HMAC under the secret token, so this never lets in a request the token holder did not sign.

Every comparison is constant-time (:func:`hmac.compare_digest`) and a verification never says
which token matched except by its index.
"""

from __future__ import annotations

import base64
import functools
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import parse_qsl, quote, urlparse, urlsplit, urlunparse, urlunsplit

from .form import FormPairs

__all__ = [
    "HEADER_MA_V2",
    "HEADER_MA_V3",
    "HEADER_V2",
    "HEADER_V2_NONCE",
    "HEADER_V3",
    "HEADER_V3_NONCE",
    "Scheme",
    "Verification",
    "base_url_variants",
    "normalize_params",
    "sign_v2",
    "sign_v3",
    "string_to_sign_v2",
    "string_to_sign_v3",
    "strings_to_sign",
    "verify_request",
    "verify_v2",
    "verify_v3",
]

HEADER_V2 = "x-plivo-signature-v2"
HEADER_MA_V2 = "x-plivo-signature-ma-v2"
HEADER_V2_NONCE = "x-plivo-signature-v2-nonce"
HEADER_V3 = "x-plivo-signature-v3"
HEADER_MA_V3 = "x-plivo-signature-ma-v3"
HEADER_V3_NONCE = "x-plivo-signature-v3-nonce"

Scheme = Literal["v2", "ma-v2", "v3", "ma-v3"]
StrOrBytes = str | bytes
Tokens = StrOrBytes | Sequence[StrOrBytes] | None
Scalar = str | bytes | int | float | bool
ParamValue = Scalar | Sequence[Scalar]
Params = Mapping[str, ParamValue] | Iterable[tuple[str, ParamValue]] | None

# A Plivo signature is standard Base64 of a 32-byte digest: 43 characters and one '='.
_WELL_FORMED = re.compile(rb"[A-Za-z0-9+/]{43}=")
# Plivo sends one signature per header; a list is accepted (rotation), but each entry costs a
# comparison per token and URL form: a 2,000-entry list cost 4x a normal verification.
MAX_SIGNATURES = 10
_BAD_URL = "the request URL cannot be parsed (check the Host header)"
_HEADER_NAMES = {
    "v2": ("X-Plivo-Signature-V2", "X-Plivo-Signature-V2-Nonce"),
    "ma-v2": ("X-Plivo-Signature-Ma-V2", "X-Plivo-Signature-V2-Nonce"),
    "v3": ("X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce"),
    "ma-v3": ("X-Plivo-Signature-Ma-V3", "X-Plivo-Signature-V3-Nonce"),
}
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
_PCT_HIGH = re.compile(r"(?:%[89A-Fa-f][0-9A-Fa-f])+")


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of a signature check; truthy when the request is authentic.

    ``token_index`` is the position of the matching token in the list given (never the token),
    ``variant`` names the URL form that matched (``"canonical"`` for the SDK's own form).
    ``families`` lists the families (``"v2"``, ``"v3"``) whose signature verified: only their
    nonces are vouched for by the token holder, so only those may be recorded against replay.
    """

    ok: bool
    scheme: Scheme | None = None
    token_index: int | None = None
    variant: str | None = None
    reason: str | None = None
    families: tuple[Literal["v2", "v3"], ...] = ()

    def __bool__(self) -> bool:
        return self.ok


# -- inputs -------------------------------------------------------------------------------------


def _text(value: StrOrBytes) -> str:
    if isinstance(value, bytes):
        # surrogateescape keeps undecodable bytes byte-exact when re-encoded for the HMAC.
        return value.decode("utf-8", "surrogateescape")
    return value


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _scalar(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value if isinstance(value, str) else str(value)


def normalize_params(params: Params) -> dict[str, list[str]]:
    """Params as ``{key: [values]}``: from a mapping (a value may be a list) or from pairs."""
    result: dict[str, list[str]] = {}
    if not params:
        return result
    items = params.items() if isinstance(params, Mapping) else params
    for key, value in items:
        values = result.setdefault(_scalar(key), [])
        if isinstance(value, list | tuple):
            values.extend(_scalar(v) for v in value)
        else:
            values.append(_scalar(value))
    return result


def _tokens(auth_tokens: Tokens) -> tuple[tuple[int, bytes], ...]:
    if auth_tokens is None:
        return ()
    if isinstance(auth_tokens, str | bytes | tuple):
        return _cached_tokens(auth_tokens)  # a server checks the same tokens every time
    return _token_keys(auth_tokens)


@functools.lru_cache(maxsize=64)
def _cached_tokens(
    auth_tokens: StrOrBytes | tuple[StrOrBytes, ...],
) -> tuple[tuple[int, bytes], ...]:
    return _token_keys(auth_tokens)


def _token_keys(auth_tokens: StrOrBytes | Sequence[StrOrBytes]) -> tuple[tuple[int, bytes], ...]:
    if isinstance(auth_tokens, str | bytes):
        auth_tokens = [auth_tokens]
    keys = []
    for index, token in enumerate(auth_tokens):
        key = token if isinstance(token, bytes) else _utf8(token)
        if key:  # an empty key would make every forger's job trivial
            keys.append((index, key))
    return tuple(keys)


def _signature_entries(header: StrOrBytes | None) -> list[bytes]:
    if header is None:
        return []
    raw = header if isinstance(header, bytes) else header.encode("utf-8", "replace")
    return [entry.strip(b" \t") for entry in raw.split(b",") if entry.strip(b" \t")]


# -- URLs ---------------------------------------------------------------------------------------


def _base(url: str, keep_path_params: bool) -> tuple[str, str]:
    if keep_path_params:
        # urlsplit leaves ';params' (even an empty trailing ';') in the path, exactly as written.
        split = urlsplit(url)
        return urlunsplit((split.scheme, split.netloc, split.path, "", "")), split.query
    parts = urlparse(url)
    # What the SDK signs: urlparse lower-cases the scheme and drops the last segment's ;params.
    return urlunparse((parts.scheme, parts.netloc, parts.path, "", "", "")), parts.query


def _iri_to_uri(text: str) -> str:
    return quote(text, safe=_PRINTABLE_ASCII, errors="surrogateescape")


def _uri_to_iri(text: str) -> str:
    def decode(match: re.Match[str]) -> str:
        try:
            return bytes.fromhex(match.group(0).replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return match.group(0)

    return _PCT_HIGH.sub(decode, text)


def base_url_variants(url: StrOrBytes) -> tuple[tuple[str, str, str], ...]:
    """Every plausible signed form of ``url``: ``(variant name, base, query)``, canonical first.

    The canonical form is the reference's (``;params`` kept, UTF-8 as written); the others are what
    the Python SDK does (``;params`` dropped) and the percent-encoded or decoded form of non-ASCII
    characters, since a URL registered with Plivo as an IRI reaches us percent-encoded.
    """
    try:
        return _variants(_text(url))
    except ValueError:  # e.g. "Invalid IPv6 URL" for a stray '[' in the host
        return ()


@functools.lru_cache(maxsize=1024)
def _variants(text: str) -> tuple[tuple[str, str, str], ...]:
    # Cached: a receiver sees a handful of URLs (its routes) over and over.
    base, query = _base(text, keep_path_params=True)
    variants = [("canonical", base, query)]
    sdk_base, _ = _base(text, keep_path_params=False)
    if sdk_base != base:
        variants.append(("sdk-path-params-dropped", sdk_base, query))
    for name, candidate in list((n, b) for n, b, _ in variants):
        if not candidate.isascii():
            variants.append((f"{name}+iri-encoded", _iri_to_uri(candidate), query))
        decoded = _uri_to_iri(candidate)
        if decoded != candidate:
            variants.append((f"{name}+iri-decoded", decoded, query))
    return tuple(variants)


# -- strings to sign ----------------------------------------------------------------------------


def _v2_string(base: str, nonce: str) -> str:
    return base + nonce


@functools.lru_cache(maxsize=1024)
def _query_map(query: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        result.setdefault(key, []).append(value)
    return result


def _sorted_pairs(params: Params) -> list[tuple[str, str]]:
    """Params as (key, value) pairs sorted by key then value: the order the SDK signs them in."""
    if type(params) is FormPairs:
        return sorted(params)  # the server's own decoded form: str pairs, vouched for
    if isinstance(params, list | tuple) and all(
        type(pair) is tuple and len(pair) == 2 and type(pair[0]) is str and type(pair[1]) is str
        for pair in params
    ):
        return sorted(params)  # the common case, form pairs from parse_qsl: no regrouping
    normalized = normalize_params(params)
    return [(k, v) for k in sorted(normalized) for v in sorted(normalized[k])]


def _v3_suffix(method: str, query: str, params: Params, nonce: str) -> str:
    """What V3 signs after the base URL; the same for every form of the URL."""
    query_map = _query_map(query)
    if method == "GET":
        merged: dict[str, list[str]] = {}
        for key, value in _sorted_pairs(params):
            merged.setdefault(key, []).append(value)
        merged.update(query_map)  # the SDK lets a key in the URL's query replace the params' one
        qs = "&".join(f"{k}={v}" for k in sorted(merged) for v in sorted(merged[k]))
        signed = "?" + qs if qs else ""
    else:
        qs = "&".join(f"{k}={v}" for k in sorted(query_map) for v in sorted(query_map[k]))
        pairs = _sorted_pairs(params)
        if pairs:
            signed = "?" + (qs + "." if qs else "") + "".join([k + v for k, v in pairs])
        else:
            signed = "?" + qs if qs else ""
    return signed + "." + nonce


def _method(method: StrOrBytes) -> str:
    text = _text(method).upper()
    if text not in ("GET", "POST"):
        raise ValueError(f"method must be GET or POST, not {text!r}")
    return text


def string_to_sign_v2(url: StrOrBytes, nonce: StrOrBytes) -> str:
    """The exact text that V2 signs: the base URL (no query, no fragment) and the nonce."""
    return _v2_string(_base(_text(url), keep_path_params=True)[0], _text(nonce))


def string_to_sign_v3(
    method: StrOrBytes, url: StrOrBytes, params: Params, nonce: StrOrBytes
) -> str:
    """The exact text that V3 signs: method-dependent URL, sorted params, ``.`` and the nonce."""
    base, query = _base(_text(url), keep_path_params=True)
    return base + _v3_suffix(_method(method), query, params, _text(nonce))


def strings_to_sign(
    version: Literal["v2", "v3"],
    method: StrOrBytes,
    url: StrOrBytes,
    params: Params,
    nonce: StrOrBytes,
) -> list[tuple[str, str]]:
    """Every ``(URL form, string)`` that verify_v2/verify_v3 try for this request, in order.

    Built exactly as they build them (same URL forms, same V3 suffix), so that a tool can show
    what was compared without a second, drifting copy of the rules. Empty for a URL that cannot
    be parsed. Pure: no token, no HMAC.
    """
    variants = base_url_variants(url)
    if not variants:
        return []
    nonce_text = _text(nonce)
    if version == "v2":
        return [(name, _v2_string(base, nonce_text)) for name, base, _ in variants]
    suffix = _v3_suffix(_method(method), variants[0][2], params, nonce_text)
    return [(name, base + suffix) for name, base, _query in variants]


def _hmac_b64(key: bytes, message: str) -> bytes:
    # A digest name rather than hashlib.sha256: measured 1.5 µs against 2.3 µs per call.
    return base64.b64encode(hmac.digest(key, _utf8(message), "sha256"))


def _first_key(auth_token: StrOrBytes) -> bytes:
    keys = _tokens(auth_token)
    if not keys:
        raise ValueError("auth_token must not be empty")
    return keys[0][1]


def sign_v2(url: StrOrBytes, nonce: StrOrBytes, auth_token: StrOrBytes) -> str:
    """The ``X-Plivo-Signature-V2`` (or ``-Ma-V2``, with the main token) value for a request."""
    return _hmac_b64(_first_key(auth_token), string_to_sign_v2(url, nonce)).decode("ascii")


def sign_v3(
    method: StrOrBytes,
    url: StrOrBytes,
    params: Params,
    nonce: StrOrBytes,
    auth_token: StrOrBytes,
) -> str:
    """The ``X-Plivo-Signature-V3`` (or ``-Ma-V3``, with the main token) value for a request."""
    return _hmac_b64(_first_key(auth_token), string_to_sign_v3(method, url, params, nonce)).decode(
        "ascii"
    )


# -- verification -------------------------------------------------------------------------------


def _verify(
    scheme: Scheme,
    strings: list[tuple[str, str]],
    signature_header: StrOrBytes | None,
    auth_tokens: Tokens,
) -> Verification:
    header_name = _HEADER_NAMES[scheme][0]
    keys = _tokens(auth_tokens)
    if not keys:
        return Verification(False, scheme, reason=f"no auth token configured for {header_name}")
    entries = _signature_entries(signature_header)
    if not entries:
        return Verification(False, scheme, reason=f"missing {header_name} header")
    if len(entries) > MAX_SIGNATURES:
        return Verification(
            False, scheme, reason=f"{header_name} lists more than {MAX_SIGNATURES} signatures"
        )
    well_formed = [e for e in entries if _WELL_FORMED.fullmatch(e)]
    if not well_formed:
        return Verification(
            False, scheme, reason=f"malformed {header_name} header (not a Base64 HMAC-SHA256)"
        )
    for index, key in keys:
        for variant, message in strings:
            expected = _hmac_b64(key, message)
            matched = False
            for entry in well_formed:
                # No early exit inside one comparison: compare_digest is constant-time for
                # equal-length inputs, and every entry here is 44 bytes long.
                matched |= hmac.compare_digest(expected, entry)
            if matched:
                family: Literal["v2", "v3"] = "v3" if scheme.endswith("v3") else "v2"
                return Verification(
                    True, scheme, token_index=index, variant=variant, families=(family,)
                )
    return Verification(False, scheme, reason=f"{header_name} does not match")


def verify_v2(
    url: StrOrBytes,
    nonce: StrOrBytes | None,
    signature: StrOrBytes | None,
    auth_tokens: Tokens,
    *,
    main: bool = False,
) -> Verification:
    """Check a V2 signature (``main=True``: an Ma-V2 one, checked against main-account tokens)."""
    scheme: Scheme = "ma-v2" if main else "v2"
    if nonce is None:
        return Verification(False, scheme, reason=f"missing {_HEADER_NAMES[scheme][1]} header")
    nonce_text = _text(nonce)
    variants = base_url_variants(url)
    if not variants:
        return Verification(False, scheme, reason=_BAD_URL)
    strings = [(name, _v2_string(base, nonce_text)) for name, base, _ in variants]
    return _verify(scheme, strings, signature, auth_tokens)


def verify_v3(
    method: StrOrBytes,
    url: StrOrBytes,
    params: Params,
    nonce: StrOrBytes | None,
    signature_header: StrOrBytes | None,
    auth_tokens: Tokens,
    *,
    main: bool = False,
) -> Verification:
    """Check a V3 signature header, which may list several comma-separated signatures.

    ``params`` are the POST form fields (never merged with the URL's query) or, for GET, empty.
    """
    scheme: Scheme = "ma-v3" if main else "v3"
    if nonce is None:
        return Verification(False, scheme, reason=f"missing {_HEADER_NAMES[scheme][1]} header")
    try:
        verb = _method(method)
    except ValueError as exc:
        return Verification(False, scheme, reason=str(exc))
    variants = base_url_variants(url)
    if not variants:
        return Verification(False, scheme, reason=_BAD_URL)
    suffix = _v3_suffix(verb, variants[0][2], params, _text(nonce))
    strings = [(name, base + suffix) for name, base, _query in variants]
    return _verify(scheme, strings, signature_header, auth_tokens)


def verify_request(
    method: StrOrBytes,
    url: StrOrBytes,
    headers: Mapping[str, str],
    params: Params,
    auth_tokens: Tokens,
    main_auth_tokens: Tokens = None,
) -> Verification:
    """Check a whole request the way a receiver should.

    The V3 family is used when any V3 signature header is present, else the V2 family; a V3
    failure never falls back to V2 (a forger would otherwise strip V3 to dodge the body check).
    Within a family the account header is checked against ``auth_tokens`` and the ``Ma-`` header
    against ``main_auth_tokens``; either matching is enough. ``headers`` keys may be any case.
    """
    lower = headers
    if not all(k.islower() for k in headers.keys()):  # noqa: SIM118 - werkzeug iterates pairs
        # Servers hand over lower-case names already; other callers may not.
        lower = {k.lower(): v for k, v in headers.items()}
    has_v2 = HEADER_V2 in lower or HEADER_MA_V2 in lower
    if HEADER_V3 in lower or HEADER_MA_V3 in lower:
        result = _verify_family("V3", method, url, lower, params, auth_tokens, main_auth_tokens)
        if result and has_v2:
            # V3 decides; a V2 pair beside it is checked only to know whether its nonce is
            # genuine, hence whether to record it (a forger could replay it with another body).
            v2 = _verify_family("V2", method, url, lower, params, auth_tokens, main_auth_tokens)
            if v2:
                result = replace(result, families=("v3", "v2"))
        return result
    if has_v2:
        return _verify_family("V2", method, url, lower, params, auth_tokens, main_auth_tokens)
    return Verification(False, reason="missing X-Plivo-Signature-V3 or -V2 header")


def _verify_family(
    family: str,
    method: StrOrBytes,
    url: StrOrBytes,
    lower: Mapping[str, str],
    params: Params,
    auth_tokens: Tokens,
    main_auth_tokens: Tokens,
) -> Verification:
    if family == "V3":
        nonce = lower.get(HEADER_V3_NONCE)
        checks = [
            (lower.get(HEADER_V3), auth_tokens, False),
            (lower.get(HEADER_MA_V3), main_auth_tokens, True),
        ]
        results = [
            verify_v3(method, url, params, nonce, header, tokens, main=main)
            for header, tokens, main in checks
            if header is not None and tokens
        ]
    else:
        nonce = lower.get(HEADER_V2_NONCE)
        checks = [
            (lower.get(HEADER_V2), auth_tokens, False),
            (lower.get(HEADER_MA_V2), main_auth_tokens, True),
        ]
        results = [
            verify_v2(url, nonce, header, tokens, main=main)
            for header, tokens, main in checks
            if header is not None and tokens
        ]
    for result in results:
        if result:
            return result
    if not results:
        return Verification(False, reason=f"no token configured for the {family} headers present")
    # Report the account header's reason first: it is the one users configure.
    return results[0]
