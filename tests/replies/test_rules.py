"""Rules files: the table of cases (tests/data/replies/cases.json) through decide(), the issue's
example file, every refused file under tests/data/replies/bad/, and the regex time limit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from plivohook.replies import Rules, RulesError, decide, load_rules
from plivohook.replies.rules import MAX_REPLY_CHARS, parse_rules

DATA = Path(__file__).resolve().parent.parent / "data" / "replies"
CASES = json.loads((DATA / "cases.json").read_text("utf-8"))["cases"]
BAD = sorted((DATA / "bad").glob("*.toml"))


@pytest.fixture(scope="module")
def case_rules() -> Rules:
    return load_rules(DATA / "cases.toml")


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_case(case: dict, case_rules: Rules) -> None:
    rules = None if "rules" in case and case["rules"] is None else case_rules
    decision = decide(
        text=case["text"],
        from_=case.get("from", "14155550111"),
        to=case.get("to", "14155550100"),
        message_intent=case.get("message_intent"),
        rules=rules,
        opted_out=case.get("opted_out", False),
    )
    expect = case["expect"]
    assert {
        "action": decision.action,
        "reply": decision.reply_text,
        "source": decision.source,
        "run_handler": decision.run_handler,
    } == expect


def test_every_compliance_word_is_in_the_table() -> None:
    from plivohook.replies.compliance import HELP_WORDS, OPT_IN_WORDS, OPT_OUT_WORDS

    answered = {
        case["text"].strip().lower()
        for case in CASES
        if case["expect"]["source"].startswith("compliance:")
    }
    assert answered >= OPT_OUT_WORDS | OPT_IN_WORDS | HELP_WORDS


def test_issue_example_file() -> None:
    rules = load_rules(DATA / "example.toml")
    assert [rule.number for rule in rules.rules] == [1, 2]
    assert rules.rules[1].to == frozenset({"14155550100"})
    assert rules.match("Hours", "1415", "14155550100").source == "rule 1"
    found = rules.match("price tea", "1415", "14155550100")
    assert (found.reply, found.source, found.rule) == (
        "Prices for tea are on our site.",
        "rule 2",
        2,
    )
    assert rules.match("price tea", "1415", "19995550100").source == "default"
    assert (
        rules.compliance_reply("help", "help", "a", "b") == "Example Co. Reply STOP to unsubscribe."
    )
    assert rules.path == str(DATA / "example.toml")
    assert re.fullmatch(r"[0-9a-f]{64}", rules.digest)


@pytest.mark.parametrize("path", BAD, ids=[path.stem for path in BAD])
def test_bad_file_is_refused(path: Path) -> None:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: ")
    expected = first.removeprefix("# expect: ")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message, message


def test_syntax_error_carries_the_line() -> None:
    with pytest.raises(RulesError) as caught:
        load_rules(DATA / "bad" / "syntax.toml")
    assert caught.value.line == 4
    assert caught.value.rule is None


def test_rule_error_carries_number_and_line() -> None:
    with pytest.raises(RulesError) as caught:
        load_rules(DATA / "bad" / "unknown-rule-key.toml")
    assert (caught.value.rule, caught.value.line) == (2, 5)
    assert "unknown key 'replay'" in caught.value.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read it"):
        load_rules(tmp_path / "nope.toml")


def test_empty_file_means_no_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("")
    rules = load_rules(path)
    assert rules.rules == ()
    assert rules.match("hours", "1", "2") is None


def test_reply_at_the_limit_is_allowed_and_placeholders_are_cut_to_it() -> None:
    rules = parse_rules(f'[default]\nreply = "{"x" * (MAX_REPLY_CHARS - 6)}{{text}}"\n')
    reply = rules.match("y" * 5000, "1", "2").reply
    assert len(reply) == MAX_REPLY_CHARS
    assert reply.endswith("yyyyyy")


def test_substituted_values_lose_what_xml_cannot_carry() -> None:
    rules = parse_rules('[default]\nreply = "got: {text}"\n')
    assert rules.match("a\x07b\x00c", "1", "2").reply == "got: abc"


def test_inline_rules_array_works_without_lines() -> None:
    rules = parse_rules('rules = [{keyword = "a", reply = "A"}]')
    assert rules.match("A", "1", "2").reply == "A"
    with pytest.raises(RulesError) as caught:
        parse_rules('rules = [{keyword = "a", reply = "A"}, {keyword = "b", reply = 1}]')
    assert (caught.value.rule, caught.value.line) == (2, None)


def test_auto_reply_is_the_default() -> None:
    rules = Rules.from_auto_reply("Thanks {from}!")
    found = rules.match("anything", "14155550111", "14155550100")
    assert (found.reply, found.source) == ("Thanks 14155550111!", "default")
    assert Rules.from_auto_reply(None).match("x", "1", "2") is None
    assert Rules.from_auto_reply("").match("x", "1", "2") is None
    with pytest.raises(RulesError, match=r"--auto-reply: unknown placeholder \{who\}"):
        Rules.from_auto_reply("Hi {who}")


def test_catastrophic_regex_is_skipped_not_hung() -> None:
    # (a+)+$ backtracks exponentially: without the time limit this search would not end.
    rules = parse_rules(
        '[[rules]]\nregex = "(a+)+$"\nreply = "never"\n'
        '[[rules]]\nregex = "^a"\nreply = "next rule"\n',
        regex_timeout=0.01,
    )
    found = rules.match("a" * 60 + "!", "1", "2")
    assert (found.reply, found.source) == ("next rule", "rule 2")


def test_many_keyword_rules_are_found_by_lookup() -> None:
    source = "".join(f'[[rules]]\nkeyword = "word{i}"\nreply = "reply {i}"\n' for i in range(300))
    rules = parse_rules(source)
    assert rules.match("WORD299", "1", "2").source == "rule 300"
    assert rules.match("word3", "1", "2").reply == "reply 3"
