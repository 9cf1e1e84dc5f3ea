"""Outcomes are typed: no status or verdict word is written as a string literal outside its enum module (issue 22).

The words are the values of the outcome enums: verify/outcomes.py (a check's status, a classification across two
builds, a greedy verdict, a CPU/GPU comparison's status, a mutant's status, a known failure's state) and the plan's
ReadMode (migrate/rewrite/plan.py). Every module of migrate/ and verify/ is parsed; only string literals are
searched, docstrings left out (documentation, not behaviour), and so are literals in the place of a mapping key (a
dict display's key, a subscript, the key of `.get`/`.pop`/`.setdefault`, the left side of `in`): those are JSON or
evidence keys such as `{"skipped": reason}`, a schema, not an outcome compared by its word.

What remains must be listed in ALLOWED with the reason; each entry must still occur, so the list only shrinks. The
exit codes are the enums of migrate/exit_codes.py and verify/outcomes.py: no module assigns an `EXIT_*` number.
"""

from __future__ import annotations

import ast
from enum import Enum
from pathlib import Path

from migrate.rewrite.plan import ReadMode
from verify import outcomes

REPO = Path(__file__).resolve().parent.parent
ENUM_MODULES = {"verify/outcomes.py", "migrate/rewrite/plan.py"}
OUTCOME_ENUMS: tuple[type[Enum], ...] = (outcomes.CheckStatus, outcomes.Classification, outcomes.GreedyVerdict,
                                         outcomes.DeviceStatus, outcomes.MutantStatus, outcomes.KnownState, ReadMode)
# (module, word): why the word is not an outcome there
ALLOWED: dict[tuple[str, str], str] = {
    ("verify/pytest_plugin.py", "passed"): "pytest's own report outcomes (TestReport.outcome), not our statuses",
    ("verify/pytest_plugin.py", "failed"): "pytest's own report outcomes (TestReport.outcome), not our statuses",
    ("verify/pytest_plugin.py", "skipped"): "pytest's own report outcomes (TestReport.outcome), not our statuses",
    ("verify/report.py", "error"): "a JUnit XML element name (<error>), the format's schema",
    ("verify/report.py", "skipped"): "a JUnit XML element name (<skipped>), the format's schema",
    ("verify/modelprobe.py", "error"): "words of llama.cpp's own log lines that carry a load failure's reason",
    ("verify/modelprobe.py", "failed"): "words of llama.cpp's own log lines that carry a load failure's reason",
    ("migrate/rewrite/parse.py", "libclang"): "the libclang package's name, for its installed version",
    ("verify/reference.py", "fixed"): "a key of the consumer config's [verify.reference] table (fixed values)",
}


def outcome_words() -> set[str]:
    return {str(member.value) for enum in OUTCOME_ENUMS for member in enum}


def modules() -> list[Path]:
    return sorted(p for top in ("migrate", "verify") for p in (REPO / top).rglob("*.py"))


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _keys(tree: ast.Module) -> set[int]:
    """Literals in the place of a mapping key (see the module's docstring)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            found |= {id(key) for key in node.keys if key is not None}
        elif isinstance(node, ast.Subscript):
            found.add(id(node.slice))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
              and node.func.attr in ("get", "pop", "setdefault")):  # fmt: skip
            found.add(id(node.args[0]))
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            found.add(id(node.left))
    return found


def outcome_literals(path: Path, words: set[str]) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree) | _keys(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words
            and id(node) not in skip]  # fmt: skip


def test_no_outcome_word_outside_its_enum_module() -> None:
    words = outcome_words()
    found: dict[tuple[str, str], list[int]] = {}
    for path in modules():
        name = path.relative_to(REPO).as_posix()
        if name in ENUM_MODULES:
            continue
        for line, word in outcome_literals(path, words):
            found.setdefault((name, word), []).append(line)
    unexplained = {f"{name}:{lines[0]}: {word!r}" for (name, word), lines in found.items()
                   if (name, word) not in ALLOWED}  # fmt: skip
    assert not unexplained, f"use the outcome enums (verify/outcomes.py), or explain in ALLOWED: {sorted(unexplained)}"
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"ALLOWED entries that no longer occur (remove them): {stale}"


def test_the_search_sees_a_status_literal(tmp_path: Path) -> None:
    """The search itself: a compared status word is found, a key or a docstring is not."""
    module = tmp_path / "m.py"
    module.write_text('"""passed"""\nx = {"error": 1}\ny = x.get("skipped")\nok = s == "failed"\nz = "error" in x\n')
    assert outcome_literals(module, outcome_words()) == [(4, "failed")]


def test_no_module_defines_an_exit_number() -> None:
    """One definition per exit code: the enums. The model probe's child reports to its parent with its own three
    codes (verify/modelprobe.py), a protocol between two processes of ours, not a command's exit code."""
    found = []
    for path in modules():
        name = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and name != "verify/modelprobe.py":
                targets = [t for target in node.targets for t in (target.elts if isinstance(target, ast.Tuple)
                                                                   else [target])]  # fmt: skip
                found += [f"{name}:{node.lineno} {t.id}" for t in targets
                          if isinstance(t, ast.Name) and t.id.startswith("EXIT_")]  # fmt: skip
    assert not found, found
