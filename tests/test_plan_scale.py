"""Planning at scale gives the sequential plan: units in worker processes, shared `#include` runs precompiled, the
per-unit cache (migrate/rewrite/units.py, parse.py). Each plan's JSON is compared with the plain sequential loop's
(`jobs=0`) on the two fixtures and on a small tree made to exercise what could part them (a consumer header two
units include, shared preambles, a private llama.cpp header); a re-plan after editing one file plans one unit.
The b5415 tools/ + examples/ tree is the benchmark's (scripts/bench_plan_scale.py), not a test's."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from migrate.paths import data_dir
from migrate.rewrite import units as scale
from migrate.rewrite.apicheck import ApiTarget
from migrate.rewrite.engine import Engine, EngineConfig, build_plan
from migrate.rewrite.parse import blank_prefix, leading_includes
from migrate.rewrite.rules import load_rules
from migrate.sources import SourceTree
from tests.conftest import REPO

RULESET = load_rules(data_dir("rules") / "b5421-b7785.yaml")

SHARED_HEADER = """\
#pragma once
#include "llama.h"
static inline void reset(llama_context * ctx) { llama_kv_self_clear(ctx); }
"""
UNIT = """\
// unit {n}
#include "llama.h"
#include "common.h"
#include "log.h"
#include <vector>
#include "util.h"

int step{n}(llama_context * ctx, common_params & params) {{
    reset(ctx);
    llama_kv_self_seq_rm(ctx, {n}, 0, -1);
    llama_context_params cparams = llama_context_default_params();
    LOG_INF("%s %d\\n", DEFAULT_MODEL_PATH, (int) cparams.n_ctx);
    return params.n_ctx + (int) llama_kv_self_n_tokens(ctx);
}}
"""
PRIVATE = """\
#include "llama.h"
#include "common.h"
#include "src/llama-impl.h"
int private_use(llama_context * ctx) {{ llama_kv_self_clear(ctx); return {n}; }}
"""


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "consumer"
    (root / "inc").mkdir(parents=True)
    (root / "inc" / "util.h").write_text(SHARED_HEADER)
    for n in range(3):
        (root / f"unit{n}.cpp").write_text(UNIT.format(n=n))
    (root / "private.cpp").write_text(PRIVATE.format(n=7))
    return root


def plan_json(root: Path, old: SourceTree, new: SourceTree, jobs: int, cache: Path | None) -> dict:
    config = EngineConfig(root, old.path, RULESET, options={}, enabled={"kv-unified"}, plan_cache=cache,
                          api=ApiTarget(old, new), jobs=jobs)  # fmt: skip
    return build_plan(config).to_json()


def same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_leading_includes_and_the_blanked_prefix() -> None:
    data = b'/* licence\n   text */\n#include "a.h"\n// note\n#include <b>  // why\n#define X 1\n#include "c.h"\n'
    found = leading_includes(data)
    assert [(d.spelled, d.line) for d in found] == [('"a.h"', 3), ("<b>", 5)]
    blanked = blank_prefix(data, found[-1].end)
    assert len(blanked) == len(data) and blanked.count(b"\n") == data.count(b"\n")
    assert blanked.endswith(b"#define X 1\n#include \"c.h\"\n") and b"include" not in blanked[: found[-1].end]
    assert leading_includes(b"#include \"a.h\" /* starts\n*/\n") == []  # not sure where the line ends: none


@pytest.mark.parametrize("fixture", ["localllm", "clib"])
def test_fixture_plans_are_the_sequential_plan(fixture: str, old_tree: SourceTree, new_tree: SourceTree,
                                               tmp_path: Path) -> None:  # fmt: skip
    root = REPO / "fixtures" / fixture
    reference = plan_json(root, old_tree, new_tree, 0, None)
    assert same(plan_json(root, old_tree, new_tree, 2, tmp_path / "plans"), reference)
    for stale in (tmp_path / "plans").glob("*.json"):
        stale.unlink()  # the whole-plan cache: the next plan comes unit by unit from the per-unit cache
    assert same(plan_json(root, old_tree, new_tree, 2, tmp_path / "plans"), reference)


def test_a_tree_of_units_and_a_one_file_edit(old_tree: SourceTree, new_tree: SourceTree, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = tree(tmp_path)
    reference = plan_json(root, old_tree, new_tree, 0, None)
    assert any(e["file"] == "inc/util.h" for e in reference["edits"])  # the shared header is planned once
    assert reference["api"]["private_headers"]  # and the private header is diffed
    # macros and defaults from the precompiled headers are cross-referenced as in the plain parse
    changes = {(s["file"], s["symbol"], s["change"]) for s in reference["api"]["sites"]}
    for n in range(3):
        assert {(f"unit{n}.cpp", "LOG_INF", "macro changed"), (f"unit{n}.cpp", "DEFAULT_MODEL_PATH", "macro removed"),
                (f"unit{n}.cpp", "llama_context_default_params()", "default value changed")} <= changes
    cache = tmp_path / "cache" / "plans"
    assert same(plan_json(root, old_tree, new_tree, 2, cache), reference)
    preambles = list((cache.parent / "preambles").glob("*/preamble.json"))
    assert any(json.loads(p.read_text())["ok"] for p in preambles)  # the three units share one
    (root / "unit1.cpp").write_text(UNIT.format(n=1).replace("return params", "params.n_batch = 8;\n    return params"))
    recorded: list[str] = []
    record = scale.record_unit
    monkeypatch.setattr(scale, "record_unit", lambda engine, path, *a: recorded.append(path.name) or record(
        engine, path, *a))  # fmt: skip
    for stale in cache.glob("*.json"):
        stale.unlink()
    after = plan_json(root, old_tree, new_tree, 1, cache)
    assert recorded == ["unit1.cpp"]  # the other units came from the per-unit cache
    assert same(after, plan_json(root, old_tree, new_tree, 0, None))


def test_a_worker_that_dies_leaves_its_units_to_this_process(old_tree: SourceTree, new_tree: SourceTree,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed while it plans a unit (libclang crashing, the OOM killer): the units not back yet are planned
    in this process, and the plan is still the sequential plan."""
    root = tree(tmp_path)
    reference = plan_json(root, old_tree, new_tree, 0, None)
    parent, record = os.getpid(), scale.record_unit

    def dies_on_unit1(engine: Engine, path: Path, *args: Any) -> scale.UnitRecord:
        if os.getpid() != parent and path.name == "unit1.cpp":
            os._exit(9)
        return record(engine, path, *args)

    monkeypatch.setattr(scale, "record_unit", dies_on_unit1)
    assert same(plan_json(root, old_tree, new_tree, 2, None), reference)


def test_an_error_in_a_worker_is_raised_in_this_process(old_tree: SourceTree, new_tree: SourceTree, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An exception while a worker plans a unit comes back with the unit's record and is raised here, saying where."""
    root = tree(tmp_path)
    parent = os.getpid()

    def fails_in_workers(engine: Engine, path: Path, *args: Any) -> scale.UnitRecord:
        raise RuntimeError(f"planning {path.name} failed in process {'parent' if os.getpid() == parent else 'child'}")

    monkeypatch.setattr(scale, "record_unit", fails_in_workers)
    with pytest.raises(RuntimeError, match="failed in process child") as raised:
        plan_json(root, old_tree, new_tree, 2, None)
    assert any("in a worker process" in note for note in raised.value.__notes__)
