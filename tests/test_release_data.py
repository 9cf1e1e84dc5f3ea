"""Release facts as data (issue 22 item 3): the llama.cpp names the observer, the tracer and the trace reader use live
in verify/data/releases.yaml, loaded and checked by verify/releases.py.

The grep: verify/observe.py and verify/trace.py hold no string literal naming a llama.cpp function or type (as
tests/test_no_api_names.py does for the rewrite engine; docstrings explain and are left out), and no call of
`ensure_model` in migrate/ pins the models' vocabulary to a release literal. The table: its rules refuse a broken
file with the key named, and every release range is what the cached trees' llama.h declare.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.sources import SourceTree, resolve
from tests.test_no_api_names import LLAMA, _literals
from verify.releases import DATA_FILE, RELEASES, Handle, ReleaseDataError, parse
from verify.trace import TRACED_FUNCTIONS, tracer_wraps_header

REPO = Path(__file__).resolve().parent.parent
CLEAN = [REPO / "verify" / "observe.py", REPO / "verify" / "trace.py"]
TAG_LITERAL = re.compile(r"^b\d+$")


def _llama_names(path: Path) -> list[str]:
    found = [(line, name) for line, text in _literals(path) for name in set(LLAMA.findall(text))]
    return [f"{path.name}:{line}: {name}" for line, name in sorted(found)]


def _pinned_model_calls(path: Path) -> list[str]:
    """Calls of ensure_model with a release tag literal among their arguments."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "ensure_model":
            values = [*node.args, *(k.value for k in node.keywords)]
            tags = [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)
                    and TAG_LITERAL.match(v.value)]  # fmt: skip
            hits += [(node.lineno, tag) for tag in tags]
    return [f"{path.name}:{line}: {tag}" for line, tag in sorted(hits)]


def test_no_llama_name_in_the_observer_and_the_trace_reader() -> None:
    hits = [hit for path in CLEAN for hit in _llama_names(path)]
    assert not hits, "llama.cpp names belong in verify/data/releases.yaml:\n" + "\n".join(hits)


def test_no_model_pinned_to_a_release_in_migrate() -> None:
    hits = [hit for path in sorted((REPO / "migrate").rglob("*.py")) for hit in _pinned_model_calls(path)]
    assert not hits, "the models' vocabulary release is releases.yaml `model_vocabulary`:\n" + "\n".join(hits)


def test_the_greps_find_what_they_are_for(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text('"""llama_decode in a docstring is fine."""\n\nNAMES = ("llama_memory_clear",)\n'
                       'TYPE = "struct llama_context *"\nOWN = "LLAMA_MIGRATE_TRACE"\n'
                       'm = ensure_model("tiny", "b5421", eog=True)\nn = ensure_model("tiny", llama="b7785")\n'
                       'o = ensure_model("tiny", cache="b")\n')  # fmt: skip
    assert _llama_names(planted) == ["planted.py:3: llama_memory_clear", "planted.py:4: llama_context"]
    assert _pinned_model_calls(planted) == ["planted.py:6: b5421", "planted.py:7: b7785"]


# --- the table's rules --------------------------------------------------------------------------------------------


def raw() -> dict[str, Any]:
    return yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))


def broken(edit: Any) -> str:
    data = copy.deepcopy(raw())
    edit(data)
    with pytest.raises(ReleaseDataError) as caught:
        parse(data)
    return str(caught.value)


def test_the_shipped_table_loads() -> None:
    assert parse(raw()) == RELEASES
    assert RELEASES.releases == ("b5421", "b7785", "b10361") and RELEASES.model_vocabulary in RELEASES.releases
    assert RELEASES.default_function("clear") == "llama_memory_clear"  # the newest release's name
    assert RELEASES.traced_function("llama_kv_self_clear").handle is Handle.CONTEXT


def test_a_broken_table_is_refused_with_the_key_named() -> None:
    assert "unknown key(s) extra" in broken(lambda d: d.update(extra=1))
    assert "b9999" in broken(lambda d: d.update(model_vocabulary="b9999"))
    assert "oldest first" in broken(lambda d: d.update(releases=["b7785", "b5421"]))
    assert "since b10361 is after until b5421" in broken(lambda d: d["ranges"][0].update(since="b10361"))
    assert "no range for llama_kv_self_clear" in broken(lambda d: d["ranges"][0]["names"].remove("llama_kv_self_clear"))
    assert "names its handle" in broken(lambda d: d["traced"]["llama_memory_seq_rm"].pop("handle"))
    assert "traced.llama_free.op" in broken(lambda d: d["traced"]["llama_free"].update(op="release"))
    assert "memory_queries[0].fns" in broken(lambda d: d["observer"]["memory_queries"][0]["fns"].pop("pos_min"))
    assert "in no group" in broken(lambda d: d["observer"]["groups"]["context_info"].remove("llama_n_ctx"))
    assert "is no llama.cpp function name" in broken(lambda d: d["observer"]["calls"].update(decode="decode"))


# --- the table against the trees it describes ----------------------------------------------------------------------


def _declared(header: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\s*\(", header) is not None


def test_every_range_is_what_the_cached_trees_declare(old_tree: SourceTree, new_tree: SourceTree) -> None:
    trees = {old_tree.requested: old_tree, new_tree.requested: new_tree}  # the cached stand-ins: b5415, b7836
    for tag in RELEASES.releases:
        tree = trees.get(tag) or resolve(tag)
        header = (tree.path / "include" / "llama.h").read_text(encoding="utf-8", errors="replace")
        wrong = [f"{name}: declared {_declared(header, name)}, range says {r.declared_at(tag)}"
                 for r in RELEASES.ranges for name in r.names
                 if _declared(header, name) != r.declared_at(tag)]  # fmt: skip
        assert not wrong, (tag, tree.path.name, wrong)


def test_the_tracer_wraps_every_traced_function_once_under_its_guard() -> None:
    header = tracer_wraps_header()
    for name in TRACED_FUNCTIONS:
        assert header.count(f"#ifdef TRACE_WRAP_{name}\n") == 1, name
        assert header.count(f"({name}") == 1, name  # one wrapper
    unwrapped = [t.name for t in RELEASES.traced if not t.wrap]
    assert unwrapped and not any(name in header for name in unwrapped)
