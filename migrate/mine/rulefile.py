"""Generalisations written as a rules file in the schema of rules/*.yaml, every rule `mined: true` with provenance.

A rule (`memory_call` or `call_rewrite`) is kept only when its fix, written for each pair's old arguments, gives that
pair's after-call token for token (`unify.reproduces`); its pairs become its `invalid` cases (a function with the
old call, its arguments declared with the old declaration's parameter types; the expected output is the fix written
out), uses left unchanged at B its `valid` cases. Conflicts and context-dependent shapes become `manual_call` rules
whose guidance lists what the maintainers wrote, with counts. The mined file inlines the memory handle (option
`hoist_memory: false`): a case's expected output is then the pair's own after-text, handle inlined.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.apidiff import FunctionDecl
from migrate.mine.corpus import Pair, render
from migrate.mine.unify import (
    KEYWORDS,
    Fix,
    FixKind,
    Generalisation,
    Shape,
    apply_fix,
    fix_for,
    most_general,
    reproduces,
    shown,
    template_of,
)

UNSPELLABLE = re.compile(r"\(unnamed|\(anonymous|\blambda\b|<.*\(.*\).*>")
MAX_CASES = 4  # invalid cases per rule (distinct old call texts); every pair stays in the provenance
MAX_SHOWN = 3  # provenance lines quoted in a manual rule's guidance per shape


def rule_id(name: str) -> str:
    return "mined-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _header(decl: FunctionDecl) -> str:
    return decl.header.rsplit("/", 1)[-1]


def _include(header: str) -> str:
    return "" if header == "llama.h" else f'#include "{header}"\n'


def _identifier(text: str) -> bool:
    return bool(text) and (text[0].isalpha() or text[0] == "_")


def case_code(decl: FunctionDecl, args: tuple[tuple[str, ...], ...], number: int,
              known_at_from: set[str]) -> tuple[str, list[str]] | None:  # fmt: skip
    """A function that makes the old call: an argument written as a plain name becomes a parameter of that name and
    the declared type, one without names stays as written, any other expression (`slot.id`) becomes a parameter
    `aN` (its surrounding code is not carried). None when the declaration's types cannot be written back."""
    if decl.variadic or len(args) != len(decl.param_types) or any(UNSPELLABLE.search(t) for t in decl.param_types):
        return None
    params: list[str] = []
    call_args: list[str] = []
    declared: set[str] = set()
    for index, (arg, type_) in enumerate(zip(args, decl.param_types, strict=True)):
        names = [t for t in arg if _identifier(t) and t not in KEYWORDS and t not in known_at_from]
        if not names:
            call_args.append(render(arg))
            continue
        name = arg[0] if len(arg) == 1 else f"a{index}"
        if name not in declared:
            params.append(f"{type_} {name}")
            declared.add(name)
        call_args.append(name)
    call = f"{decl.name}({', '.join(call_args)})"
    code = f"{_include(_header(decl))}void mined_case_{number}({', '.join(params)}) {{\n    {call};\n}}\n"
    return code, call_args


Cite = Callable[[Path], str]  # a corpus file as `<label>:<path in its tree or folder>`


def _cited(pair: Pair, cite: Cite) -> dict[str, Any]:
    entry: dict[str, Any] = {"at_from": f"{cite(pair.use.file)}:{pair.use.line}",
                             "before": " ".join(pair.use.text.split())}  # fmt: skip
    if pair.b_file is not None:
        entry["at_to"] = f"{cite(pair.b_file)}:{pair.b_line}"
    if pair.after_text is not None:
        entry["after"] = " ".join(pair.after_text.split())
    if pair.inlined:
        entry["inlined"] = list(pair.inlined)
    return entry


@dataclass
class MinedRule:
    """One rule of the mined file, with what the report says about it."""

    data: dict[str, Any]
    generalisation: Generalisation
    fix: Fix | None  # None: a manual rule
    demoted: str = ""  # why a rule became manual (a pair its fix did not reproduce)


def build_rule(gen: Generalisation, decl: FunctionDecl, cite: Cite, known_at_from: set[str],
               to_version: str) -> MinedRule | None:  # fmt: skip
    """The rules-file entry for one API's generalisation (None: nothing was paired)."""
    if gen.shape == Shape.NONE and not gen.unchanged:
        return None
    provenance = [{**_cited(p, cite), "role": "mined"} for p in gen.used]
    provenance += [{**_cited(p, cite), "role": f"context-dependent: {', '.join(names)}"}
                   for p, _, names in gen.context]  # fmt: skip
    provenance += [{**_cited(p, cite), "role": "unchanged"} for p in gen.unchanged]
    provenance += [{**_cited(e.pair, cite), "role": f"not used: {e.reason}"} for e in gen.excluded]
    base = {"id": rule_id(decl.name), "match": {"function": decl.name, "header": _header(decl)}, "mined": True,
            "provenance": provenance}  # fmt: skip
    if gen.shape == Shape.RULE and gen.template is not None:
        fix = fix_for(gen.template, len(decl.param_types))
        failing = [p for p in gen.used if not reproduces(fix, p)]
        if not failing:
            return _rewrite_rule(base, gen, decl, fix, known_at_from, to_version)
        demoted = f"its fix {fix.text} does not reproduce {_cited(failing[0], cite)['at_from']}"
        return _manual_rule(base, gen, decl, cite, known_at_from, to_version, demoted)
    if gen.shape == Shape.NONE:  # only unchanged uses: nothing to rewrite, nothing to mine
        return None
    return _manual_rule(base, gen, decl, cite, known_at_from, to_version, "")


def _cases(gen: Generalisation, decl: FunctionDecl, fix: Fix | None, known_at_from: set[str]) -> dict[str, Any]:
    invalid, valid, seen = [], [], set()
    pairs = gen.used if fix is not None else [p for p, _, _ in gen.context] or gen.used
    for pair in pairs:
        text = " ".join(pair.use.text.split())
        if text in seen or len(invalid) >= MAX_CASES:
            continue
        written = case_code(decl, pair.use.args, len(seen) + 1, known_at_from)
        if written is None:
            continue
        seen.add(text)
        code, call_args = written
        name = f"mined from {pair.use.file.name}:{pair.use.line}"
        if fix is None:
            invalid.append({"name": name, "manual": True, "code": code, "output": code})
        else:
            call = f"{decl.name}({', '.join(call_args)})"
            invalid.append({"name": name, "code": code, "output": code.replace(call, apply_fix(fix, call_args), 1)})
    for pair in gen.unchanged[:MAX_CASES]:
        written = case_code(decl, pair.use.args, len(seen) + len(valid) + 1, known_at_from)
        if written is not None:
            valid.append({"name": f"unchanged at B: {pair.use.file.name}:{pair.use.line}", "code": written[0]})
    tests: dict[str, Any] = {}
    if invalid:
        tests["invalid"] = invalid
    if valid:
        tests["valid"] = valid
    return tests


def _rewrite_rule(base: dict[str, Any], gen: Generalisation, decl: FunctionDecl, fix: Fix, known_at_from: set[str],
                  to_version: str) -> MinedRule:  # fmt: skip
    count = len(gen.used)
    kind = "memory_call" if fix.kind == FixKind.MEMORY_CALL else "call_rewrite"
    description = (f"MINED: {decl.name} became {shown(gen.template or ())} at {to_version} in all {count} use(s) "
                   f"the maintainers migrated (anti-unified; see provenance). Review before use.")  # fmt: skip
    data = {"id": base["id"], "kind": kind, "description": description, "match": base["match"], "fix": fix.text,
            "mined": True, "provenance": base["provenance"]}  # fmt: skip
    tests = _cases(gen, decl, fix, known_at_from)
    if tests:
        data["tests"] = tests
    return MinedRule(data, gen, fix)


def _manual_rule(base: dict[str, Any], gen: Generalisation, decl: FunctionDecl, cite: Cite,
                 known_at_from: set[str], to_version: str, demoted: str) -> MinedRule:  # fmt: skip
    if gen.shape == Shape.CONFLICT:
        why = "the maintainers migrated it in more than one way"
    elif gen.shape == Shape.CONTEXT:
        why = ("the new call takes values from the surrounding code (or the code around it changed too), which a "
               "rule over the call cannot write")
    elif gen.shape == Shape.DROPS:
        why = "every pair leaves out an old argument the new function still has room for (a value they all passed?)"
    else:
        why = demoted
    lines = []
    for template, count in gen.shapes:
        pairs = [p for p in gen.used if _template_equal(p, template)] + [p for p, t, _ in gen.context if t == template]
        cited = ", ".join(_cited(p, cite).get("at_to", "?") for p in pairs[:MAX_SHOWN])
        depends = sorted({n for _, t, names in gen.context if t == template for n in names})
        lines.append(f"{shown(template)} ({count} use(s): {cited}" + (f"; depends on {', '.join(depends)}"
                                                                        if depends else "") + ")")  # fmt: skip
    common = most_general([t for t, _ in gen.shapes]) if len(gen.shapes) > 1 else ""
    guidance = (f"{decl.name} changed at {to_version}; {why}. llama.cpp's own code (or the corpus) wrote: "
                + "; ".join(lines) + (f". What they share (? where they differ): {common}" if common else "")
                + ". Rewrite this call the same way, choosing what fits here.")  # fmt: skip
    data = {"id": base["id"], "kind": "manual_call",
            "description": f"MINED (manual): {decl.name}: {why}." + (f" Demoted: {demoted}." if demoted else ""),
            "match": base["match"], "guidance": guidance, "mined": True, "provenance": base["provenance"]}  # fmt: skip
    tests = _cases(gen, decl, None, known_at_from)
    if tests.get("invalid"):
        data["tests"] = {"invalid": tests["invalid"]}
    return MinedRule(data, gen, None, demoted)


def _template_equal(pair: Pair, template: tuple[Any, ...]) -> bool:
    return pair.after is not None and template_of(pair.use.args, pair.after) == template
