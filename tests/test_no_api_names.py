"""API names live in the rules files, not in the rewrite engine (issue 14: the next bump is a data file).

Greps every module of migrate/rewrite/ for the names a migration step is about: llama.cpp identifiers (`llama_*`,
`LLAMA_*`), and the ids and API names the shipped rules files use (rule and advisory ids, matched functions and
fields, the members and types they write). Only string and bytes literals are searched: in Python an API name can
only be data there (an identifier spelled `llama_...` is our own, e.g. `llama_tree`), and docstrings are left out
because they explain a module with an example, which is documentation, not behaviour.

Allowed: defaults.py, the one documented table of defaults; and, until they become data, the modules PENDING names
with the reason — each must still hold such a name, so the list only shrinks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from migrate.rewrite.rules import rule_files

REWRITE = Path(__file__).resolve().parent.parent / "migrate" / "rewrite"
DEFAULTS = "defaults.py"
PENDING: dict[str, str] = {}  # every module is clean now; a new exception needs its reason here
LLAMA = re.compile(r"\bllama_[a-z_]+\b|\bLLAMA_(?!MIGRATE_)[A-Z_]+\b")  # LLAMA_MIGRATE_*: our own variables


def _step_names() -> set[str]:
    """Ids and API names of every shipped rules file."""
    names: set[str] = set()
    for ruleset in rule_files():
        for rule in ruleset.rules:
            names |= {rule.id, rule.match.function or "", rule.match.member or "", rule.match.struct or ""}
            for key in ("member", "type"):
                if isinstance(rule.params.get(key), str):
                    names.add(rule.params[key])
            names |= set(rule.params.get("fold") or {})
        for advisory in ruleset.advisories:
            names.add(advisory.id)
            names |= {entry.match.function or entry.match.member or "" for entry in advisory.matches}
    return names - {""}


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes) and id(node) not in skip:
            value = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            found.append((node.lineno, value))
    return found


def _api_names(path: Path, step_names: set[str]) -> list[str]:
    words = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(step_names, key=len, reverse=True)))
                       + r")(?![\w-])")  # fmt: skip
    hits = []
    for line, text in _literals(path):
        names = set(LLAMA.findall(text)) | set(words.findall(text))
        hits += [f"{path.name}:{line}: {name}" for name in sorted(names)]
    return hits


def test_no_api_name_of_a_step_in_the_rewrite_engine() -> None:
    step_names = _step_names()
    assert {"kv-unified", "llama_kv_self_clear", "flash_attn", "use_mmap"} <= step_names  # the grep has teeth
    hits = []
    for path in sorted(REWRITE.rglob("*.py")):  # packages too (handlers/)
        name = path.relative_to(REWRITE).as_posix()
        if name != DEFAULTS and name not in PENDING:
            hits += _api_names(path, step_names)
    assert not hits, "API names belong in rules/*.yaml (or, as a documented default, in defaults.py):\n" + "\n".join(
        hits
    )


def test_the_pending_list_only_shrinks() -> None:
    step_names = _step_names()
    for name in PENDING:
        assert _api_names(REWRITE / name, step_names), f"{name} has no API name left: drop it from PENDING"


def test_the_grep_finds_what_it_is_for(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text('"""llama_decode in a docstring is fine."""\n\nRULE = "kv-unified"\nNAME = b"llama_get_memory"\n'
                       'MEMBER = "x.flash_attn = 1"\nOWN = "LLAMA_MIGRATE_PLAN_JOBS"\n')  # fmt: skip
    hits = _api_names(planted, _step_names())
    assert hits == ["planted.py:3: kv-unified", "planted.py:4: llama_get_memory", "planted.py:5: flash_attn"]
