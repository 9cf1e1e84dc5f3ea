"""Plan completeness that is right (issue 24, item 3) and no parse where nothing is named (issue 26, item 5).

A unit whose text (and the consumer headers it includes) names nothing the rules or the API diff list, and whose
includes into llama.cpp the API check would find nothing at, is not parsed: listed `names-nothing`. A unit libclang
cannot parse (R.h not found) that names nothing the API diff lists is listed the same way, complete: no exit 4, no
gate problem. One that names something listed and cannot be parsed stays "by name only" (exit 4). Real libclang
parses against the b5421 stand-in tree, diffed with the b7785 stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate.cli import main
from migrate.exit_codes import PlanExit
from migrate.paths import data_dir
from migrate.rewrite import engine as engine_module
from migrate.rewrite.apicheck import ApiTarget
from migrate.rewrite.command import exit_code
from migrate.rewrite.engine import EngineConfig, build_plan
from migrate.rewrite.plan import Plan, ReadMode
from migrate.rewrite.prescan import Prescan
from migrate.rewrite.rules import load_rules
from migrate.sources import SourceTree
from tests.conftest import consumer

RULESET = load_rules(data_dir("rules") / "b5421-b7785.yaml")

SHIM_H = """\
#pragma once
#include "llama.h"
int shim_reset(llama_context * ctx);
"""
SHIM_CPP = """\
#include "shim.h"
int shim_reset(llama_context * ctx) {
    llama_kv_self_clear(ctx);
    return 0;
}
"""
# R's side: includes the shim's header (so llama.h), names nothing of llama.cpp; R.h is not on this machine
R_GLUE = """\
#include <R.h>
#include <Rinternals.h>
#include "shim.h"
extern "C" SEXP r_version(void) { return Rf_ScalarInteger(3); }
"""
# names a name a rule knows only in a comment (so it is parsed), nothing the API diff lists; R.h not found
R_COMMENT = """\
#include <R.h>
#include "shim.h"
// the decode loop (llama_decode) lives in shim.cpp; nothing of llama.cpp is called here
extern "C" int r_answer(void) { return 42; }
"""
# names a function the API diff lists (removed at the target); R.h not found: by name only, incomplete
R_USES = """\
#include <R.h>
#include "shim.h"
extern "C" void r_forget(llama_context * ctx) { llama_kv_self_seq_rm(ctx, 0, 0, -1); }
"""
# names nothing, but includes an internal header of llama.cpp: the include is the plan's business, so it is parsed
INTERNAL_INCLUDE = """\
#include "llama.h"
#include "llama-impl.h"
int nothing_named(void) { return 1; }
"""


def make_plan(root: Path, old: SourceTree, new: SourceTree, jobs: int = 0) -> Plan:
    return build_plan(EngineConfig(root, old.path, RULESET, enabled={"kv-unified"}, api=ApiTarget(old, new),
                                   jobs=jobs))  # fmt: skip


def modes(plan: Plan) -> dict[str, ReadMode]:
    return {r.path: r.mode for r in plan.file_reports}


@pytest.fixture
def parsed_units(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The units libclang is asked to parse (the engine's own `parse`, recorded)."""
    seen: list[str] = []
    real = engine_module.parse

    def recording(path: Path, config: object) -> object:
        seen.append(Path(path).name)
        return real(path, config)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module, "parse", recording)
    return seen


def test_a_glue_file_naming_nothing_is_not_parsed_and_the_plan_is_complete(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree, parsed_units: list[str]) -> None:  # fmt: skip
    root = consumer(tmp_path, {"shim.h": SHIM_H, "shim.cpp": SHIM_CPP, "r_glue.cpp": R_GLUE})
    plan = make_plan(root, old_tree, new_tree)
    assert modes(plan) == {"r_glue.cpp": ReadMode.NAMES_NOTHING, "shim.cpp": ReadMode.LIBCLANG}
    assert parsed_units == ["shim.cpp"]  # r_glue.cpp never reached libclang
    glue = next(r for r in plan.file_reports if r.path == "r_glue.cpp")
    assert glue.reason.startswith("not parsed:") and "name nothing" in glue.reason
    assert exit_code(plan) == PlanExit.OK
    assert "r_glue.cpp" not in plan.api_summary["not_scanned"]
    assert plan.to_json()["files"][0]["mode"] == "names-nothing"  # the plan JSON holds the enum's value


def test_an_unparsable_file_naming_nothing_listed_is_complete(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree, parsed_units: list[str]) -> None:  # fmt: skip
    root = consumer(tmp_path, {"shim.h": SHIM_H, "shim.cpp": SHIM_CPP, "r_comment.cpp": R_COMMENT})
    plan = make_plan(root, old_tree, new_tree)
    assert "r_comment.cpp" in parsed_units  # it names llama_decode (a rule's name): libclang was tried
    report = next(r for r in plan.file_reports if r.path == "r_comment.cpp")
    assert report.mode == ReadMode.NAMES_NOTHING
    assert "names nothing the API diff lists" in report.reason and "'R.h' file not found" in report.reason
    assert exit_code(plan) == PlanExit.OK
    assert not any("r_comment.cpp" in d for d in plan.decisions)  # no "matched by name" decision


def test_an_unparsable_file_that_names_a_listed_function_stays_incomplete(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree) -> None:  # fmt: skip
    root = consumer(tmp_path, {"shim.h": SHIM_H, "shim.cpp": SHIM_CPP, "r_glue.cpp": R_GLUE, "r_uses.cpp": R_USES})
    plan = make_plan(root, old_tree, new_tree)
    assert modes(plan)["r_uses.cpp"] == ReadMode.TREE_SITTER and modes(plan)["r_glue.cpp"] == ReadMode.NAMES_NOTHING
    assert exit_code(plan) == PlanExit.INCOMPLETE
    assert "r_uses.cpp" in plan.api_summary["not_scanned"]


def test_plan_cli_exit_codes_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    complete = consumer(tmp_path / "a", {"shim.h": SHIM_H, "shim.cpp": SHIM_CPP, "r_glue.cpp": R_GLUE,
                                         "r_comment.cpp": R_COMMENT})  # fmt: skip
    out, report = tmp_path / "plan.json", tmp_path / "report.md"
    code = main(["plan", str(complete), "--json", str(out), "--report", str(report), "--no-cache", "--no-diff"])
    err = capsys.readouterr().err
    assert code in (0, 1)
    assert "2 not parsed (name nothing the API diff lists)" in err
    assert "NAMES NOTHING: r_glue.cpp" in err and "NAMES NOTHING: r_comment.cpp" in err
    assert {f["path"]: f["mode"] for f in json.loads(out.read_text())["files"]} == {
        "r_comment.cpp": "names-nothing", "r_glue.cpp": "names-nothing", "shim.cpp": "libclang"}  # fmt: skip
    text = report.read_text()
    assert "| `r_glue.cpp` | names-nothing |" in text and "they leave the plan complete" in text
    incomplete = consumer(tmp_path / "b", {"shim.h": SHIM_H, "shim.cpp": SHIM_CPP, "r_uses.cpp": R_USES})
    assert main(["plan", str(incomplete), "--no-report", "--no-cache", "--no-diff"]) == 4


def test_a_file_naming_nothing_but_including_an_internal_is_parsed(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree, parsed_units: list[str]) -> None:  # fmt: skip
    root = consumer(tmp_path, {"internal.cpp": INTERNAL_INCLUDE})
    plan = make_plan(root, old_tree, new_tree)
    assert parsed_units == ["internal.cpp"] and modes(plan) == {"internal.cpp": ReadMode.LIBCLANG}
    assert "src/llama-impl.h" in plan.api_summary["private_headers"]


def test_sequential_and_parallel_plans_agree_with_units_not_parsed(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree) -> None:  # fmt: skip
    """A header shared by a unit not parsed (first) and a parsed one: the merge's guess of the earlier units'
    state must hold as for the sequential loop."""
    files = {"shim.h": SHIM_H, "a_glue.cpp": R_GLUE, "b_comment.cpp": R_COMMENT, "c_shim.cpp": SHIM_CPP,
             "d_uses.cpp": R_USES}  # fmt: skip
    root = consumer(tmp_path, files)
    sequential = make_plan(root, old_tree, new_tree, jobs=0).to_json()
    parallel = make_plan(root, old_tree, new_tree, jobs=2).to_json()
    assert json.dumps(sequential, sort_keys=True) == json.dumps(parallel, sort_keys=True)
    assert [f["mode"] for f in sequential["files"]] == ["names-nothing", "names-nothing", "libclang", "tree-sitter"]


def test_prescan_reads_through_consumer_headers_and_knows_llama_headers(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree) -> None:  # fmt: skip
    root = consumer(tmp_path, {"inc/mine.h": '#include "llama.h"\n#define RESET(c) llama_kv_self_clear(c)\n',
                               "unit.cpp": '#include "mine.h"\nint f(void) { return 0; }\n',
                               "computed.cpp": "#include MY_HEADER\nint g(void) { return 0; }\n"})  # fmt: skip
    prescan = Prescan(old_tree.path, new_tree.path)
    flags = [f"-I{root / 'inc'}", f"-I{old_tree.path / 'include'}", f"-I{old_tree.path / 'ggml' / 'include'}"]
    text = prescan.read(root / "unit.cpp", flags)
    assert {p.name for p in text.files} == {"unit.cpp", "mine.h"}  # llama.h is llama.cpp's: not read as the unit's
    assert [i.relative for i in text.llama] == ["include/llama.h"]
    assert prescan.names_any(text, frozenset({b"llama_kv_self_clear"}))  # named in the consumer header
    assert not prescan.names_any(text, frozenset({b"llama_decode"}))
    assert prescan.includes_settled(text, flags)
    assert not prescan.includes_settled(prescan.read(root / "computed.cpp", flags), flags)  # unknown include
    assert prescan.missing_llama_header(["'llama-impl.h' file not found"]) == "llama-impl.h"
    assert prescan.missing_llama_header(["'R.h' file not found"]) is None
