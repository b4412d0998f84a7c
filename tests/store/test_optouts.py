"""Opt-outs and stored replies (issue 13), the same on SQLite and PostgreSQL.

A MessageWrite carries the reply for both opt-out states and the STOP/START action; the store
picks the reply for the state it finds in the message's transaction and applies the action.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from plivohook.store.base import MessageWrite, Outcome, Store

from . import OUR_NUMBER, SENDER, at, message, run

OTHER = "14155550111"
IN_REPLY = "<Response><Message>in</Message></Response>"
OUT_REPLY = "<Response><Message>out</Message></Response>"


def replying(
    uuid: str,
    *,
    action: str | None = None,
    from_number: str = SENDER,
    reply: str | None = IN_REPLY,
    source: str = "rule 1",
    opted_out_reply: str | None = None,
    opted_out_source: str = "opted-out",
    seconds: float = 0,
) -> MessageWrite:
    return replace(
        message(uuid, from_number=from_number, reply=reply, received_at=at(seconds)),
        reply_source=source,
        opted_out_reply=opted_out_reply,
        opted_out_source=opted_out_source,
        optout_action=action,  # type: ignore[arg-type]
    )


def stop(uuid: str, **kw) -> MessageWrite:
    return replying(
        uuid,
        action="optout",
        reply="<Response><Message>bye</Message></Response>",
        source="compliance:stop",
        opted_out_reply="<Response><Message>bye</Message></Response>",
        opted_out_source="compliance:stop",
        **kw,
    )


def start(uuid: str, **kw) -> MessageWrite:
    # From a sender who has not opted out, "start" is an ordinary text (a rule answers it).
    return replying(
        uuid,
        action="optin",
        opted_out_reply="<Response><Message>welcome</Message></Response>",
        opted_out_source="compliance:start",
        **kw,
    )


def pairs(page) -> list[tuple[str, str, str | None]]:
    return [(item["to"], item["from"], item["message_uuid"]) for item in page.items]


def test_stop_then_a_text_gets_no_reply_and_start_restores(store: Store) -> None:
    async def body(s: Store) -> None:
        first = await s.write(replying("m1"))
        assert (first.reply, first.source) == (IN_REPLY, "rule 1")
        bye = await s.write(stop("m2", seconds=1))
        assert bye.source == "compliance:stop"
        assert pairs(await s.list_optouts()) == [(OUR_NUMBER, SENDER, "m2")]
        quiet = await s.write(replying("m3"))
        assert (quiet.outcome, quiet.reply, quiet.source) == (Outcome.STORED, None, "opted-out")
        other = await s.write(replying("m4", from_number=OTHER))
        assert (other.reply, other.source) == (IN_REPLY, "rule 1")
        back = await s.write(start("m5"))
        assert (back.reply, back.source) == (
            "<Response><Message>welcome</Message></Response>",
            "compliance:start",
        )
        assert pairs(await s.list_optouts()) == []
        again = await s.write(replying("m6"))
        assert (again.reply, again.source) == (IN_REPLY, "rule 1")
        # The stored message says the same as the answer did; a retry gets those bytes.
        kept = await s.get_message("m3")
        assert kept is not None
        assert (kept["reply"], kept["reply_source"]) == (None, "opted-out")
        retry = await s.write(replying("m3"))
        assert (retry.outcome, retry.reply, retry.source) == (Outcome.DUPLICATE, None, "opted-out")

    run(store, body)


def test_start_from_a_sender_who_did_not_opt_out_changes_nothing(store: Store) -> None:
    async def body(s: Store) -> None:
        result = await s.write(start("m1"))
        assert (result.reply, result.source) == (IN_REPLY, "rule 1")
        assert pairs(await s.list_optouts()) == []

    run(store, body)


def test_a_duplicate_stop_does_not_act_twice(store: Store) -> None:
    async def body(s: Store) -> None:
        await s.write(stop("m1"))
        await s.write(start("m2"))
        again = await s.write(stop("m1"))  # Plivo's retry of the first STOP, after the START
        assert again.outcome is Outcome.DUPLICATE
        assert pairs(await s.list_optouts()) == []

    run(store, body)


def test_within_one_batch_a_later_message_sees_an_earlier_stop(store: Store) -> None:
    async def body(s: Store) -> None:
        # Gathered, the writes share one group commit (SQLite keeps their order; PostgreSQL
        # orders a batch's messages by MessageUUID, which these sort in too).
        results = await asyncio.gather(
            s.write(replying("m1")), s.write(stop("m2")), s.write(replying("m3"))
        )
        assert [r.source for r in results] == ["rule 1", "compliance:stop", "opted-out"]
        assert [r.reply for r in results][2] is None

    run(store, body)


def test_writes_without_replies_fields_are_stored_as_before(store: Store) -> None:
    async def body(s: Store) -> None:
        await s.add_optout(OUR_NUMBER, SENDER, at())
        result = await s.write(message("m1", reply=IN_REPLY))  # no opted_out_source: no lookup
        assert (result.reply, result.source) == (IN_REPLY, None)

    run(store, body)


def test_optouts_by_hand_list_filter_and_page(store: Store) -> None:
    async def body(s: Store) -> None:
        assert await s.add_optout(OUR_NUMBER, SENDER, at()) is True
        assert await s.add_optout(OUR_NUMBER, SENDER, at(5)) is False
        assert await s.add_optout(OUR_NUMBER, OTHER, at(1)) is True
        assert await s.add_optout("14155550000", SENDER, at(2)) is True
        everything = await s.list_optouts()
        assert [item["from"] for item in everything.items] == [SENDER, OTHER, SENDER]
        assert everything.items[-1]["opted_out_at"] == at()
        assert pairs(await s.list_optouts(from_number=OTHER)) == [(OUR_NUMBER, OTHER, None)]
        assert len((await s.list_optouts(to_number=OUR_NUMBER)).items) == 2
        first = await s.list_optouts(limit=2)
        assert len(first.items) == 2 and first.next_cursor
        rest = await s.list_optouts(limit=2, cursor=first.next_cursor)
        assert pairs(rest) == [(OUR_NUMBER, SENDER, None)] and rest.next_cursor is None
        # A message from an opted-out sender now gets the opted-out answer.
        quiet = await s.write(replying("m1"))
        assert quiet.source == "opted-out"
        assert await s.remove_optout(OUR_NUMBER, SENDER) is True
        assert await s.remove_optout(OUR_NUMBER, SENDER) is False
        loud = await s.write(replying("m2"))
        assert loud.source == "rule 1"

    run(store, body)


def test_set_reply_first_writer_wins_and_only_while_pending(store: Store) -> None:
    async def body(s: Store) -> None:
        await s.write(replying("m1", reply=None, source="handler-pending"))
        first = await s.set_reply("m1", "<Response>A</Response>", "handler", None)
        assert first == ("<Response>A</Response>", "handler")
        second = await s.set_reply("m1", None, "handler-error", "late")
        assert second == ("<Response>A</Response>", "handler")
        retry = await s.write(replying("m1", reply=None, source="handler-pending"))
        assert (retry.reply, retry.source) == ("<Response>A</Response>", "handler")
        # A message answered by a rule is never overwritten.
        await s.write(replying("m2"))
        assert await s.set_reply("m2", None, "handler", None) == (IN_REPLY, "rule 1")
        assert await s.set_reply("nope", None, "handler", None) == (None, None)
        await s.write(replying("m3", reply=None, source="handler-pending"))
        failed = await s.set_reply("m3", None, "handler-error", "handler timed out after 3s")
        assert failed == (None, "handler-error")
        kept = await s.get_message("m3")
        assert kept is not None and kept["handler_error"] == "handler timed out after 3s"

    run(store, body)


def test_replies_survive_a_restart(make_store) -> None:
    async def write(s: Store) -> None:
        await s.write(stop("m1"))
        await s.write(replying("m2"))

    async def again(s: Store) -> None:
        first = await s.write(stop("m1"))
        second = await s.write(replying("m2"))
        assert (first.outcome, first.source) == (Outcome.DUPLICATE, "compliance:stop")
        assert (second.reply, second.source) == (None, "opted-out")
        assert pairs(await s.list_optouts()) == [(OUR_NUMBER, SENDER, "m1")]

    run(make_store(), write)
    run(make_store(), again)
