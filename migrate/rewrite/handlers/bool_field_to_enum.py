"""Kind bool_field_to_enum: a struct field renamed and its assigned value mapped (a fold of several
fields is planned apart: fold.py)."""

from __future__ import annotations

from migrate.rewrite.collect import FieldSite
from migrate.rewrite.cursors import K, children, meaningful_parent, operator_between, span_of
from migrate.rewrite.edits import SourceFile
from migrate.rewrite.handlers.base import Findings, Handler, HandlerResult, UnitFacts, handler
from migrate.rewrite.rules import Rule
from migrate.rewrite.tokens import tokenize, value_after_equals


@handler("bool_field_to_enum")
class BoolFieldToEnum(Handler):
    """A field renamed and its assigned value mapped (true/false through params, any other value through the fix).
    An opt-in `params_insert` rule that sets the same new member to a `value` decides the value instead."""

    def field(self, site: FieldSite, facts: UnitFacts) -> HandlerResult:
        found = Findings(facts)
        source = facts.source(site.file)
        member = site.rule.match.member or ""
        if source.data[site.name_offset : site.name_offset + len(member)] != member.encode():
            found.listed(site.file, site.name_offset, site.rule,
                         f"`{member}` is used inside a macro; {site.rule.description}")  # fmt: skip
            return found.result()
        value = _designated_value(source.data, site.name_offset + len(member))
        if site.member.kind == K.MEMBER_REF and value is not None:
            _assignment(site, source, value, found)
            return found.result()
        parent, _ = meaningful_parent(site.ancestors)
        kids = children(parent) if parent is not None else []
        is_assignment = (
            parent is not None
            and parent.kind == K.BINARY_OPERATOR
            and len(kids) == 2
            and span_of(kids[0]).end == span_of(site.member).end
            and operator_between(source.data, kids[0], kids[1]) == "="
        )
        if not is_assignment:
            note = site.rule.params.get("read_note")  # what the new field holds, in the rule's words
            about = f" ({note})" if note else ""
            found.listed(site.file, site.name_offset, site.rule,
                         f"`{member}` is read here; at the target read `{site.rule.params['member']}`{about} "
                         f"instead. {site.rule.description}")  # fmt: skip
            return found.result()
        value_span = span_of(kids[1])
        _assignment(site, source, (value_span.start, value_span.end), found)
        return found.result()


def _assignment(site: FieldSite, source: SourceFile, value: tuple[int, int], found: Findings) -> None:
    """`x.old = v` (or the designator `.old = v`): the member renamed, the value mapped."""
    rule = site.rule
    name_end = site.name_offset + len(rule.match.member or "")
    new_member = str(rule.params["member"])
    name_end = source.absorb_padding(name_end, len(new_member) - len(rule.match.member or ""))
    found.edit(source.make_edit(site.name_offset, name_end, new_member, rule.id))
    start, end = value
    text = source.text(start, end).strip()
    setter = _setter(new_member, found.facts.rules)
    if setter is not None:
        replacement, rule_id = str(setter.params["value"]), setter.id
        found.used(setter)
    elif text in ("true", "1", "false", "0"):
        replacement, rule_id = str(rule.params["true" if text in ("true", "1") else "false"]), rule.id
    else:
        replacement, rule_id = str(rule.fix).format_map({"expr": text}), rule.id
    found.edit(source.make_edit(start, end, replacement, rule_id))
    found.used(rule)


def _setter(member: str, rules: tuple[Rule, ...]) -> Rule | None:
    """An active rule that sets `member` to one value wherever it is set up (an opt-in params_insert)."""
    return next((r for r in rules if "value" in r.params and r.params.get("member") == member), None)


def _designated_value(data: bytes, name_end: int) -> tuple[int, int] | None:
    """The value after a designator `.member = value` (up to the `,` or `}` that ends it), or None."""
    tokens = tokenize(data, name_end, min(len(data), name_end + 4096))
    if not tokens or tokens[0].text != b"=":
        return None
    return value_after_equals(tokens)
