"""Replies to inbound messages: STOP/START/HELP compliance, rules from a TOML file, and the
user's own handler. :func:`decide` is the one entry point the request path calls."""

from .compliance import classify
from .decide import (
    Decision,
    callback_url_for,
    decide,
    decide_message,
    handler_reply_xml,
    reply_xml,
)
from .handlers import HandlerError, HandlerOutcome, IncomingMessage, load_handler, run_handler
from .rules import Match, Rules, RulesError, load_rules, parse_rules

__all__ = [
    "Decision",
    "HandlerError",
    "HandlerOutcome",
    "IncomingMessage",
    "Match",
    "Rules",
    "RulesError",
    "callback_url_for",
    "classify",
    "decide",
    "decide_message",
    "handler_reply_xml",
    "load_handler",
    "load_rules",
    "parse_rules",
    "reply_xml",
    "run_handler",
]
