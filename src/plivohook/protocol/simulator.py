"""A Plivo simulator: the requests Plivo sends, signed exactly as Plivo signs them.

Part of the library, not of the tests: ``plivohook send``, the load test, the benchmark and the
tests all build their requests here, so that a user can test their own deployment without a Plivo
account. Pure: nothing here does I/O (the caller sends the request).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from urllib.parse import urlencode

from . import signature

__all__ = ["SCHEMES", "inbound_sms_params", "new_nonce", "signed_request", "status_params"]

# The header families Plivo sends: its own signature, and the main account's (Ma-) for subaccounts.
SCHEMES = ("v2", "ma-v2", "v3", "ma-v3")

Params = list[tuple[str, str]]


def new_nonce() -> str:
    """A nonce shaped like Plivo's: 20 decimal digits."""
    return "".join(secrets.choice("0123456789") for _ in range(20))


def inbound_sms_params(
    message_uuid: str, text: str, from_number: str = "14155550100", to_number: str = "14155550199"
) -> Params:
    """The fields Plivo posts to message_url for an inbound SMS (long code, one part)."""
    return [
        ("From", from_number),
        ("To", to_number),
        ("Type", "sms"),
        ("Text", text),
        ("MessageUUID", message_uuid),
        ("Units", "1"),
        ("TotalRate", "0.00000"),
        ("TotalAmount", "0.00000"),
        ("MessageIntent", ""),
        ("PowerpackUUID", ""),
    ]


def status_params(
    message_uuid: str,
    status: str,
    *,
    from_number: str = "14155550199",
    to_number: str = "14155550100",
    sequence: int = 1,
    parent_message_uuid: str | None = None,
) -> Params:
    """The fields Plivo posts to a message's callback_url for one delivery report."""
    return [
        ("MessageUUID", message_uuid),
        ("Status", status),
        ("From", from_number),
        ("To", to_number),
        ("Type", "sms"),
        ("Units", "1"),
        ("Sequence", str(sequence)),
        ("ParentMessageUUID", parent_message_uuid or message_uuid),
        ("ErrorCode", "300" if status in ("failed", "undelivered") else ""),
    ]


def signed_request(
    url: str,
    params: Sequence[tuple[str, str]],
    token: str,
    schemes: Sequence[str] = ("v2", "v3"),
    method: str = "POST",
    *,
    sign_url: str | None = None,
) -> tuple[str, dict[str, str], bytes | None]:
    """The URL, headers and body Plivo would send for ``params``.

    ``sign_url`` signs for another URL than the one posted to: Plivo signs the URL it was given
    (a public one), which a proxy or a tunnel then forwards to the server's own address.
    """
    params = list(params)
    signed_url = sign_url or url
    headers: dict[str, str] = {}
    if method == "GET":
        query = ("&" if "?" in url else "?") + urlencode(params)
        url, signed_url = (
            url + query,
            signed_url + ("&" if "?" in signed_url else "?") + urlencode(params),
        )
        body = None
        signed_params: Params = []  # GET: the fields ride in the URL's query, signed there
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(params).encode()
        signed_params = params
    v2_nonce, v3_nonce = new_nonce(), new_nonce()
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown signature scheme {scheme!r}: one of {', '.join(SCHEMES)}")
        if scheme in ("v2", "ma-v2"):
            headers["X-Plivo-Signature-V2-Nonce"] = v2_nonce
            name = "X-Plivo-Signature-V2" if scheme == "v2" else "X-Plivo-Signature-Ma-V2"
            headers[name] = signature.sign_v2(signed_url, v2_nonce, token)
        else:
            headers["X-Plivo-Signature-V3-Nonce"] = v3_nonce
            name = "X-Plivo-Signature-V3" if scheme == "v3" else "X-Plivo-Signature-Ma-V3"
            headers[name] = signature.sign_v3(method, signed_url, signed_params, v3_nonce, token)
    return url, headers, body
