"""Plivo Message XML: the optional answer to an inbound message (``message_url``).

The body is ``<Response>`` holding ``<Message>`` elements; each sends one SMS/MMS/WhatsApp
message (shared/reference/plivo-protocol.md, section 7). The output is byte-identical to what the
official SDK (``plivo.plivoxml``, serialised by lxml) renders for the same message, compact or
pretty, so the two can be swapped and compared in tests. Unlike the SDK, every value is validated
here: a bad reply should fail in our code, not at Plivo after we answered 200.

Pure string building with precomputed escapes, no XML library: this runs once per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CALLBACK_METHODS",
    "MESSAGE_TYPES",
    "Message",
    "Response",
    "XMLValidationError",
    "reply_to",
]

MESSAGE_TYPES = frozenset({"sms", "mms", "whatsapp"})
CALLBACK_METHODS = frozenset({"GET", "POST"})

_NUMBER = re.compile(r"\+?[0-9]{2,20}")
# At least one letter or digit: an all-blank sender id is no sender id.
_SENDER_ID = re.compile(r"(?=[ ]*[A-Za-z0-9])[A-Za-z0-9 ]{1,11}")
_URL = re.compile(
    r"(?i:https?)://(?:[^\s\x00-\x1f\x7f/?#@]*@)?"
    r"(?:\[[0-9A-Fa-f:.]+\]|[^\s\x00-\x1f\x7f/?#@:\[\]]+)(?::[0-9]{0,5})?"
    r"(?:[/?#][^\s\x00-\x1f\x7f]*)?"
)
# What XML 1.0 cannot carry at all (not even as a character reference).
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# The escapes lxml (libxml2) writes. Text keeps quotes, tab and newline literal but writes CR as a
# reference, since any parser would fold a literal CR into LF. Attributes also escape the quote
# and every whitespace character that attribute-value normalisation would turn into a space.
# Replace chains, '&' first: much faster than str.translate, and free when nothing matches.


def _escape_text(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _escape_attr(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


class XMLValidationError(ValueError):
    """A Message value Plivo would reject or XML cannot carry; the message names the field."""


def _xml_safe(name: str, value: str) -> None:
    bad = _NOT_XML.search(value)
    if bad is not None:
        raise XMLValidationError(
            f"{name}: character U+{ord(bad.group()):04X} at position {bad.start()} "
            "cannot be written in XML 1.0"
        )


def _string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise XMLValidationError(f"{name}: must be a str, not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Message:
    """One ``<Message>``: send ``text`` from ``src`` to ``dst``.

    ``dst`` is one number, several numbers as a sequence, or several already joined with ``<``
    (Plivo's separator); a sequence is stored as a tuple. ``callback_url`` receives the delivery
    statuses, with ``callback_method`` (stored upper-case). ``None`` leaves an attribute out, and
    Plivo's default applies (``POST`` for the method; whether ``src`` may be left out is
    unconfirmed, so replies should set it).
    """

    text: str
    src: str | None = None
    dst: str | Sequence[str] | None = None
    type: str | None = None
    callback_url: str | None = None
    callback_method: str | None = None

    def __post_init__(self) -> None:
        _xml_safe("text", _string("text", self.text))
        if self.src is not None:
            src = _string("src", self.src)
            if _NUMBER.fullmatch(src) is None and _SENDER_ID.fullmatch(src) is None:
                raise XMLValidationError(
                    f"src: {src!r} is neither a number (2-20 digits, optional '+') "
                    "nor a sender id (1-11 letters, digits or spaces)"
                )
        if self.dst is not None:
            if isinstance(self.dst, str):
                numbers: Sequence[str] = self.dst.split("<")
            elif isinstance(self.dst, Sequence):
                numbers = tuple(self.dst)
                object.__setattr__(self, "dst", numbers)  # hashable, and no one else's list
            else:
                raise XMLValidationError(
                    f"dst: must be a str or a sequence of str, not {type(self.dst).__name__}"
                )
            if not numbers:
                raise XMLValidationError("dst: no destination number")
            for number in numbers:
                if not isinstance(number, str) or _NUMBER.fullmatch(number) is None:
                    raise XMLValidationError(
                        f"dst: {number!r} is not a number (2-20 digits, optional '+')"
                    )
        if self.type is not None and _string("type", self.type) not in MESSAGE_TYPES:
            raise XMLValidationError(
                f"type: {self.type!r} is not one of {', '.join(sorted(MESSAGE_TYPES))}"
            )
        if self.callback_url is not None:
            url = _string("callback_url", self.callback_url)
            if _URL.fullmatch(url) is None:
                raise XMLValidationError(f"callback_url: {url!r} is not an absolute http(s) URL")
            _xml_safe("callback_url", url)
        if self.callback_method is not None:
            method = _string("callback_method", self.callback_method).upper()
            if method not in CALLBACK_METHODS:
                raise XMLValidationError(
                    f"callback_method: {self.callback_method!r} is not GET or POST"
                )
            object.__setattr__(self, "callback_method", method)

    @property
    def dst_attribute(self) -> str | None:
        """``dst`` as Plivo reads it: numbers joined with ``<``."""
        if self.dst is None or isinstance(self.dst, str):
            return self.dst
        return "<".join(self.dst)

    def to_xml(self) -> str:
        """This element alone, exactly as the SDK writes it inside ``<Response>``."""
        parts = ["<Message"]
        # The SDK's fixed attribute order.
        for name, value in (
            ("src", self.src),
            ("dst", self.dst_attribute),
            ("type", self.type),
            ("callbackUrl", self.callback_url),
            ("callbackMethod", self.callback_method),
        ):
            if value is not None:
                parts.append(f' {name}="{_escape_attr(value)}"')
        if self.text:
            parts.append(f">{_escape_text(self.text)}</Message>")
        else:
            parts.append("/>")
        return "".join(parts)


class Response:
    """A ``<Response>`` document of Message elements, the body of a ``message_url`` answer.

    Serve it as ``application/xml``. An empty response (``<Response/>``) sends nothing.
    """

    __slots__ = ("messages",)

    messages: list[Message]

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self.messages = []
        for message in messages:
            self.add(message)

    def add(self, message: Message) -> Response:
        """Append a message; returns ``self`` so calls chain like the SDK's ``add``."""
        if not isinstance(message, Message):
            raise TypeError(f"a Response holds Message objects, not {type(message).__name__}")
        self.messages.append(message)
        return self

    def to_xml(self, pretty: bool = False) -> str:
        """The document without XML declaration; ``pretty`` matches the SDK's ``to_string()``."""
        if not self.messages:
            return "<Response/>\n" if pretty else "<Response/>"
        if pretty:
            body = "".join(f"  {message.to_xml()}\n" for message in self.messages)
            return f"<Response>\n{body}</Response>\n"
        return f"<Response>{''.join(message.to_xml() for message in self.messages)}</Response>"

    def to_bytes(self) -> bytes:
        """The compact document as UTF-8, ready for the HTTP body."""
        return self.to_xml().encode("utf-8")

    def __str__(self) -> str:
        return self.to_xml()

    def __repr__(self) -> str:
        return f"Response({self.messages!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return self.messages == other.messages

    __hash__ = None  # type: ignore[assignment]  # mutable


def reply_to(
    message_from: str,
    message_to: str,
    text: str,
    *,
    callback_url: str | None = None,
    callback_method: str | None = None,
) -> Message:
    """A reply to an inbound message: sent from the number it reached, to the one that sent it.

    Raises :class:`XMLValidationError` when the inbound ``From`` cannot be answered (an
    alphanumeric sender id is not a destination).
    """
    return Message(
        text,
        src=message_to,
        dst=message_from,
        callback_url=callback_url,
        callback_method=callback_method,
    )
