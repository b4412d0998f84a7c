"""Reply XML for a decision and for a handler's answer, the callback URL, and a property: no text
crashes matching and every rendered reply fits Plivo's limit and can be written as XML."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from plivohook.protocol.params import parse_message
from plivohook.protocol.xml import Message, Response
from plivohook.replies import (
    Decision,
    callback_url_for,
    decide,
    decide_message,
    handler_reply_xml,
    load_rules,
    reply_xml,
)
from plivohook.replies.rules import MAX_REPLY_CHARS

DATA = Path(__file__).resolve().parent.parent / "data" / "replies"
RULES = load_rules(DATA / "cases.toml")
UUID = "2f6d2f0a-5e5b-11ee-8c99-0242ac120002"
CALLBACK = f"https://hooks.example.com/plivo/status?reply_to={UUID}"


def test_callback_url_matches_the_auto_reply_one() -> None:
    assert callback_url_for("https://hooks.example.com", UUID) == CALLBACK
    assert callback_url_for("https://hooks.example.com/", UUID) == CALLBACK
    assert callback_url_for(None, UUID) is None
    assert callback_url_for("", UUID) is None


def test_reply_xml_with_callback() -> None:
    decision = Decision(None, "Tom & Jerry <3", "rule 1", False)
    body = reply_xml(decision, src="14155550100", dst="14155550111", callback_url=CALLBACK)
    assert body == (
        b'<Response><Message src="14155550100" dst="14155550111" callbackUrl="https://hooks.'
        b'example.com/plivo/status?reply_to=2f6d2f0a-5e5b-11ee-8c99-0242ac120002" '
        b'callbackMethod="POST">Tom &amp; Jerry &lt;3</Message></Response>'
    )


def test_reply_xml_without_callback_and_unicode() -> None:
    decision = Decision(None, "Здравствуйте ☕", "rule 1", False)
    body = reply_xml(decision, src="14155550100", dst="14155550111")
    assert (
        body
        == (
            '<Response><Message src="14155550100" dst="14155550111">Здравствуйте ☕</Message>'
            "</Response>"
        ).encode()
    )


def test_no_reply_text_gives_none() -> None:
    assert reply_xml(Decision(None, None, "none", True), src="1415", dst="1416") is None


def test_alphanumeric_sender_cannot_be_answered() -> None:
    decision = Decision(None, "hi", "default", False)
    assert reply_xml(decision, src="14155550100", dst="ACME") is None


def test_decide_message_reads_the_parsed_request() -> None:
    message = parse_message(
        {
            "MessageUUID": UUID,
            "From": "14155550111",
            "To": "14155550100",
            "Text": "please remove me",
            "MessageIntent": "optout",
        }
    )
    decision = decide_message(message, RULES, opted_out=False)
    assert (decision.action, decision.source) == ("optout", "compliance:stop")


def test_handler_text_reply() -> None:
    body = handler_reply_xml("ok", src="14155550100", dst="14155550111")
    assert body == b'<Response><Message src="14155550100" dst="14155550111">ok</Message></Response>'
    assert handler_reply_xml("", src="1415", dst="1416") is None
    assert handler_reply_xml(None, src="1415", dst="1416") is None
    assert handler_reply_xml(Response(), src="1415", dst="1416") is None


def test_handler_response_gets_the_callback_where_it_has_none() -> None:
    own = "https://crm.example.com/status"
    response = Response(
        [
            Message("one", src="14155550100", dst="14155550111"),
            Message("two", src="14155550100", dst="14155550122", callback_url=own),
        ]
    )
    body = handler_reply_xml(response, src="x", dst="y", callback_url=CALLBACK)
    assert (
        body
        == (
            '<Response><Message src="14155550100" dst="14155550111" '
            f'callbackUrl="{CALLBACK}" callbackMethod="POST">one</Message>'
            f'<Message src="14155550100" dst="14155550122" callbackUrl="{own}">two</Message>'
            "</Response>"
        ).encode()
    )
    # The handler's own object is left as it was.
    assert response.messages[0].callback_url is None


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=3000), intent=st.sampled_from([None, "", "optout", "optin", "help"]))
def test_any_text_decides_and_renders(text: str, intent: str | None) -> None:
    for opted_out in (False, True):
        decision = decide(
            text=text,
            from_="14155550111",
            to="14155550100",
            message_intent=intent,
            rules=RULES,
            opted_out=opted_out,
        )
        if decision.reply_text is None:
            continue
        assert len(decision.reply_text) <= MAX_REPLY_CHARS
        body = reply_xml(decision, src="14155550100", dst="14155550111", callback_url=CALLBACK)
        assert body is not None and body.startswith(b"<Response><Message ")
