"""plivohook.integrations.flask through Flask's test client, in the shape of Plivo's own sample."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from urllib.parse import urlencode, urlparse, urlunparse

import flask
import pytest
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import construct_post_url, get_signature_v3, validate_v3_signature
from werkzeug.datastructures import MultiDict
from werkzeug.middleware.proxy_fix import ProxyFix

from plivohook.integrations.flask import plivo_webhook
from plivohook.protocol.params import DeliveryStatus, InboundMessage
from plivohook.protocol.signature import Verification, sign_v2, sign_v3
from plivohook.protocol.xml import Message, Response, XMLValidationError, reply_to

TOKEN = "SUBACCOUNT_TOKEN_0123456789abcdef"
OLD_TOKEN = "OLD_SUBACCOUNT_TOKEN_00000000000"
MAIN = "MAINACCOUNT_TOKEN_fedcba9876543210"
NONCE = "05429567804466091622"
PUBLIC = "https://example.com"
LOCAL = "http://localhost"
UUID = "2f6d4c6e-1a2b-4c3d-9e8f-0a1b2c3d4e5f"
# The request of Plivo's receive-SMS sample: these five form fields, the V2 headers.
FIELDS = {
    "From": "14155550100",
    "To": "14155550199",
    "Type": "sms",
    "Text": "Hello from a handset & more: é ✓",
    "MessageUUID": UUID,
}
STATUS_FIELDS = {
    "MessageUUID": UUID,
    "Status": "delivered",
    "To": "14155550100",
    "From": "14155550199",
    "Units": "1",
    "Sequence": "3",
    "MessageTime": "2024-03-01 10:15:00.123456",
}


def v2_headers(url: str, token: str = TOKEN, nonce: str = NONCE) -> dict[str, str]:
    return {"X-Plivo-Signature-V2": sign_v2(url, nonce, token), "X-Plivo-Signature-V2-Nonce": nonce}


def v3_headers(
    method: str, url: str, params, token: str = TOKEN, nonce: str = NONCE, *, ma: bool = False
) -> dict[str, str]:
    name = "X-Plivo-Signature-Ma-V3" if ma else "X-Plivo-Signature-V3"
    return {name: sign_v3(method, url, params, nonce, token), "X-Plivo-Signature-V3-Nonce": nonce}


def sdk_v2_signature(uri: str, nonce: str, token: str) -> str:
    """V2 as plivo.utils.validate_signature computes it (its code, line for line)."""
    parsed = urlparse(uri.encode("utf-8"))
    base = urlunparse(
        (parsed.scheme.decode(), parsed.netloc.decode(), parsed.path.decode(), "", "", "")
    ).encode("utf-8")
    digest = hmac.new(token.encode(), base + nonce.encode(), hashlib.sha256).digest()
    return base64.encodebytes(digest).strip().decode()


def sdk_v3_post_signature(uri: str, params: dict, nonce: str, token: str) -> str:
    base_url = construct_post_url(uri, dict(params)).decode("utf-8")
    return get_signature_v3(token.encode(), base_url, nonce.encode()).decode()


def make_app(**options) -> tuple[flask.Flask, list]:
    """An app with the sample's route; ``seen`` collects what each view received."""
    app = flask.Flask(__name__)
    seen: list = []
    kind = options.get("kind", "message")
    returns = options.pop("returns", lambda parsed: "Message received")

    @app.route("/plivo/sms", methods=["GET", "POST", "PUT"])
    @plivo_webhook(**options)
    def inbound(parsed):
        seen.append((parsed, flask.g.plivo_verification))
        return returns(parsed)

    @app.route("/plivo/<tenant>/sms", methods=["POST"])
    @plivo_webhook(**options)
    def per_tenant(parsed, tenant):
        seen.append((parsed, tenant))
        return Response() if kind == "message" else None

    return app, seen


@pytest.fixture
def app_and_seen():
    return make_app(auth_tokens=TOKEN, public_url=PUBLIC)


# -- the sample's request -----------------------------------------------------------------------


@pytest.mark.parametrize("signer", ["plivohook", "sdk"])
def test_sample_request_with_v2_is_accepted(app_and_seen, signer):
    app, seen = app_and_seen
    url = PUBLIC + "/plivo/sms"
    if signer == "sdk":
        sig = sdk_v2_signature(url, NONCE, TOKEN)
        assert validate_signature(url, NONCE, sig, TOKEN)
        headers = {"X-Plivo-Signature-V2": sig, "X-Plivo-Signature-V2-Nonce": NONCE}
    else:
        headers = v2_headers(url)
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_data(as_text=True) == "Message received"
    [(message, verification)] = seen
    assert isinstance(message, InboundMessage)
    assert (message.from_number, message.to_number, message.type, message.text) == (
        "14155550100",
        "14155550199",
        "sms",
        FIELDS["Text"],
    )
    assert message.message_uuid == UUID
    assert isinstance(verification, Verification)
    assert (verification.scheme, verification.token_index) == ("v2", 0)


def test_sample_request_with_sdk_v3_is_accepted(app_and_seen):
    app, seen = app_and_seen
    url = PUBLIC + "/plivo/sms"
    sig = sdk_v3_post_signature(url, FIELDS, NONCE, TOKEN)
    assert validate_v3_signature("POST", url, NONCE, TOKEN, sig, params=dict(FIELDS))
    headers = {"X-Plivo-Signature-V3": sig, "X-Plivo-Signature-V3-Nonce": NONCE}
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    assert response.status_code == 200
    assert seen[0][1].scheme == "v3"


# -- refusals -----------------------------------------------------------------------------------


def _refused(response, status: int, *words: str) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == status, body
    assert response.mimetype == "text/plain"
    for word in words:
        assert word in body


def test_wrong_token_is_403(app_and_seen):
    app, seen = app_and_seen
    headers = v2_headers(PUBLIC + "/plivo/sms", token=OLD_TOKEN)
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    _refused(response, 403, "X-Plivo-Signature-V2 does not match")
    assert seen == []


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("X-Plivo-Signature-V2-Nonce", "X-Plivo-Signature-V2-Nonce"),
        ("X-Plivo-Signature-V2", "X-Plivo-Signature-V3"),  # no signature header at all
    ],
)
def test_missing_header_is_403_with_reason(app_and_seen, drop, named):
    app, seen = app_and_seen
    headers = v2_headers(PUBLIC + "/plivo/sms")
    del headers[drop]
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    _refused(response, 403, named)
    assert seen == []


@pytest.mark.parametrize(
    "tamper",
    [
        {"Text": "Send the money to 666"},
        {"From": "14155550666"},
        {"Extra": "added"},
    ],
    ids=["text", "from", "added-field"],
)
def test_tampered_v3_body_is_403(app_and_seen, tamper):
    app, seen = app_and_seen
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", FIELDS)
    client = app.test_client()
    assert client.post("/plivo/sms", data=FIELDS, headers=headers).status_code == 200
    response = client.post("/plivo/sms", data={**FIELDS, **tamper}, headers=headers)
    _refused(response, 403, "X-Plivo-Signature-V3 does not match")
    assert len(seen) == 1


def test_no_fallback_to_v2_when_v3_fails(app_and_seen):
    app, seen = app_and_seen
    url = PUBLIC + "/plivo/sms"
    headers = {**v2_headers(url), **v3_headers("POST", url, {**FIELDS, "Text": "other"})}
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    _refused(response, 403, "V3")
    assert seen == []


def test_query_string_is_not_merged_into_post_params(app_and_seen):
    """Reference vector v3-051: POST params are the body's fields only; the query is in the URL."""
    app, _ = app_and_seen
    url = PUBLIC + "/plivo/sms?tenant=42&env=prod"
    client = app.test_client()
    headers = v3_headers("POST", url, FIELDS)
    response = client.post("/plivo/sms?tenant=42&env=prod", data=FIELDS, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    merged = v3_headers("POST", url, {**FIELDS, "tenant": "42", "env": "prod"})
    response = client.post("/plivo/sms?tenant=42&env=prod", data=FIELDS, headers=merged)
    assert response.status_code == 403


def test_other_methods_are_405(app_and_seen):
    app, _ = app_and_seen
    headers = v2_headers(PUBLIC + "/plivo/sms")
    response = app.test_client().put("/plivo/sms", data=FIELDS, headers=headers)
    _refused(response, 405)
    assert response.headers["Allow"] == "GET, POST"


# -- GET callbacks ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["v2", "v3"])
def test_get_callback(app_and_seen, family):
    app, seen = app_and_seen
    configured = PUBLIC + "/plivo/sms"
    # Plivo signs the configured URL with its fields, which reach us in the query string.
    headers = v3_headers("GET", configured, FIELDS) if family == "v3" else v2_headers(configured)
    client = app.test_client()
    response = client.get("/plivo/sms?" + urlencode(FIELDS), headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert seen[0][0].text == FIELDS["Text"]
    assert seen[0][1].scheme == family
    if family == "v3":
        forged = urlencode({**FIELDS, "Text": "forged"})
        _refused(client.get("/plivo/sms?" + forged, headers=headers), 403)


# -- the URL ------------------------------------------------------------------------------------


def test_public_url_behind_a_proxy():
    """The app sees http://localhost/...; Plivo signed https://example.com/..."""
    signed = v3_headers("POST", PUBLIC + "/plivo/sms", FIELDS)
    behind, _ = make_app(auth_tokens=TOKEN)
    _refused(behind.test_client().post("/plivo/sms", data=FIELDS, headers=signed), 403)
    configured, _ = make_app(auth_tokens=TOKEN, public_url=PUBLIC + "/")
    assert (
        configured.test_client().post("/plivo/sms", data=FIELDS, headers=signed).status_code == 200
    )
    # ...and with public_url set, a request signed for the local URL is refused.
    local = v3_headers("POST", LOCAL + "/plivo/sms", FIELDS)
    _refused(configured.test_client().post("/plivo/sms", data=FIELDS, headers=local), 403)


def test_request_url_without_public_url():
    app, _ = make_app(auth_tokens=TOKEN)
    headers = v3_headers("POST", LOCAL + "/plivo/sms", FIELDS)
    assert app.test_client().post("/plivo/sms", data=FIELDS, headers=headers).status_code == 200


def test_proxy_fix_is_honoured_without_public_url():
    app, _ = make_app(auth_tokens=TOKEN)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1, x_prefix=1)
    headers = {
        **v3_headers("POST", "https://example.com/hooks/plivo/sms", FIELDS),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "example.com",
        "X-Forwarded-Prefix": "/hooks",
    }
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_script_root_is_part_of_the_url():
    app, _ = make_app(auth_tokens=TOKEN)
    client = app.test_client()
    headers = v3_headers("POST", "https://example.com/app/plivo/sms", FIELDS)
    response = client.post(
        "/plivo/sms", base_url="https://example.com/app", data=FIELDS, headers=headers
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path", ["/plivo/sms", "/plivo/%73ms", "/plivo/caf%C3%A9/sms", "/plivo/caf%c3%a9/sms"]
)
@pytest.mark.parametrize("script_root", ["", "/app"])
@pytest.mark.parametrize("raw_uri", ["with-root", "without-root", "absolute-form", "none"])
def test_path_is_signed_as_written(path, script_root, raw_uri):
    """Plivo signs the path exactly as registered; the app must not re-encode it.

    Servers put the raw request target in RAW_URI/REQUEST_URI: gunicorn with the mount point
    (``with-root``), Werkzeug's test client or a ProxyFix-added prefix without it.
    """
    app = flask.Flask(__name__)

    @app.post("/plivo/<word>")
    @app.post("/plivo/<word>/sms")
    @plivo_webhook(TOKEN, public_url=PUBLIC)
    def view(message, word):
        return word

    target = {
        "with-root": script_root + path,
        "without-root": path,
        "absolute-form": "http://localhost" + script_root + path,
        "none": "",
    }[raw_uri]
    headers = v3_headers("POST", PUBLIC + script_root + path, FIELDS)
    response = app.test_client().post(
        path,
        base_url="http://localhost" + script_root,
        data=FIELDS,
        headers=headers,
        environ_overrides={"RAW_URI": target, "REQUEST_URI": target},
    )
    # Without the raw URI only the decoded path is known: '%73' cannot be told from 's', nor
    # lower-case from upper-case escapes (the verifier tries the decoded form of non-ASCII).
    reencodable = path in ("/plivo/sms", "/plivo/caf%C3%A9/sms")
    expected = 200 if raw_uri != "none" or reencodable else 403
    assert response.status_code == expected, response.get_data(as_text=True)


@pytest.mark.parametrize(
    "overrides",
    [
        {"RAW_URI": "http://[bad/plivo/sms", "REQUEST_URI": "http://[bad/plivo/sms"},
        {"HTTP_HOST": "[::1"},
    ],
    ids=["raw-uri", "host"],
)
def test_unparseable_request_target_is_refused_not_a_crash(overrides):
    app, seen = make_app(auth_tokens=TOKEN)
    headers = v3_headers("POST", LOCAL + "/plivo/sms", FIELDS)
    response = app.test_client().post(
        "/plivo/sms", data=FIELDS, headers=headers, environ_overrides=overrides
    )
    _refused(response, 403)
    assert seen == []


# -- parameters ---------------------------------------------------------------------------------


def test_bad_field_is_400_naming_it(app_and_seen):
    app, seen = app_and_seen
    bad = {**FIELDS, "MessageUUID": "not-a-uuid", "To": "\x01"}
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", bad)
    response = app.test_client().post("/plivo/sms", data=bad, headers=headers)
    _refused(response, 400, "MessageUUID", "To")
    assert seen == []


def test_bad_fields_are_only_reported_after_the_signature(app_and_seen):
    app, _ = app_and_seen
    bad = {**FIELDS, "MessageUUID": "not-a-uuid"}
    response = app.test_client().post("/plivo/sms", data=bad)
    _refused(response, 403)
    assert "MessageUUID" not in response.get_data(as_text=True)


def test_repeated_fields_are_signed_and_passed_on(app_and_seen):
    app, seen = app_and_seen
    pairs = [*FIELDS.items(), ("Tag", "b"), ("Tag", "a")]
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", pairs)
    response = app.test_client().post("/plivo/sms", data=MultiDict(pairs), headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert ("Tag", "b") in seen[0][0].params
    assert ("Tag", "a") in seen[0][0].params


def test_status_callback():
    app, seen = make_app(auth_tokens=TOKEN, public_url=PUBLIC, kind="status")
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", STATUS_FIELDS)
    response = app.test_client().post("/plivo/sms", data=STATUS_FIELDS, headers=headers)
    assert response.status_code == 200
    status = seen[0][0]
    assert isinstance(status, DeliveryStatus)
    assert (status.status, status.sequence) == ("delivered", 3)


def test_route_arguments_reach_the_view(app_and_seen):
    app, seen = app_and_seen
    headers = v3_headers("POST", PUBLIC + "/plivo/acme/sms", FIELDS)
    response = app.test_client().post("/plivo/acme/sms", data=FIELDS, headers=headers)
    assert response.status_code == 200
    assert seen[0][1] == "acme"
    assert response.get_data() == b"<Response/>"


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returns", "status", "body"),
    [
        (
            lambda m: Response([reply_to(m.from_number, m.to_number, "Thanks & bye")]),
            200,
            b'<Response><Message src="14155550199" dst="14155550100">Thanks &amp; bye'
            b"</Message></Response>",
        ),
        (lambda m: (Response(), 201), 201, b"<Response/>"),
        (lambda m: None, 200, b"<Response/>"),
    ],
    ids=["response", "response-tuple", "none"],
)
def test_xml_answers(returns, status, body):
    app, _ = make_app(auth_tokens=TOKEN, public_url=PUBLIC, returns=returns)
    headers = v2_headers(PUBLIC + "/plivo/sms")
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    assert response.status_code == status
    assert response.mimetype == "application/xml"
    assert response.get_data() == body


def test_other_answers_are_flasks_business():
    app, _ = make_app(
        auth_tokens=TOKEN, public_url=PUBLIC, returns=lambda m: ({"uuid": m.message_uuid}, 202)
    )
    headers = v2_headers(PUBLIC + "/plivo/sms")
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    assert response.status_code == 202
    assert response.get_json() == {"uuid": UUID}


# -- replies that cannot be written --------------------------------------------------------------

ALPHANUMERIC = {**FIELDS, "From": "ACME"}


def readme_sample(message):
    """The view of the README's "Your own Flask app" sample, as written there."""
    return Response([Message(text="Thanks!", src=message.to_number, dst=message.from_number)])


class UnwritableResponse(Response):
    """A Response whose serialisation fails validation (the view returns it, nothing raises)."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        raise XMLValidationError("dst: 'ACME' is not a number (2-20 digits, optional '+')")


@pytest.mark.parametrize(
    "returns",
    [
        readme_sample,
        lambda m: (Response([reply_to(m.from_number, m.to_number, "Hi")]), 201),
        lambda m: UnwritableResponse(),
        lambda m: (UnwritableResponse(), 201),
    ],
    ids=["readme-sample", "reply_to-in-tuple", "serialisation", "serialisation-in-tuple"],
)
def test_unanswerable_sender_is_200_empty_response_and_logged(returns, caplog):
    app, seen = make_app(auth_tokens=TOKEN, public_url=PUBLIC, returns=returns)
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", ALPHANUMERIC)
    with caplog.at_level(logging.INFO, logger="plivohook.integrations.flask"):
        response = app.test_client().post("/plivo/sms", data=ALPHANUMERIC, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/xml"
    assert response.get_data() == b"<Response/>"
    assert len(seen) == 1  # the view ran: only its reply was skipped
    [record] = [r for r in caplog.records if "no reply" in r.getMessage()]
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    assert UUID in line
    assert "'ACME' is not a number" in line
    assert TOKEN not in caplog.text
    assert headers["X-Plivo-Signature-V3"] not in caplog.text


def test_readme_sample_replies_to_a_number():
    app, _ = make_app(auth_tokens=TOKEN, public_url=PUBLIC, returns=readme_sample)
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", FIELDS)
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    assert response.status_code == 200
    assert response.get_data() == (
        b'<Response><Message src="14155550199" dst="14155550100">Thanks!</Message></Response>'
    )


def test_status_view_raising_xml_validation_error_is_200():
    def returns(status):
        raise XMLValidationError("src: 'not a sender!' is neither a number nor a sender id")

    app, seen = make_app(auth_tokens=TOKEN, public_url=PUBLIC, kind="status", returns=returns)
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", STATUS_FIELDS)
    response = app.test_client().post("/plivo/sms", data=STATUS_FIELDS, headers=headers)
    assert response.status_code == 200
    assert response.get_data() == b"<Response/>"
    assert len(seen) == 1


def test_other_exceptions_from_the_view_stay_flasks(caplog):
    """Only an unwritable reply is skipped: a bug in the view is still a 500, not a silent 200."""

    def returns(message):
        raise ValueError("a bug in the view")

    app, _ = make_app(auth_tokens=TOKEN, public_url=PUBLIC, returns=returns)
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", ALPHANUMERIC)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post("/plivo/sms", data=ALPHANUMERIC, headers=headers)
    assert response.status_code == 500
    assert "a bug in the view" in caplog.text  # Flask's own error log


# -- tokens -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "signed_with", "index"),
    [
        ([TOKEN, OLD_TOKEN], OLD_TOKEN, 1),
        ([TOKEN, OLD_TOKEN], TOKEN, 0),
        (f"{TOKEN}, {OLD_TOKEN}", OLD_TOKEN, 1),
        ((TOKEN.encode(), OLD_TOKEN.encode()), OLD_TOKEN, 1),
        ([TOKEN], OLD_TOKEN, None),
    ],
)
def test_token_rotation(tokens, signed_with, index):
    app, seen = make_app(auth_tokens=tokens, public_url=PUBLIC)
    headers = v3_headers("POST", PUBLIC + "/plivo/sms", FIELDS, token=signed_with)
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    if index is None:
        _refused(response, 403)
    else:
        assert response.status_code == 200
        assert seen[0][1].token_index == index


@pytest.mark.parametrize(
    ("config", "headers", "ok"),
    [
        ({"PLIVO_AUTH_TOKEN": TOKEN}, v2_headers(PUBLIC + "/plivo/sms"), True),
        ({"PLIVO_AUTH_TOKEN": f" {OLD_TOKEN} ,{TOKEN}"}, v2_headers(PUBLIC + "/plivo/sms"), True),
        ({"PLIVO_AUTH_TOKEN": [OLD_TOKEN, TOKEN]}, v2_headers(PUBLIC + "/plivo/sms"), True),
        ({"PLIVO_AUTH_TOKEN": OLD_TOKEN}, v2_headers(PUBLIC + "/plivo/sms"), False),
        (
            {"PLIVO_AUTH_TOKEN": TOKEN, "PLIVO_MAIN_AUTH_TOKEN": MAIN},
            v3_headers("POST", PUBLIC + "/plivo/sms", FIELDS, token=MAIN, ma=True),
            True,
        ),
        (
            {"PLIVO_MAIN_AUTH_TOKEN": MAIN},
            v3_headers("POST", PUBLIC + "/plivo/sms", FIELDS, token=MAIN, ma=True),
            True,
        ),
        (  # an Ma- header is never checked against the account tokens
            {"PLIVO_AUTH_TOKEN": MAIN},
            v3_headers("POST", PUBLIC + "/plivo/sms", FIELDS, token=MAIN, ma=True),
            False,
        ),
    ],
)
def test_config_tokens(config, headers, ok):
    app, _ = make_app(public_url=PUBLIC)
    app.config.update(config)
    response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    assert response.status_code == (200 if ok else 403), response.get_data(as_text=True)


def test_config_is_read_at_request_time():
    app, _ = make_app(public_url=PUBLIC)
    headers = v2_headers(PUBLIC + "/plivo/sms")
    client = app.test_client()
    app.config["PLIVO_AUTH_TOKEN"] = OLD_TOKEN
    assert client.post("/plivo/sms", data=FIELDS, headers=headers).status_code == 403
    app.config["PLIVO_AUTH_TOKEN"] = TOKEN
    assert client.post("/plivo/sms", data=FIELDS, headers=headers).status_code == 200


def test_explicit_tokens_win_over_config():
    app, _ = make_app(auth_tokens=TOKEN, public_url=PUBLIC)
    app.config["PLIVO_AUTH_TOKEN"] = OLD_TOKEN
    headers = v2_headers(PUBLIC + "/plivo/sms", token=OLD_TOKEN)
    _refused(app.test_client().post("/plivo/sms", data=FIELDS, headers=headers), 403)


@pytest.mark.parametrize("value", [None, "", " , ", [], [""]])
def test_no_token_configured_is_500_and_logged(value, caplog):
    app, seen = make_app(public_url=PUBLIC)
    if value is not None:
        app.config["PLIVO_AUTH_TOKEN"] = value
    # A forger's best try when no token is set: the HMAC under an empty key.
    forged = hmac.new(b"", (PUBLIC + "/plivo/sms" + NONCE).encode(), hashlib.sha256).digest()
    headers = {
        "X-Plivo-Signature-V2": base64.b64encode(forged).decode(),
        "X-Plivo-Signature-V2-Nonce": NONCE,
    }
    with caplog.at_level(logging.ERROR, logger="plivohook.integrations.flask"):
        response = app.test_client().post("/plivo/sms", data=FIELDS, headers=headers)
    _refused(response, 500)
    assert response.get_data(as_text=True) == "plivohook: no auth token configured"
    assert "no auth token configured" in caplog.text
    assert seen == []


def test_badly_typed_config_is_500(caplog):
    app, seen = make_app(public_url=PUBLIC)
    app.config["PLIVO_AUTH_TOKEN"] = 12345
    with caplog.at_level(logging.ERROR, logger="plivohook.integrations.flask"):
        response = app.test_client().post(
            "/plivo/sms", data=FIELDS, headers=v2_headers(PUBLIC + "/plivo/sms")
        )
    _refused(response, 500, "invalid auth token configuration")
    assert "PLIVO_AUTH_TOKEN" in caplog.text
    assert seen == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"auth_tokens": ""},
        {"auth_tokens": " , "},
        {"auth_tokens": []},
        {"auth_tokens": [""]},
        {"auth_tokens": b""},
        {"main_auth_tokens": ""},
        {"auth_tokens": TOKEN, "main_auth_tokens": []},
    ],
)
def test_explicit_empty_tokens_fail_at_decoration(kwargs):
    with pytest.raises(ValueError, match="empty"):
        plivo_webhook(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"kind": "voice"}, ValueError),
        ({"public_url": "example.com"}, ValueError),
        ({"public_url": "ftp://example.com"}, ValueError),
        ({"public_url": "https://example.com/?a=b"}, ValueError),
        ({"auth_tokens": 42}, TypeError),
        ({"auth_tokens": [TOKEN, 42]}, TypeError),
    ],
)
def test_bad_options_fail_at_decoration(kwargs, error):
    with pytest.raises(error):
        plivo_webhook(**kwargs)


def test_decorator_without_parentheses_is_explained():
    with pytest.raises(TypeError, match=r"@plivo_webhook\(\)"):

        @plivo_webhook
        def view(message):  # pragma: no cover
            return None


def test_view_keeps_its_name():
    app, _ = make_app(auth_tokens=TOKEN)
    assert {"inbound", "per_tenant"} <= set(app.view_functions)
