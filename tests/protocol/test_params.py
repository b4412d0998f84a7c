"""Parsing Plivo's inbound-message and delivery-status parameters."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plivohook.protocol.params import (
    DeliveryStatus,
    InboundMessage,
    Media,
    ParamsError,
    parse_message,
    parse_status,
)

UUID = "2f6d2f0a-5e5b-11ee-8c99-0242ac120002"
UUID2 = "7a1c3e52-9b4d-4f6e-8a2b-1c3d5e7f9a0b"

SMS = [
    ("From", "14155550100"),
    ("MessageIntent", ""),
    ("MessageUUID", UUID),
    ("PowerpackUUID", ""),
    ("Text", "Hello from a handset"),
    ("To", "14155550199"),
    ("TotalAmount", "0.00000"),
    ("TotalRate", "0.00000"),
    ("Type", "sms"),
    ("Units", "1"),
]

STATUS = [
    ("DeliveryReportTime", "2024-03-01 10:15:03.654321"),
    ("ErrorCode", "000"),
    ("From", "14155550199"),
    ("MCC", "310"),
    ("MNC", "260"),
    ("MessageTime", "2024-03-01 10:15:00.123456"),
    ("MessageUUID", UUID),
    ("ParentMessageUUID", UUID),
    ("PartInfo", "1 of 1"),
    ("PowerpackUUID", ""),
    ("QueuedTime", "2024-03-01 10:15:00.223456"),
    ("SentTime", "2024-03-01 10:15:01"),
    ("Sequence", "3"),
    ("Status", "delivered"),
    ("To", "14155550100"),
    ("TotalAmount", "0.00500"),
    ("TotalRate", "0.00500"),
    ("Type", "sms"),
    ("Units", "1"),
    ("requester_ip", "203.0.113.7"),
]


def replaced(pairs, **changes):
    """``pairs`` with the named fields changed (None removes them), order kept, new ones last."""
    out = [
        (k, changes[k]) if k in changes else (k, v)
        for k, v in pairs
        if changes.get(k, "") is not None
    ]
    present = {k for k, _ in pairs}
    out += [(k, v) for k, v in changes.items() if k not in present and v is not None]
    return out


def errors_of(parse, pairs):
    with pytest.raises(ParamsError) as info:
        parse(pairs)
    return info.value.errors, str(info.value)


# -- inbound messages ---------------------------------------------------------------------------


def test_realistic_sms():
    message = parse_message(SMS)
    assert message == InboundMessage(
        message_uuid=UUID,
        from_number="14155550100",
        to_number="14155550199",
        type="sms",
        text="Hello from a handset",
        media=(),
        media_count=None,
        units=1,
        total_rate=Decimal("0.00000"),
        total_amount=Decimal("0.00000"),
        message_intent=None,
        powerpack_uuid=None,
        error_code=None,
        extra={},
        params=tuple(SMS),
    )
    assert dict(message.extra) == {}
    hash(message)  # usable as a key despite the mapping inside


def test_type_defaults_to_sms_and_is_lower_cased():
    assert parse_message(replaced(SMS, Type=None)).type == "sms"
    assert parse_message(replaced(SMS, Type="")).type == "sms"
    assert parse_message(replaced(SMS, Type="MMS")).type == "mms"
    assert parse_message(replaced(SMS, Type="RCS")).type == "rcs"


def test_text_and_body():
    assert parse_message(replaced(SMS, Text=None)).text == ""
    mms = parse_message(replaced(SMS, Text=None, Type="mms", Body="look"))
    assert mms.text == "look"
    assert "Body" not in mms.extra
    both = parse_message(replaced(SMS, Body="other"))
    assert both.text == "Hello from a handset"
    assert both.extra["Body"] == "other"
    same = parse_message(replaced(SMS, Body="Hello from a handset"))
    assert "Body" not in same.extra


def test_unicode_text_kept_exactly():
    text = "Привет 👋 — ça va? \r\n\ttab & <tag> \x1b"
    assert parse_message(replaced(SMS, Text=text)).text == text


@pytest.mark.parametrize("first", [0, 1])
def test_mms_media_numbering(first):
    urls = [f"https://media.plivo.com/Account/MA123/Media/{n}" for n in range(3)]
    pairs = replaced(SMS, Type="mms", Text=None, Body="pics", MediaCount="3")
    # Plivo's order is not index order; index 10 sorts after 2 numerically.
    indexes = [first + 2, first, first + 1]
    pairs += [(f"Media{i}", urls[i - first]) for i in indexes]
    message = parse_message(pairs)
    assert message.type == "mms"
    assert message.media_count == 3
    assert message.media == tuple(Media(first + n, urls[n], None) for n in range(3))
    assert dict(message.extra) == {}


def test_media_indexes_sort_numerically():
    pairs = [*SMS, ("Media10", "https://m.example/10"), ("Media2", "https://m.example/2")]
    assert [m.index for m in parse_message(pairs).media] == [2, 10]


def test_media_content_types():
    pairs = [
        *SMS,
        ("Media1", "https://m.example/1"),
        ("MediaContentType1", "image/jpeg"),
        ("Media2", "https://m.example/2"),
        ("ContentType2", "video/mp4; codecs=avc1"),
        ("MediaContentType7", "image/png"),  # describes nothing: kept as unknown
    ]
    message = parse_message(pairs)
    assert message.media == (
        Media(1, "https://m.example/1", "image/jpeg"),
        Media(2, "https://m.example/2", "video/mp4; codecs=avc1"),
    )
    assert dict(message.extra) == {"MediaContentType7": "image/png"}


def test_whatsapp_fields():
    pairs = replaced(
        SMS,
        Type="whatsapp",
        Text=None,
        ContentType="media",
        MimeType="video/mp4",
        Media0="https://media.plivo.com/Account/MA123/Media/abc",
        ErrorCode="",
        ConversationID="c-1",
    )
    message = parse_message(pairs)
    assert message.type == "whatsapp"
    assert message.media == (
        Media(0, "https://media.plivo.com/Account/MA123/Media/abc", "video/mp4"),
    )
    assert dict(message.extra) == {"ContentType": "media", "ConversationID": "c-1"}
    assert message.error_code is None


def test_whatsapp_mime_type_without_media_is_kept():
    message = parse_message([*SMS, ("ContentType", "text"), ("MimeType", "text/plain")])
    assert message.media == ()
    assert dict(message.extra) == {"ContentType": "text", "MimeType": "text/plain"}


def test_mime_type_is_not_guessed_for_several_attachments():
    pairs = [*SMS, ("Media1", "https://m/1"), ("Media2", "https://m/2"), ("MimeType", "image/png")]
    message = parse_message(pairs)
    assert [m.content_type for m in message.media] == [None, None]
    assert message.extra["MimeType"] == "image/png"


def test_empty_media_value_is_no_attachment():
    assert parse_message([*SMS, ("Media1", "")]).media == ()


def test_media_like_keys_that_are_not_media_stay_extra():
    pairs = [*SMS, ("Media01", "https://m/1"), ("Media99999", "x"), ("MediaUrl", "y")]
    message = parse_message(pairs)
    assert message.media == ()
    assert dict(message.extra) == {"Media01": "https://m/1", "Media99999": "x", "MediaUrl": "y"}


def test_optional_fields_and_empty_values():
    pairs = replaced(
        SMS, MessageIntent="optout", PowerpackUUID=UUID2, ErrorCode="", MediaCount="", Units=""
    )
    message = parse_message(pairs)
    assert message.message_intent == "optout"
    assert message.powerpack_uuid == UUID2
    assert message.error_code is None
    assert message.media_count is None
    assert message.units is None


def test_alphanumeric_and_plus_senders_are_accepted():
    assert parse_message(replaced(SMS, From="ACME Bank")).from_number == "ACME Bank"
    assert parse_message(replaced(SMS, From="+4915112345678")).from_number == "+4915112345678"


def test_unknown_params_kept_verbatim():
    pairs = [*SMS, ("Foo", "1"), ("bar", ""), ("Foo", "2"), ("Foo", "2"), ("x\x00", "\ud800\x00")]
    message = parse_message(pairs)
    assert dict(message.extra) == {"Foo": ("1", "2", "2"), "bar": "", "x\x00": "\ud800\x00"}
    assert message.params == tuple(pairs)
    with pytest.raises(TypeError):
        message.extra["Foo"] = "3"  # type: ignore[index]


def test_repeated_known_field_with_same_value_is_fine():
    message = parse_message(
        [*SMS, ("Units", "1"), ("Media1", "https://m/1"), ("Media1", "https://m/1")]
    )
    assert message.units == 1
    assert len(message.media) == 1


@pytest.mark.parametrize("key", ["MessageUUID", "From", "Text", "Units", "Type"])
def test_repeated_known_field_with_other_value_is_an_error(key):
    value = {"MessageUUID": UUID2, "From": "1999", "Text": "x", "Units": "2", "Type": "mms"}[key]
    errors, text = errors_of(parse_message, [*SMS, (key, value)])
    assert errors == {key: "repeated with different values"}
    assert key in text


def test_repeated_media_with_other_value_is_an_error():
    pairs = [*SMS, ("Media1", "https://m/1"), ("Media1", "https://m/2")]
    errors, _ = errors_of(parse_message, pairs)
    assert errors == {"Media1": "repeated with different values"}


def test_missing_required_fields_are_all_named():
    errors, text = errors_of(parse_message, [("Text", "hi")])
    assert errors == {"MessageUUID": "missing", "From": "missing", "To": "missing"}
    assert text == "MessageUUID: missing; From: missing; To: missing"


def test_empty_required_fields():
    errors, _ = errors_of(parse_message, replaced(SMS, MessageUUID="", From="", To=""))
    assert errors == {"MessageUUID": "empty", "From": "empty", "To": "empty"}


def test_every_bad_field_is_reported_at_once():
    pairs = replaced(SMS, MessageUUID="nope", Units="x", TotalRate="1e5", Media1="ftp://m/1")
    errors, text = errors_of(parse_message, pairs)
    assert set(errors) == {"MessageUUID", "Units", "TotalRate", "Media1"}
    assert text.startswith("MessageUUID: not a UUID: 'nope'; ")
    assert "Units: not an integer: 'x'" in text


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("MessageUUID", "2f6d2f0a5e5b11ee8c990242ac120002", "not a UUID"),
        ("MessageUUID", "{2f6d2f0a-5e5b-11ee-8c99-0242ac120002}", "not a UUID"),
        ("MessageUUID", UUID + "0", "not a UUID"),
        ("MessageUUID", "2f6d2f0a-5e5b-11ee-8c99-0242ac12000g", "not a UUID"),
        ("From", "1" * 65, "longer than 64"),
        ("From", "1415\n5550100", "control character"),
        ("To", "1415\x7f", "control character"),
        ("To", "1415\x85", "control character"),
        ("From", "14155550100\x00", "NUL"),
        ("Text", "hi\x00", "NUL"),
        ("Text", "hi \udc80", "not valid UTF-8"),
        ("MessageIntent", "\x00", "NUL"),
        ("Units", "x", "not an integer: 'x'"),
        ("Units", "-1", "negative"),
        ("Units", "1.0", "not an integer"),
        ("Units", " 1", "not an integer"),
        ("Units", "١", "not an integer"),
        ("Units", "1_000", "not an integer"),
        ("Units", "9" * 19, "too large"),
        ("MediaCount", "two", "not an integer"),
        ("TotalRate", "abc", "not a decimal"),
        ("TotalRate", "NaN", "not a decimal"),
        ("TotalRate", "Infinity", "not a decimal"),
        ("TotalAmount", "1e-5", "not a decimal"),
        ("TotalAmount", "0,005", "not a decimal"),
        ("Type", "s m s", "not a plain word"),
        ("Type", "sms\n", "not a plain word"),
        ("Media1", "/relative/path", "absolute http(s) URL"),
        ("Media1", "ftp://media.plivo.com/x", "absolute http(s) URL"),
        ("Media1", "https://", "absolute http(s) URL"),
        ("Media1", "https://media.plivo.com/a b", "absolute http(s) URL"),
        ("Media0", "javascript:alert(1)", "absolute http(s) URL"),
    ],
)
def test_malformed_message_field(key, value, why):
    errors, text = errors_of(parse_message, replaced(SMS, **{key: value}))
    assert list(errors) == [key]
    assert why in errors[key]
    assert text.startswith(f"{key}: ")


def test_bad_media_content_type():
    pairs = [*SMS, ("Media1", "https://m/1"), ("MediaContentType1", "not a type")]
    errors, _ = errors_of(parse_message, pairs)
    assert list(errors) == ["MediaContentType1"]


def test_long_bad_values_are_shortened_in_errors():
    errors, _ = errors_of(parse_message, replaced(SMS, Units="x" * 5000))
    assert len(errors["Units"]) < 80


def test_mapping_and_pairs_give_the_same_message():
    mapping = dict(SMS)
    assert parse_message(mapping) == parse_message(SMS)
    assert parse_message(iter(SMS)) == parse_message(SMS)


def test_mapping_with_list_values():
    message = parse_message({**dict(SMS), "Foo": ["1", "2"], "Units": ["1"]})
    assert message.extra["Foo"] == ("1", "2")
    assert message.units == 1
    assert ("Foo", "1") in message.params and ("Foo", "2") in message.params
    errors, _ = errors_of(parse_message, {**dict(SMS), "Units": ["1", "2"]})
    assert errors == {"Units": "repeated with different values"}


def test_starlette_like_multi_items_keep_repeats():
    class Form(dict):
        def multi_items(self):
            return [*SMS, ("Foo", "1"), ("Foo", "2")]

    assert parse_message(Form(SMS)).extra["Foo"] == ("1", "2")


def test_list_pairs_become_tuples():
    message = parse_message([list(pair) for pair in SMS])
    assert message.params == tuple(SMS)


def test_non_string_values_are_a_type_error():
    with pytest.raises(TypeError):
        parse_message([*SMS, ("Units", 1)])


def test_parse_qsl_round_trip():
    pairs = [*SMS, ("Media1", "https://m.example/1?sig=a%2Bb&x=1")]
    parsed = parse_qsl(urlencode(pairs), keep_blank_values=True)
    message = parse_message(parsed)
    assert message.params == tuple(pairs)
    assert message.media[0].url == "https://m.example/1?sig=a%2Bb&x=1"


# -- delivery statuses --------------------------------------------------------------------------


def test_realistic_status():
    status = parse_status(STATUS)
    assert status == DeliveryStatus(
        message_uuid=UUID,
        status="delivered",
        to_number="14155550100",
        from_number="14155550199",
        type="sms",
        units=1,
        total_rate=Decimal("0.00500"),
        total_amount=Decimal("0.00500"),
        mcc="310",
        mnc="260",
        error_code="000",
        parent_message_uuid=UUID,
        part_info="1 of 1",
        sequence=3,
        message_time=datetime(2024, 3, 1, 10, 15, 0, 123456, tzinfo=UTC),
        queued_time=datetime(2024, 3, 1, 10, 15, 0, 223456, tzinfo=UTC),
        sent_time=datetime(2024, 3, 1, 10, 15, 1, tzinfo=UTC),
        delivery_report_time=datetime(2024, 3, 1, 10, 15, 3, 654321, tzinfo=UTC),
        powerpack_uuid=None,
        requester_ip="203.0.113.7",
        extra={},
        params=tuple(STATUS),
    )
    assert status.message_time is not None and status.message_time.utcoffset().total_seconds() == 0
    hash(status)


@pytest.mark.parametrize(
    ("value", "status", "final", "failure"),
    [
        ("queued", "queued", False, False),
        ("sent", "sent", False, False),
        ("delivered", "delivered", True, False),
        ("undelivered", "undelivered", True, True),
        ("failed", "failed", True, True),
        ("read", "read", True, False),
        ("rejected", "rejected", True, False),
        ("Delivered", "delivered", True, False),
        ("some_new-state", "some_new-state", False, False),
    ],
)
def test_status_values(value, status, final, failure):
    parsed = parse_status(replaced(STATUS, Status=value))
    assert parsed.status == status
    assert parsed.is_final is final
    assert parsed.is_failure is failure


def test_failed_and_undelivered_stay_apart():
    failed = parse_status(replaced(STATUS, Status="failed", ErrorCode="900"))
    undelivered = parse_status(replaced(STATUS, Status="undelivered", ErrorCode="200"))
    assert failed.status != undelivered.status
    assert (failed.error_code, undelivered.error_code) == ("900", "200")


def test_minimal_status():
    status = parse_status({"MessageUUID": UUID, "Status": "queued"})
    assert status.status == "queued"
    assert status.to_number is None and status.sequence is None and status.message_time is None
    assert status.extra == {}


def test_status_empty_optional_values_are_none():
    keys = [k for k, _ in STATUS if k not in ("MessageUUID", "Status")]
    status = parse_status(replaced(STATUS, **dict.fromkeys(keys, "")))
    for name in DeliveryStatus.__dataclass_fields__:
        if name not in ("message_uuid", "status", "extra", "params"):
            assert getattr(status, name) is None, name


def test_status_unknown_and_whatsapp_params_kept():
    pairs = [
        *STATUS,
        ("ConversationID", "abc"),
        ("ConversationOrigin", "utility"),
        ("ConversationExpirationTimestamp", "1709288100"),
        ("Media0", "https://m/1"),  # not a status field: kept as given
    ]
    status = parse_status(pairs)
    assert dict(status.extra) == {
        "ConversationID": "abc",
        "ConversationOrigin": "utility",
        "ConversationExpirationTimestamp": "1709288100",
        "Media0": "https://m/1",
    }
    assert status.params == tuple(pairs)


def test_status_missing_required_fields():
    errors, text = errors_of(parse_status, [("To", "14155550100")])
    assert errors == {"MessageUUID": "missing", "Status": "missing"}
    assert text == "MessageUUID: missing; Status: missing"


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("MessageUUID", "abc", "not a UUID"),
        ("Status", "", "empty"),
        ("Status", "not delivered", "not a plain word"),
        ("Status", "délivré", "not a plain word"),
        ("Status", "x" * 33, "not a plain word"),
        ("Status", "\u212aelvin", "not a plain word"),
        ("ParentMessageUUID", "xyz", "not a UUID"),
        ("Sequence", "-3", "negative"),
        ("Sequence", "first", "not an integer"),
        ("Units", "1.5", "not an integer"),
        ("TotalRate", "0.005USD", "not a decimal"),
        ("TotalAmount", "--1", "not a decimal"),
        ("MessageTime", "2024-03-01T10:15:00", "time"),
        ("QueuedTime", "2024-03-01 10:15:00+00:00", "time"),
        ("SentTime", "2024-13-01 10:15:00", "not a valid time"),
        ("DeliveryReportTime", "2024-03-01 10:15:00.1234567", "time"),
        ("DeliveryReportTime", "1709288100", "time"),
        ("To", "\t", "control character"),
        ("From", "x" * 65, "longer than 64"),
        ("MCC", "31\x000", "NUL"),
        ("requester_ip", "\ud800", "not valid UTF-8"),
    ],
)
def test_malformed_status_field(key, value, why):
    errors, text = errors_of(parse_status, replaced(STATUS, **{key: value}))
    assert list(errors) == [key]
    assert why in errors[key]
    assert key in text


def test_status_repeated_with_other_value():
    errors, _ = errors_of(parse_status, [*STATUS, ("Status", "sent")])
    assert errors == {"Status": "repeated with different values"}


def test_status_times_with_short_fractions():
    status = parse_status(replaced(STATUS, MessageTime="2024-03-01 10:15:00.5"))
    assert status.message_time == datetime(2024, 3, 1, 10, 15, 0, 500000, tzinfo=UTC)


def test_models_are_immutable():
    message = parse_message(SMS)
    with pytest.raises(AttributeError):
        message.text = "changed"  # type: ignore[misc]


# -- properties ---------------------------------------------------------------------------------

KNOWN_MESSAGE_KEYS = {k for k, _ in SMS} | {"Body", "MediaCount", "ErrorCode", "MimeType"}

text_params = st.dictionaries(
    st.text(min_size=1, max_size=20).filter(
        lambda k: (
            k not in KNOWN_MESSAGE_KEYS
            and not k.startswith(("Media", "ContentType", "MediaContentType"))
        )
    ),
    st.text(max_size=40),
    max_size=12,
)


@given(extra=text_params, text=st.text(max_size=200).filter(lambda t: "\x00" not in t))
def test_any_unknown_params_parse_and_round_trip(extra, text):
    pairs = [("MessageUUID", UUID), ("From", "14155550100"), ("To", "14155550199"), ("Text", text)]
    pairs += list(extra.items())
    message = parse_message(pairs)
    assert message.params == tuple(pairs)
    assert dict(message.extra) == extra
    assert message.text == text
    assert parse_message(dict(pairs)) == message


@given(extra=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=12))
def test_status_with_any_params_round_trips(extra):
    extra = {k: v for k, v in extra.items() if k not in ("MessageUUID", "Status")}
    pairs = [("MessageUUID", UUID), ("Status", "sent"), *extra.items()]
    try:
        status = parse_status(pairs)
    except ParamsError as exc:
        # Only a known field can be wrong, and the error names it.
        assert exc.errors and set(exc.errors) <= {k for k, _ in STATUS}
    else:
        assert status.params == tuple(pairs)
        assert status.status == "sent"
