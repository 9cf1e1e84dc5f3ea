"""Rules mined from migrations people already made (issue 23): `migrate rules mine --from A --to B`.

For each function the API diff lists as removed or re-signatured between A and B, its calls in a corpus at A
(llama.cpp's own tools/, examples/, common/ by default; a consumer's code at two releases with --corpus OLD=NEW) are
paired with what the same code calls at B (corpus.py), the pairs of one function are anti-unified into a template
over the call's arguments (unify.py), and the template is written as a rule of an existing kind with its pairs as
test cases and provenance (rulefile.py). Each rewriting rule is then run through the real engine on its own cases
(libclang against A's tree): a rule whose cases the engine does not reproduce is demoted to a manual rule.
How mined rules compare with the hand-written ones is compare.py. docs/rules-mining.md says how to review a file.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migrate.apidiff import ApiSurface, FunctionDecl, diff
from migrate.mine.corpus import DEFAULT_CORPUS, Pair, PairFate, Side, pair_uses
from migrate.mine.rulefile import MinedRule, OptionNames, build_rule
from migrate.mine.unify import Known, Shape, generalise
from migrate.sources import SourceTree

HOIST_OPTION = {"hoist_memory": {"default": False, "description": (
    "Mined rules write the memory handle inline, as the pairs they were mined from are compared (set true to hoist "
    "it as hand rules do).")}}


@dataclass(frozen=True)
class Corpus:
    """One corpus at both ends: folders at A and the same folders at B; files are cited relative to a base folder
    of their end, with that end's label (`b5415:tools/server/server.cpp`)."""

    old: tuple[Path, ...]
    new: tuple[Path, ...]
    label_from: str
    label_to: str
    base_from: Path
    base_to: Path

    def cite(self, path: Path) -> str | None:
        for base, label in ((self.base_from, self.label_from), (self.base_to, self.label_to)):
            if path.is_relative_to(base):
                return f"{label}:{path.relative_to(base)}"
        return None


def tree_corpus(old: SourceTree, new: SourceTree) -> Corpus:
    """llama.cpp's own code: tools/, examples/ and common/ of both trees (those that exist)."""
    return Corpus(tuple(old.path / d for d in DEFAULT_CORPUS if (old.path / d).is_dir()),
                  tuple(new.path / d for d in DEFAULT_CORPUS if (new.path / d).is_dir()),
                  old.provided, new.provided, old.path, new.path)  # fmt: skip


def folder_corpus(old: Path, new: Path, from_version: str, to_version: str) -> Corpus:
    """A consumer's code at both ends (`--corpus OLD=NEW`), cited as `<folder name>@<build>:<file>`."""
    return Corpus((old,), (new,), f"{old.name}@{from_version}", f"{new.name}@{to_version}", old, new)


@dataclass
class MineResult:
    """The mined file's data and what the report says: every API with uses, and the pairs' fates."""

    from_version: str
    to_version: str
    rules: list[MinedRule]
    fates: Counter[str] = field(default_factory=Counter)
    apis_with_uses: int = 0
    apis_changed: int = 0
    unmined: dict[str, Counter[str]] = field(default_factory=dict)  # APIs with uses but no rule: why, per use

    def data(self) -> dict[str, Any]:
        options = {**HOIST_OPTION, **{r.option.name: r.option.spec for r in self.rules if r.option is not None}}
        return {"migration": {"from": self.from_version, "to": self.to_version},
                "options": options,
                "test_prelude": {"c++": '#include "llama.h"\n', "c": '#include "llama.h"\n'},
                "rules": [r.data for r in self.rules]}  # fmt: skip

    def counts(self) -> dict[str, int]:
        shapes = Counter(str(r.generalisation.shape) for r in self.rules)
        return {"apis_changed": self.apis_changed, "apis_with_uses": self.apis_with_uses,
                "rules": len(self.rules), "rewriting": sum(1 for r in self.rules if r.fix is not None),
                "manual": sum(1 for r in self.rules if r.fix is None), "conflicts": shapes[str(Shape.CONFLICT)],
                "options": sum(1 for r in self.rules if r.option is not None), "ties": shapes[str(Shape.TIE)],
                "context_dependent": shapes[str(Shape.CONTEXT)], "demoted": sum(1 for r in self.rules if r.demoted),
                **{f"pairs_{k}": v for k, v in sorted(self.fates.items())}}  # fmt: skip


def changed_apis(old: ApiSurface, new: ApiSurface) -> dict[str, FunctionDecl]:
    """Functions removed or re-signatured from A to B, by name (C++ members and namespaced names left out)."""
    api_diff = diff(old, new)
    found = {d.name: d for d in api_diff.removed_functions if "::" not in d.name}
    found.update({c.name: c.old for c in api_diff.changed_functions if "::" not in c.name})
    return found


def known(old: ApiSurface, new: ApiSurface) -> Known:
    """What a template may name without depending on the surrounding code, and the functions of both ends."""
    names = {f.name for f in new.functions} | {t.name for t in new.types} | {c.name for c in new.constants}
    names |= {m.name for m in new.macros}
    functions_at_b = {f.name for f in new.functions} | {m.name for m in new.macros if m.params is not None}
    arity_a = {f.name: len(f.param_types) for f in old.functions}
    arity_b = {f.name: len(f.param_types) for f in new.functions}
    return Known(names, {f.name for f in new.fields}, functions_at_b, set(arity_a), arity_a, arity_b)


def names_at(surface: ApiSurface) -> set[str]:
    """Names a case may write as they are (functions, types, constants, macros; not struct members)."""
    return ({f.name for f in surface.functions} | {t.name for t in surface.types} | {c.name for c in surface.constants}
            | {m.name for m in surface.macros})  # fmt: skip


def mine(old_tree: SourceTree, new_tree: SourceTree, old: ApiSurface, new: ApiSurface, corpora: list[Corpus],
         engine_check: bool = True) -> MineResult:  # fmt: skip
    apis = changed_apis(old, new)
    facts, known_old = known(old, new), names_at(old)
    by_api: dict[str, list[tuple[Pair, Corpus]]] = {}
    fates: Counter[str] = Counter()
    for corpus in corpora:
        for pair in pair_uses(Side(list(corpus.old)), Side(list(corpus.new)), set(apis)):
            by_api.setdefault(pair.use.api, []).append((pair, corpus))
            fates[str(pair.fate)] += 1
    def cite(path: Path) -> str:
        return next((c for c in (corpus.cite(path) for corpus in corpora) if c), str(path))

    rules = []
    unmined: dict[str, Counter[str]] = {}
    names = OptionNames({f.name: f for f in new.functions}, set(HOIST_OPTION))
    for api in sorted(by_api):
        gen = generalise(api, [p for p, _ in by_api[api]], facts)
        rule = build_rule(gen, apis[api], cite, known_old, new_tree.provided, names)
        if rule is not None:
            rules.append(rule)
        else:
            unmined[api] = Counter(str(e.category) for e in gen.excluded)
            if gen.unchanged:  # only unchanged uses: nothing to mine (the call still compiles the same)
                unmined[api]["unchanged"] = len(gen.unchanged)
    result = MineResult(old_tree.requested, new_tree.requested, rules, fates, len(by_api), len(apis), unmined)
    if engine_check:
        check_with_engine(result, old_tree)
    return result


def check_with_engine(result: MineResult, old_tree: SourceTree) -> None:
    """Run each rewriting rule's cases through the engine (libclang against A's tree); a rule whose output differs
    from its expected output (the fix written for the pair) becomes a manual rule saying why."""
    from migrate.mine.compare import run_cases

    with tempfile.TemporaryDirectory(prefix="mine-") as tmp:
        path = Path(tmp) / "mined.yaml"
        path.write_text(render_file(result, []), encoding="utf-8")
        for rule in result.rules:
            if rule.fix is None or not rule.data.get("tests", {}).get("invalid"):
                continue
            got, expected = run_cases(path, rule.data["id"], old_tree, Path(tmp) / rule.data["id"])
            if got != expected:
                demote(rule, "the engine's output for its cases differs from the fix written out: "
                       + _first_difference(got, expected))  # fmt: skip


def demote(rule: MinedRule, why: str) -> None:
    data = rule.data
    rule.demoted = why
    rule.fix = None
    rule.option = None  # a manual rule reads no option: the file no longer declares it
    data.pop("options", None)
    data["kind"] = "manual_call"
    data["guidance"] = f"The mined fix was {data.pop('fix')}; it was not kept: {why}."
    data["description"] = data["description"] + " Demoted to manual."
    invalid = [{**{k: v for k, v in c.items() if k != "options"}, "manual": True, "output": c["code"]}
               for c in data.get("tests", {}).get("invalid", [])]  # fmt: skip
    data["tests"] = {"invalid": invalid} if invalid else {}
    if not data["tests"]:
        del data["tests"]


def _first_difference(got: str, expected: str) -> str:
    for left, right in zip(got.splitlines(), expected.splitlines(), strict=False):
        if left != right:
            return f"got `{left.strip()}`, expected `{right.strip()}`"
    return "the outputs differ in length"


class _Dumper(yaml.SafeDumper):
    """Code as literal blocks (`code: |`), as in the hand-written rules files."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def render_file(result: MineResult, comments: list[str]) -> str:
    header = "".join(f"# {line}\n" for line in comments)
    return header + "\n" + yaml.dump(result.data(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def pairs_summary(result: MineResult) -> list[str]:
    """One line per rule for the terminal: id, kind, pairs used, shapes."""
    lines = []
    for rule in result.rules:
        gen = rule.generalisation
        what = rule.data.get("fix") or ("; ".join(f"{n}x" for _, n in gen.shapes) + " shapes")
        if rule.option is not None:
            choice = rule.option.choice
            what += (f" [option {rule.option.name}: " + ", ".join(f"{text} {n}x" for text, n in choice.counts)
                     + f"; default {choice.default}]")  # fmt: skip
        lines.append(f"{rule.data['id']}: {rule.data['kind']} ({len(gen.used)} pair(s) mined, {len(gen.context)} "
                     f"context-dependent, {len(gen.excluded)} not used, {len(gen.unchanged)} unchanged): {what}"
                     + (f" [demoted: {rule.demoted}]" if rule.demoted else ""))  # fmt: skip
    for api, reasons in sorted(result.unmined.items()):
        lines.append(f"no rule for {api}: " + ", ".join(f"{n} {why}" for why, n in reasons.most_common()))
    return lines


__all__ = ["Corpus", "MineResult", "PairFate", "changed_apis", "mine", "pairs_summary", "render_file",
           "tree_corpus"]  # fmt: skip
