"""Kind bool_field_to_enum: a struct field renamed and its assigned value mapped (a fold of several
fields is planned apart: fold.py)."""

from __future__ import annotations

from pathlib import Path

from migrate.rewrite.collect import FieldSite
from migrate.rewrite.cursors import K, children, meaningful_parent, operator_between, span_of
from migrate.rewrite.edits import SourceFile
from migrate.rewrite.handlers.base import Handler, handler
from migrate.rewrite.plan import Plan
from migrate.rewrite.rules import Rule
from migrate.rewrite.tokens import tokenize, value_after_equals


@handler("bool_field_to_enum")
class BoolFieldToEnum(Handler):
    """A field renamed and its assigned value mapped (true/false through params, any other value through the fix).
    An opt-in `params_insert` rule that sets the same new member to a `value` decides the value instead."""

    def field(self, site: FieldSite, plan: Plan) -> None:
        engine = self.engine
        source = engine.sources[Path(site.file)]
        member = site.rule.match.member or ""
        if source.data[site.name_offset : site.name_offset + len(member)] != member.encode():
            engine.manual(plan, site.file, site.name_offset, site.rule,
                          f"`{member}` is used inside a macro; {site.rule.description}")  # fmt: skip
            return
        value = _designated_value(source.data, site.name_offset + len(member))
        if site.member.kind == K.MEMBER_REF and value is not None:
            self._assignment(site, source, plan, value)
            return
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
            engine.manual(plan, site.file, site.name_offset, site.rule,
                          f"`{member}` is read here; at the target read `{site.rule.params['member']}`{about} "
                          f"instead. {site.rule.description}")  # fmt: skip
            return
        value_span = span_of(kids[1])
        self._assignment(site, source, plan, (value_span.start, value_span.end))

    def _assignment(self, site: FieldSite, source: SourceFile, plan: Plan, value: tuple[int, int]) -> None:
        """`x.old = v` (or the designator `.old = v`): the member renamed, the value mapped."""
        rule = site.rule
        name_end = site.name_offset + len(rule.match.member or "")
        new_member = str(rule.params["member"])
        name_end = source.absorb_padding(name_end, len(new_member) - len(rule.match.member or ""))
        self.engine.edits.append(source.make_edit(site.name_offset, name_end, new_member, rule.id))
        start, end = value
        text = source.text(start, end).strip()
        setter = self._setter(new_member)
        if setter is not None:
            replacement, rule_id = str(setter.params["value"]), setter.id
            plan.rules_used.setdefault(setter.id, setter.description)
        elif text in ("true", "1", "false", "0"):
            replacement, rule_id = str(rule.params["true" if text in ("true", "1") else "false"]), rule.id
        else:
            replacement, rule_id = str(rule.fix).format_map({"expr": text}), rule.id
        self.engine.edits.append(source.make_edit(start, end, replacement, rule_id))
        plan.rules_used.setdefault(rule.id, rule.description)

    def _setter(self, member: str) -> Rule | None:
        """An active rule that sets `member` to one value wherever it is set up (an opt-in params_insert)."""
        return next((r for r in self.engine.rules if "value" in r.params and r.params.get("member") == member), None)


def _designated_value(data: bytes, name_end: int) -> tuple[int, int] | None:
    """The value after a designator `.member = value` (up to the `,` or `}` that ends it), or None."""
    tokens = tokenize(data, name_end, min(len(data), name_end + 4096))
    if not tokens or tokens[0].text != b"=":
        return None
    return value_after_equals(tokens)
