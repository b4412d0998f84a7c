"""Replies in the running service: the rules in force, their reload, and the user's handler.

The pure core (:mod:`.decide`) says what to answer for a given opt-out state. This module puts it
on the request path without a read per message:

* :meth:`Replies.decide_reply` is plug point 1 (``Webhooks.decide_reply``): it decides for both
  states, as if the sender had not opted out of the ``To`` number and as if they had, and the
  :class:`~plivohook.store.base.ReplyPlan` (both answers and the STOP/START action) goes into the
  :class:`~plivohook.store.base.MessageWrite`. An ordinary text (no compliance word or intent)
  is decided once: opted out, it gets nothing.
  The store looks the opt-out up in the message's own transaction, applies the action, and keeps
  the answer for the state it found; every retry gets those bytes, even after a restart.
* :meth:`Replies.after_commit` runs the handler when the stored answer is still
  ``handler-pending`` (nothing above answered and the sender has not opted out), with its time
  limit, then stores its answer in a second commit where the first writer wins
  (:meth:`~plivohook.store.base.Store.set_reply`). A retry of a message the handler already
  answered gets the stored bytes without running it again.
* :meth:`Replies.reload` reads the rules file again (SIGHUP); a bad file keeps the rules in
  force and :meth:`Replies.health` says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections import Counter
from dataclasses import replace
from typing import Any

from ..config import ConfigError, Settings
from ..protocol.params import InboundMessage
from ..store.base import MessageWrite, ReplyPlan, Store, WriteResult
from . import compliance
from .decide import Decision, callback_url_for, decide, handler_reply_xml, reply_xml
from .handlers import Handler, IncomingMessage, load_handler, run_handler
from .rules import Rules, RulesError, load_rules

__all__ = ["HANDLER_PENDING", "Replies", "check_settings"]

log = logging.getLogger("plivohook.replies")

# reply_source values of the handler's stages.
HANDLER_PENDING = "handler-pending"
HANDLER = "handler"
HANDLER_ERROR = "handler-error"


def _rules_from(settings: Settings) -> Rules:
    if settings.rules:
        return load_rules(settings.rules)
    return Rules.from_auto_reply(settings.auto_reply)


def _handler_from(settings: Settings) -> Handler | None:
    if not settings.handler:
        return None
    # As `python -m` and uvicorn's --app-dir do: the handler's package is found from where
    # serve was started (the console script's own folder is what Python puts on the path).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return load_handler(settings.handler)


def check_settings(settings: Settings) -> None:
    """Load the rules and the handler once; raise :class:`ConfigError` with one line if either
    is wrong (``serve`` refuses to start with it)."""
    if settings.rules and settings.auto_reply:
        raise ConfigError(
            "--auto-reply is the one-line form of a rules file's [default]: give --rules (with a "
            "[default]) or --auto-reply, not both"
        )
    try:
        _rules_from(settings)
        _handler_from(settings)
    except (RulesError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def _xml(reply: bytes | None) -> str | None:
    return reply.decode() if reply is not None else None


def _text_reply(text: str, *, src: str, dst: str, callback_url: str | None) -> str | None:
    return _xml(
        reply_xml(Decision(None, text, "", False), src=src, dst=dst, callback_url=callback_url)
    )


class Replies:
    """The rules in force and the handler, for one app (one process)."""

    def __init__(self, settings: Settings, counters: Counter[str]) -> None:
        self.path = settings.rules
        self.public_url = settings.public_url
        self.rules: Rules = _rules_from(settings)
        self.handler: Handler | None = _handler_from(settings)
        self.timeout = settings.handler_timeout
        self.counters = counters
        self.reload_error: str | None = None

    # -- the write (before the commit) ------------------------------------------------------------

    def decide_reply(self, message: InboundMessage) -> ReplyPlan:
        """Plug point 1: the answer for both opt-out states and the action (see the module)."""
        rules = self.rules  # one object for the whole decision, even if a reload swaps it
        text, sender, ours = message.text, message.from_number, message.to_number
        callback = callback_url_for(self.public_url, message.message_uuid)
        where = {"src": ours, "dst": sender, "callback_url": callback}
        if compliance.classify(text, message.message_intent) is None:
            # The common case, decided once: an ordinary text gets the rules' answer (or the
            # handler's) unless the sender opted out, who then gets nothing.
            found = rules.match(text, sender, ours)
            if found is not None:
                xml = _text_reply(found.reply, **where)
                return ReplyPlan(xml, found.source, None, "opted-out")
            return ReplyPlan(None, HANDLER_PENDING if self.handler else "none", None, "opted-out")
        fields = {"text": text, "from_": sender, "to": ours, "message_intent": None}
        fields["message_intent"] = message.message_intent
        opted_in = decide(**fields, rules=rules, opted_out=False)
        opted_out = decide(**fields, rules=rules, opted_out=True)
        source = opted_in.source
        if opted_in.run_handler and self.handler is not None:
            source = HANDLER_PENDING
        # An opt-out applies in either state; an opt-in only reverses an existing opt-out.
        return ReplyPlan(
            _xml(reply_xml(opted_in, **where)),
            source,
            _xml(reply_xml(opted_out, **where)),
            opted_out.source,
            opted_in.action or opted_out.action,
        )

    # -- the handler (after the commit) ---------------------------------------------------------

    async def after_commit(
        self, store: Store, parsed: InboundMessage, op: MessageWrite, result: WriteResult
    ) -> WriteResult:
        """Run the handler if the stored answer waits for it; store and return its answer.

        Raises :class:`~plivohook.store.base.StoreUnavailable` when the second commit fails: the
        caller answers 503 and Plivo's retry runs the handler again (nothing was answered yet).
        """
        if self.handler is None or result.source != HANDLER_PENDING:
            return result
        message = IncomingMessage.from_inbound(parsed, op.received_at)
        outcome = await run_handler(self.handler, message, self.timeout)
        reply: bytes | None = None
        if outcome.error is None:
            try:
                reply = handler_reply_xml(
                    outcome.reply,
                    src=op.to_number,
                    dst=op.from_number,
                    callback_url=callback_url_for(self.public_url, op.message_uuid),
                )
            except Exception as exc:  # e.g. a Response that cannot be written
                outcome = replace(outcome, error=f"handler reply cannot be sent: {exc}"[:500])
        if outcome.error is not None:
            self.counters["handler_errors"] += 1
            source = HANDLER_ERROR
        else:
            self.counters["handler_replies" if reply else "handler_no_reply"] += 1
            source = HANDLER
        stored, stored_source = await store.set_reply(
            op.message_uuid, reply.decode() if reply else None, source, outcome.error
        )
        return replace(result, reply=stored, source=stored_source)

    # -- reload and health ----------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the rules file again; on any problem keep the rules in force and log why."""
        if not self.path:
            log.info("reload: no --rules file, nothing to reload")
            return True
        try:
            rules = load_rules(self.path)
        except RulesError as exc:
            self.reload_error = str(exc)
            log.warning("rules not reloaded, the previous ones stay in force: %s", exc)
            return False
        self.rules = rules
        self.reload_error = None
        log.info("rules reloaded from %s: %d rules", self.path, len(rules.rules))
        return True

    def health(self) -> dict[str, Any] | None:
        """What /healthz says about the rules file (``None`` without one)."""
        if not self.path:
            return None
        on_disk = _digest(self.path)
        running = self.rules.digest
        ok = self.reload_error is None and on_disk == running
        error = self.reload_error
        if error is None and not ok:
            error = (
                "the file cannot be read"
                if on_disk is None
                else "the file changed since it was loaded; send SIGHUP (plivohook reload)"
            )
        return {"running": running, "on_disk": on_disk, "ok": ok, "error": error}
