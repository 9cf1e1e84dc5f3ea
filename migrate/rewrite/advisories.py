"""The conditions an advisory's `when` names (rules.ADVISORY_CONDITIONS), evaluated on one use of a watched
declaration: what a rules file cannot say as a pattern — an argument read as an integer, the function that holds the
use searched for what bounds a value — written once here, with every name it looks for taken from the rule's data.

Heuristics, phrased in the messages as "check": a function that visibly mentions what bounds a value (a regular
expression of the rule, e.g. the sequence limit) is trusted to bound it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import clang.cindex as ci

from migrate.rewrite.cursors import enclosing_function, span_of
from migrate.rewrite.edits import SourceFile

INTEGER = re.compile(r"^\(?\s*(-?\d+)\s*\)?$")


@dataclass(frozen=True)
class Use:
    """One use of a watched declaration: a call with its arguments as written, or a field use with the value
    assigned to it (None: the field is read)."""

    cursor: ci.Cursor
    ancestors: tuple[ci.Cursor, ...]
    source: SourceFile
    arguments: tuple[str, ...] = ()
    assigned: str | None = None

    @property
    def function(self) -> ci.Cursor | None:
        function, _ = enclosing_function(self.ancestors)
        return function

    def function_body(self) -> bytes | None:
        function = self.function
        if function is None:
            return None
        span = span_of(function)
        return self.source.data[span.start : span.end]


def integer(text: str | None) -> int | None:
    """The integer a value is written as (`3`, `-1`, `( 0 )`), or None."""
    if text is None:
        return None
    match = INTEGER.match(text.strip())
    return int(match.group(1)) if match else None


def same(written: str, wanted: Any) -> bool:
    """`written` is `wanted` up to spaces and enclosing parentheses (true/false for a YAML boolean)."""
    wanted_text = ("true" if wanted else "false") if isinstance(wanted, bool) else str(wanted)
    written = "".join(written.split())
    while written.startswith("(") and written.endswith(")"):
        written = written[1:-1]
    return written == "".join(wanted_text.split())


def elements(text: str) -> list[str]:
    """A value as the items it names: a braced list `{a, b}` gives each element (split at its top-level commas),
    anything else itself."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return [stripped]
    items, depth, current = [], 0, []
    for char in stripped[1:-1]:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


@cache
def _pattern(text: str) -> re.Pattern[bytes]:
    return re.compile(text.encode())


def holds(when: dict[str, Any], use: Use, value: str | None) -> bool:
    """Every condition of `when` holds for `use` and its `value` (the argument read, or the value assigned)."""
    return all(_CHECKS[key](when[key], use, value) for key in when if key in _CHECKS)


def _argument_count(wanted: int, use: Use, value: str | None) -> bool:
    return len(use.arguments) == wanted


def _integers(wanted: dict[int, list[int]], use: Use, value: str | None) -> bool:
    return all(index < len(use.arguments) and integer(use.arguments[index]) in allowed
               for index, allowed in wanted.items())  # fmt: skip


def _assigned(wanted: bool, use: Use, value: str | None) -> bool:
    return (use.assigned is not None) == wanted


def _equals(wanted: Any, use: Use, value: str | None) -> bool:
    return value is not None and same(value, wanted)


def _matches(pattern: str, use: Use, value: str | None) -> bool:
    return value is not None and re.search(pattern, value) is not None


def _integer_at_least(bound: int, use: Use, value: str | None) -> bool:
    number = integer(value)
    return number is not None and number >= bound


def _in_function_matching(pattern: str, use: Use, value: str | None) -> bool:
    body = use.function_body()
    return body is not None and _pattern(pattern).search(body) is not None


def _not_bounded_in_function(pattern: str, use: Use, value: str | None) -> bool:
    """A value computed at run time (not an integer) in a function that never mentions what bounds it."""
    if value is None or integer(value) is not None:
        return False
    body = use.function_body()
    return body is not None and _pattern(pattern).search(body) is None


# `argument` is not a check: it says which argument is the value (rule_advisories.values).
_CHECKS = {
    "argument_count": _argument_count,
    "integers": _integers,
    "assigned": _assigned,
    "equals": _equals,
    "matches": _matches,
    "integer_at_least": _integer_at_least,
    "in_function_matching": _in_function_matching,
    "not_bounded_in_function": _not_bounded_in_function,
}


def placeholders(use: Use, value: str | None) -> dict[str, str]:
    """What a message may say about the finding (rules.MESSAGE_PLACEHOLDERS)."""
    number = integer(value)
    function = use.function
    return {
        "argument": " ".join(value.split()) if value is not None else "",
        "value": str(number) if number is not None else "",
        "count": str(number + 1) if number is not None else "",
        "function": function.spelling if function is not None else "",
    }


def render(message: str, use: Use, value: str | None) -> str:
    """The message with its placeholders filled (only known names: other braces are left as written)."""
    fill = placeholders(use, value)
    return re.sub(r"\{([a-z_]+)\}", lambda m: fill.get(m.group(1), m.group(0)), message)


__all__ = ["Use", "elements", "holds", "integer", "render", "same"]
