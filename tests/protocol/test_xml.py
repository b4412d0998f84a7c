"""Message XML: byte-identical to the SDK's plivoxml, and validated where the SDK is not."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plivo import plivoxml

from plivohook.protocol.xml import Message, Response, XMLValidationError, reply_to

# -- the SDK as oracle --------------------------------------------------------------------------


def sdk_response(messages):
    response = plivoxml.ResponseElement()
    for m in messages:
        response.add(
            plivoxml.MessageElement(
                m.text,
                src=m.src,
                dst=m.dst_attribute,
                type=m.type,
                callback_url=m.callback_url,
                callback_method=m.callback_method,
            )
        )
    return response


def parse(data: bytes) -> ET.Element:
    return ET.fromstring(data)  # noqa: S314 - only our own or the SDK's output is parsed here


def same_tree(a: ET.Element, b: ET.Element) -> None:
    assert a.tag == b.tag
    assert a.attrib == b.attrib
    assert (a.text or "") == (b.text or "")
    assert (a.tail or "") == (b.tail or "")
    assert len(a) == len(b)
    for child_a, child_b in zip(a, b, strict=True):
        same_tree(child_a, child_b)


# -- strategies ---------------------------------------------------------------------------------

XML_FORBIDDEN = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\ufffe", "\uffff"]

xml_chars = st.one_of(
    st.sampled_from("&<>\"'\r\n\t]]> ;#"),
    st.characters(exclude_categories=("Cs",), exclude_characters=XML_FORBIDDEN),
)
texts = st.text(xml_chars, max_size=80)
numbers = st.from_regex(r"\+?[0-9]{2,20}", fullmatch=True)
sender_ids = st.from_regex(r"[A-Za-z0-9 ]{1,11}", fullmatch=True).filter(lambda s: s.strip())
url_chars = st.sampled_from("abcXYZ019-._~%!$&'()*+,;=:@/?#\"<>[]{}|^`é€😀")
urls = st.builds(
    lambda scheme, host, port, rest: f"{scheme}://{host}{port}{rest}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    st.sampled_from(["", ":8080", ":443"]),
    st.one_of(st.just(""), st.builds(lambda s: "/" + s, st.text(url_chars, max_size=40))),
)
messages = st.builds(
    Message,
    text=texts,
    src=st.none() | numbers | sender_ids,
    dst=st.none() | numbers | st.lists(numbers, min_size=1, max_size=4),
    type=st.sampled_from([None, "sms", "mms", "whatsapp"]),
    callback_url=st.none() | urls,
    callback_method=st.sampled_from([None, "GET", "POST", "get", "Post"]),
)


@settings(deadline=None)
@given(st.lists(messages, max_size=4))
def test_identical_to_sdk(batch):
    ours = Response(batch)
    sdk = sdk_response(batch)
    compact, pretty = ours.to_xml(), ours.to_xml(pretty=True)
    assert compact == sdk.to_string(False)
    assert pretty == sdk.to_string()
    assert str(ours) == compact
    assert ours.to_bytes() == compact.encode("utf-8")
    same_tree(parse(ours.to_bytes()), parse(sdk.to_string(False).encode("utf-8")))
    same_tree(parse(pretty.encode("utf-8")), parse(sdk.to_string().encode()))


@settings(deadline=None)
@given(messages)
def test_parses_back_to_the_same_values(message):
    root = parse(Response([message]).to_bytes())
    assert root.tag == "Response"
    (element,) = root
    assert element.tag == "Message"
    assert (element.text or "") == message.text
    expected = {
        "src": message.src,
        "dst": message.dst_attribute,
        "type": message.type,
        "callbackUrl": message.callback_url,
        "callbackMethod": message.callback_method,
    }
    assert element.attrib == {k: v for k, v in expected.items() if v is not None}
    # Attribute order is the SDK's, whichever are present.
    order = [name for name in expected if f" {name}=" in Response([message]).to_xml()]
    assert order == [name for name in expected if expected[name] is not None]


# -- fixed examples -----------------------------------------------------------------------------


def test_empty_response():
    assert Response().to_xml() == "<Response/>"
    assert Response().to_xml(pretty=True) == "<Response/>\n"
    assert Response().to_bytes() == b"<Response/>"
    assert Response().to_xml() == plivoxml.ResponseElement().to_string(False)


def test_reference_examples():
    full = Message(
        "Thanks, got it & logged.",
        src="14155550199",
        dst="14155550100",
        type="sms",
        callback_url="https://example.com/plivo/status",
        callback_method="post",
    )
    assert Response([full]).to_xml() == (
        '<Response><Message src="14155550199" dst="14155550100" type="sms" '
        'callbackUrl="https://example.com/plivo/status" callbackMethod="POST">'
        "Thanks, got it &amp; logged.</Message></Response>"
    )
    broadcast = Message("Broadcast", src="14155550199", dst=["14155550100", "14155550101"])
    assert str(Response().add(broadcast)) == (
        '<Response><Message src="14155550199" dst="14155550100&lt;14155550101">'
        "Broadcast</Message></Response>"
    )


def test_escaping_matches_the_reference():
    message = Message(
        "a\r\nb\t'\"&<>]]>", src="1234", callback_url='https://h/p?a=1&b="2"<>\'', type="mms"
    )
    assert message.to_xml() == (
        '<Message src="1234" type="mms" callbackUrl="https://h/p?a=1&amp;b=&quot;2&quot;&lt;&gt;\'">'
        "a&#13;\nb\t'\"&amp;&lt;&gt;]]&gt;</Message>"
    )


def test_empty_text_is_self_closing():
    assert Message("", src="1234").to_xml() == '<Message src="1234"/>'
    assert Response([Message("")]).to_xml(pretty=True) == "<Response>\n  <Message/>\n</Response>\n"


def test_non_ascii_is_utf8():
    body = Response([Message("Grüße 😀 \u2028 \x85")]).to_bytes()
    assert "Grüße 😀 \u2028 \x85".encode() in body
    assert parse(body)[0].text == "Grüße 😀 \u2028 \x85"


def test_dst_forms_are_equivalent():
    joined = Message("x", dst="+14155550100<14155550101")
    listed = Message("x", dst=["+14155550100", "14155550101"])
    assert joined.to_xml() == listed.to_xml()
    assert listed.dst == ("+14155550100", "14155550101")
    hash(listed)


def test_callback_method_is_stored_upper_case():
    assert Message("x", callback_method="get").callback_method == "GET"


def test_response_add_chains_and_keeps_order():
    a, b = Message("a"), Message("b")
    response = Response([a])
    assert response.add(b) is response
    assert response.messages == [a, b]
    assert response == Response([a, b])
    with pytest.raises(TypeError):
        response.add("<Message/>")  # type: ignore[arg-type]


def test_reply_to_swaps_numbers():
    reply = reply_to(
        "14155550100",
        "14155550199",
        "Got it",
        callback_url="https://example.com/s",
        callback_method="GET",
    )
    assert reply == Message(
        "Got it",
        src="14155550199",
        dst="14155550100",
        callback_url="https://example.com/s",
        callback_method="GET",
    )


def test_reply_to_an_alphanumeric_sender_fails():
    with pytest.raises(XMLValidationError, match="dst"):
        reply_to("ACME", "14155550199", "hi")


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "detail"),
    [
        ({"text": "a\x00b"}, "text", "U+0000 at position 1"),
        ({"text": "ok\x0b"}, "text", "U+000B at position 2"),
        ({"text": "\x1f"}, "text", "U+001F at position 0"),
        ({"text": "x\ud83d"}, "text", "U+D83D at position 1"),
        ({"text": "\udc80"}, "text", "U+DC80"),
        ({"text": "\ufffe"}, "text", "U+FFFE"),
        ({"text": "ab\uffff"}, "text", "U+FFFF at position 2"),
        ({"text": b"bytes"}, "text", "must be a str"),
        ({"src": ""}, "src", "neither a number"),
        ({"src": "+1"}, "src", "neither a number"),
        ({"src": "1" * 21}, "src", "neither a number"),
        ({"src": "ABCDEFGHIJKL"}, "src", "sender id"),
        ({"src": "   "}, "src", "sender id"),
        ({"src": "ACME-Bank"}, "src", "sender id"),
        ({"src": "Bänk"}, "src", "sender id"),
        ({"src": "1415\n555"}, "src", "sender id"),
        ({"src": 14155550100}, "src", "must be a str"),
        ({"dst": ""}, "dst", "not a number"),
        ({"dst": "1"}, "dst", "not a number"),
        ({"dst": "ACME"}, "dst", "not a number"),
        ({"dst": "14155550100<"}, "dst", "not a number"),
        ({"dst": "14155550100,14155550101"}, "dst", "not a number"),
        ({"dst": "1" * 21}, "dst", "not a number"),
        ({"dst": []}, "dst", "no destination"),
        ({"dst": ["14155550100", "x"]}, "dst", "'x'"),
        ({"dst": ["14155550100", 14155550101]}, "dst", "not a number"),
        ({"dst": 14155550100}, "dst", "must be a str or a sequence"),
        ({"type": "SMS"}, "type", "not one of"),
        ({"type": "rcs"}, "type", "not one of"),
        ({"type": ""}, "type", "not one of"),
        ({"type": ["sms"]}, "type", "must be a str"),
        ({"callback_url": "example.com/status"}, "callback_url", "absolute http(s)"),
        ({"callback_url": "/status"}, "callback_url", "absolute http(s)"),
        ({"callback_url": "ftp://example.com/"}, "callback_url", "absolute http(s)"),
        ({"callback_url": "https://"}, "callback_url", "absolute http(s)"),
        ({"callback_url": "https:///path"}, "callback_url", "absolute http(s)"),
        ({"callback_url": "https://ex ample.com/"}, "callback_url", "absolute http(s)"),
        ({"callback_url": "https://example.com/a\nb"}, "callback_url", "absolute http(s)"),
        ({"callback_url": "https://example.com/\ufffe"}, "callback_url", "U+FFFE"),
        ({"callback_url": ""}, "callback_url", "absolute http(s)"),
        ({"callback_method": "PUT"}, "callback_method", "GET or POST"),
        ({"callback_method": ""}, "callback_method", "GET or POST"),
        ({"callback_method": " POST"}, "callback_method", "GET or POST"),
        ({"callback_method": 1}, "callback_method", "must be a str"),
    ],
)
def test_validation_errors(kwargs, field, detail):
    arguments = {"text": "hello", **kwargs}
    with pytest.raises(XMLValidationError) as info:
        Message(**arguments)
    assert str(info.value).startswith(f"{field}: ")
    assert detail in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"src": "12"},
        {"src": "+" + "9" * 20},
        {"src": "A"},
        {"src": "ACME Bank 1"},
        {"dst": "+44<12<9999"},
        {"dst": ("12",)},
        {"type": "whatsapp"},
        {"callback_url": "http://localhost"},
        {"callback_url": "https://[::1]:8443/s?x=1#frag"},
        {"callback_url": "https://user:pw@example.com:8080/a;b?c=d&e=f"},
        {"callback_url": "https://bücher.example/ü"},
        {"callback_method": "get"},
    ],
)
def test_valid_edge_values(kwargs):
    message = Message("hi", **kwargs)
    assert parse(Response([message]).to_bytes()) is not None
    assert Response([message]).to_xml() == sdk_response([message]).to_string(False)


def test_messages_are_immutable():
    message = Message("hi")
    with pytest.raises(AttributeError):
        message.text = "changed"  # type: ignore[misc]
