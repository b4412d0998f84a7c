"""The service's OpenAPI 3.1 description, served at ``/openapi.json``.

A plain constant (:data:`OPENAPI`): the webhooks Plivo calls, health, and the admin API. It
describes what :mod:`plivohook.app` answers, status by status; the fuzz tests hold the app to it
(schemathesis: no server error, every response conforms).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from . import __version__
from .protocol.params import message_fields, status_fields

__all__ = ["OPENAPI", "openapi_json"]

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _text(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _TEXT}
    if headers:
        response["headers"] = headers
    return response


def _json(description: str, ref: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}
_NO_STORE = {"Cache-Control": {"description": "Always `no-store`.", "schema": {"type": "string"}}}

# -- the webhooks -------------------------------------------------------------------------------

_SIGNATURE_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }
    for name, description in (
        ("X-Plivo-Signature-V2", "HMAC-SHA256 (Base64) of the URL without its query + V2 nonce."),
        ("X-Plivo-Signature-Ma-V2", "The same, with the main account's token."),
        ("X-Plivo-Signature-V2-Nonce", "The nonce signed by the V2 headers."),
        (
            "X-Plivo-Signature-V3",
            "HMAC-SHA256 (Base64) of method, URL, sorted parameters and the V3 nonce; "
            "comma-separated when Plivo sends several.",
        ),
        ("X-Plivo-Signature-Ma-V3", "The same, with the main account's token."),
        ("X-Plivo-Signature-V3-Nonce", "The nonce signed by the V3 headers."),
    )
]

# The fields' names and meanings come from the parser's own specs (protocol/params.py).
_MESSAGE_FIELDS: dict[str, str] = {f.name: f.description for f in message_fields()}
_STATUS_FIELDS: dict[str, str] = {f.name: f.description for f in status_fields()}


def _form_schema(fields: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            name: {"type": "string", "description": description}
            for name, description in fields.items()
        },
        # Plivo adds fields over time; every parameter is kept as received.
        "additionalProperties": {"type": "string"},
    }


def _query_fields(fields: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "string"},
        }
        for name, description in fields.items()
    ]


def _webhook_responses(ok: str) -> dict[str, Any]:
    return {
        "200": {
            "description": ok,
            "content": {"application/xml": {"schema": {"type": "string"}}},
        },
        "400": _text(
            "Signed, but not a valid Plivo callback (kept in /api/rejections), a Content-Length "
            "that is not a number, or a client gone before its body was complete."
        ),
        "403": _text("Signature missing or wrong, or a nonce replayed with another request."),
        "405": _text(
            "Only GET and POST.",
            {"Allow": {"description": "GET, POST", "schema": {"type": "string"}}},
        ),
        "413": _text("Body larger than the limit (64 KiB by default)."),
        "415": _text("A POST body must be application/x-www-form-urlencoded."),
        "503": _text("The database could not commit in time: retry later.", _RETRY_AFTER),
    }


def _webhook(summary: str, fields: dict[str, str], ok: str, extra_query=()) -> dict[str, Any]:
    responses = _webhook_responses(ok)
    query = list(extra_query)
    return {
        "get": {
            "summary": summary + " (GET: the parameters in the query, signed there)",
            "operationId": f"{summary.split()[0].lower()}_get",
            "tags": ["webhooks"],
            "parameters": [*_SIGNATURE_HEADERS, *query, *_query_fields(fields)],
            "responses": responses,
        },
        "post": {
            "summary": summary,
            "operationId": f"{summary.split()[0].lower()}_post",
            "tags": ["webhooks"],
            "parameters": [*_SIGNATURE_HEADERS, *query],
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": _form_schema(fields)}},
            },
            "responses": responses,
        },
    }


_REPLY_TO = {
    "name": "reply_to",
    "in": "query",
    "required": False,
    "description": "The inbound MessageUUID an auto-reply answered (set by plivohook itself).",
    "schema": {"type": "string"},
}

# -- the admin API ------------------------------------------------------------------------------

_ADMIN_ERRORS = {
    "401": _json(
        "Missing or wrong bearer token.",
        "Error",
        {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"},
            **_NO_STORE,
        },
    ),
    "404": _json("The API is disabled (no --admin-token), or no such message.", "Error"),
    "503": _json("The database is unavailable.", "Error"),
}
_PAGE_PARAMETERS = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Page size.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The next_cursor of the previous page.",
        "schema": {"type": "string"},
    },
]
_UUID_PARAMETER = {
    "name": "message_uuid",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
}
_PARAMS_OBJECT = {
    "type": "object",
    "description": "Every parameter as received; a repeated one as a list of its values.",
    "additionalProperties": {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    },
}


def _admin(
    summary: str, operation_id: str, ok: dict[str, Any], parameters=(), method: str = "get"
) -> dict[str, Any]:
    return {
        method: {
            "summary": summary,
            "operationId": operation_id,
            "tags": ["admin"],
            "security": [{"bearer": []}],
            "parameters": list(parameters),
            "responses": {"200": ok, **_ADMIN_ERRORS},
        }
    }


_NUMBER_PARAMETERS = [
    {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    }
    for name, description in (
        ("to", "Our number (as Plivo writes it; a leading + is dropped)."),
        ("from", "The sender's number."),
    )
]


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "database"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "database": {"type": "string"},
            "outbox": {
                "type": ["object", "null"],
                "description": "The events waiting for delivery (null if they cannot be"
                " counted now).",
                "required": ["pending", "dead", "oldest_pending_age_seconds"],
                "properties": {
                    "pending": {"type": "integer", "minimum": 0},
                    "dead": {"type": "integer", "minimum": 0},
                    "oldest_pending_age_seconds": {
                        "type": ["number", "null"],
                        "minimum": 0,
                        "description": "Seconds since the oldest pending event was stored.",
                    },
                },
            },
            "rules": {
                "type": "object",
                "description": "With --rules: whether the rules in force are the file on disk.",
                "required": ["running", "on_disk", "ok", "error"],
                "properties": {
                    "running": {
                        **_NULLABLE_STRING,
                        "description": "SHA-256 of the rules in force.",
                    },
                    "on_disk": {**_NULLABLE_STRING, "description": "SHA-256 of the file now."},
                    "ok": {"type": "boolean"},
                    "error": {**_NULLABLE_STRING, "description": "Why not (a failed reload)."},
                },
            },
        },
    },
    "Delivery": {
        "type": "object",
        "description": "One event for one destination (forwarding).",
        "required": [
            "id",
            "event_id",
            "event_type",
            "destination",
            "message_uuid",
            "state",
            "attempts",
            "created_at",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "delivered_at",
        ],
        "properties": {
            "id": {"type": "integer"},
            "event_id": {"type": "string", "description": "The webhook-id / Nats-Msg-Id."},
            "event_type": {"type": "string", "enum": ["message.received", "message.status"]},
            "destination": {"type": "string"},
            "message_uuid": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "delivered", "dead"]},
            "attempts": {"type": "integer", "minimum": 0},
            "created_at": {"type": "string", "format": "date-time"},
            "next_attempt_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When it is tried next (pending only).",
            },
            "last_status_code": {"type": ["integer", "null"]},
            "last_error": _NULLABLE_STRING,
            "delivered_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "DeliveryPage": {
        "type": "object",
        "required": ["deliveries", "next_cursor"],
        "properties": {
            "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}},
            "next_cursor": _NULLABLE_STRING,
        },
    },
    "Media": {
        "type": "object",
        "required": ["url"],
        "properties": {"url": {"type": "string"}, "content_type": _NULLABLE_STRING},
    },
    "Message": {
        "type": "object",
        "required": [
            "message_uuid",
            "from",
            "to",
            "type",
            "text",
            "media",
            "params",
            "method",
            "received_at",
            "reply",
            "signature_scheme",
            "status",
            "conflicting_duplicates",
            "reply_source",
            "handler_error",
        ],
        "properties": {
            "message_uuid": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "type": {"type": "string"},
            "text": {"type": "string"},
            "media": {"type": "array", "items": {"$ref": "#/components/schemas/Media"}},
            "params": _PARAMS_OBJECT,
            "method": {"type": "string", "enum": ["GET", "POST"]},
            "received_at": {"type": "string", "format": "date-time"},
            "reply": {**_NULLABLE_STRING, "description": "The Message XML answered."},
            "signature_scheme": {
                "type": "string",
                "enum": ["v2", "ma-v2", "v3", "ma-v3", "none"],
            },
            "status": {
                **_NULLABLE_STRING,
                "description": "The latest delivery status of our auto-reply, if any.",
            },
            "conflicting_duplicates": {
                "type": "integer",
                "minimum": 0,
                "description": "How many times this MessageUUID arrived again with another"
                " text (the first text is kept); 0 normally.",
            },
            "reply_source": {
                **_NULLABLE_STRING,
                "description": "Where the reply came from: 'rule N', 'default',"
                " 'compliance:stop', 'compliance:start', 'compliance:help', 'opted-out' (the"
                " sender opted out: no reply), 'none', 'handler', 'handler-error',"
                " 'handler-pending'; null for messages from before replies.",
            },
            "handler_error": {
                **_NULLABLE_STRING,
                "description": "Why the handler gave no answer (it raised or timed out).",
            },
        },
    },
    "OptOut": {
        "type": "object",
        "required": ["to", "from", "opted_out_at", "message_uuid"],
        "properties": {
            "to": {"type": "string", "description": "Our number the sender opted out of."},
            "from": {"type": "string", "description": "The sender."},
            "opted_out_at": {"type": "string", "format": "date-time"},
            "message_uuid": {
                **_NULLABLE_STRING,
                "description": "The STOP message; null when added by the API or the CLI.",
            },
        },
    },
    "OptOutPage": {
        "type": "object",
        "required": ["optouts", "next_cursor"],
        "properties": {
            "optouts": {"type": "array", "items": {"$ref": "#/components/schemas/OptOut"}},
            "next_cursor": _NULLABLE_STRING,
        },
    },
    "OptOutChange": {
        "type": "object",
        "required": ["to", "from", "opted_out"],
        "properties": {
            "to": {"type": "string"},
            "from": {"type": "string"},
            "opted_out": {"type": "boolean", "description": "The pair's state now."},
        },
    },
    "MessagePage": {
        "type": "object",
        "required": ["messages", "next_cursor"],
        "properties": {
            "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
            "next_cursor": _NULLABLE_STRING,
        },
    },
    "Status": {
        "type": "object",
        "required": [
            "message_uuid",
            "status",
            "sequence",
            "parent_message_uuid",
            "error_code",
            "reply_to",
            "params",
            "received_at",
            "signature_scheme",
        ],
        "properties": {
            "message_uuid": {"type": "string"},
            "status": {"type": "string"},
            "sequence": {"type": ["integer", "null"]},
            "parent_message_uuid": _NULLABLE_STRING,
            "error_code": _NULLABLE_STRING,
            "reply_to": _NULLABLE_STRING,
            "params": _PARAMS_OBJECT,
            "received_at": {"type": "string", "format": "date-time"},
            "signature_scheme": {"type": "string"},
        },
    },
    "StatusHistory": {
        "type": "object",
        "required": ["message_uuid", "status", "statuses"],
        "properties": {
            "message_uuid": {"type": "string"},
            "status": {**_NULLABLE_STRING, "description": "The latest status, if any."},
            "statuses": {"type": "array", "items": {"$ref": "#/components/schemas/Status"}},
        },
    },
    "Rejection": {
        "type": "object",
        "required": [
            "id",
            "method",
            "path",
            "query",
            "headers",
            "body",
            "body_base64",
            "reason",
            "received_at",
            "signature_scheme",
        ],
        "properties": {
            "id": {"type": "integer"},
            "method": {"type": "string"},
            "path": {"type": "string"},
            "query": {"type": "string"},
            "headers": {
                "type": "array",
                "description": "Header name and value pairs; credentials removed.",
                "items": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 2,
                    "maxItems": 2,
                },
            },
            "body": {"type": "string", "description": "The body as UTF-8 (U+FFFD if not)."},
            "body_base64": {"type": "string", "description": "The body's exact bytes."},
            "reason": {"type": "string"},
            "received_at": {"type": "string", "format": "date-time"},
            "signature_scheme": {"type": "string"},
        },
    },
    "RejectionPage": {
        "type": "object",
        "required": ["rejections", "next_cursor"],
        "properties": {
            "rejections": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Rejection"},
            },
            "next_cursor": _NULLABLE_STRING,
        },
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "plivohook",
        "version": __version__,
        "description": (
            "Receives Plivo's SMS/MMS webhooks: verifies the signature, commits each message "
            "exactly once per MessageUUID, then answers Message XML. 200 means committed; 503 "
            "asks Plivo to retry. The admin API reads what was kept."
        ),
    },
    "tags": [
        {"name": "webhooks", "description": "Called by Plivo; signed with your auth token."},
        {
            "name": "admin",
            "description": "Needs the bearer token (--admin-token); reads, and one retry.",
        },
        {"name": "service", "description": "Health and this description."},
    ],
    "paths": {
        "/plivo/message": _webhook(
            "Message received (an inbound SMS/MMS)",
            _MESSAGE_FIELDS,
            "Committed (or already stored): the Message XML to send back, or <Response/>.",
        ),
        "/plivo/status": _webhook(
            "Status of an outbound message (delivery report)",
            _STATUS_FIELDS,
            "Committed (or already stored): an empty <Response/>.",
            extra_query=[_REPLY_TO],
        ),
        "/healthz": {
            "get": {
                "summary": "Whether the database answers",
                "operationId": "healthz",
                "tags": ["service"],
                "responses": {
                    "200": _json("The database answers.", "Health"),
                    "503": _json("The database does not answer within 2 s.", "Health"),
                },
            }
        },
        "/api/messages": _admin(
            "Inbound messages, newest first",
            "list_messages",
            _json("A page of messages.", "MessagePage", _NO_STORE),
            [
                *_PAGE_PARAMETERS,
                {"name": "from", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "to", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "q",
                    "in": "query",
                    "required": False,
                    "description": "Text containing this, case-insensitive.",
                    "schema": {"type": "string"},
                },
            ],
        ),
        "/api/messages/{message_uuid}": _admin(
            "One inbound message",
            "get_message",
            _json("The message.", "Message", _NO_STORE),
            [_UUID_PARAMETER],
        ),
        "/api/statuses/{message_uuid}": _admin(
            "The delivery history of an outbound message (and of its parts)",
            "get_statuses",
            _json("The history, in Sequence order (empty if none).", "StatusHistory", _NO_STORE),
            [_UUID_PARAMETER],
        ),
        "/api/rejections": _admin(
            "Signed requests that could not be parsed, newest first",
            "list_rejections",
            _json("A page of rejections.", "RejectionPage", _NO_STORE),
            _PAGE_PARAMETERS,
        ),
        "/api/deliveries": _admin(
            "Forwarded events, one per destination, newest first",
            "list_deliveries",
            _json("A page of deliveries.", "DeliveryPage", _NO_STORE),
            [
                *_PAGE_PARAMETERS,
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["pending", "delivered", "dead"]},
                },
                {
                    "name": "message_uuid",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                },
                {
                    "name": "destination",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ],
        ),
        "/api/deliveries/{delivery_id}/retry": {
            "post": {
                "summary": "Make a dead or pending event due now",
                "operationId": "retry_delivery",
                "tags": ["admin"],
                "security": [{"bearer": []}],
                "parameters": [
                    {
                        "name": "delivery_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[^/]+$"},
                    }
                ],
                "responses": {
                    "200": _json("The delivery, pending and due now.", "Delivery", _NO_STORE),
                    "409": _json("Already delivered.", "Error"),
                    **_ADMIN_ERRORS,
                },
            }
        },
        "/api/optouts": _admin(
            "Senders who opted out (STOP) of one of our numbers, newest first",
            "list_optouts",
            _json("A page of opt-outs.", "OptOutPage", _NO_STORE),
            [
                *_PAGE_PARAMETERS,
                {"name": "from", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "to", "in": "query", "required": False, "schema": {"type": "string"}},
            ],
        ),
        "/api/optouts/{to}/{from}": {
            **_admin(
                "Record that a sender opted out of our number (no rule, default or handler "
                "reply reaches them until they send START or the opt-out is removed)",
                "add_optout",
                _json("Was already opted out.", "OptOutChange", _NO_STORE),
                _NUMBER_PARAMETERS,
                method="put",
            ),
            **_admin(
                "Remove an opt-out",
                "remove_optout",
                _json("Removed.", "OptOutChange", _NO_STORE),
                _NUMBER_PARAMETERS,
                method="delete",
            ),
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "description": (
                    'Every worker\'s figures added up (README, "Metrics and logs"). Needs the '
                    "admin token as a bearer token, unless the server runs with --metrics-open."
                ),
                "operationId": "metrics",
                "tags": ["service"],
                "security": [{"bearer": []}],
                "responses": {
                    "200": _text("The metrics, in Prometheus's text format.", _NO_STORE),
                    "401": _ADMIN_ERRORS["401"],
                    "404": _json(
                        "No --admin-token configured (and no --metrics-open): /metrics is off.",
                        "Error",
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "operationId": "openapi",
                "tags": ["service"],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The --admin-token (PLIVOHOOK_ADMIN_TOKEN), at least 16 chars.",
            }
        },
    },
}
# The 400 of the admin API: a bad limit or cursor.
for _path in ("/api/messages", "/api/rejections", "/api/optouts", "/api/deliveries"):
    OPENAPI["paths"][_path]["get"]["responses"]["400"] = _json(
        "A bad limit, cursor, state or number.", "Error"
    )
_OPTOUT = OPENAPI["paths"]["/api/optouts/{to}/{from}"]
_OPTOUT["put"]["responses"]["201"] = _json("Recorded.", "OptOutChange", _NO_STORE)
for _method in ("put", "delete"):
    _OPTOUT[_method]["responses"]["400"] = _json("A number that is not one.", "Error")

_BODY = orjson.dumps(OPENAPI)


async def openapi_json(_request: Request) -> Response:
    """The ``/openapi.json`` endpoint."""
    return Response(_BODY, media_type="application/json")
