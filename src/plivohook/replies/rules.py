"""Reply rules from a TOML file: keywords, regexes, a default reply and the compliance texts.

The file (``--rules PATH``)::

    [[rules]]
    keyword = "hours"              # the whole text, case- and whitespace-insensitive
    reply = "We are open 9 to 5."
    [[rules]]
    regex = "^price\\s+(\\w+)"     # case-insensitive
    to = ["14155550100"]           # optional: only for messages to these numbers
    reply = "Prices for {1} are on our site."   # {1}: regex groups; {from} {to} {text} too
    [default]
    reply = "Thanks, we got your message."      # optional: when no rule matches
    [compliance]
    stop_reply = "You are unsubscribed. Reply START to resubscribe."
    start_reply = "You are subscribed again."
    help_reply = "Example Co. Reply STOP to unsubscribe."

Everything is checked when the file is read, so that a running server never meets a bad rule:
unknown keys, wrong types, bad regexes, placeholders with no value ({2} in a regex with one group,
{1} in a keyword rule, {name}), empty replies and replies longer than Plivo's limit are refused
with a :class:`RulesError` naming the file, the line or rule number, and the reason.

Matching is first-match-wins in file order. Keyword rules are found with one dict lookup on the
normalised text (:func:`plivohook.replies.compliance.normalise`) and only the regex rules that come
*before* the keyword hit in the file are run, so a 100-keyword file costs one lookup, not a scan.

Regex cost is bounded twice. The text a regex sees is cut to :data:`MAX_MATCH_CHARS` (1600, the
longest message Plivo delivers, so nothing real is lost), which bounds the linear and polynomial
cases; and every search runs with a time limit (:data:`REGEX_TIMEOUT`), because a length limit
alone does not stop a catastrophically backtracking pattern such as ``(a+)+$``, which is
exponential in far fewer than 1600 characters. Python's ``re`` has no time limit (and holds the
GIL while it backtracks), hence the ``regex`` package, whose syntax is ``re``'s. A rule whose
search times out is skipped with a warning, as if it had not matched.
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike, fspath
from typing import Any

import regex

from . import compliance

__all__ = [
    "MAX_MATCH_CHARS",
    "MAX_REPLY_CHARS",
    "REGEX_TIMEOUT",
    "Match",
    "Rule",
    "Rules",
    "RulesError",
    "load_rules",
    "parse_rules",
]

log = logging.getLogger("plivohook.replies")

# Plivo accepts message text up to 1600 characters and splits it into SMS parts itself; longer
# text is refused by Plivo, so a reply template longer than that is refused here, and a reply
# grown past it by its placeholders is cut to it.
MAX_REPLY_CHARS = 1600
# The longest text a regex runs on: Plivo joins a long inbound SMS into at most this many.
MAX_MATCH_CHARS = 1600
# Seconds one regex search may take. A sane pattern takes microseconds on 1600 characters; this
# only stops a runaway one, and a hundred of them still answer well within Plivo's timeout.
REGEX_TIMEOUT = 0.02

_RULE_KEYS = ("keyword", "regex", "to", "reply")
_TOP_KEYS = ("rules", "default", "compliance")
_DEFAULT_KEYS = ("reply",)
_COMPLIANCE_KEYS = ("stop_reply", "start_reply", "help_reply")
_NAMED = ("from", "to", "text")
# What XML 1.0 cannot carry (as in plivohook.protocol.xml): refused in a template, dropped from a
# substituted value, so a rendered reply can always be written.
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_RULES_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*rules[ \t]*\]\]", re.MULTILINE)


class RulesError(ValueError):
    """A rules file that cannot be used; ``str()`` names the file, the place and the reason.

    ``line`` is set for TOML syntax errors (from :mod:`tomllib`) and, when it can be found, for a
    rule's ``[[rules]]`` header; ``rule`` is the 1-based rule number; ``section`` is ``default``
    or ``compliance`` for errors there.
    """

    def __init__(
        self,
        file: str,
        reason: str,
        *,
        line: int | None = None,
        rule: int | None = None,
        section: str | None = None,
    ) -> None:
        self.file = file
        self.reason = reason
        self.line = line
        self.rule = rule
        self.section = section
        where = []
        if rule is not None:
            where.append(f"rule {rule}")
        elif section is not None:
            where.append(f"[{section}]")
        if line is not None:
            where.append(f"line {line}")
        super().__init__(f"{file}: {', '.join(where) + ': ' if where else ''}{reason}")


# -- templates ----------------------------------------------------------------------------------

# A compiled template: literal strings and placeholder keys ("from", "to", "text" or a group int).
_Part = str | int | tuple[str]


@dataclass(frozen=True, slots=True)
class _Template:
    parts: tuple[_Part, ...]
    plain: str | None  # the whole reply when it has no placeholder: no work per message

    def render(self, values: Mapping[str, str], groups: tuple[str | None, ...]) -> str:
        if self.plain is not None:
            return self.plain
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = groups[part] if isinstance(part, int) else values[part[0]]
                if value:
                    out.append(_NOT_XML.sub("", value))
        text = "".join(out)
        return text[:MAX_REPLY_CHARS] if len(text) > MAX_REPLY_CHARS else text


def _template(reply: object, groups: int | None, fail: Any) -> _Template:
    """Compile ``reply``; ``groups`` is the regex's group count, ``None`` where {n} has no value."""
    if not isinstance(reply, str):
        fail(f"reply must be a string, not {_toml_type(reply)}")
    if not reply.strip():
        fail("reply is empty")
    bad = _NOT_XML.search(reply)
    if bad is not None:
        fail(f"reply contains U+{ord(bad.group()):04X}, which a message cannot carry")
    try:
        pieces = list(string.Formatter().parse(reply))
    except ValueError as exc:
        fail(f"reply {_shown(reply)}: {exc} (write a literal brace as {{{{ or }}}})")
    parts: list[_Part] = []
    literal_length = 0
    for literal, name, spec, conversion in pieces:
        if literal:
            parts.append(literal)
            literal_length += len(literal)
        if name is None:
            continue
        if spec or conversion:
            fail(f"placeholder {{{name}...}}: no format spec or conversion is allowed")
        if name in _NAMED:
            parts.append((name,))
        elif name.isascii() and name.isdigit():
            number = int(name)
            if groups is None:
                fail(
                    f"placeholder {{{name}}}: only a regex rule has groups; use {{from}}, {{to}} "
                    "or {text} here"
                )
            elif number > groups:
                fail(f"placeholder {{{name}}}: the regex has {groups} group(s)")
            parts.append(number)
        else:
            allowed = "{from}, {to}, {text}" + (", {1}..." if groups else "")
            fail(f"unknown placeholder {{{name}}} (allowed: {allowed})")
    if literal_length > MAX_REPLY_CHARS:
        fail(f"reply is {literal_length} characters, Plivo's limit is {MAX_REPLY_CHARS}")
    plain = None
    if all(isinstance(part, str) for part in parts):
        plain = "".join(parts)  # type: ignore[arg-type]
    return _Template(tuple(parts), plain)


# -- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rules]]`` entry; ``number`` is its 1-based place in the file."""

    number: int
    reply: str
    keyword: str | None = None
    regex: str | None = None
    to: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Match:
    """The reply a message gets from the rules: ``source`` is ``"rule N"`` or ``"default"``."""

    reply: str
    source: str
    rule: int | None = None


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    template: _Template
    pattern: Any  # regex.Pattern, or None for a keyword rule


def _number(value: str) -> str:
    # Plivo writes numbers without "+", people write them with it: compare without.
    return value.strip().removeprefix("+")


class Rules:
    """The rules in force: immutable once built; swap the whole object to reload.

    ``digest`` is the SHA-256 of the file's bytes (``None`` when not from a file), so a reload or
    a health check can tell whether the file on disk is the one running.
    """

    __slots__ = (
        "_any",
        "_keywords",
        "_regexes",
        "_rules",
        "default",
        "digest",
        "help_reply",
        "path",
        "regex_timeout",
        "rules",
        "start_reply",
        "stop_reply",
    )

    def __init__(
        self,
        compiled: Iterable[_Compiled] = (),
        *,
        default: _Template | None = None,
        stop_reply: _Template | None = None,
        start_reply: _Template | None = None,
        help_reply: _Template | None = None,
        path: str | None = None,
        digest: str | None = None,
        regex_timeout: float | None = REGEX_TIMEOUT,
    ) -> None:
        self._rules = tuple(compiled)
        self.rules: tuple[Rule, ...] = tuple(item.rule for item in self._rules)
        self._keywords: dict[str, tuple[int, ...]] = {}
        regexes = []
        for index, item in enumerate(self._rules):
            if item.pattern is None:
                key = compliance.normalise(item.rule.keyword or "")
                self._keywords[key] = (*self._keywords.get(key, ()), index)
            else:
                regexes.append(index)
        self._regexes = tuple(regexes)
        self._any = _prefilter([self._rules[index].pattern for index in regexes])
        self.default = default
        self.stop_reply = stop_reply or _fixed(compliance.DEFAULT_STOP_REPLY)
        self.start_reply = start_reply or _fixed(compliance.DEFAULT_START_REPLY)
        self.help_reply = help_reply or _fixed(compliance.DEFAULT_HELP_REPLY)
        self.path = path
        self.digest = digest
        self.regex_timeout = regex_timeout

    @classmethod
    def from_auto_reply(cls, text: str | None) -> Rules:
        """The one-line ``--auto-reply TEXT``: no rules, ``text`` as the ``[default]`` reply.

        ``None`` or an empty text gives no default. Raises :class:`RulesError` (file
        ``--auto-reply``) for a text the rules file would refuse, e.g. an unknown placeholder.
        """
        if not text:
            return cls()
        return cls(default=_template(text, None, _failer("--auto-reply")))

    def __repr__(self) -> str:
        return f"<Rules {len(self.rules)} rules from {self.path or '(none)'}>"

    def _to_ok(self, item: _Compiled, to: str) -> bool:
        allowed = item.rule.to
        return allowed is None or _number(to) in allowed

    def match(self, text: str, from_: str, to: str) -> Match | None:
        """The first rule (in file order) that ``text`` sent from ``from_`` to ``to`` hits, else
        the default reply, else ``None``. Compliance words are not handled here (see decide)."""
        keyword_index = len(self._rules)
        hits = self._keywords.get(compliance.normalise(text)) if self._keywords else None
        if hits:
            for index in hits:
                if self._to_ok(self._rules[index], to):
                    keyword_index = index
                    break
        values = {"from": from_, "to": to, "text": text}
        if self._regexes:
            timeout = self.regex_timeout
            subject = text.strip()
            if len(subject) > MAX_MATCH_CHARS:
                subject = subject[:MAX_MATCH_CHARS]
            regexes = self._regexes
            if self._any is not None:
                try:
                    if self._any.search(subject, None, None, None, False, timeout) is None:
                        regexes = ()  # no regex matches anywhere: none of the searches below
                except TimeoutError:
                    pass  # each rule below then runs with its own limit, as without it
            for index in regexes:
                if index > keyword_index:
                    break
                item = self._rules[index]
                if not self._to_ok(item, to):
                    continue
                try:
                    if timeout is None:
                        found = item.pattern.search(subject)
                    else:
                        # Positional (string, pos, endpos, concurrent, partial, timeout): the
                        # keyword form costs ~0.4 us more per search, x every regex rule.
                        found = item.pattern.search(subject, None, None, None, False, timeout)
                except TimeoutError:
                    log.warning(
                        "rules %s: rule %d: regex took over %ss, skipped",
                        self.path,
                        item.rule.number,
                        self.regex_timeout,
                    )
                    continue
                if found is not None:
                    groups = (found.group(0), *found.groups())
                    reply = item.template.render(values, groups)
                    return Match(reply, f"rule {item.rule.number}", item.rule.number)
        if keyword_index < len(self._rules):
            item = self._rules[keyword_index]
            reply = item.template.render(values, ())
            return Match(reply, f"rule {item.rule.number}", item.rule.number)
        if self.default is not None:
            return Match(self.default.render(values, ()), "default")
        return None

    def compliance_reply(self, intent: compliance.Intent, text: str, from_: str, to: str) -> str:
        """The ``[compliance]`` text for ``intent`` (the built-in one when the file has none)."""
        template = {
            "optout": self.stop_reply,
            "optin": self.start_reply,
            "help": self.help_reply,
        }[intent]
        return template.render({"from": from_, "to": to, "text": text}, ())


# Not joined into an alternation: backreferences (an alternation renumbers groups) and every
# "(?" construct but "(?:" (inline flags, whose scope would change; conditionals; lookarounds,
# left out to keep the test simple). The alternation must match wherever one of its parts does.
_NOT_JOINABLE = re.compile(r"\\[1-9]|\\g|\(\?(?!:)")


def _prefilter(patterns: list[Any]) -> Any:
    """One pattern matching wherever any of ``patterns`` does: ``(?:p1)|(?:p2)|...``.

    Most messages match no regex rule; one search of the alternation then replaces one search
    per rule, and each search with a time limit costs ~1.5 us more than the search itself
    (measured: 2.3 us against 0.8 us for ``^order\\s+(\\d+)$`` on a 60-character text), so 20
    regex rules cost ~45 us a message without it. ``None`` where the alternation would not be
    equivalent (see ``_NOT_JOINABLE``), cannot be compiled, or is not worth it (fewer than 3
    regexes).
    """
    if len(patterns) < 3:
        return None
    sources = [pattern.pattern for pattern in patterns]
    if any(_NOT_JOINABLE.search(source) for source in sources):
        return None
    try:
        return regex.compile(
            "|".join(f"(?:{source})" for source in sources), regex.IGNORECASE | regex.VERSION0
        )
    except (regex.error, ValueError, OverflowError, RecursionError):
        return None


def _fixed(text: str) -> _Template:
    return _Template((text,), text)


# -- loading ----------------------------------------------------------------------------------


def _toml_type(value: object) -> str:
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _failer(file: str, key: str | None = None, **where: Any) -> Any:
    def fail(reason: str) -> None:
        raise RulesError(file, f"{key}: {reason}" if key else reason, **where)

    return fail


def _unknown_keys(table: Mapping[str, Any], allowed: tuple[str, ...], fail: Any) -> None:
    for key in table:
        if key not in allowed:
            fail(f"unknown key {key!r} (expected {', '.join(allowed)})")


def _rule(number: int, entry: object, fail: Any) -> _Compiled:
    if not isinstance(entry, dict):
        fail(f"must be a table, not {_toml_type(entry)}")
    _unknown_keys(entry, _RULE_KEYS, fail)
    keyword = entry.get("keyword")
    pattern_text = entry.get("regex")
    if (keyword is None) == (pattern_text is None):
        fail("needs exactly one of 'keyword' or 'regex'")
    if "reply" not in entry:
        fail("has no 'reply'")
    to = None
    if "to" in entry:
        raw_to = entry["to"]
        if not isinstance(raw_to, list) or not raw_to:
            fail(f"'to' must be a non-empty array of numbers, not {_toml_type(raw_to)}")
        numbers = set()
        for value in raw_to:
            if not isinstance(value, str) or not _number(value):
                fail(f"'to' entries must be non-empty strings, not {value!r}")
            numbers.add(_number(value))
        to = frozenset(numbers)
    pattern = None
    if keyword is not None:
        if not isinstance(keyword, str):
            fail(f"'keyword' must be a string, not {_toml_type(keyword)}")
        normal = compliance.normalise(keyword)
        if not normal:
            fail("'keyword' is empty")
        if compliance.classify(normal) is not None:
            fail(
                f"keyword {keyword!r} is a compliance word, answered before any rule; "
                "set its text in [compliance]"
            )
        template = _template(entry["reply"], None, fail)
    else:
        if not isinstance(pattern_text, str):
            fail(f"'regex' must be a string, not {_toml_type(pattern_text)}")
        if not pattern_text:
            fail("'regex' is empty")
        try:
            # VERSION0: the `re` module's syntax and behaviour, so the docs people know apply.
            pattern = regex.compile(pattern_text, regex.IGNORECASE | regex.VERSION0)
        except (regex.error, ValueError, OverflowError, RecursionError) as exc:
            fail(f"bad regex {_shown(pattern_text)}: {exc}")
        if pattern.groupindex:
            fail("named groups are not supported; refer to groups by number: {1}, {2}...")
        template = _template(entry["reply"], pattern.groups, fail)
    rule = Rule(number, entry["reply"], keyword, pattern_text, to)
    return _Compiled(rule, template, pattern)


def parse_rules(
    source: str,
    file: str = "<rules>",
    *,
    digest: str | None = None,
    regex_timeout: float | None = REGEX_TIMEOUT,
) -> Rules:
    """Build :class:`Rules` from TOML text; ``file`` names it in errors. See :func:`load_rules`."""
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "... (at line 3, column 7)": keep its words, lift the line out.
        found = re.search(r"\(at line (\d+), column \d+\)$", str(exc))
        reason = str(exc)[: found.start()].rstrip() if found else str(exc)
        raise RulesError(
            file, f"TOML syntax: {reason}", line=int(found.group(1)) if found else None
        ) from None
    _unknown_keys(data, _TOP_KEYS, _failer(file))
    headers = [source.count("\n", 0, m.start()) + 1 for m in _RULES_HEADER.finditer(source)]
    entries = data.get("rules", [])
    if not isinstance(entries, list):
        raise RulesError(
            file, f"'rules' must be an array of tables ([[rules]]), not {_toml_type(entries)}"
        )
    # Header lines are only trusted when they line up one to one with the rules.
    lines = headers if len(headers) == len(entries) else [None] * len(entries)
    compiled = [
        _rule(number, entry, _failer(file, rule=number, line=line))
        for number, (entry, line) in enumerate(zip(entries, lines, strict=True), start=1)
    ]
    templates: dict[str, _Template | None] = {}
    for section, keys in (("default", _DEFAULT_KEYS), ("compliance", _COMPLIANCE_KEYS)):
        table = data.get(section)
        fail = _failer(file, section=section)
        if table is None:
            continue
        if not isinstance(table, dict):
            fail(f"must be a table, not {_toml_type(table)}")
        _unknown_keys(table, keys, fail)
        for key in keys:
            if key in table:
                templates[key] = _template(table[key], None, _failer(file, key, section=section))
    return Rules(
        compiled,
        default=templates.get("reply"),
        stop_reply=templates.get("stop_reply"),
        start_reply=templates.get("start_reply"),
        help_reply=templates.get("help_reply"),
        path=file,
        digest=digest,
        regex_timeout=regex_timeout,
    )


def load_rules(path: str | PathLike[str], *, regex_timeout: float | None = REGEX_TIMEOUT) -> Rules:
    """Read and check the rules file at ``path``.

    Raises :class:`RulesError` for a file that cannot be read, is not UTF-8 TOML, or holds a bad
    rule; the message names the file, the line or rule number, and the reason. Nothing is kept
    from a refused file, so a reload that fails leaves the caller's current :class:`Rules` as is.
    ``regex_timeout`` is the limit per regex search in seconds; ``None`` leaves only the length
    limit (a search then costs ~0.3 us instead of ~1 us, but a runaway pattern can hang).
    """
    file = fspath(path)
    try:
        with open(file, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise RulesError(file, f"cannot read it: {exc.strerror or exc}") from None
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError(file, f"not UTF-8 (byte {exc.start})") from None
    digest = hashlib.sha256(raw).hexdigest()
    return parse_rules(source, file, digest=digest, regex_timeout=regex_timeout)
