"""Typed, immutable models of the parameters Plivo sends to a messaging webhook.

Two kinds of request reach a receiver (shared/reference/plivo-protocol.md, sections 4 and 5):

* an inbound SMS/MMS/WhatsApp message, POSTed to the number's ``message_url`` (or sent as a GET
  query): ``MessageUUID``, ``From``, ``To``, ``Type``, ``Text`` (SMS) or ``Body`` (MMS), ``Units``,
  ``TotalRate``, ``TotalAmount``, ``MessageIntent``, ``PowerpackUUID``, ``MediaCount``,
  ``Media<n>`` (numbered from 0 or from 1, depending on which document you believe),
  ``ErrorCode`` and, for WhatsApp, ``ContentType`` and ``MimeType``;
* a delivery-status callback for an outbound message, sent to its ``url``/``callbackUrl`` on every
  status change: ``MessageUUID``, ``Status``, ``To``, ``From``, ``Type``, ``Units``, ``TotalRate``,
  ``TotalAmount``, ``MCC``, ``MNC``, ``ErrorCode``, ``ParentMessageUUID``, ``PartInfo``,
  ``Sequence``, the four ``...Time`` fields, ``PowerpackUUID`` and ``requester_ip``.

Every value arrives as a string. Which optional fields are present depends on the number and the
message type, and Plivo adds fields over time, so absent fields are ``None``, empty ones too, and
anything unrecognised is kept verbatim in ``extra``. ``params`` always holds the request exactly as
received: the signature covers every field, so a verifier or a store needs all of them.

Pure functions, no I/O. This runs once per request on the hot path, hence the dict dispatch and the
precompiled patterns instead of a validation library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from .form import FormPairs

__all__ = [
    "FAILURE_STATUSES",
    "FINAL_STATUSES",
    "DeliveryStatus",
    "FieldDoc",
    "InboundMessage",
    "Media",
    "ParamsError",
    "message_fields",
    "parse_message",
    "parse_status",
    "status_fields",
]

Extra = Mapping[str, str | tuple[str, ...]]
Pairs = tuple[tuple[str, str], ...]
RawParams = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]

# `failed` is Plivo's own error before any carrier saw the message; `undelivered` is the carrier's
# verdict. Both are failures, but only after `failed` can a resend not reach the handset twice.
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "read", "rejected"})
FAILURE_STATUSES = frozenset({"failed", "undelivered"})

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Lenient on purpose: From may be an alphanumeric sender id, and Plivo's exact number format is
# unconfirmed. Only what would break logs or storage is refused (C0/C1 controls, length).
_ADDRESS = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,64}")
# ASCII digits only: int() would also take "١٢", "1_000" and " 1 ". 18 digits fit an int64.
_COUNT = re.compile(r"[0-9]{1,18}")
_NEGATIVE = re.compile(r"-[0-9]+")
# No exponent, NaN or Infinity, which Decimal() would otherwise accept.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?")
_URL = re.compile(
    r"(?i:https?)://(?:[^\s\x00-\x1f\x7f\ud800-\udfff/?#@]*@)?"
    r"(?:\[[0-9A-Fa-f:.]+\]|[^\s\x00-\x1f\x7f\ud800-\udfff/?#@:\[\]]+)(?::[0-9]{0,5})?"
    r"(?:[/?#][^\s\x00-\x1f\x7f\ud800-\udfff]*)?"
)
_MIME = re.compile(
    r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+"
    r"(?:\s*;[^\x00-\x1f\x7f\ud800-\udfff]*)?"
)
# Index capped at 4 digits without leading zeros, so Media01 cannot shadow Media1 and a huge
# index cannot stand for a real attachment; such keys stay in `extra`.
_MEDIA_KEY = re.compile(r"Media(0|[1-9][0-9]{0,3})")
_MEDIA_TYPE_KEY = re.compile(r"(?:Media)?ContentType(0|[1-9][0-9]{0,3})")
_MEDIA_PREFIXES = ("Media", "ContentType")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

_EMPTY_EXTRA: Extra = MappingProxyType({})


class ParamsError(ValueError):
    """The request's parameters are not a valid Plivo callback.

    ``errors`` maps each bad parameter (by its Plivo name) to the reason; every bad field is listed,
    not only the first, so one log line tells the whole story.
    """

    errors: dict[str, str]

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{key}: {why}" for key, why in errors.items()))


@dataclass(frozen=True, slots=True)
class Media:
    """One MMS/WhatsApp attachment: ``Media<index>`` and its content type when Plivo names it."""

    index: int
    url: str
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """An inbound message as Plivo posts it to ``message_url``.

    ``type`` is ``"sms"`` when Plivo leaves it out. ``text`` is ``Text`` for SMS and ``Body`` for
    MMS. ``media`` is sorted by index whatever the numbering. ``units`` counts the SMS parts that
    Plivo has already joined into ``text``.
    """

    message_uuid: str
    from_number: str
    to_number: str
    type: str
    text: str
    media: tuple[Media, ...]
    media_count: int | None
    units: int | None
    total_rate: Decimal | None
    total_amount: Decimal | None
    message_intent: str | None
    powerpack_uuid: str | None
    error_code: str | None
    extra: Extra = field(hash=False)
    params: Pairs


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """A delivery-status callback for an outbound message.

    ``status`` runs ``queued`` -> ``sent`` -> ``delivered`` | ``undelivered``, or ``failed``;
    ``read`` for WhatsApp. Other words (``rejected`` in older docs) are accepted as they come.
    ``sequence`` orders the callbacks of one message, since they may arrive out of order. The
    times are Plivo's UTC timestamps as aware datetimes.
    """

    message_uuid: str
    status: str
    to_number: str | None
    from_number: str | None
    type: str | None
    units: int | None
    total_rate: Decimal | None
    total_amount: Decimal | None
    mcc: str | None
    mnc: str | None
    error_code: str | None
    parent_message_uuid: str | None
    part_info: str | None
    sequence: int | None
    message_time: datetime | None
    queued_time: datetime | None
    sent_time: datetime | None
    delivery_report_time: datetime | None
    powerpack_uuid: str | None
    requester_ip: str | None
    extra: Extra = field(hash=False)
    params: Pairs

    @property
    def is_final(self) -> bool:
        """Whether this status ends the message's life (on WhatsApp ``read`` may follow)."""
        return self.status in FINAL_STATUSES

    @property
    def is_failure(self) -> bool:
        """``failed`` (Plivo's side) or ``undelivered`` (the carrier's); see ``status`` to tell."""
        return self.status in FAILURE_STATUSES


# -- field parsers: value (non-empty str) -> parsed value, or _Invalid(reason) ------------------
# Each refuses NUL and lone surrogates, by its pattern or by _checked: they would break storage
# and re-encoding downstream.


class _Invalid(Exception):
    pass


def _shown(value: str) -> str:
    # Values come from the network: keep error messages bounded.
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _text(value: str) -> str:
    _checked(value)
    return value


def _uuid(value: str) -> str:
    if _UUID.fullmatch(value) is None:
        raise _Invalid(f"not a UUID: {_shown(value)}")
    return value


def _address(value: str) -> str:
    if _ADDRESS.fullmatch(value) is None:
        _checked(value)
        if len(value) > 64:
            raise _Invalid(f"longer than 64 characters: {_shown(value)}")
        raise _Invalid(f"contains a control character: {_shown(value)}")
    return value


def _count(value: str) -> int:
    if _COUNT.fullmatch(value) is None:
        if _NEGATIVE.fullmatch(value) is not None:
            raise _Invalid(f"negative: {_shown(value)}")
        if value.isascii() and value.isdigit():
            raise _Invalid(f"too large: {_shown(value)}")
        raise _Invalid(f"not an integer: {_shown(value)}")
    return int(value)


def _decimal(value: str) -> Decimal:
    if _DECIMAL.fullmatch(value) is None:
        raise _Invalid(f"not a decimal: {_shown(value)}")
    return Decimal(value)


def _word(value: str) -> str:
    # Checked before lower-casing: str.lower() maps some non-ASCII letters (the Kelvin sign) to
    # ASCII, and a status word must be what Plivo wrote.
    if _WORD.fullmatch(value) is None:
        raise _Invalid(f"not a plain word: {_shown(value)}")
    return value.lower()


def _time(value: str) -> datetime:
    # The pattern pins Plivo's one format (fromisoformat alone takes many); fromisoformat is the
    # fast C parser and the appended offset makes the result aware without a second object.
    if _TIME.fullmatch(value) is None:
        raise _Invalid(f"not a 'YYYY-mm-dd HH:MM:SS[.ffffff]' time: {_shown(value)}")
    try:
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:
        raise _Invalid(f"not a valid time: {_shown(value)}") from None


def _url(value: str) -> str:
    if _URL.fullmatch(value) is None:
        _checked(value)
        raise _Invalid(f"not an absolute http(s) URL: {_shown(value)}")
    return value


def _mime(value: str) -> str:
    if _MIME.fullmatch(value) is None:
        _checked(value)
        raise _Invalid(f"not a MIME type: {_shown(value)}")
    return value


def _checked(value: str) -> None:
    # Lone surrogates come from a surrogateescape decode of bytes that were not UTF-8.
    if "\x00" in value:
        raise _Invalid("contains NUL")
    if not value.isascii() and _SURROGATE.search(value) is not None:
        raise _Invalid("is not valid UTF-8 (the body must be UTF-8 form encoding)")


# (Plivo name, attribute, parser, required), in the order errors are reported.
_Spec = tuple[tuple[str, str, Any, bool], ...]

_MESSAGE_SPEC: _Spec = (
    ("MessageUUID", "message_uuid", _uuid, True),
    ("From", "from_number", _address, True),
    ("To", "to_number", _address, True),
    ("Type", "type", _word, False),
    ("Text", "text", _text, False),
    ("Body", "body", _text, False),
    ("MediaCount", "media_count", _count, False),
    ("Units", "units", _count, False),
    ("TotalRate", "total_rate", _decimal, False),
    ("TotalAmount", "total_amount", _decimal, False),
    ("MessageIntent", "message_intent", _text, False),
    ("PowerpackUUID", "powerpack_uuid", _text, False),
    ("ErrorCode", "error_code", _text, False),
)

_STATUS_SPEC: _Spec = (
    ("MessageUUID", "message_uuid", _uuid, True),
    ("Status", "status", _word, True),
    ("To", "to_number", _address, False),
    ("From", "from_number", _address, False),
    ("Type", "type", _word, False),
    ("Units", "units", _count, False),
    ("TotalRate", "total_rate", _decimal, False),
    ("TotalAmount", "total_amount", _decimal, False),
    ("MCC", "mcc", _text, False),
    ("MNC", "mnc", _text, False),
    ("ErrorCode", "error_code", _text, False),
    ("ParentMessageUUID", "parent_message_uuid", _uuid, False),
    ("PartInfo", "part_info", _text, False),
    ("Sequence", "sequence", _count, False),
    ("MessageTime", "message_time", _time, False),
    ("QueuedTime", "queued_time", _time, False),
    ("SentTime", "sent_time", _time, False),
    ("DeliveryReportTime", "delivery_report_time", _time, False),
    ("PowerpackUUID", "powerpack_uuid", _text, False),
    ("requester_ip", "requester_ip", _text, False),
)

# What each field means, for people: the OpenAPI document and the README are built from these,
# so the parser's specs above and the documents cannot drift (tests/test_openapi.py).
_MESSAGE_DOCS: dict[str, str] = {
    "MessageUUID": "Plivo's identifier of the message: stored once, whatever the retries.",
    "From": "The sender: a phone number or an alphanumeric sender id.",
    "To": "Your Plivo number.",
    "Type": "sms, mms or whatsapp.",
    "Text": "The text of an SMS.",
    "Body": "The text of an MMS.",
    "MediaCount": "Number of attachments.",
    "Units": "Billing units.",
    "TotalRate": "Rate per unit.",
    "TotalAmount": "Total amount charged.",
    "MessageIntent": "The message's intent, if any (optout, optin, help).",
    "PowerpackUUID": "The Powerpack that received it, if any.",
    "ErrorCode": "Plivo's error code, if any.",
    # Not in the spec above: numbered, or WhatsApp's, and kept verbatim.
    "Media0": "URL of an attachment (Media0, Media1, ...).",
    "MediaContentType0": "Content type of an attachment.",
    "ContentType": "WhatsApp content type.",
    "MimeType": "WhatsApp media type.",
}
_STATUS_DOCS: dict[str, str] = {
    "MessageUUID": "The outbound message this report is about.",
    "Status": "queued, sent, delivered, undelivered, failed, read, rejected, ...",
    "To": "The recipient.",
    "From": "The sender.",
    "Type": "sms, mms or whatsapp.",
    "Units": "Billing units.",
    "TotalRate": "Rate per unit.",
    "TotalAmount": "Total amount charged.",
    "MCC": "Mobile country code.",
    "MNC": "Mobile network code.",
    "ErrorCode": "Carrier or Plivo error code for a failure.",
    "ParentMessageUUID": "The first part's MessageUUID for a multi-part message.",
    "PartInfo": "Which part of a multi-part message.",
    "Sequence": "Order of this report among the message's reports.",
    "MessageTime": "YYYY-mm-dd HH:MM:SS (UTC).",
    "QueuedTime": "YYYY-mm-dd HH:MM:SS (UTC).",
    "SentTime": "YYYY-mm-dd HH:MM:SS (UTC).",
    "DeliveryReportTime": "YYYY-mm-dd HH:MM:SS (UTC).",
    "PowerpackUUID": "The Powerpack used, if any.",
    "requester_ip": "Where Plivo received the send request from.",
}


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """One parameter Plivo sends, as documented: its name, meaning, and whether it must come."""

    name: str
    description: str
    required: bool = False


def _docs(spec: _Spec, docs: Mapping[str, str]) -> tuple[FieldDoc, ...]:
    parsed = tuple(FieldDoc(name, docs[name], required) for name, _a, _p, required in spec)
    known = {f.name for f in parsed}
    return parsed + tuple(FieldDoc(name, text) for name, text in docs.items() if name not in known)


def message_fields() -> tuple[FieldDoc, ...]:
    """Every field of an inbound message the parser knows, in its order, then the kept-verbatim."""
    return _docs(_MESSAGE_SPEC, _MESSAGE_DOCS)


def status_fields() -> tuple[FieldDoc, ...]:
    """Every field of a delivery report the parser knows, in its order."""
    return _docs(_STATUS_SPEC, _STATUS_DOCS)


_MESSAGE_KEYS = frozenset(spec[0] for spec in _MESSAGE_SPEC)
_STATUS_KEYS = frozenset(spec[0] for spec in _STATUS_SPEC)


# -- scanning -----------------------------------------------------------------------------------


def _pairs(params: RawParams) -> Pairs:
    if type(params) is FormPairs:
        return params  # already str pairs (plivohook.protocol.form)
    if isinstance(params, Mapping):
        multi_items = getattr(params, "multi_items", None)
        if multi_items is not None:
            # Starlette's FormData/QueryParams: items() would keep one value per key.
            result: Pairs = tuple(multi_items())
        else:
            pairs: list[tuple[str, str]] = []
            for key, value in params.items():
                if isinstance(value, str):
                    pairs.append((key, value))
                else:
                    pairs.extend((key, item) for item in value)
            result = tuple(pairs)
    else:
        result = params if isinstance(params, tuple) else tuple(params)
    for pair in result:
        if (
            pair.__class__ is not tuple
            or len(pair) != 2
            or pair[0].__class__ is not str
            or pair[1].__class__ is not str
        ):
            return _strict_pairs(result)
    return result


def _strict_pairs(items: Iterable[Any]) -> Pairs:
    pairs = []
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"parameter names and values must be str, not {key!r}: {value!r}")
        pairs.append((key, value))
    return tuple(pairs)


def _conflict(conflicts: set[str] | None, key: str) -> set[str]:
    if conflicts is None:
        return {key}
    conflicts.add(key)
    return conflicts


def _add_extra(extra: dict[str, str | tuple[str, ...]], key: str, value: str) -> None:
    previous = extra.get(key)
    if previous is None:
        extra[key] = value
    elif isinstance(previous, tuple):
        extra[key] = (*previous, value)
    else:
        extra[key] = (previous, value)


def _parse_value(key: str, value: str, parse: Any, errors: dict[str, str]) -> Any:
    try:
        return parse(value)
    except _Invalid as exc:
        errors[key] = str(exc)
        return None


def _known_fields(
    spec: _Spec, known: dict[str, str], conflicts: set[str] | None, errors: dict[str, str]
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, attr, parse, required in spec:
        value = known.get(key)
        if value and (conflicts is None or key not in conflicts):
            try:
                fields[attr] = parse(value)
                continue
            except _Invalid as exc:
                errors[key] = str(exc)
        elif conflicts is not None and key in conflicts:
            errors[key] = "repeated with different values"
        elif required:
            errors[key] = "missing" if value is None else "empty"
        fields[attr] = None
    return fields


def _media(
    urls: dict[int, str],
    types: dict[str, str],
    conflicts: set[str] | None,
    errors: dict[str, str],
) -> tuple[tuple[Media, ...], set[str]]:
    """The attachments, sorted by index, and the content-type keys that were used for them."""
    items: list[Media] = []
    used: set[str] = set()
    for index in sorted(urls):
        key = f"Media{index}"
        value = urls[index]
        if conflicts is not None and key in conflicts:
            errors[key] = "repeated with different values"
            continue
        url = _parse_value(key, value, _url, errors) if value else None
        content_type = None
        for type_key in (f"MediaContentType{index}", f"ContentType{index}"):
            type_value = types.get(type_key)
            if type_value is not None:
                used.add(type_key)
                if conflicts is not None and type_key in conflicts:
                    errors[type_key] = "repeated with different values"
                elif type_value:
                    content_type = _parse_value(type_key, type_value, _mime, errors)
                break
        if url is not None:
            items.append(Media(index, url, content_type))
    # WhatsApp gives the MIME type of its one attachment without an index.
    mime_type = types.get("MimeType")
    if mime_type is not None and len(items) == 1 and items[0].content_type is None:
        used.add("MimeType")
        if conflicts is not None and "MimeType" in conflicts:
            errors["MimeType"] = "repeated with different values"
        elif mime_type:
            only = items[0]
            items[0] = Media(
                only.index, only.url, _parse_value("MimeType", mime_type, _mime, errors)
            )
    return tuple(items), used


# -- public -------------------------------------------------------------------------------------


def parse_message(params: RawParams) -> InboundMessage:
    """Parse the parameters of an inbound message (``message_url``).

    ``params`` is a sequence of ``(name, value)`` pairs, repeats allowed (as from
    :func:`urllib.parse.parse_qsl`), or a mapping whose values are strings or lists of strings. A
    Starlette ``FormData`` is read with ``multi_items()``; pass Werkzeug's ``items(multi=True)``.
    Raises :class:`ParamsError` listing every bad field.
    """
    pairs = _pairs(params)
    known: dict[str, str] = {}
    conflicts: set[str] | None = None
    extra: dict[str, str | tuple[str, ...]] = {}
    urls: dict[int, str] = {}
    types: dict[str, str] = {}  # MediaContentType<n>, ContentType<n>, MimeType
    for key, value in pairs:
        if key in _MESSAGE_KEYS:
            previous = known.setdefault(key, value)
            if previous is not value and previous != value:
                conflicts = _conflict(conflicts, key)
        elif key.startswith(_MEDIA_PREFIXES) and ((match := _MEDIA_KEY.fullmatch(key)) is not None):
            previous = urls.setdefault(int(match.group(1)), value)
            if previous is not value and previous != value:
                conflicts = _conflict(conflicts, key)
        elif key == "MimeType" or (
            key.startswith(_MEDIA_PREFIXES) and _MEDIA_TYPE_KEY.fullmatch(key) is not None
        ):
            previous = types.setdefault(key, value)
            if previous is not value and previous != value:
                conflicts = _conflict(conflicts, key)
        else:
            _add_extra(extra, key, value)

    errors: dict[str, str] = {}
    fields = _known_fields(_MESSAGE_SPEC, known, conflicts, errors)
    media: tuple[Media, ...] = ()
    if urls:
        media, used = _media(urls, types, conflicts, errors)
    else:
        used = set()
    if errors:
        raise ParamsError(errors)
    if len(used) != len(types):
        # A content type with no attachment to describe is kept like any unknown parameter.
        for key, value in pairs:
            if key in types and key not in used:
                _add_extra(extra, key, value)

    text = fields.pop("text")
    body = fields.pop("body")
    if text and body and text != body:
        # Text is the SMS field and wins; Body is kept rather than silently dropped.
        for key, value in pairs:
            if key == "Body":
                _add_extra(extra, key, value)
    fields["text"] = text or body or ""
    fields["type"] = fields["type"] or "sms"
    return InboundMessage(
        media=media,
        extra=MappingProxyType(extra) if extra else _EMPTY_EXTRA,
        params=pairs,
        **fields,
    )


def parse_status(params: RawParams) -> DeliveryStatus:
    """Parse the parameters of a delivery-status callback (``url`` / ``callbackUrl``).

    Same input shapes as :func:`parse_message`. Raises :class:`ParamsError` listing every bad field.
    """
    pairs = _pairs(params)
    known: dict[str, str] = {}
    conflicts: set[str] | None = None
    extra: dict[str, str | tuple[str, ...]] = {}
    for key, value in pairs:
        if key in _STATUS_KEYS:
            previous = known.setdefault(key, value)
            if previous is not value and previous != value:
                conflicts = _conflict(conflicts, key)
        else:
            _add_extra(extra, key, value)
    errors: dict[str, str] = {}
    fields = _known_fields(_STATUS_SPEC, known, conflicts, errors)
    if errors:
        raise ParamsError(errors)
    return DeliveryStatus(
        extra=MappingProxyType(extra) if extra else _EMPTY_EXTRA,
        params=pairs,
        **fields,
    )
