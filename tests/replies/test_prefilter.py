"""The regex prefilter (one search of all regex rules joined) never changes which rule answers."""

from __future__ import annotations

import pytest

from plivohook.replies.rules import parse_rules

RULES = """
[[rules]]
regex = "^order\\\\s+(\\\\d+)$"
reply = "order {1}"
[[rules]]
regex = "price\\\\s+(\\\\w+)"
reply = "price {1}"
[[rules]]
keyword = "hours"
reply = "open"
[[rules]]
regex = "^(ab|cd)+$"
reply = "letters"
[[rules]]
regex = "é(t)é"
reply = "summer {1}"
"""
TEXTS = [
    "order 42",
    "ORDER   7",
    "the price of tea",
    "hours",
    "abcdab",
    "Été",
    "nothing at all",
    "",
    "x" * 2000,
]


@pytest.mark.parametrize("text", TEXTS)
def test_the_prefilter_gives_the_same_answer_as_every_search(text):
    joined = parse_rules(RULES)
    assert joined._any is not None
    alone = parse_rules(RULES)
    alone._any = None
    assert joined.match(text, "1", "2") == alone.match(text, "1", "2")


@pytest.mark.parametrize(
    "extra",
    ["(a)\\\\1", "(?i)x", "(?=a)b", "\\\\g<0>"],
)
def test_no_prefilter_where_joining_could_change_a_match(extra):
    rules = parse_rules(RULES + f'[[rules]]\nregex = "{extra}"\nreply = "x"\n')
    assert rules._any is None
