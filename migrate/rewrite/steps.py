"""Migrations in steps: `--from A --to B` runs every rules file whose step overlaps (A, B], in order, each on the
previous step's output; one plan, one report.

`rules/` holds one file per step (`migration: {from, to}`). For a bump A → B (build tags):
- a step runs when its range overlaps (A, B]; steps run in order of their starting build;
- step k takes the code from `start` (A for the first, else the previous step's `end`) to `end` (its own `to`, or B
  for the last step); its code is parsed against the `start` tree and its API diff is taken between the `start` and
  `end` trees — the actual trees of the bump, never the rules file's endpoints (stand-ins included);
- a step whose file reaches past B is *partial*: only its rules for API that is already removed or changed at B (the
  API diff of the two actual trees says which) run; the others are listed as left out;
- what no step covers (before the first, between two, after the last) runs as a step of MINED rules
  (`migrate/mine/chain.py`: mined from llama.cpp's own tools/examples/common between the two actual trees, cached);
  a partial step adds the mined rules of its (start, end] for every API its hand-written file names nowhere (the hand
  rule wins where both exist). Each edit of a mined rule is marked `mined`. With mining off (`StepInputs.mined`), or
  where it cannot run (a tree missing: the plan says why), a part no file covers gets only the API diff's manual
  actions (the last step's diff reaches B whatever its file's end).
A single step that covers (A, B] exactly is the engine's own plan, unchanged. Otherwise the result is a `ChainPlan`:
its edits are each step's edits (each says its step), its contents are the steps applied in sequence, and the
files of step k > 1 are planned on a copy of the tree as step k - 1 left it (`<cache>/steps/`), so line numbers of a
later step refer to that code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.rewrite.edits import Edit, SourceFile
from migrate.rewrite.plan import Advisory, FileReport, ManualItem, Plan, ReadMode, trees_used
from migrate.rewrite.rules import RuleError, RuleSet, build_number, rule_files
from migrate.sources import SourceError, SourceTree

if TYPE_CHECKING:
    from migrate.mine.chain import MinedRules

COPY_IGNORE = shutil.ignore_patterns(".git", "build", "build-*", "__pycache__", ".llama-migrate*")
KEEP_STEPS = 10  # copies of intermediate trees kept in <cache>/steps


@dataclass
class Step:
    """One rules file as it runs within a bump."""

    ruleset: RuleSet  # the file's rules (a partial step: only those whose change is present at `end`)
    start: str  # the build the code is at when this step runs
    end: str  # the build it takes the code to
    file_from: str  # the rules file's own range
    file_to: str
    left_out: list[str] = field(default_factory=list)  # rule ids a partial step did not run, and why
    plan: Plan | None = None
    root: Path | None = None  # the tree this step planned: the consumer's, or a copy of the previous step's output
    note: str = ""  # why it did not plan (nothing to do), when it did not
    filtered: bool = False  # a partial step's rules were narrowed to those whose change is present at `end`
    mined: MinedRules | None = None  # the mined rules of (start, end] (or why none): a partial or a mined-only step
    mined_only: bool = False  # a part no rules file covers, run with mined rules alone
    mined_ids: tuple[str, ...] = ()  # the rules of `ruleset` that are mined (a partial step: those no hand rule beat)

    @property
    def label(self) -> str:
        return f"{self.file_from} → {self.file_to}" + (" (mined)" if self.mined_only else "")

    @property
    def partial(self) -> bool:
        return build_number(self.file_to) > build_number(self.end)

    def describe(self) -> str:
        if self.mined_only:
            assert self.mined is not None
            return (f"step {self.label} takes the code {self.start} → {self.end} with MINED rules only (no rules file "
                    f"covers it): {self.mined.describe()}")  # fmt: skip
        text = f"step {self.label} (rules/{self.ruleset.path.name}) takes the code {self.start} → {self.end}"
        if build_number(self.file_from) < build_number(self.start):
            text += (f"; its file starts at {self.file_from}, before {self.start}: rules for API already gone at "
                     f"{self.start} find nothing")  # fmt: skip
        if self.partial:
            text += (f"; PARTIAL: its file reaches {self.file_to}, past {self.end}, so only its rules for API already "
                     f"removed or changed at {self.end} run")  # fmt: skip
            if self.filtered:
                ran = len(self.ruleset.rules) - len(self.mined_ids)
                text += f" ({ran} of {ran + len(self.left_out)})"
        if self.mined is not None:
            text += f"; {self.mined.describe()}"
            if self.mined.ruleset is not None:
                text += (f": {len(self.mined_ids)} of them run beside the file's rules (those for API no rule of the "
                         "file names; the hand-written rule wins where both exist)")  # fmt: skip
        return text


@dataclass
class Selection:
    from_version: str
    to_version: str
    steps: list[Step]
    uncovered: list[tuple[str, str]]  # (lo, hi]: parts of the range no rules file covers
    gaps: list[MinedRules] = field(default_factory=list)  # what mining gave for parts no rules file covers

    def rulesets(self) -> list[RuleSet]:
        return [step.ruleset for step in self.steps]

    def coverage(self) -> list[str]:
        """What is and is not covered by rules, one line each, for the report's decisions."""
        lines = [f"Rules for {self.from_version} → {self.to_version}: {len(self.steps)} step(s)."]
        lines += [step.describe() + "." for step in self.steps]
        for lo, hi in self.uncovered:
            line = (f"NOT COVERED by rules: ({lo}, {hi}] — no rules file covers it; changes there show up only "
                    "as the API diff's manual actions (uses of removed or changed declarations)")  # fmt: skip
            why = [gap.describe() for gap in self.gaps if (gap.start, gap.end) == (lo, hi)]
            lines.append(line + "".join(f"; {text}" for text in why))
        return lines


def select_steps(from_version: str, to_version: str, rulesets: list[RuleSet]) -> Selection:
    """The steps of a bump (see the module docstring); a RuleError for tags that are not builds, a backwards bump,
    or two files whose ranges overlap."""
    try:
        a, b = build_number(from_version), build_number(to_version)
    except RuleError as exc:
        raise RuleError(f"no rules for {from_version} → {to_version}: {exc}") from None
    if b <= a:
        raise RuleError(f"no rules for {from_version} → {to_version}: --to must be a later build than --from")
    chosen = [r for r in rulesets if build_number(r.from_version) < b and build_number(r.to_version) > a]
    chosen.sort(key=lambda r: (build_number(r.from_version), build_number(r.to_version)))
    for first, second in zip(chosen, chosen[1:], strict=False):
        if build_number(second.from_version) < build_number(first.to_version):
            raise RuleError(f"rules files {first.path.name} ({first.label}) and {second.path.name} ({second.label}) "
                            "overlap: one file per step, each starting where another ends")  # fmt: skip
    steps, uncovered = [], []
    cursor, start = a, from_version
    for index, ruleset in enumerate(chosen):
        lo, hi = build_number(ruleset.from_version), build_number(ruleset.to_version)
        if lo > cursor:
            uncovered.append((_tag(cursor, from_version, a), ruleset.from_version))
        last = index == len(chosen) - 1
        end = to_version if last or hi >= b else ruleset.to_version
        steps.append(Step(ruleset, start, end, ruleset.from_version, ruleset.to_version))
        cursor, start = max(cursor, min(hi, b)), end
    if cursor < b:
        uncovered.append((_tag(cursor, from_version, a), to_version))
    return Selection(from_version, to_version, steps, uncovered)


def _tag(number: int, from_version: str, a: int) -> str:
    return from_version if number == a else f"b{number}"


# --- planning the steps ---------------------------------------------------------------------------------------


@dataclass
class StepInputs:
    """What every step is planned with; `resolve` turns a build tag into a tree (stand-ins included)."""

    src: Path
    resolve: Callable[[str], SourceTree]
    options: dict[str, Any] = field(default_factory=dict)
    enabled: set[str] = field(default_factory=set)
    flags: tuple[str, ...] = ()
    plan_cache: Path | None = None
    cache: str | Path | None = None
    source_tree: SourceTree | None = None  # the --from tree when given explicitly (--source-tree)
    api: bool = True  # cross-reference the API diff of each step's trees
    compile_db: Callable[[Path], Any] | None = None  # root -> CompileDatabase | None
    mined: bool = True  # mined rules where no rules file covers part of the bump as written (migrate/mine/chain.py)


def plan_steps(from_version: str, to_version: str, inputs: StepInputs, rules: list[RuleSet] | None = None,
               scratch: Path | None = None) -> Plan:  # fmt: skip
    """The plan of the bump: the engine's own plan when one step covers it exactly, else a ChainPlan."""
    every = rules if rules is not None else rule_files()
    selection = select_steps(from_version, to_version, every)
    mined_later = inputs.mined and (bool(selection.uncovered) or any(step.partial for step in selection.steps))
    _check_settings(selection, inputs, every, options=not mined_later)
    trees: dict[str, SourceTree | None] = {}
    errors: dict[str, str] = {}

    def tree(tag: str, first: bool = False) -> SourceTree | None:
        if first and inputs.source_tree is not None:
            return inputs.source_tree
        if tag not in trees:
            try:
                trees[tag] = inputs.resolve(tag)
            except SourceError as exc:
                if first:
                    raise
                trees[tag], errors[tag] = None, str(exc)
        return trees[tag]

    if selection.uncovered:
        selection = _fill_gaps(selection, every, tree, errors, inputs)
    exact = len(selection.steps) == 1 and not selection.uncovered and not selection.steps[0].mined_only and (
        (selection.steps[0].file_from, selection.steps[0].file_to) == (from_version, to_version))  # fmt: skip
    for index, step in enumerate(selection.steps):
        start_tree = tree(step.start, first=index == 0)
        assert start_tree is not None
        if step.partial:
            hand_names = {rule.match.name for rule in step.ruleset.rules}  # the whole file's, before narrowing
            _keep_changed_rules(step, start_tree, tree(step.end), inputs, errors.get(step.end))
            _add_mined(step, start_tree, tree(step.end), inputs, errors.get(step.end, ""), hand_names)
    if mined_later:  # the options of mined files (a literal mined as an option) are known now
        _check_options(inputs, [step.ruleset for step in selection.steps] + every)
    previous: Step | None = None
    for index, step in enumerate(selection.steps):
        start_tree = tree(step.start, first=index == 0)
        assert start_tree is not None
        end_tree = tree(step.end)
        if not step.ruleset.rules and end_tree is not None and end_tree.commit == start_tree.commit:
            step.note = (f"nothing to plan: no rule of this step applies up to {step.end}, and {step.start} and "
                         f"{step.end} resolve to the same llama.cpp tree ({start_tree.provided})")  # fmt: skip
            continue
        step.root = inputs.src if previous is None else _materialise(previous, inputs, scratch, step)
        step.plan = _mark_mined(step, _plan_one(step, start_tree, end_tree, inputs, errors.get(step.end)))
        previous = step
    if exact and selection.steps[0].plan is not None:
        return selection.steps[0].plan
    return ChainPlan.combine(inputs.src, selection, trees)


def _check_settings(selection: Selection, inputs: StepInputs, every: list[RuleSet], options: bool = True) -> None:
    """An enabled rule or an option that no rules file has is refused (a typo must not silently do nothing); one that
    another step's file has is fine (a consumer's config outlives the bump it was written for). `options` False:
    mined files still to come may declare options (a mined literal), so options are checked once they are known."""
    rulesets = [step.ruleset for step in selection.steps] + [r for r in every if r not in selection.rulesets()]
    known_ids = {rule.id for r in rulesets for rule in r.rules}
    unknown = sorted(set(inputs.enabled) - known_ids)
    if unknown:
        opt_in = ", ".join(dict.fromkeys(rule.id for r in rulesets for rule in r.rules if rule.opt_in)) or "none"
        raise RuleError(f"enable: no rule {', '.join(map(repr, unknown))} in the rules files "
                        f"({', '.join(r.path.name for r in rulesets) or 'none'}); the opt-in rules there are: {opt_in} "
                        "— fix `enable` in llama-migrate.toml or --enable")  # fmt: skip
    if options:
        _check_options(inputs, rulesets)


def _check_options(inputs: StepInputs, rulesets: list[RuleSet]) -> None:
    known_options = {name for r in rulesets for name in r.options}
    for name in inputs.options:
        if name not in known_options:
            raise RuleError(f"unknown option {name!r}; known: {', '.join(sorted(known_options)) or 'none'}")


def _fill_gaps(selection: Selection, every: list[RuleSet], tree: Callable[..., SourceTree | None],
               errors: dict[str, str], inputs: StepInputs) -> Selection:  # fmt: skip
    """Each part no rules file covers gets a step of mined rules (when mining is on and gives a file); the selection
    is made again with those files, so a hand step before a gap ends at its own file's end."""
    from migrate.mine.chain import MinedRules, MinedState, mined_rules

    gaps: list[MinedRules] = []
    for lo, hi in selection.uncovered:
        if not inputs.mined:
            gaps.append(MinedRules(MinedState.OFF, lo, hi, why="--no-mined or config mined_rules = false"))
            continue
        old, new = tree(lo, first=lo == selection.from_version), tree(hi)
        gaps.append(mined_rules(lo, hi, old, new, inputs.cache, errors.get(lo) or errors.get(hi, "")))
    usable = [gap for gap in gaps if gap.ruleset is not None]
    if usable:
        selection = select_steps(selection.from_version, selection.to_version,
                                 every + [gap.ruleset for gap in usable if gap.ruleset is not None])  # fmt: skip
        for step in selection.steps:
            gap = next((g for g in usable if g.ruleset is step.ruleset), None)
            if gap is not None:
                step.mined, step.mined_only = gap, True
                step.mined_ids = tuple(rule.id for rule in step.ruleset.rules)
    selection.gaps = gaps
    return selection


def _add_mined(step: Step, start: SourceTree, end: SourceTree | None, inputs: StepInputs, error: str,
               hand_names: set[str]) -> None:  # fmt: skip
    """A partial step runs, beside its file's rules, the mined rules of (start, end] for every API no rule of its
    file names (kept or left out: the hand-written rule wins where both exist)."""
    from migrate.mine.chain import MinedRules, MinedState, merge, mined_rules

    if not inputs.mined:
        step.mined = MinedRules(MinedState.OFF, step.start, step.end, why="--no-mined or config mined_rules = false")
        return
    step.mined = mined_rules(step.start, step.end, start, end, inputs.cache, error)
    if step.mined.ruleset is None:
        return
    step.ruleset, taken = merge(step.ruleset, step.mined.ruleset, hand_names)
    step.mined_ids = tuple(rule.id for rule in taken)


def _mark_mined(step: Step, plan: Plan) -> Plan:
    """The step's plan with every edit of a mined rule marked `mined` (and its manual items saying so)."""
    if not step.mined_ids:
        return plan
    ids = set(step.mined_ids)
    cited = step.mined.cited if step.mined is not None else {}
    edits = [dataclasses.replace(e, mined=True, note=_mined_note(e, cited)) if ids & set(e.rules) else e
             for e in plan.edits]  # fmt: skip
    manual = [dataclasses.replace(m, message=f"(mined rule) {m.message}") if m.rule in ids else m for m in plan.manual]
    return dataclasses.replace(plan, edits=edits, manual=manual)


def _mined_note(edit: Edit, cited: dict[str, str]) -> str:
    where = cited.get(edit.rule)
    text = f"mined rule (from {where})" if where else "mined rule"
    return f"{text}; {edit.note}" if edit.note else text


def _keep_changed_rules(step: Step, start: SourceTree, end: SourceTree | None, inputs: StepInputs,
                        error: str | None) -> None:  # fmt: skip
    """A partial step keeps the rules whose declaration is removed or changed between the actual trees."""
    from migrate.apidiff import ApiDiffError
    from migrate.rewrite.apicheck import ApiTarget

    rules = step.ruleset.rules
    step.filtered = True
    if end is None:
        step.left_out = [f"{r.id} (the {step.end} tree is not available: {error})" for r in rules]
        step.ruleset = dataclasses.replace(step.ruleset, rules=[], advisories=[])
        return
    try:
        diff, _, _ = ApiTarget(start, end, inputs.cache).load()
    except ApiDiffError as exc:
        step.left_out = [f"{r.id} (API diff not computed: {exc})" for r in rules]
        step.ruleset = dataclasses.replace(step.ruleset, rules=[], advisories=[])
        return
    changed = {key.split("|")[0] for key in diff.breaks}
    keep = [r for r in rules if (f"f:{r.match.function}" if r.match.function else f"s:{r.match.field}") in changed]
    step.left_out = [f"{r.id} ({r.match.name} unchanged at {step.end})" for r in rules if r not in keep]
    kept_names = {r.match.name for r in keep}
    advisories = [a for a in step.ruleset.advisories if set(a.names) & kept_names]
    step.ruleset = dataclasses.replace(step.ruleset, rules=keep, advisories=advisories)


def _plan_one(step: Step, start: SourceTree, end: SourceTree | None, inputs: StepInputs,
              error: str | None) -> Plan:  # fmt: skip
    from migrate.rewrite.apicheck import ApiTarget, unavailable_section
    from migrate.rewrite.engine import EngineConfig, build_plan

    assert step.root is not None
    root = step.root if step.root.is_dir() else step.root.parent
    ruleset = step.ruleset
    config = EngineConfig(
        root=step.root,
        llama_tree=start.path,
        ruleset=ruleset,
        options={k: v for k, v in inputs.options.items() if k in ruleset.options},
        enabled={i for i in inputs.enabled if any(r.id == i for r in ruleset.rules)},
        compile_db=inputs.compile_db(root) if inputs.compile_db else None,
        extra_flags=inputs.flags,
        plan_cache=_plan_cache(step, inputs.plan_cache),
        api=ApiTarget(start, end, inputs.cache) if end is not None and inputs.api else None,
    )
    unavailable = None if end is not None else unavailable_section(f"the target tree is not available ({error})")
    return build_plan(config).with_trees(trees_used(start, end, error), unavailable)


def _plan_cache(step: Step, folder: Path | None) -> Path | None:
    """A step that runs mined rules beside a hand file's keeps its cached plans apart, per mined file (the plan
    cache's key reads the hand file only; the mined file's name says which trees and miner it is of)."""
    if folder is None or not step.mined_ids or step.mined is None or step.mined.ruleset is None:
        return folder
    return folder / "mined" / step.mined.ruleset.path.stem


def _materialise(previous: Step, inputs: StepInputs, scratch: Path | None, step: Step) -> Path:
    """A copy of the consumer's tree as `previous` left it, in a folder named after the tree and the step (so a
    warm plan of the same bump finds its cached plans again)."""
    from migrate.paths import cache_root

    assert previous.root is not None and previous.plan is not None
    src = inputs.src.resolve()
    base = src if src.is_dir() else src.parent
    digest = hashlib.sha256(str(base).encode()).hexdigest()[:12]
    steps_dir = scratch or cache_root(inputs.cache) / "steps"
    folder = steps_dir / f"{base.name}-{digest}-{step.start}"
    if folder.exists():
        shutil.rmtree(folder)
    elif steps_dir.is_dir():  # the newest KEEP_STEPS copies stay (a warm plan of a recent bump reuses them)
        for old in sorted(steps_dir.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP_STEPS]:
            shutil.rmtree(old, ignore_errors=True)
    dest = folder / base.name
    prev_base = previous.root if previous.root.is_dir() else previous.root.parent
    shutil.copytree(prev_base, dest, ignore=COPY_IGNORE, symlinks=True)
    for path, data in previous.plan.new_contents().items():
        (dest / path.resolve().relative_to(prev_base.resolve())).write_bytes(data)
    return dest if src.is_dir() else dest / src.name


# --- the combined plan -----------------------------------------------------------------------------------------


@dataclass
class ChainPlan(Plan):
    """The plan of a bump in several steps (or one partial step): each step's plan on the previous step's output."""

    selection: Selection | None = None
    step_edits: list[tuple[str, Edit]] = field(default_factory=list)  # (step label, edit on the original's path)
    _subplans: list[tuple[Step, Plan]] = field(default_factory=list)  # each planned step and its plan, in order

    @classmethod
    def combine(cls, src: Path, selection: Selection, trees: dict[str, SourceTree | None]) -> ChainPlan:
        root = src.resolve() if src.is_dir() else src.resolve().parent
        planned = [s for s in selection.steps if s.plan is not None]
        section = _steps_section(selection) + "\n".join(
            s.plan.api_section.replace("## API diff and cross reference", f"## API diff and cross reference: step "
                                       f"{s.label} ({s.start} → {s.end})", 1)
            for s in planned if s.plan is not None and s.plan.api_section)  # fmt: skip
        plan = cls(root, selection.from_version, selection.to_version, selection=selection,
                   builds=_builds(selection, trees), api_section=section)  # fmt: skip
        plan.decisions = selection.coverage() + [f"step {s.label}: {s.note}" for s in selection.steps if s.note]
        if len(planned) > 1:
            plan.decisions.append("Line numbers of a later step's edits and items refer to the code as the steps "
                                  "before it left it.")  # fmt: skip
        reports: dict[str, FileReport] = {}
        for step in planned:
            assert step.plan is not None and step.root is not None
            plan._add_step(step, reports)
        plan.file_reports = list(reports.values())
        plan.api_summary = _api_summary(planned)
        plan.cached = bool(planned) and all(s.plan.cached for s in planned if s.plan is not None)
        return plan

    def _add_step(self, step: Step, reports: dict[str, FileReport]) -> None:
        sub = step.plan
        assert sub is not None and step.root is not None
        label = f"step {step.label}"
        sub_root = sub.root.resolve()
        for path in sub.files:
            original = self.root / path.resolve().relative_to(sub_root)
            if original not in self.files and original.is_file():
                self.files[original] = SourceFile.read(original)
        for edit in sub.edits:
            original = self.root / edit.file.resolve().relative_to(sub_root)
            note = f"{label}" + (f"; {edit.note}" if edit.note else "")
            moved = dataclasses.replace(edit, file=original, note=note)
            self.edits.append(moved)
            self.step_edits.append((step.label, moved))
        self.manual += [dataclasses.replace(m, message=f"({label}) {m.message}") for m in sub.manual]
        self.advisories += [dataclasses.replace(a, message=f"({label}) {a.message}") for a in sub.advisories]
        for report in sub.file_reports:
            known = reports.get(report.path)
            if known is None or (report.mode == ReadMode.TREE_SITTER and known.mode != ReadMode.TREE_SITTER):
                reports[report.path] = report
        self.decisions += [f"({label}) {d}" for d in sub.decisions]
        self.options.update(sub.options)
        for rule_id, description in sub.rules_used.items():
            self.rules_used.setdefault(rule_id, f"({label}) {description}")
        self.newer_than_from += sub.newer_than_from
        self.seconds += sub.seconds
        self._subplans.append((step, sub))

    def new_contents(self) -> dict[Path, bytes]:
        """The steps applied in sequence: step k's contents are of its copy, mapped back to the consumer's paths."""
        current = {path: source.data for path, source in self.files.items()}
        for _step, sub in self._subplans:
            sub_root = sub.root.resolve()
            for path, data in sub.new_contents().items():
                current[self.root / path.resolve().relative_to(sub_root)] = data
        return {path: data for path, data in current.items() if path in self.files and data != self.files[path].data}

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        steps = {id(edit): label for label, edit in self.step_edits}
        data["edits"] = [dict(entry, step=steps.get(id(edit), ""), mined=edit.mined) for entry, edit in
                         zip(data["edits"], self.sorted_edits(), strict=True)]  # fmt: skip
        assert self.selection is not None
        data["steps"] = [
            {"rules": step.label, "file": step.ruleset.path.name, "start": step.start, "end": step.end,
             "partial": step.partial, "left_out": step.left_out, "note": step.note,
             "edits": sum(1 for label, _ in self.step_edits if label == step.label),
             "mined": _mined_json(step)}
            for step in self.selection.steps
        ]  # fmt: skip
        data["uncovered"] = [{"from": lo, "to": hi} for lo, hi in self.selection.uncovered]
        data["mined_gaps"] = [{"from": g.start, "to": g.end, "state": str(g.state), "why": g.why}
                              for g in self.selection.gaps if g.ruleset is None]  # fmt: skip
        return data


def _mined_json(step: Step) -> dict[str, Any] | None:
    """What mining gave the step (None: a step of a rules file that covers its part as written)."""
    if step.mined is None:
        return None
    ruleset = step.mined.ruleset
    return {"state": str(step.mined.state), "file": str(ruleset.path) if ruleset else None, "why": step.mined.why,
            "rules": list(step.mined_ids)}  # fmt: skip


def _steps_section(selection: Selection) -> str:
    lines = ["## Steps", ""]
    lines += [f"- {line}" for line in selection.coverage()]
    for step in selection.steps:
        if step.left_out:
            lines += ["", f"Rules of step {step.label} left out (their change is not in {step.end}): "
                      + ", ".join(step.left_out)]  # fmt: skip
        if step.plan is not None and step.plan.edits:
            lines += ["", f"Edits of step {step.label}:", ""]
            lines += [f"- `{step.plan.relative(e.file)}:{e.line}` `{e.rule}`" + (" (mined)" if e.mined else "")
                      for e in step.plan.sorted_edits()]  # fmt: skip
    return "\n".join(lines) + "\n\n"


def _api_summary(planned: list[Step]) -> dict[str, Any]:
    summaries = [(s, s.plan.api_summary) for s in planned if s.plan is not None and s.plan.api_summary]
    if not summaries:
        return {}
    uses = {key: sum(int((summary.get("uses") or {}).get(key, 0)) for _, summary in summaries)
            for key in ("covered", "manual", "review")}  # fmt: skip
    private: dict[str, str] = {}
    for _, summary in summaries:
        private.update(summary.get("private_headers") or {})
    return {
        "from": summaries[0][1]["from"],
        "to": summaries[-1][1]["to"],
        "uses": uses,
        "include_actions": sum(int(summary.get("include_actions", 0)) for _, summary in summaries),
        "private_headers": private,
        "steps": [{"step": step.label, **summary} for step, summary in summaries],
    }


def _builds(selection: Selection, trees: dict[str, SourceTree | None]) -> list[dict[str, Any]]:
    builds = []
    for index, tag in enumerate([selection.from_version] + [step.end for step in selection.steps]):
        tree = trees.get(tag)
        role = "from" if index == 0 else ("to" if tag == selection.to_version else f"step end {tag}")
        if tree is not None:
            builds.append({"role": role, **tree.describe()})
    return builds


__all__ = ["Advisory", "ChainPlan", "ManualItem", "Selection", "Step", "StepInputs", "plan_steps", "select_steps"]
