"""Benchmark `migrate plan` (a script, not a timed test): how fast it is, and what it finds that a name-only search
does not (and the other way round).

    .venv/bin/pip install -e '.[bench]'     # ast-grep (PyPI package ast-grep-cli)
    .venv/bin/python scripts/bench_plan.py [--reps 5] [--no-tree] [--json OUT]

(a) `migrate plan fixtures/localllm`, each run a fresh process as a user runs it: cold (`--no-cache`: every file
    parsed again; the llama.cpp header surfaces of the API diff still come from their own cache) and warm (plan cache
    hit), `--reps` runs each, median. Also the same in process (no interpreter start, no imports).
(b) The b5415 tree's own tools/ and examples/ (the b5421 stand-in; many old-API call sites), copied to a temp dir:
    `migrate plan` once, against ast-grep (one `ast-grep run -p 'NAME($$$)' -l cpp` per old API function, and the same
    patterns in one `ast-grep scan` pass) and `grep -nwE` over the same files. The old API function names are those
    the API diff reports removed, re-signatured or newly deprecated at b7785, plus those the rules match. A site is
    (file, line, name); the tables say what each tool finds that the others do not, and why.

Timings are wall-clock on whatever machine runs this; each figure is printed with the 1-minute load average, since a
busy machine (parallel builds, tests) stretches them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrate.rewrite.tokens import tokenize  # noqa: E402

LOCALLLM = REPO / "fixtures" / "localllm"
PLAN = [sys.executable, "-m", "migrate", "plan"]
QUIET = ["--no-report", "--no-diff"]
Site = tuple[str, int, str]  # file relative to the tree, 1-based line, unqualified function name


def load() -> float:
    return os.getloadavg()[0]


@dataclass
class Timing:
    label: str
    seconds: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.loads.append(load())

    def row(self) -> str:
        median = statistics.median(self.seconds)
        return (f"| {self.label} | {len(self.seconds)} | {median:.2f} | {min(self.seconds):.2f} | "
                f"{max(self.seconds):.2f} | {statistics.median(self.loads):.1f} |")  # fmt: skip


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load():.1f}] {text}", file=sys.stderr, flush=True)


def timed(command: list[str], cwd: Path = REPO) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - started, proc


def check_plan(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode not in (0, 1):  # 1: manual actions remain, still a complete plan
        raise SystemExit(f"migrate plan failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


# --- (a) the fixture -----------------------------------------------------------------------------------------------


def cli_runs(label: str, extra: list[str], reps: int) -> Timing:
    timing = Timing(label)
    for _ in range(reps):
        seconds, proc = timed([*PLAN, str(LOCALLLM), *QUIET, *extra])
        check_plan(proc)
        timing.add(seconds)
    return timing


def in_process_runs(label: str, extra: list[str], reps: int) -> Timing:
    from migrate.cli import build_parser
    from migrate.cli.plan import plan_request
    from migrate.rewrite.command import make_plan

    request = plan_request(build_parser().parse_args(["plan", str(LOCALLLM), *QUIET, *extra]))
    timing = Timing(label)
    for _ in range(reps):
        started = time.perf_counter()
        make_plan(request)
        timing.add(time.perf_counter() - started)
    return timing


def bench_fixture(reps: int) -> list[Timing]:
    say("(a) priming: one plan to fill the plan cache and load the header surfaces")
    check_plan(timed([*PLAN, str(LOCALLLM), *QUIET])[1])
    results = []
    for label, runner, extra in (
        ("`migrate plan` process, cold (--no-cache)", cli_runs, ["--no-cache"]),
        ("`migrate plan` process, warm (plan cache hit)", cli_runs, []),
        ("in process (make_plan), cold", in_process_runs, ["--no-cache"]),
        ("in process (make_plan), warm", in_process_runs, []),
    ):
        say(f"(a) {label} x{reps}")
        results.append(runner(label, extra, reps))
    return results


# --- (b) the b5415 tree's tools/ and examples/ ---------------------------------------------------------------------


@dataclass
class Found:
    tool: str
    short: str  # the tool's name in the differences table
    seconds: float
    load: float
    sites: set[Site]
    files_searched: int
    note: str = ""
    rewritten: int | None = None
    manual: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


def copy_tree(dest: Path) -> Path:
    from migrate.sources import resolve

    tree = resolve("b5421")
    root = dest / f"{tree.provided}-tools-examples"
    for sub in ("tools", "examples"):
        shutil.copytree(tree.path / sub, root / sub, symlinks=True)
    say(f"(b) copied {tree.provided} ({tree.commit[:12]}) tools/ and examples/ to {root}")
    return root


def old_api_functions() -> dict[str, set[str]]:
    """Unqualified name -> the qualified names: functions removed, re-signatured or newly deprecated, and ruled."""
    from migrate.rewrite.apicheck import ApiTarget
    from migrate.rewrite.rules import find_rules
    from migrate.sources import resolve

    diff, _, _ = ApiTarget(resolve("b5421"), resolve("b7785")).load()
    names = {d.name for d in diff.removed_functions + diff.deprecated_functions}
    names |= {c.name for c in diff.changed_functions}
    # The rules' functions too (some were added after b5421 and are gone at b7785), but not llama_decode: the decode
    # rule improves error handling around a call that did not change.
    names |= {r.match.function for r in find_rules("b5421", "b7785").rules if r.match.function
              and r.kind != "decode_error"}  # fmt: skip
    by_short: dict[str, set[str]] = {}
    for name in names:
        by_short.setdefault(name.split("::")[-1], set()).add(name)
    return by_short


def consumer_files(root: Path) -> list[Path]:
    from migrate.rewrite.engine import consumer_files as engine_files

    return engine_files(root)


def name_sites(text: str, line: int, names: Iterable[str]) -> set[tuple[int, str]]:
    """(line, name) of every code identifier of `names` in `text` (a before-text starting at `line`)."""
    wanted = set(names)
    data = text.encode()
    return {(line + data[: t.start].count(b"\n"), t.name) for t in tokenize(data) if t.kind == "ident"
            and t.name in wanted}  # fmt: skip


@dataclass
class PlanSites:
    """The sites of a JSON plan for a set of function names."""

    api: set[Site]  # uses the API cross reference resolved (covered, manual or to review)
    api_manual: set[Site]
    in_macro: set[Site]  # reported at a macro expansion: the name is not written there
    rewritten: set[Site]  # named in the original text of an edit
    ruled: set[Site]  # the rules' own manual / review items
    ruled_actions: set[Site]

    @classmethod
    def read(cls, plan: dict, names: dict[str, set[str]]) -> PlanSites:
        from migrate.rewrite.rules import find_rules

        short = {q: s for s, qs in names.items() for q in qs}
        api = [s for s in plan["api"]["sites"] if s["symbol"] in short]
        rules = {r.id: r.match.function for r in find_rules("b5421", "b7785").rules}
        ruled = [m for m in plan["manual"] if rules.get(m["rule"]) in short]
        edits = plan["edits"]

        def site(item: dict, symbol: str) -> Site:
            return (item["file"], item["line"], short[symbol])

        return cls(
            api={site(s, s["symbol"]) for s in api},
            api_manual={site(s, s["symbol"]) for s in api if s["status"] == "manual"},
            in_macro={site(s, s["symbol"]) for s in api if s["in_macro"]},
            rewritten={(e["file"], n, name) for e in edits for n, name in name_sites(e["before"], e["line"], names)},
            ruled={site(m, rules[m["rule"]]) for m in ruled},
            ruled_actions={site(m, rules[m["rule"]]) for m in ruled if m["kind"] == "action"},
        )  # fmt: skip


def ours(root: Path, names: dict[str, set[str]], out: Path, tag: str) -> Found:
    """`migrate plan` over the tree, cold; its sites for the same function names, from the JSON plan."""
    say(f"({tag}) migrate plan over {root.name} (cold, --no-cache) ...")
    before = load()
    command = [*PLAN, str(root), "--no-cache", "--no-diff", "--json", str(out / "plan.json"), "--report",
               str(out / "report.md")]  # fmt: skip
    seconds, proc = timed(command)
    check_plan(proc)
    plan = json.loads((out / "plan.json").read_text())
    sites = PlanSites.read(plan, names)
    summary = plan["summary"]
    note = (f"{summary['files_scanned']} files parsed ({_modes(plan)}); all kinds of API together: "
            f"{len(plan['api']['sites'])} uses of removed/changed API (functions, struct fields, enum constants, "
            f"types), {summary['edits']} edits, {summary['manual']} manual actions, "
            f"{summary['review']} to review")  # fmt: skip
    found = Found("`migrate plan` (libclang: rules + API diff)", "migrate plan", seconds, max(before, load()),
                  sites.api | sites.rewritten | sites.ruled, len(consumer_files(root)), note,
                  rewritten=len(sites.rewritten), manual=len(sites.api_manual | sites.ruled_actions))  # fmt: skip
    found.extra = {"macro_uses": sites.in_macro, "not_scanned": set(plan["api"]["not_scanned"])}
    return found


def _modes(plan: dict) -> str:
    counts: dict[str, int] = {}
    for report in plan["files"]:
        counts[report["mode"]] = counts.get(report["mode"], 0) + 1
    return ", ".join(f"{n} {mode}" for mode, n in sorted(counts.items()))


def ast_grep_binary() -> str:
    found = shutil.which("ast-grep", path=str(Path(sys.executable).parent)) or shutil.which("ast-grep")
    if not found:
        raise SystemExit("ast-grep not found: pip install -e '.[bench]' (PyPI package ast-grep-cli)")
    return found


def _ast_grep_sites(output: str, root: Path) -> set[Site]:
    sites = set()
    for match in json.loads(output or "[]"):
        text = match["text"]
        name = re.match(r"\s*(?:[A-Za-z_]\w*\s*::\s*)*([A-Za-z_]\w*)", text)
        path = Path(match["file"])
        rel = str(path.relative_to(root)) if path.is_absolute() else str(path)
        sites.add((rel, match["range"]["start"]["line"] + 1, name.group(1) if name else text))
    return sites


def ast_grep_config(work: Path) -> Path:
    """ast-grep's `-l cpp` only reads .cc/.cpp/.hpp/...: .c and .h would be skipped (or read as C); this maps every
    file the plan reads to the C++ grammar, so the tools search the same files."""
    config = work / "sgconfig.yml"
    if not config.exists():
        config.write_text('ruleDirs: []\nlanguageGlobs:\n  cpp: ["*.c", "*.h", "*.inc"]\n')
    return config


def ast_grep_per_name(root: Path, files: list[str], names: Iterable[str]) -> tuple[float, set[Site]]:
    binary, sites, config = ast_grep_binary(), set(), ast_grep_config(root.parent)
    started = time.perf_counter()
    for name in sorted(names):
        command = [binary, "run", "-c", str(config), "-p", f"{name}($$$)", "-l", "cpp", "--json=compact", *files]
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True)
        sites |= _ast_grep_sites(proc.stdout, root)
    return time.perf_counter() - started, sites


def ast_grep_one_pass(root: Path, files: list[str], names: Iterable[str]) -> tuple[float, set[Site]]:
    rules = "\n---\n".join(f"id: {name}\nlanguage: cpp\nrule:\n  pattern: {name}($$$)" for name in sorted(names))
    started = time.perf_counter()
    command = [ast_grep_binary(), "scan", "-c", str(ast_grep_config(root.parent)), "--inline-rules", rules,
               "--json=compact", *files]  # fmt: skip
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True)
    return time.perf_counter() - started, _ast_grep_sites(proc.stdout, root)


def grep_sites(root: Path, files: list[str], names: Iterable[str]) -> tuple[float, set[Site]]:
    pattern = "|".join(sorted(names))
    started = time.perf_counter()
    proc = subprocess.run(["grep", "-nwHE", f"({pattern})", *files], cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    sites = set()
    word = re.compile(rf"\b({pattern})\b")
    for hit in proc.stdout.splitlines():
        file, line, text = hit.split(":", 2)
        sites |= {(file, int(line), m.group(1)) for m in word.finditer(text)}
    return seconds, sites


def best_of(runs: int, run: Callable[[], tuple[float, set[Site]]]) -> tuple[float, float, set[Site]]:
    """Median seconds of `runs` runs (cheap tools), the load average, and the sites (the same every run)."""
    results = [run() for _ in range(runs)]
    return statistics.median(s for s, _ in results), load(), results[0][1]


# --- why a site is found by one tool and not another ----------------------------------------------------------------


class Lines:
    """Per file: source lines, and its code identifiers (not comments, not strings) with their neighbours."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[str, tuple[list[str], dict[tuple[int, str], tuple[str, str]]]] = {}

    def get(self, file: str) -> tuple[list[str], dict[tuple[int, str], tuple[str, str]]]:
        """Lines, and (line, name) -> (previous token, next token) for each identifier."""
        if file not in self.cache:
            data = (self.root / file).read_bytes()
            tokens = tokenize(data)
            idents = {}
            line, counted = 1, 0
            for index, token in enumerate(tokens):
                line, counted = line + data.count(b"\n", counted, token.start), token.start
                if token.kind == "ident":
                    before = tokens[index - 1].name if index else ""
                    after = tokens[index + 1].name if index + 1 < len(tokens) else ""
                    idents.setdefault((line, token.name), (before, after))
            self.cache[file] = (data.decode("utf-8", "replace").splitlines(), idents)
        return self.cache[file]

    def text(self, site: Site) -> str:
        lines, _ = self.get(site[0])
        return lines[site[1] - 1].strip() if 0 < site[1] <= len(lines) else ""


NOT_DECLARATION = {"return", "else", "case", "throw", "co_return", "new", "delete", "sizeof", "decltype"}


def why(site: Site, finder: Found, misser: Found, lines: Lines, plan: Found) -> str:
    """Why `finder` reports a site that `misser` does not: the first reason that holds, checked on the source."""
    file, line, name = site
    source, idents = lines.get(file)
    if (line, name) not in idents or site in plan.extra["macro_uses"]:
        if finder is plan:
            return "expansion of a macro that calls it (the name is not written on this line)"
        return "in a comment or a string"
    before, after = idents[(line, name)]
    if _in_macro_definition(source, line):
        return "in a #define body (plan: the definition rewritten once, or each expansion reported)"
    if misser is plan and file in plan.extra["not_scanned"]:
        return "file libclang could not parse (plan: only the rules' names, by tree-sitter)"
    if _in_disabled_block(source, line):
        return "in an `#if 0` block (plan: listed to review for the rules' names only)"
    if before in ("->", "."):
        return "a struct member of that name (`x->name`, `x.name`): the consumer's own"
    if before == "::":
        return "qualified call `ns::name(...)`: the pattern `name($$$)` does not match it"
    if after != "(":
        return "not a call: a function pointer, an address, a using-declaration"
    if (before.isidentifier() and before not in NOT_DECLARATION) or before in ("*", "&"):
        return "a declaration or definition of a function of that name (not a call)"
    if misser is plan:
        return "a call libclang resolves to another declaration (the consumer's own, an overload)"
    if re.match(r"\s*[\w:<>]+\s+\w+\s*\(", lines.text(site)):
        return "in a direct-initialiser `T x(name(...))`: tree-sitter reads the statement as a declaration"
    return "other (see the example)"


def _in_macro_definition(source: list[str], line: int) -> bool:
    index = line - 1
    while index > 0 and source[index - 1].rstrip().endswith("\\"):
        index -= 1
    return bool(re.match(r"\s*#\s*define\b", source[index]))


def _in_disabled_block(source: list[str], line: int) -> bool:
    """Inside `#if 0` ... `#endif` (nesting ignored: a rough check, said so in the category)."""
    for index in range(line - 2, -1, -1):
        text = source[index].strip()
        if re.match(r"#\s*endif", text):
            return False
        if re.match(r"#\s*if\s+0\b", text):
            return True
    return False


def differences(a: Found, b: Found, lines: Lines, plan: Found) -> list[tuple[str, str, int, str]]:
    """(only in, category, count, example) for the sites one of `a`, `b` finds and the other does not."""
    rows = []
    for finder, misser in ((a, b), (b, a)):
        groups: dict[str, list[Site]] = {}
        for site in sorted(finder.sites - misser.sites):
            groups.setdefault(why(site, finder, misser, lines, plan), []).append(site)
        for reason, sites in sorted(groups.items(), key=lambda item: -len(item[1])):
            example = sites[0]
            code = lines.text(example).replace("|", "\\|")[:70]
            rows.append((f"{finder.short}, not {misser.short}", reason, len(sites),
                         f"`{example[0]}:{example[1]}` `{code}`"))  # fmt: skip
    return rows


Row = tuple[str, str, int, str]


def compare(root: Path, names: dict[str, set[str]], reps: int, out: Path, tag: str) -> tuple[list[Found], list[Row]]:
    """`migrate plan` and the name-only tools over the same files; the table rows and the differences."""
    files = [str(p.relative_to(root)) for p in consumer_files(root)]
    say(f"({tag}) {root.name}: {len(files)} C/C++ files, {len(names)} old API function names")
    plan = ours(root, names, out, tag)
    say(f"({tag}) ast-grep, one run per name (once: it is slow), then one-pass scan and grep x{reps}")
    seconds, at, sites = best_of(1, lambda: ast_grep_per_name(root, files, names))
    per_name = Found(f"ast-grep, one `run -p 'NAME($$$)'` per name ({len(names)} runs, 1 rep)", "ast-grep",
                     seconds, at, sites, len(files))  # fmt: skip
    seconds, at, sites = best_of(reps, lambda: ast_grep_one_pass(root, files, names))
    one_pass = Found(f"ast-grep `scan`, the same patterns in one pass (median of {reps})", "ast-grep scan", seconds,
                     at, sites, len(files))  # fmt: skip
    seconds, at, sites = best_of(reps, lambda: grep_sites(root, files, names))
    grep = Found(f"grep -nwE, all names in one pass (median of {reps})", "grep", seconds, at, sites, len(files))
    if one_pass.sites != per_name.sites:
        one_pass.note = f"differs from one run per name: {len(one_pass.sites ^ per_name.sites)} sites"
    lines = Lines(root)
    rows = differences(plan, grep, lines, plan) + differences(plan, per_name, lines, plan)
    rows += differences(per_name, grep, lines, plan)
    return [plan, per_name, one_pass, grep], rows


def bench_trees(reps: int, keep: bool) -> list[tuple[str, list[Found], list[Row]]]:
    """(b) the b5415 tools/ and examples/; (c) the two fixtures, with traps the b5415 tree does not have."""
    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    try:
        names = old_api_functions()
        results = []
        trees = [("b", copy_tree(work)), ("c", copy_fixture(work, "clib")), ("c", copy_fixture(work, "localllm"))]
        for tag, root in trees:
            out = work / f"out-{root.name}"
            out.mkdir()
            results.append((root.name, *compare(root, names, reps, out, tag)))
        return results
    finally:
        if keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def copy_fixture(work: Path, name: str) -> Path:
    root = work / name
    shutil.copytree(REPO / "fixtures" / name, root)
    return root


# --- output -----------------------------------------------------------------------------------------------------------


def fixture_table(timings: list[Timing]) -> str:
    lines = ["| `migrate plan fixtures/localllm` | runs | median s | min s | max s | load avg (1 min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    return "\n".join(lines + [t.row() for t in timings])


def tree_table(found: list[Found]) -> str:
    lines = ["| tool | files searched | old-API sites found | rewritten | manual | seconds | load avg (1 min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for item in found:
        rewritten = "—" if item.rewritten is None else str(item.rewritten)
        manual = "—" if item.manual is None else str(item.manual)
        lines.append(f"| {item.tool} | {item.files_searched} | {len(item.sites)} | {rewritten} | {manual} | "
                     f"{item.seconds:.2f} | {item.load:.1f} |")  # fmt: skip
    notes = [f"- {item.tool}: {item.note}" for item in found if item.note]
    return "\n".join(lines + [""] + notes)


def diff_table(rows: list[tuple[str, str, int, str]]) -> str:
    lines = ["| found by | why | sites | example |", "| --- | --- | ---: | --- |"]
    return "\n".join(lines + [f"| {a} | {why} | {n} | {example} |" for a, why, n, example in rows])


def tree_section(tag: str, name: str, found: list[Found], rows: list[Row]) -> list[str]:
    title = {"b": f"(b) {name}: the b5415 tree's own tools/ and examples/", "c": f"(c) fixtures/{name}"}
    return ["", f"### {title[tag]}", "", tree_table(found), "",
            "What one finds that the other does not (a site is file:line:name):", "", diff_table(rows)]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="runs per fixture figure and per fast name-only tool")
    parser.add_argument("--no-tree", action="store_true", help="only (a), the fixture timings")
    parser.add_argument("--keep", action="store_true", help="keep the copied trees and the plans' JSON/report")
    parser.add_argument("--json", help="also write the figures as JSON here")
    args = parser.parse_args()
    cpus = os.cpu_count()
    out = [f"Machine: {cpus} CPU(s); load average at start {load():.2f}. Wall-clock timings, noisy under load.", "",
           "### (a) `migrate plan` on fixtures/localllm", ""]  # fmt: skip
    timings = bench_fixture(args.reps)
    out.append(fixture_table(timings))
    data: dict[str, object] = {"cpus": cpus, "fixture": [vars(t) for t in timings]}
    if not args.no_tree:
        for (name, found, rows), tag in zip(bench_trees(args.reps, args.keep), "bcc", strict=True):
            out += tree_section(tag, name, found, rows)
            data[name] = {"tools": [_found_json(f) for f in found], "differences": rows}
    print("\n".join(out))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1, default=str) + "\n")
    return 0


def _found_json(found: Found) -> dict[str, object]:
    return {k: v for k, v in vars(found).items() if k not in ("sites", "extra")} | {"sites": len(found.sites)}


if __name__ == "__main__":
    raise SystemExit(main())
