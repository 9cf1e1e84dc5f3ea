"""Generalisations written as a rules file in the schema of rules/*.yaml, every rule `mined: true` with provenance.

A rule (`memory_call` or `call_rewrite`) is kept only when its fix, written for each pair's old arguments, gives that
pair's after-call token for token (`unify.reproduces`); its pairs become its `invalid` cases (a function with the
old call, its arguments declared with the old declaration's parameter types; the expected output is the fix written
out), uses left unchanged at B its `valid` cases. Conflicts and context-dependent shapes become `manual_call` rules
whose guidance lists what the maintainers wrote, with counts. Shapes that differ only in one literal argument (Shape
OPTION) make a rule whose fix reads an option of the file there (`{llama_memory_clear_data}`), named after the new
function's parameter, default the value most pairs used, each value's decision text citing its pairs; each case sets
the option to its pair's literal. The mined file inlines the memory handle (option `hoist_memory: false`): a case's
expected output is then the pair's own after-text, handle inlined.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

from migrate.apidiff import FunctionDecl
from migrate.mine.corpus import Pair, render
from migrate.mine.unify import (
    KEYWORDS,
    Fix,
    FixKind,
    Generalisation,
    LiteralChoice,
    Shape,
    Template,
    apply_fix,
    fix_for,
    literal_of,
    most_general,
    option_value,
    reproduces,
    shown,
    template_of,
    with_placeholder,
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
class OptionNames:
    """Names of the file's options: a mined option is named after the new function's parameter at its position in
    B's declaration (`llama_memory_clear` + `data`), made unique against every name the file has already."""

    decls_at_b: dict[str, FunctionDecl]
    taken: set[str] = field(default_factory=set)

    def claim(self, function: str, slot: int) -> str:
        decl = self.decls_at_b.get(function)
        param = decl.param_names[slot] if decl is not None and slot < len(decl.param_names) else ""
        base = re.sub(r"[^A-Za-z0-9_]+", "_", f"{function}_{param or f'arg{slot}'}")
        name, number = base, 2
        while name in self.taken:
            name, number = f"{base}_{number}", number + 1
        self.taken.add(name)
        return name

    def parameter(self, function: str, slot: int) -> str:
        """`data` in `void llama_memory_clear(llama_memory_t mem, bool data)`, as the report cites it."""
        decl = self.decls_at_b.get(function)
        if decl is None or slot >= len(decl.param_names):
            return f"argument {slot + 1} of {function}"
        name = decl.param_names[slot] or f"argument {slot + 1}"
        return f"`{name}` in `{decl.declaration}`"


@dataclass
class MinedOption:
    """The literal argument a rule reads from an option: its name, where it sits, the values the pairs passed."""

    name: str
    choice: LiteralChoice
    spec: dict[str, Any]  # the file's `options.<name>` entry (default, description, decisions)

    def literal(self, pair: Pair) -> str:
        return literal_of(pair, self.choice.slot) or self.choice.default

    def value(self, text: str) -> bool | int | str:
        return option_value(text, self.choice)


@dataclass
class MinedRule:
    """One rule of the mined file, with what the report says about it."""

    data: dict[str, Any]
    generalisation: Generalisation
    fix: Fix | None  # None: a manual rule
    demoted: str = ""  # why a rule became manual (a pair its fix did not reproduce)
    option: MinedOption | None = None  # the option its fix reads (Shape.OPTION)


def build_rule(gen: Generalisation, decl: FunctionDecl, cite: Cite, known_at_from: set[str],
               to_version: str, names: OptionNames | None = None) -> MinedRule | None:  # fmt: skip
    """The rules-file entry for one API's generalisation (None: nothing was paired); `names` names its option."""
    if gen.shape == Shape.NONE and not gen.unchanged:
        return None
    provenance = [{**_cited(p, cite), "role": "mined"} for p in gen.used]
    provenance += [{**_cited(p, cite), "role": f"context-dependent: {', '.join(names)}"}
                   for p, _, names in gen.context]  # fmt: skip
    provenance += [{**_cited(p, cite), "role": "unchanged"} for p in gen.unchanged]
    provenance += [{**_cited(e.pair, cite), "role": f"not used: {e.reason}"} for e in gen.excluded]
    base = {"id": rule_id(decl.name), "match": {"function": decl.name, "header": _header(decl)}, "mined": True,
            "provenance": provenance}  # fmt: skip
    if gen.shape == Shape.OPTION and gen.template is not None and gen.choice is not None:
        return _option_rule(base, gen, decl, cite, known_at_from, to_version, names or OptionNames({}))
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


def _option_rule(base: dict[str, Any], gen: Generalisation, decl: FunctionDecl, cite: Cite, known_at_from: set[str],
                 to_version: str, names: OptionNames) -> MinedRule:  # fmt: skip
    """A rule whose fix reads an option where the pairs passed different literals; kept only if, with the option
    set to each pair's literal, it reproduces that pair (else manual, saying which pair it did not reproduce)."""
    assert gen.template is not None and gen.choice is not None
    callee, slot = str(gen.template[0]), gen.choice.slot
    name = names.claim(callee, slot)
    fix = fix_for(with_placeholder(gen.template, slot, name), len(decl.param_types))
    failing = [p for p in gen.used if not reproduces(fix, p, {name: literal_of(p, slot) or ""})]
    if failing:
        names.taken.discard(name)
        demoted = f"its fix {fix.text} does not reproduce {_cited(failing[0], cite)['at_from']}"
        return _manual_rule(base, gen, decl, cite, known_at_from, to_version, demoted)
    option = MinedOption(name, gen.choice, {})
    option.spec = _option_spec(option, gen, decl, cite, to_version, names.parameter(callee, slot))
    for entry, pair in zip(base["provenance"][: len(gen.used)], gen.used, strict=True):  # `mined` entries first
        entry["option"] = f"{name}={option.literal(pair)}"
    rule = _rewrite_rule(base, gen, decl, fix, known_at_from, to_version, option)
    rule.option = option
    return rule


def _option_spec(option: MinedOption, gen: Generalisation, decl: FunctionDecl, cite: Cite, to_version: str,
                 parameter: str) -> dict[str, Any]:  # fmt: skip
    """The file's entry for the option: default the most used literal; description and per-value decisions cite
    the counts and each value's pairs (file:line at A and B)."""
    choice, total = option.choice, len(gen.used)
    assert gen.template is not None
    callee = str(gen.template[0])
    counts = "; ".join(f"{text} in {count} of {total}" for text, count in choice.counts)
    description = (f"MINED: argument {choice.slot + 1} of {callee} ({parameter} at {to_version}) where "
                   f"{decl.name}'s migrations passed a literal: {counts} use(s). Default {choice.default}: the value "
                   "most pairs used. The miner does not know what the values do: read the declaration before "
                   "relying on the default.")  # fmt: skip
    decisions = {}
    for text, count in choice.counts:
        pairs = [p for p in gen.used if option.literal(p) == text]
        cited = ", ".join(f"{_cited(p, cite)['at_from']} → {_cited(p, cite).get('at_to', '?')}"
                          for p in pairs[:MAX_SHOWN])  # fmt: skip
        more = f" and {len(pairs) - MAX_SHOWN} more (the rule's provenance lists them)" if pairs[MAX_SHOWN:] else ""
        standing = ("the default: the value most pairs used" if text == choice.default else
                    f"not the default ({choice.default}, {choice.counts[0][1]} use(s))")  # fmt: skip
        decisions[option.value(text)] = (
            f"{shown(with_placeholder(gen.template, choice.slot, 'X')).replace('{X}', text)} (mined option "
            f"{option.name}={text}, {standing}): what the maintainers wrote in {count} of {total} migrated use(s) of "
            f"{decl.name}: {cited}{more}. The miner does not know what the value does: read {parameter} and set "
            f"option {option.name} to what this code needs.")  # fmt: skip
    return {"default": option.value(choice.default), "description": description, "decisions": decisions}


def _interleaved(pairs: list[Pair], option: MinedOption) -> list[Pair]:
    """The pairs with each value's first pairs first (the most used value first), so every value gets a case."""
    by_value = [[p for p in pairs if option.literal(p) == text] for text, _ in option.choice.counts]
    return [p for round_ in zip_longest(*by_value) for p in round_ if p is not None]


def _cases(gen: Generalisation, decl: FunctionDecl, fix: Fix | None, known_at_from: set[str],
           option: MinedOption | None = None) -> dict[str, Any]:  # fmt: skip
    invalid, valid, seen = [], [], set()
    pairs = gen.used if fix is not None else [p for p, _, _ in gen.context] or gen.used
    if option is not None and fix is not None:
        pairs = _interleaved(pairs, option)
    for pair in pairs:
        text = " ".join(pair.use.text.split())
        literal = option.literal(pair) if option is not None and fix is not None else None
        if (text, literal) in seen or len(invalid) >= MAX_CASES:
            continue
        written = case_code(decl, pair.use.args, len(seen) + 1, known_at_from)
        if written is None:
            continue
        seen.add((text, literal))
        code, call_args = written
        name = f"mined from {pair.use.file.name}:{pair.use.line}"
        if fix is None:
            invalid.append({"name": name, "manual": True, "code": code, "output": code})
            continue
        call = f"{decl.name}({', '.join(call_args)})"
        case: dict[str, Any] = {"name": name, "code": code}
        values: dict[str, str] = {}
        if option is not None and literal is not None:
            case["name"], values = f"{name} ({option.name}={literal})", {option.name: literal}
            if literal != option.choice.default:  # as the hand files' cases: options only where not the default
                case["options"] = {option.name: option.value(literal)}
        case["output"] = code.replace(call, apply_fix(fix, call_args, values), 1)
        invalid.append(case)
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
                  to_version: str, option: MinedOption | None = None) -> MinedRule:  # fmt: skip
    count = len(gen.used)
    kind = "memory_call" if fix.kind == FixKind.MEMORY_CALL else "call_rewrite"
    template: Template = gen.template or ()
    chosen = ""
    if option is not None:
        template = with_placeholder(template, option.choice.slot, option.name)
        chosen = (f", the literal at argument {option.choice.slot + 1} being option {option.name} ("
                  + "; ".join(f"{text} {n} use(s)" for text, n in option.choice.counts)
                  + f"; default {option.choice.default})")  # fmt: skip
    description = (f"MINED: {decl.name} became {shown(template)} at {to_version} in all {count} use(s) the "
                   f"maintainers migrated{chosen} (anti-unified; see provenance). Review before use.")  # fmt: skip
    data = {"id": base["id"], "kind": kind, "description": description, "match": base["match"], "fix": fix.text,
            "mined": True, "provenance": base["provenance"]}  # fmt: skip
    if option is not None:
        data["options"] = [option.name]
    tests = _cases(gen, decl, fix, known_at_from, option)
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
    elif gen.shape == Shape.TIE and gen.choice is not None:
        why = (f"the maintainers passed different literals at argument {gen.choice.slot + 1} ("
               + ", ".join(f"{text} in {n} use(s)" for text, n in gen.choice.counts)
               + "): a tie, so the pairs give no default for an option")  # fmt: skip
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
