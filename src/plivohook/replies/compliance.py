"""Opt-out compliance: the carriers' STOP/START/HELP words and Plivo's ``MessageIntent``.

Carriers (and in the US the TCPA/CTIA rules) require that a sender who texts an opt-out word gets
no further automatic messages from that number until they opt back in. The words are matched on
the whole text with case and whitespace ignored (``" Stop "`` counts, ``"stop please"`` does not),
so an ordinary sentence that merely contains one of them is never taken for an opt-out.

Pure functions and constants, no I/O: the store keeps who opted out, :mod:`.decide` combines this
with the rules.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

__all__ = [
    "DEFAULT_HELP_REPLY",
    "DEFAULT_START_REPLY",
    "DEFAULT_STOP_REPLY",
    "HELP_WORDS",
    "OPT_IN_WORDS",
    "OPT_OUT_WORDS",
    "Intent",
    "classify",
    "normalise",
]

Intent = Literal["optout", "optin", "help"]

OPT_OUT_WORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke"}
)
OPT_IN_WORDS = frozenset({"start", "yes", "unstop"})
HELP_WORDS = frozenset({"help", "info"})

DEFAULT_STOP_REPLY = (
    "You are unsubscribed and will get no more messages. Reply START to resubscribe."
)
DEFAULT_START_REPLY = "You are subscribed again. Reply STOP to unsubscribe."
DEFAULT_HELP_REPLY = "Reply STOP to unsubscribe, START to subscribe again."

_WORDS: dict[str, Intent] = {
    **dict.fromkeys(OPT_OUT_WORDS, "optout"),
    **dict.fromkeys(OPT_IN_WORDS, "optin"),
    **dict.fromkeys(HELP_WORDS, "help"),
}
# Longer than any word (plus generous whitespace): such a text cannot be one, skip normalising it.
_LONGEST = 64


def normalise(text: str) -> str:
    """``text`` as keywords compare it: NFC, case-folded, whitespace runs collapsed and stripped.

    NFC so that a composed and a decomposed "é" (handsets send both) are the same keyword;
    ``casefold`` rather than ``lower`` so that e.g. "STRASSE" and "straße" agree.
    """
    return " ".join(unicodedata.normalize("NFC", text.casefold()).split())


def classify(text: str, message_intent: str | None = None) -> Intent | None:
    """Which compliance class a message falls in, or ``None`` for an ordinary message.

    Opt-out wins over everything: when either the text is an opt-out word or Plivo marks the
    message ``MessageIntent=optout``, it is an opt-out (failing to honour one is the costly
    mistake). Otherwise an opt-in word or ``optin`` intent is an opt-in, a help word or ``help``
    intent is help. The intent is compared case-insensitively; unknown intents are ignored.
    """
    word: Intent | None = None
    if len(text) <= _LONGEST:
        word = _WORDS.get(normalise(text))
    intent = message_intent.strip().lower() if message_intent else ""
    if word == "optout" or intent == "optout":
        return "optout"
    if word == "optin" or intent == "optin":
        return "optin"
    if word == "help" or intent == "help":
        return "help"
    return None
