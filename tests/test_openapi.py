"""The hand-written OpenAPI document cannot drift from the typed views or the parser's specs."""

from __future__ import annotations

import types
import typing
from datetime import datetime

import pytest

from plivohook.openapi import OPENAPI
from plivohook.protocol import params
from plivohook.store.reads import (
    DeliveryView,
    MessageView,
    OptOutView,
    RejectionView,
    StatusView,
)

SCHEMAS = OPENAPI["components"]["schemas"]


def _json_types(annotation) -> set[str]:
    """The JSON types a Python annotation of a view allows."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return set().union(*(_json_types(arg) for arg in typing.get_args(annotation)))
    origin = typing.get_origin(annotation) or annotation
    return {
        str: {"string"},
        int: {"integer"},
        datetime: {"string"},  # RFC 3339
        list: {"array"},
        dict: {"object"},
        type(None): {"null"},
    }[origin]


def _schema_types(schema) -> set[str]:
    kind = schema.get("type")
    if kind is None:
        return {"object"} if "$ref" in schema else set()
    return set(kind) if isinstance(kind, list) else {kind}


# The API shows ``params`` as an object (repeated keys as lists), the views keep pairs.
SHOWN_AS = {"params": {"object"}}


@pytest.mark.parametrize(
    ("schema", "view"),
    [
        ("Message", MessageView),
        ("Status", StatusView),
        ("Rejection", RejectionView),
        ("Delivery", DeliveryView),
        ("OptOut", OptOutView),
    ],
)
def test_each_schema_has_exactly_the_fields_of_its_view_with_their_types(schema, view):
    document = SCHEMAS[schema]
    hints = typing.get_type_hints(view)
    assert set(document["properties"]) == set(hints)
    assert set(document["required"]) == set(view.__required_keys__)
    for name, annotation in hints.items():
        expected = SHOWN_AS.get(name) or _json_types(annotation)
        assert _schema_types(document["properties"][name]) == expected, name


def _form_properties(path: str) -> dict:
    body = OPENAPI["paths"][path]["post"]["requestBody"]["content"]
    return body["application/x-www-form-urlencoded"]["schema"]["properties"]


@pytest.mark.parametrize(
    ("path", "fields"),
    [("/plivo/message", params.message_fields()), ("/plivo/status", params.status_fields())],
)
def test_webhook_fields_are_the_parsers_own(path, fields):
    documented = _form_properties(path)
    assert list(documented) == [f.name for f in fields]
    for field in fields:
        assert documented[field.name]["description"] == field.description


def test_every_field_the_parser_knows_is_documented():
    # A field added to a parser spec without a description fails at import (KeyError); this
    # checks the other way: nothing is documented that the specs do not name, media aside.
    parsed = {spec[0] for spec in params._MESSAGE_SPEC}
    extra = {f.name for f in params.message_fields()} - parsed
    assert extra == {"Media0", "MediaContentType0", "ContentType", "MimeType"}
    assert {f.name for f in params.status_fields()} == {spec[0] for spec in params._STATUS_SPEC}
    required = {f.name for f in params.message_fields() if f.required}
    assert required == {"MessageUUID", "From", "To"}
