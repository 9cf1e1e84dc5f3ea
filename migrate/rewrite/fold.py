"""Several bool fields folded into one enum field (kind bool_field_to_enum with params `fold` + `values`).

    model_params.use_mmap  = use_mmap;
    model_params.use_mlock = use_mlock;
becomes
    model_params.load_mode = (use_mmap && use_mlock) ? LLAMA_LOAD_MODE_MMAP_MLOCK : use_mmap ? ... : ..._NONE;

Everything about the API lives in the rules file: `params.member` (the new field), `params.fold` (each folded field and
the value it has when a set-up does not assign it) and `params.values` (rows `{when: {field: bool}, value}`, the first
that holds wins, the last without `when`). Each folded field has its own rule (same params; YAML anchors share them),
so every use of each is collected. The assignments to one object in one block are one group: the first becomes the
new field's assignment, the others are removed. A designated initializer (`{ .use_mmap = false }`) folds the same way;
its fields left out are zero (false), not the defaults. A read of a folded field, or a group whose statements another
statement between them could observe, is a manual item.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.rewrite.collect import FieldSite
from migrate.rewrite.cursors import K, children, meaningful_parent, operator_between, span_of
from migrate.rewrite.edits import Edit, SourceFile
from migrate.rewrite.plan import Plan
from migrate.rewrite.rules import Rule
from migrate.rewrite.tokens import tokenize, value_after_equals

Manual = Callable[[Plan, str, int, Rule, str], None]
SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:(?:\.|->)[A-Za-z_][A-Za-z0-9_]*|\[[^\[\]]*\]|\(\))*$")
TRUE, FALSE = {"true", "1", "TRUE"}, {"false", "0", "FALSE"}


@dataclass
class _Use:
    site: FieldSite
    member: str  # the folded field written here
    value: tuple[int, int]  # the assigned value's extent
    statement: tuple[int, int]  # the whole `obj.field = value;` (or `.field = value` of a designator)
    block: tuple[int, int]  # the compound statement (or the initializer list) holding it
    target: str  # the object's text (`model_params`, `p->`); "" for a designator
    designator: bool


def fold_value(rows: list[dict[str, Any]], values: dict[str, bool | str]) -> str:
    """The new field's value: rows decided on what is known (literals, defaults), the rest as nested conditionals."""
    branches: list[tuple[str, str]] = []
    for row in rows:
        conditions, holds = [], True
        for name, wanted in (row.get("when") or {}).items():
            value = values[name]
            if isinstance(value, bool):
                holds = holds and value == wanted
                continue
            operand = value if SIMPLE.match(value) else f"({value})"
            conditions.append(operand if wanted else f"!{operand}")
        if not holds:
            continue
        if not conditions:
            branches.append(("", str(row["value"])))
            break
        condition = conditions[0] if len(conditions) == 1 else f"({' && '.join(conditions)})"
        branches.append((condition, str(row["value"])))
    text = branches[-1][1]
    for condition, value in reversed(branches[:-1]):
        text = f"{condition} ? {value} : {text}"
    return text


def _literal(text: str) -> bool | str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    return text


def plan_folds(sites: list[FieldSite], sources: dict[Path, SourceFile], plan: Plan, manual: Manual) -> list[Edit]:
    """Edits for every folded field's uses in `sites` (all of one translation unit's fresh files)."""
    edits: list[Edit] = []
    groups: dict[tuple[str, str, tuple[int, int], str], list[_Use]] = {}
    for site in sites:
        source = sources[Path(site.file)]
        member = site.rule.match.member or ""
        if source.data[site.name_offset : site.name_offset + len(member)] != member.encode():
            manual(plan, site.file, site.name_offset, site.rule,
                   f"`{member}` is used inside a macro; {site.rule.description}")  # fmt: skip
            continue
        use = _use(site, source, member)
        if use is None:
            folded = ", ".join(site.rule.params["fold"])
            target = site.rule.params["member"]
            manual(plan, site.file, site.name_offset, site.rule,
                   f"`{member}` is read here (or assigned inside an expression); at the target {folded} are one "
                   f"field, `{target}`: read or set that instead. {site.rule.description}")  # fmt: skip
            continue
        key = (site.file, str(site.rule.params["member"]), use.block, use.target)
        groups.setdefault(key, []).append(use)
    for uses in groups.values():
        uses.sort(key=lambda u: u.statement[0])
        source = sources[Path(uses[0].site.file)]
        if len({u.member for u in uses}) != len(uses) or not _adjacent(uses, source):
            for use in uses:
                manual(plan, use.site.file, use.site.name_offset, use.site.rule,
                       f"`{use.member}` is set more than once, or other code runs between the settings of "
                       f"{', '.join(use.site.rule.params['fold'])}: fold them into "
                       f"`{use.site.rule.params['member']}` by hand. {use.site.rule.description}")  # fmt: skip
            continue
        edits += _group_edits(uses, source)
        for use in uses:
            plan.rules_used.setdefault(use.site.rule.id, use.site.rule.description)
    return edits


def _use(site: FieldSite, source: SourceFile, member: str) -> _Use | None:
    name_end = site.name_offset + len(member)
    parent, index = meaningful_parent(site.ancestors)
    if site.member.kind == K.MEMBER_REF:  # a designator `.use_mmap = value` in an initializer list
        tokens = tokenize(source.data, name_end, min(len(source.data), name_end + 4096))
        if not tokens or tokens[0].text != b"=":
            return None
        value = value_after_equals(tokens)
        if value is None:
            return None
        dot = source.data.rfind(b".", 0, site.name_offset)
        block = next((span_of(a) for a in reversed(site.ancestors) if a.kind == K.INIT_LIST_EXPR), None)
        if block is None:
            return None
        return _Use(site, member, value, (dot, value[1]), (block.start, block.end), "", True)
    if parent is None or parent.kind != K.BINARY_OPERATOR:
        return None
    kids = children(parent)
    if len(kids) != 2 or span_of(kids[0]).end != span_of(site.member).end:
        return None
    if operator_between(source.data, kids[0], kids[1]) != "=":
        return None
    statement_parent = site.ancestors[index - 1] if index > 0 else None
    if statement_parent is None or statement_parent.kind != K.COMPOUND_STMT:
        return None  # the assignment's value is used: not a plain statement
    lhs = span_of(kids[0])
    target = source.text(lhs.start, site.name_offset).strip()
    value = span_of(kids[1])
    end = _statement_end(source, span_of(parent).end)
    block = span_of(statement_parent)
    return _Use(site, member, (value.start, value.end), (span_of(parent).start, end), (block.start, block.end),
                re.sub(r"\s+", "", target), False)  # fmt: skip




def _statement_end(source: SourceFile, end: int) -> int:
    tokens = tokenize(source.data, end, min(len(source.data), end + 32))
    return tokens[0].end if tokens and tokens[0].text == b";" else end


def _adjacent(uses: list[_Use], source: SourceFile) -> bool:
    """Between the first and the last setting only assignments to other fields of the same object (nothing that
    could observe the object half set), so the settings can become one."""
    if uses[0].designator:
        return True
    for before, after in zip(uses, uses[1:], strict=False):
        gap = source.data[before.statement[1] : after.statement[0]]
        for statement in (s.strip() for s in _code_only(gap).split(b";")):
            if not statement:
                continue
            text = re.sub(rb"\s+", b"", statement).decode("utf-8", "replace")
            if not re.match(re.escape(uses[0].target) + r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?=(?!=)", text):
                return False
    return True


def _code_only(data: bytes) -> bytes:
    return b" ".join(token.text for token in tokenize(data))


def _group_edits(uses: list[_Use], source: SourceFile) -> list[Edit]:
    rule = uses[0].site.rule
    params = rule.params
    defaults: dict[str, bool | str] = {name: (False if uses[0].designator else bool(default))
                                       for name, default in params["fold"].items()}  # fmt: skip
    values = dict(defaults)
    for use in uses:
        values[use.member] = _literal(source.text(*use.value))
    replacement = fold_value(list(params["values"]), values)
    first = uses[0]
    new_member = str(params["member"])
    name_start = first.site.name_offset
    name_end = source.absorb_padding(name_start + len(first.member), len(new_member) - len(first.member))
    edits = [source.make_edit(name_start, name_end, new_member, first.site.rule.id, note="fields folded"),
             source.make_edit(*first.value, replacement, first.site.rule.id, note="fields folded")]  # fmt: skip
    for use in uses[1:]:
        edits.append(source.make_edit(*_removal(use, source), "", use.site.rule.id,
                                      note=f"folded into `{new_member}`"))  # fmt: skip
    return edits


def _removal(use: _Use, source: SourceFile) -> tuple[int, int]:
    data = source.data
    start, end = use.statement
    if use.designator:  # `, .use_mlock = x` goes with the comma before it (or after it, when first)
        before = data[:start].rstrip()
        if before.endswith(b","):
            return len(before) - 1, end
        after = end
        while after < len(data) and data[after : after + 1] in (b" ", b"\t", b"\n", b"\r"):
            after += 1
        return start, (after + 1 if data[after : after + 1] == b"," else end)
    return source.removal_span(start, end)


__all__ = ["fold_value", "plan_folds"]
