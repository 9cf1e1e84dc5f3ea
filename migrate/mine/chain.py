"""Mined rules in the steps chain (issue 23 item 2): the part of a bump no hand-written rules file covers as written.

`migrate/rewrite/steps.py` asks here for the rules of one part (start, end] of a bump, given the two actual trees:
- a part no rules file covers at all (NOT COVERED) runs as a step of mined rules alone;
- a PARTIAL step (its hand-written file reaches past the bump's end, or the bump starts inside it) runs its hand
  rules for the API already changed at `end` plus the mined rules of (start, end] for every API no rule of the hand
  file names: where both exist the hand-written rule wins.
Mining (`migrate.mine.mine`, llama.cpp's own tools/examples/common as the corpus, each rewriting rule checked
through the engine) takes tens of seconds to minutes, so its file is cached: `<cache>/rules-mined/chain/`, named by
the two trees' commits and a digest of the miner's code (migrate/mine and every module of this checkout it reaches
by imports), so a second plan of the same pair reads the file and a change to the miner mines again.
When mining cannot run (a tree is missing, the API diff fails) the outcome says why and the step goes on without
mined rules: the API diff's manual actions still list every use of what changed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from migrate.paths import cache_root
from migrate.rewrite.rules import Option, Rule, RuleCase, RuleError, RuleSet, load_rules
from migrate.sources import SourceTree
from verify.errors import ToolError

PACKAGE = Path(__file__).resolve().parent  # migrate/mine
CHAIN_FOLDER = "rules-mined/chain"


class MinedState(StrEnum):
    """What became of the mined rules of one part of a bump."""

    MINED = "mined"  # mined now and written to the cache
    CACHED = "cached"  # read from the cache (same trees, same miner)
    SAME_TREE = "same-tree"  # both ends resolve to one llama.cpp tree: nothing changed, nothing to mine
    UNAVAILABLE = "unavailable"  # a tree, the API diff or the miner failed: no mined rules (why says why)
    OFF = "off"  # turned off (--no-mined, config mined_rules = false)


@dataclass(frozen=True)
class MinedRules:
    """The mined rules file of (start, end], or why there is none."""

    state: MinedState
    start: str
    end: str
    ruleset: RuleSet | None = None
    why: str = ""
    cited: dict[str, str] = field(default_factory=dict)  # rule id -> where it was mined from (for each edit's note)

    @property
    def usable(self) -> bool:
        return self.ruleset is not None

    def describe(self) -> str:
        part = f"({self.start}, {self.end}]"
        if self.state is MinedState.OFF:
            return f"mined rules for {part}: turned off ({self.why})"
        if self.ruleset is None:
            return f"mined rules for {part}: none ({self.why})"
        how = "mined now into" if self.state is MinedState.MINED else "read from the cache:"
        return (f"mined rules for {part}: {len(self.ruleset.rules)} rule(s) mined from llama.cpp's own code ({how} "
                f"{self.ruleset.path}; review it as docs/rules-mining.md says)")  # fmt: skip


def miner_code_files() -> list[Path]:
    """The miner's code: every module of migrate/mine and every module of this checkout they reach by imports (the
    API diff, the engine its rules are checked with), found as the plan cache's key finds the engine's."""
    from migrate.rewrite import fingerprint

    return fingerprint.code_files(PACKAGE.parent, PACKAGE.name)


def miner_digest() -> str:
    from migrate.rewrite import fingerprint

    return fingerprint.files_digest(miner_code_files(), PACKAGE.parent.parent).hexdigest()


def cache_path(old: SourceTree, new: SourceTree, cache: str | Path | None = None) -> Path:
    """`<cache>/rules-mined/chain/<old>-<commit12>_<new>-<commit12>_<miner digest 16>.yaml`."""
    name = f"{old.provided}-{old.commit[:12]}_{new.provided}-{new.commit[:12]}_{miner_digest()[:16]}.yaml"
    return cache_root(cache) / CHAIN_FOLDER / name


def mined_rules(start: str, end: str, old: SourceTree | None, new: SourceTree | None,
                cache: str | Path | None = None, missing: str = "") -> MinedRules:  # fmt: skip
    """The mined rules of (start, end] between the two actual trees: from the cache, else mined now and cached.
    `missing`: why a tree is None (it could not be resolved)."""
    if old is None or new is None:
        return MinedRules(MinedState.UNAVAILABLE, start, end, why=f"a tree is not available: {missing}")
    if old.commit == new.commit:
        return MinedRules(MinedState.SAME_TREE, start, end, why=f"{start} and {end} resolve to the same llama.cpp "
                          f"tree ({old.provided})")  # fmt: skip
    path = cache_path(old, new, cache)
    if path.is_file():
        try:
            return MinedRules(MinedState.CACHED, start, end, _as_part(load_rules(path), start, end), cited=_cited(path))
        except RuleError:  # a damaged cache file is mined again, not trusted
            path.unlink(missing_ok=True)
    try:
        _mine_to(path, old, new, cache)
        ruleset = load_rules(path)
    except ToolError as exc:  # ApiDiffError, SourceError, RuleError, InputError: the miner could not run here
        return MinedRules(MinedState.UNAVAILABLE, start, end, why=f"mining {old.provided} → {new.provided} failed: "
                          f"{str(exc).splitlines()[0]}")  # fmt: skip
    return MinedRules(MinedState.MINED, start, end, _as_part(ruleset, start, end), cited=_cited(path))


def _mine_to(path: Path, old: SourceTree, new: SourceTree, cache: str | Path | None) -> None:
    from migrate.apidiff import load_surface
    from migrate.mine import mine, render_file, tree_corpus

    result = mine(old, new, load_surface(old, cache), load_surface(new, cache), [tree_corpus(old, new)])
    counts = ", ".join(f"{k} {v}" for k, v in result.counts().items())
    comments = [f"MINED rules for the steps chain, llama.cpp {old.provided} ({old.commit[:12]}) → {new.provided} "
                f"({new.commit[:12]}), miner {miner_digest()[:16]}: {counts}",
                "Written by `migrate plan`/`run` for a part of a bump no hand-written rules file covers as written "
                "(migrate/mine/chain.py). Review: docs/rules-mining.md."]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two plans mining the same pair: the last one wins whole
    temp.write_text(render_file(result, comments), encoding="utf-8")
    temp.replace(path)


def _cited(path: Path) -> dict[str, str]:
    """Each rule's provenance in a few words: the first pair it was mined from (`b7836:common/arg.cpp:1553 →
    b10068:common/arg.cpp:1791`) and how many more; the rules file keeps them all."""
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    cited = {}
    for rule in data.get("rules") or []:
        pairs = [p for p in rule.get("provenance") or [] if p.get("role") == "mined" and p.get("at_to")]
        if pairs:
            more = f" and {len(pairs) - 1} more" if len(pairs) > 1 else ""
            cited[rule["id"]] = f"{pairs[0]['at_from']} → {pairs[0]['at_to']}{more}"
    return cited


def _as_part(ruleset: RuleSet, start: str, end: str) -> RuleSet:
    """The mined file as the rules of (start, end] (the trees' own tags may be stand-ins' tags)."""
    return dataclasses.replace(ruleset, from_version=start, to_version=end)


def merge(hand: RuleSet, mined: RuleSet, hand_names: set[str]) -> tuple[RuleSet, list[Rule]]:
    """The hand rules with the mined rules for every API none of `hand_names` (the names the whole hand-written file
    matches, kept or not) covers: the hand rule wins where both exist. Options: the hand file's win too (a mined
    option the hand file lacks, `hoist_memory`, is added with its default); a mined option a taken rule reads (a
    mined literal) that has the name of a hand option is renamed `mined_<name>` (the hand option means something
    else). Returns the merged set and the mined rules it took."""
    taken = [rule for rule in mined.rules if rule.match.name not in hand_names]
    options: dict[str, Option] = dict(mined.options)
    read = {name for rule in taken for name in rule.options}
    for name in sorted(read & set(hand.options)):
        new_name = _free_name(f"mined_{name}", set(hand.options) | set(options))
        options[new_name] = _renamed_option(options.pop(name), new_name)
        taken = [_renamed(rule, name, new_name) if name in rule.options else rule for rule in taken]
    options.update(hand.options)
    return dataclasses.replace(hand, rules=[*hand.rules, *taken], options=options), taken


def _free_name(base: str, taken: set[str]) -> str:
    name, number = base, 2
    while name in taken:
        name, number = f"{base}_{number}", number + 1
    return name


def _renamed_option(option: Option, new: str) -> Option:
    """The option under its new name, its texts naming it so (`set option <name>=...`)."""
    word = re.compile(rf"\b{re.escape(option.name)}\b")
    return dataclasses.replace(option, name=new, description=word.sub(new, option.description),
                               decisions={k: word.sub(new, v) for k, v in option.decisions.items()})  # fmt: skip


def _renamed(rule: Rule, old: str, new: str) -> Rule:
    """The rule reading option `new` where it read `old` (its fix's placeholder, its options, its cases')."""

    def case(c: RuleCase) -> RuleCase:
        return dataclasses.replace(c, options={new if k == old else k: v for k, v in c.options.items()})

    return dataclasses.replace(rule, fix=(rule.fix or "").replace(f"{{{old}}}", f"{{{new}}}") or None,
                               options=tuple(new if o == old else o for o in rule.options),
                               invalid=tuple(case(c) for c in rule.invalid),
                               valid=tuple(case(c) for c in rule.valid))  # fmt: skip


__all__ = ["MinedRules", "MinedState", "cache_path", "merge", "mined_rules", "miner_digest"]
