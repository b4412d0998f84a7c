"""What to answer an inbound message: compliance first, then the rules, then the user's handler.

:func:`decide` is pure: given the message's fields, the rules and whether the sender has opted out
of that ``To`` number, it says what to record (an opt-out or opt-in), what to reply, and whether
the handler still has to run. The caller stores the decision with the message, in the same
transaction, so that a retry of the same MessageUUID gets the same answer.

The order, and why:

1. An opt-out (a STOP word, or ``MessageIntent=optout``) is recorded and answered with
   ``stop_reply`` whatever else the text would match: the law and the carriers come first.
2. HELP/INFO (or ``MessageIntent=help``) is answered with ``help_reply``, opted out or not:
   carriers expect a HELP answer even from an opted-out number.
3. An opt-in word (START, YES, UNSTOP, or ``MessageIntent=optin``) from an opted-out sender
   reverses the opt-out and answers ``start_reply``. From a sender who is not opted out it is an
   ordinary text: "yes" is far more often an answer to a question than a subscription.
4. An opted-out sender gets nothing else: no rule, no default, no handler reply (the handler does
   not even run, since its answer could not be sent). The message itself is still kept.
5. The first matching rule, else the ``[default]`` reply, else the handler, if any.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import quote

from ..protocol.params import InboundMessage
from ..protocol.xml import Response, XMLValidationError, reply_to
from . import compliance
from .rules import Rules

__all__ = [
    "Decision",
    "callback_url_for",
    "decide",
    "decide_message",
    "handler_reply_xml",
    "reply_xml",
]

log = logging.getLogger("plivohook.replies")

_NO_RULES = Rules()


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one inbound message.

    ``action`` is what to record in the opt-out list (``"optout"``, ``"optin"`` or ``None``).
    ``reply_text`` is the reply to send back, or ``None``. ``source`` says where the answer came
    from, for logs and the API: ``"compliance:stop"``, ``"compliance:start"``,
    ``"compliance:help"``, ``"rule N"``, ``"default"``, ``"opted-out"`` (answer suppressed) or
    ``"none"``. ``run_handler`` is true when nothing above answered and the sender may be
    answered, i.e. when a configured handler should run.
    """

    action: Literal["optout", "optin"] | None
    reply_text: str | None
    source: str
    run_handler: bool


def decide(
    *,
    text: str,
    from_: str,
    to: str,
    message_intent: str | None,
    rules: Rules | None,
    opted_out: bool,
) -> Decision:
    """Decide the answer to a message (see the module docstring for the order)."""
    rules = rules or _NO_RULES
    intent = compliance.classify(text, message_intent)
    if intent == "optout":
        return Decision(
            "optout", rules.compliance_reply("optout", text, from_, to), "compliance:stop", False
        )
    if intent == "help":
        return Decision(
            None, rules.compliance_reply("help", text, from_, to), "compliance:help", False
        )
    if opted_out:
        if intent == "optin":
            return Decision(
                "optin", rules.compliance_reply("optin", text, from_, to), "compliance:start", False
            )
        return Decision(None, None, "opted-out", False)
    found = rules.match(text, from_, to)
    if found is not None:
        return Decision(None, found.reply, found.source, False)
    return Decision(None, None, "none", True)


def decide_message(message: InboundMessage, rules: Rules | None, opted_out: bool) -> Decision:
    """:func:`decide` for a parsed :class:`~plivohook.protocol.params.InboundMessage`."""
    return decide(
        text=message.text,
        from_=message.from_number,
        to=message.to_number,
        message_intent=message.message_intent,
        rules=rules,
        opted_out=opted_out,
    )


def callback_url_for(public_url: str | None, message_uuid: str) -> str | None:
    """Where the delivery statuses of the reply to ``message_uuid`` go, or ``None`` without a
    public URL. ``reply_to`` ties each status back to the inbound message it answered."""
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}/plivo/status?reply_to={quote(message_uuid)}"


def _text_reply(text: str, src: str, dst: str, callback_url: str | None) -> bytes | None:
    try:
        element = reply_to(
            dst,
            src,
            text,
            callback_url=callback_url,
            callback_method="POST" if callback_url else None,
        )
    except XMLValidationError as exc:
        # e.g. an alphanumeric sender cannot be answered: keep the message, skip the reply.
        log.info("no reply: %s", exc)
        return None
    return Response([element]).to_bytes()


def reply_xml(
    decision: Decision, *, src: str, dst: str, callback_url: str | None = None
) -> bytes | None:
    """The ``<Response>`` body for ``decision``: one Message from ``src`` (the inbound ``To``) to
    ``dst`` (the inbound ``From``), with ``callback_url`` when set.

    ``None`` when there is nothing to send, or when the reply cannot be written (an alphanumeric
    ``From`` is no destination): the caller answers ``<Response/>`` and still keeps the message.
    The bytes are the compact form :mod:`plivohook.protocol.xml` writes, as ``--auto-reply`` did.
    """
    if decision.reply_text is None:
        return None
    return _text_reply(decision.reply_text, src, dst, callback_url)


def handler_reply_xml(
    reply: str | Response | None, *, src: str, dst: str, callback_url: str | None = None
) -> bytes | None:
    """The body for a handler's answer (from :func:`plivohook.replies.handlers.run_handler`).

    A ``str`` becomes a reply like a rule's. A :class:`~plivohook.protocol.xml.Response` is sent
    as built, except that its Messages without a ``callback_url`` get ``callback_url`` (POST), so
    that every reply's delivery statuses come back as with the rules. ``None``, an empty string or
    an empty Response give ``None`` (answer ``<Response/>``).
    """
    if reply is None:
        return None
    if isinstance(reply, str):
        return _text_reply(reply, src, dst, callback_url) if reply else None
    if not reply.messages:
        return None
    if callback_url:
        reply = Response(
            message
            if message.callback_url is not None
            else replace(
                message,
                callback_url=callback_url,
                callback_method=message.callback_method or "POST",
            )
            for message in reply.messages
        )
    return reply.to_bytes()
