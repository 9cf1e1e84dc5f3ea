"""`migrate rules`: the rules files themselves.

    migrate rules draft --from b7785 --to b10361 [--out FILE]
    migrate rules check [FILE ...]
    migrate rules steps --from b5421 --to b7825
    migrate rules mine --from b5421 --to b7785 [--corpus OLD=NEW ...] [-o FILE]   (migrate/mine/command.py)

`draft` writes a DRAFT rules file for a step from the API diff of the two trees and the headers' own
`DEPRECATED(..., "use X instead")` hints, so the next bump starts from review, not from a blank file:
- a removed function whose successor is certain becomes a `call_rewrite` rule, ready: the old declaration's hint
  names a function the target declares with the same signature, or the target adds exactly one function with the
  same signature whose name is the old one with a prefix (`cpu_get_num_math` → `common_cpu_get_num_math`) or close
  to it (`llama_apply_adapter_cvec` → `llama_set_adapter_cvec`);
- every other removed or re-signatured function, and every removed or retyped struct field, becomes a `manual_call`
  entry (listed at each use) with what the diff knows, for a person to turn into a rule or leave as guidance;
- each entry has a generated test case (a call with arguments of the declared types; a field read) so the file loads
  and its cases run (tests/test_rules_steps.py runs every shipped file's cases).
Removed types and enum constants are listed in the header comment; the API diff reports their uses anyway.
`check` loads rules files (default: every shipped one) with the schema and prints what each holds.
`steps` prints which rules files a bump runs and what no rules cover.

Exit codes: 0 done; 2 bad input (unknown build, a tree that does not parse, a malformed rules file).
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from migrate.exit_codes import RulesExit
from migrate.paths import cache_root
from verify.inputs import PathKind, existing_path, output_file


@dataclass(frozen=True)
class DraftRequest:
    """`migrate rules draft`: the step's two builds and where the draft goes (None: <cache>/rules-drafts/)."""

    from_version: str
    to_version: str
    out: str | None = None
    cache: str | None = None


@dataclass(frozen=True)
class CheckRequest:
    """`migrate rules check`: the files to load (none: every shipped one)."""

    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepsRequest:
    """`migrate rules steps`: the bump, and the rules folder (None: the shipped rules/)."""

    from_version: str
    to_version: str
    rules: str | None = None


HINT_SUCCESSOR = re.compile(r"\buse\s+([A-Za-z_][A-Za-z0-9_]*)")
SIMILAR = 0.6  # difflib ratio for a same-signature successor by name
# canonical spellings that cannot be written back as a parameter type in a generated case
UNSPELLABLE = re.compile(r"\(unnamed|\(anonymous|\blambda\b|<.*\(.*\).*>")


@dataclass
class DraftEntry:
    rule: dict[str, Any]
    ready: bool  # a rename the draft is sure of (else a manual entry to review)


def _header(path: str) -> str:
    return Path(path).name


def _rule_id(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _includes(header: str) -> str:
    return "" if header == "llama.h" else f'#include "{header}"\n'


def _call_case(decl: Any, callee: str) -> str:
    """`auto call_f(T0 a0, ...) { return f(a0, ...); }`: compiles wherever the declaration does (C++14)."""
    params = ", ".join(f"{t} a{i}" for i, t in enumerate(decl.param_types))
    args = ", ".join(f"a{i}" for i in range(len(decl.param_types)))
    name = decl.name.replace("::", "_")
    return f"{_includes(_header(decl.header))}auto call_{name}({params}) {{ return {callee}({args}); }}\n"


def _spellable(decl: Any) -> bool:
    return not any(UNSPELLABLE.search(t) for t in decl.param_types) and "::" not in decl.name


def _fix(new_name: str, arity: int) -> str:
    if arity == 0:
        return f"{new_name}()"
    if arity == 1:
        return f"{new_name}({{args[0]}})"
    return f"{new_name}({{args[0]}}, {{rest}})"


def _successor(decl: Any, new_by_name: dict[str, list[Any]], added: list[Any]) -> tuple[Any | None, str]:
    """The function that replaces `decl` at the target, and how it was found; (None, why) when not certain."""
    hint = decl.deprecation_hint or ""
    named = HINT_SUCCESSOR.search(hint)
    if named:
        candidates = new_by_name.get(named.group(1), [])
        same = [c for c in candidates if c.signature == decl.signature]
        if same:
            return same[0], f'the old header says "{hint}"'
        if candidates:
            return None, f'the old header says "{hint}", but {named.group(1)} has another signature there: ' + (
                "; ".join(c.declaration for c in candidates))  # fmt: skip
        return None, f'the old header says "{hint}", but the target does not declare {named.group(1)} either'
    same = [a for a in added if a.signature == decl.signature and "::" not in a.name]
    prefixed = [a for a in same if a.name.endswith("_" + decl.name) or a.name.endswith(decl.name)]
    if len(prefixed) == 1:
        return prefixed[0], "the target adds it with the same signature, the old name with a prefix"
    close = [(difflib.SequenceMatcher(None, decl.name, a.name).ratio(), a) for a in same]
    close = sorted([c for c in close if c[0] >= SIMILAR], key=lambda c: -c[0])
    if len(close) == 1 or (len(close) > 1 and close[0][0] - close[1][0] > 0.1):
        return close[0][1], f"the target adds it with the same signature and a close name ({close[0][0]:.2f})"
    return None, "no successor with the same signature was found"


def draft(diff: Any, old: Any, new: Any, from_version: str, to_version: str) -> tuple[dict[str, Any], list[str]]:
    """The draft rules file as data, and its header comment lines."""
    new_by_name: dict[str, list[Any]] = {}
    for decl in new.functions:
        new_by_name.setdefault(decl.name, []).append(decl)
    entries: list[DraftEntry] = []
    for decl in diff.removed_functions:
        if not _spellable(decl):
            continue
        successor, how = _successor(decl, new_by_name, diff.added_functions)
        header = _header(decl.header)
        if successor is not None:
            code = _call_case(decl, decl.name)
            entries.append(DraftEntry({
                "id": _rule_id(decl.name), "kind": "call_rewrite",
                "description": f"DRAFT: {decl.name} was removed at {to_version}; {successor.name} takes the same "
                               f"arguments ({how}). Check that it means the same.",
                "match": {"function": decl.name, "header": header},
                "fix": _fix(successor.name, len(decl.param_types)),
                "tests": {"invalid": [{"name": "generated: a call", "code": code,
                                       "output": code.replace(f"return {decl.name}(", f"return {successor.name}(")}]},
            }, True))  # fmt: skip
        else:
            guidance = (f"{decl.declaration} is gone at {to_version}: find what replaced it (see the API diff's added "
                        "functions) and rewrite this call, or turn this entry into a rule")  # fmt: skip
            entries.append(_manual(decl, header, f"{decl.name} was removed at {to_version} ({how})", guidance))
    for change in diff.changed_functions:
        if not _spellable(change.old):
            continue
        news = "; ".join(d.declaration for d in change.new)
        entries.append(_manual(change.old, _header(change.old.header),
                               f"{change.name} changed signature at {to_version}: {change.old.declaration} → {news}",
                               f"adapt the call to {news}"))  # fmt: skip
    fields = [(f, None) for f in diff.removed_fields] + [(c.old, c.new) for c in diff.retyped_fields]
    for item, retyped in fields:
        what = f"retyped to {retyped.declaration}" if retyped is not None else "removed"
        header = _header(item.header)
        code = (
            f"{_includes(header)}void read_{item.struct}_{item.name}({item.struct} & s) {{ (void) s.{item.name}; }}\n"
        )
        entries.append(DraftEntry({
            "id": _rule_id(f"{item.struct}-{item.name}"), "kind": "manual_call",
            "description": f"DRAFT: {item.declaration} was {what} at {to_version}.",
            "match": {"field": f"{item.struct}.{item.name}", "header": header},
            "guidance": f"{item.struct}.{item.name} was {what} at {to_version}: change this use by hand, or turn this "
                        "entry into a field_to_enum rule (a rename with a value map, several fields folded into one)",
            "tests": {"invalid": [{"name": "generated: a read", "manual": True, "code": code, "output": code}]},
        }, False))  # fmt: skip
    seen: set[str] = set()
    rules = []
    for entry in entries:
        rule_id = entry.rule["id"]
        while rule_id in seen:
            rule_id += "-2"
        seen.add(rule_id)
        entry.rule["id"] = rule_id
        rules.append(entry.rule)
    ready = sum(1 for e in entries if e.ready)
    comments = [
        f"DRAFT rules for llama.cpp {from_version} → {to_version}, written by `migrate rules draft` from the API diff",
        f"{diff.old} → {diff.new} and the old headers' DEPRECATED hints: {ready} rename(s) ready, "
        f"{len(entries) - ready} manual entr(ies) to review.",
        "Review every rule before use: a rename means the same only if the documentation says so; turn manual entries",
        "into rules where the fix is mechanical (see rules/b7785-b10361.yaml for the kinds).",
    ]
    if diff.removed_types:
        comments.append("Removed types (uses are API-diff manual actions): "
                        + ", ".join(t.name for t in diff.removed_types))  # fmt: skip
    if diff.removed_constants:
        comments.append("Removed enum constants (uses are API-diff manual actions): "
                        + ", ".join(c.name for c in diff.removed_constants))  # fmt: skip
    data = {
        "migration": {"from": from_version, "to": to_version},
        "test_prelude": {"c++": '#include "llama.h"\n', "c": '#include "llama.h"\n'},
        "rules": rules,
    }
    return data, comments


def _manual(decl: Any, header: str, description: str, guidance: str) -> DraftEntry:
    code = _call_case(decl, decl.name)
    return DraftEntry({
        "id": _rule_id(decl.name), "kind": "manual_call", "description": f"DRAFT: {description}.",
        "match": {"function": decl.name, "header": header}, "guidance": guidance,
        "tests": {"invalid": [{"name": "generated: a call", "manual": True, "code": code, "output": code}]},
    }, False)  # fmt: skip


def _wrap(line: str, width: int = 116) -> list[str]:
    words, lines, current = line.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*lines, current] if current else lines


class _Dumper(yaml.SafeDumper):
    """Code as literal blocks (`code: |`), as in the hand-written rules files."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(data: dict[str, Any], comments: list[str]) -> str:
    header = "".join(f"# {piece}\n" for line in comments for piece in _wrap(line))
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    return header + "\n" + body


def write_draft(request: DraftRequest) -> int:
    from migrate.apidiff import diff, load_surface
    from migrate.rewrite.rules import load_rules
    from migrate.sources import resolve

    cache = request.cache
    output_file("--out", request.out, makes_folder=True)  # before the diff, not after it (its folder is created)
    old_tree, new_tree = resolve(request.from_version, cache=cache), resolve(request.to_version, cache=cache)
    for tree in (old_tree, new_tree):
        print(tree.summary(), file=sys.stderr)
    old, new = load_surface(old_tree, cache), load_surface(new_tree, cache)
    data, comments = draft(diff(old, new), old, new, request.from_version, request.to_version)
    out = Path(request.out) if request.out else cache_root(cache) / "rules-drafts" / (
        f"{request.from_version}-{request.to_version}.yaml")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(data, comments), encoding="utf-8")
    ruleset = load_rules(out)  # the draft must load: a schema error here is a bug in the draft
    ready = sum(1 for r in ruleset.rules if r.kind != "manual_call")
    print(f"draft: {len(ruleset.rules)} rule(s), {ready} rename(s) ready, {len(ruleset.rules) - ready} manual "
          f"entr(ies) to review", file=sys.stderr)  # fmt: skip
    print(out)
    return RulesExit.OK


def check_files(request: CheckRequest) -> int:
    from migrate.rewrite.rules import load_rules, rule_files

    files = [existing_path("FILE", p, PathKind.FILE, "give a rules .yaml", noun="rules file") for p in request.files]
    rulesets = [load_rules(path) for path in files] if files else rule_files()
    for ruleset in rulesets:
        kinds: dict[str, int] = {}
        for rule in ruleset.rules:
            kinds[rule.kind] = kinds.get(rule.kind, 0) + 1
        cases = sum(len(r.invalid) + len(r.valid) for r in ruleset.rules)
        cases += sum(len(a.flagged) + len(a.quiet) for a in ruleset.advisories)
        print(f"{ruleset.path}: {ruleset.label}: {len(ruleset.rules)} rules ("
              + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
              + f"), {len(ruleset.advisories)} advisories, {cases} test cases: ok")  # fmt: skip
    return RulesExit.OK


def show_steps(request: StepsRequest) -> int:
    from migrate.rewrite.rules import rule_files
    from migrate.rewrite.steps import select_steps

    rules = rule_files(Path(request.rules) if request.rules else None)
    selection = select_steps(request.from_version, request.to_version, rules)
    for line in selection.coverage():
        print(line)
    return RulesExit.OK
