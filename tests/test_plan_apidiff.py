"""The API diff inside `migrate plan`: uses of llama.cpp API removed or changed at the target that no rule covers are
manual actions of the plan (file:line, old/new declaration, exit code 1, `--json`'s `manual`), uses that still
compile are to review, and a warm plan takes all of it from the plan cache. Real libclang parses against the b5421
stand-in tree, diffed with the b7785 stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate.apidiff import ApiDiffError
from migrate.cli import main
from migrate.paths import data_dir
from migrate.rewrite.apicheck import RULE_ID, ApiTarget
from migrate.rewrite.engine import EngineConfig, _cache_key, build_plan
from migrate.rewrite.plan import ACTION, REVIEW, Plan
from migrate.rewrite.rules import load_rules
from migrate.sources import SourceTree
from tests.conftest import consumer

RULESET = load_rules(data_dir("rules") / "b5421-b7785.yaml")

DUMP_VIEW = """\
#include "llama.h"
#include "common.h"

void dump(llama_context * ctx, const llama_kv_cache_view & view) {
    llama_kv_self_clear(ctx);
    common_kv_cache_dump_view(view);
}
"""

NAMED_CONSTANT = """\
#include "llama.h"
#include "common.h"

bool is_server(const common_params & params) {
    return params.curr_ex == LLAMA_EXAMPLE_SERVER;
}
"""


def plan_cli(root: Path, tmp_path: Path) -> tuple[int, dict, str]:
    """`migrate plan` in process: exit code, the --json plan, the report."""
    out, report = tmp_path / "plan.json", tmp_path / "report.md"
    code = main(["plan", str(root), "--json", str(out), "--report", str(report), "--no-cache", "--no-diff"])
    return code, json.loads(out.read_text()), report.read_text()


def api_plan(root: Path, old: SourceTree, new: SourceTree, cache: Path | None = None) -> Plan:
    return build_plan(EngineConfig(root, old.path, RULESET, plan_cache=cache, api=ApiTarget(old, new)))


def test_uncovered_removed_api_is_a_manual_action_and_fails_the_plan(tmp_path: Path) -> None:
    root = consumer(tmp_path, {"dump.cpp": DUMP_VIEW})
    code, data, report = plan_cli(root, tmp_path)
    assert code == 1
    listed = {(m["file"], m["line"], m["kind"], m["why"].split("`")[1]) for m in data["manual"] if m["rule"] == RULE_ID}
    # the removed function, and the removed struct its parameter names
    assert listed == {("dump.cpp", 6, ACTION, "common_kv_cache_dump_view"),
                      ("dump.cpp", 4, ACTION, "llama_kv_cache_view")}  # fmt: skip
    [item] = [m for m in data["manual"] if m["line"] == 6]
    assert item["old"] == "void common_kv_cache_dump_view(const llama_kv_cache_view & view, int row_size = 80)"
    assert "new" not in item and "removed at b7836" in item["why"] and "no rule covers it" in item["why"]
    # the covered use next to it is rewritten, not listed
    assert [e["rule"] for e in data["edits"]] == ["kv-self-clear", "kv-self-clear"]
    assert data["api"]["uses"] == {"covered": 1, "manual": 2, "review": 0}
    # the checklist and the API section of the report
    assert "- [ ] `dump.cpp:6` (`api-diff`) — `common_kv_cache_dump_view`: removed" in report
    assert "## API diff and cross reference" in report and "### API cross reference" in report
    assert "| dump.cpp:6:5 | `common_kv_cache_dump_view` | removed |" in report


def test_only_covered_api_leaves_the_exit_code_at_zero(tmp_path: Path) -> None:
    root = consumer(tmp_path, {"a.cpp": '#include "llama.h"\nvoid f(llama_context * c) { llama_kv_self_clear(c); }\n'})
    code, data, _ = plan_cli(root, tmp_path)
    assert code == 0
    assert [m for m in data["manual"] if m["rule"] == RULE_ID] == []
    assert data["api"]["uses"] == {"covered": 1, "manual": 0, "review": 0}


def test_revalued_constant_named_by_name_is_to_review_not_an_action(tmp_path: Path) -> None:
    root = consumer(tmp_path, {"ex.cpp": NAMED_CONSTANT})
    code, data, report = plan_cli(root, tmp_path)
    assert code == 0  # compiles at the target and means the same
    [item] = data["manual"]
    assert (item["rule"], item["kind"], item["line"]) == (RULE_ID, REVIEW, 5)
    assert (item["old"], item["new"]) == ("LLAMA_EXAMPLE_SERVER = 9", "LLAMA_EXAMPLE_SERVER = 12")
    assert "compiles and means the same" in item["why"] and "9 → 12" in item["why"]
    assert "#### To review: uses that still compile at the target" in report


MACROS_AND_DEFAULTS = """\
#include "llama.h"
#include "common.h"
#include "log.h"

#define MY_PATH DEFAULT_MODEL_PATH
#define NEVER_EXPANDED DEFAULT_MODEL_PATH
#define SAY(x) LOG_INF("%s\\n", x)

const char * path_of() { return DEFAULT_MODEL_PATH; }
const char * mine() { return MY_PATH; }
void say() { SAY("a"); LOG_INF("%s\\n", "b"); LOG_INF("%s\\n", "c"); }

llama_model_params model_params() {
    llama_model_params p = llama_model_default_params();
    return p;
}
llama_context_params context_params() {
    llama_context_params c = llama_context_default_params();
    c.yarn_attn_factor = 1.0f;
    c.yarn_beta_fast = 32.0f;
    c.yarn_beta_slow = 1.0f;
    return c;
}
int use(const common_params & given) {
    common_params fresh;
    fresh.ctx_shift = true;
    common_params copied = given;
    return fresh.n_ctx + copied.n_ctx;
}
"""


def test_macros_and_changed_defaults_are_cross_referenced(tmp_path: Path) -> None:
    root = consumer(tmp_path, {"app.cpp": MACROS_AND_DEFAULTS})
    code, data, report = plan_cli(root, tmp_path)
    assert code == 1  # the removed macro does not compile at the target
    items = {(m["line"], m["kind"], m["why"].split("`")[1]) for m in data["manual"] if m["rule"] == RULE_ID}
    assert items == {
        (9, ACTION, "DEFAULT_MODEL_PATH"),  # expanded here
        (5, ACTION, "DEFAULT_MODEL_PATH"),  # in the body of MY_PATH, which line 10 expands (NEVER_EXPANDED is not)
        (7, REVIEW, "LOG_INF"),  # changed, same parameters: once per file, first use (in SAY's body, expanded)
        (14, REVIEW, "llama_model_default_params()"),  # n_gpu_layers 0 -> -1, never assigned here
        (25, REVIEW, "common_params"),  # a fresh object; `given` (a reference) and `copied` (a copy) are not
    }  # llama_context_default_params() at line 18: every changed field is assigned
    why = {m["line"]: m["why"] for m in data["manual"]}
    assert "3 uses in this file, listed once" in why[7]
    assert "`n_gpu_layers`: `0; 999 if GGML_USE_METAL` → `-1`" in why[14]
    assert "`ctx_shift`" not in why[25] and "`n_ctx`: `4096` → `0`" in why[25]  # ctx_shift is assigned
    assert data["api"]["uses"] == {"covered": 0, "manual": 2, "review": 3}
    assert "| app.cpp:14:28 | `llama_model_default_params()` | default value changed |" in report


def test_use_in_a_consumer_header_is_found_at_the_header_line(old_tree: SourceTree, new_tree: SourceTree,
                                                              tmp_path: Path) -> None:  # fmt: skip
    header = '#pragma once\n#include "common.h"\ninline void show(const llama_kv_cache_view & v) {\n' \
             "    common_kv_cache_dump_view_seqs(v);\n}\n"  # fmt: skip
    root = consumer(tmp_path, {"inc/show.h": header, "main.cpp": '#include "show.h"\nint main() { return 0; }\n'})
    plan = api_plan(root, old_tree, new_tree)
    found = {(m.file, m.line, m.kind) for m in plan.manual if m.rule == RULE_ID and "dump_view_seqs" in m.message}
    assert found == {("inc/show.h", 4, ACTION)}


def test_qualified_call_is_one_item_at_its_name(old_tree: SourceTree, new_tree: SourceTree, tmp_path: Path) -> None:
    # libclang reports `console::set_display(...)` as the call (at `console`) and the callee (at the name)
    code = '#include "llama.h"\n#include "console.h"\nvoid f() {\n    console::set_display(console::reset);\n}\n'
    root = consumer(tmp_path, {"c.cpp": code})
    plan = api_plan(root, old_tree, new_tree)
    items = [m for m in plan.manual if m.rule == RULE_ID]
    assert sorted(m.message.split("`")[1] for m in items) == ["console::reset", "console::set_display"]
    assert all(m.line == 4 and "macro" not in m.message for m in items)
    assert plan.api_summary["uses"]["manual"] == 2


CONST_DROPPED = """\
#include "llama.h"
static const llama_sampler_i CONST_IFACE = {};
static llama_sampler_i mutable_iface = {};
llama_sampler * a() { return llama_sampler_init(&CONST_IFACE, nullptr); }
llama_sampler * b() { return llama_sampler_init(&mutable_iface, nullptr); }
llama_sampler * c(llama_sampler_i * p) { return llama_sampler_init(p, nullptr); }
llama_sampler * d(const llama_sampler_i * p) { return llama_sampler_init(p, nullptr); }
"""


def test_dropped_const_is_judged_per_call(old_tree: SourceTree, new_tree: SourceTree, tmp_path: Path) -> None:
    """llama_sampler_init(const llama_sampler_i *) became (llama_sampler_i *) at b7785: a call passing a pointer
    to const no longer compiles (manual action), one passing a mutable pointer does (review only)."""
    plan = api_plan(consumer(tmp_path, {"s.cpp": CONST_DROPPED}), old_tree, new_tree)
    items = {m.line: m for m in plan.manual if m.rule == RULE_ID and "llama_sampler_init" in m.message}
    assert {line: m.kind for line, m in items.items()} == {4: ACTION, 5: REVIEW, 6: REVIEW, 7: ACTION}
    assert "passes a pointer to const as parameter(s) 1: it will not compile" in items[4].message
    assert "passes no pointer to const there: it still compiles" in items[5].message
    assert "may now write through that pointer" in items[6].message


def test_warm_plan_reuses_the_cross_reference(old_tree: SourceTree, new_tree: SourceTree, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = consumer(tmp_path, {"dump.cpp": DUMP_VIEW})
    cold = api_plan(root, old_tree, new_tree, cache=tmp_path / "plans")

    def no_diff(self: ApiTarget) -> None:
        raise AssertionError("a warm plan must not compute the API diff again")

    monkeypatch.setattr(ApiTarget, "load", no_diff)
    warm = api_plan(root, old_tree, new_tree, cache=tmp_path / "plans")
    assert warm.cached and not cold.cached
    assert warm.manual == cold.manual and warm.api_section == cold.api_section
    assert warm.api_summary == cold.api_summary and warm.actions


def test_plan_cache_key_follows_the_api_target(old_tree: SourceTree, new_tree: SourceTree, tmp_path: Path) -> None:
    root = consumer(tmp_path, {"dump.cpp": DUMP_VIEW})
    keys = {
        _cache_key(EngineConfig(root, old_tree.path, RULESET, api=api))
        for api in (None, ApiTarget(old_tree, new_tree), ApiTarget(old_tree, old_tree))
    }
    assert len(keys) == 3


def test_api_diff_failure_is_said_not_fatal(old_tree: SourceTree, new_tree: SourceTree, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    def broken(self: ApiTarget) -> None:
        raise ApiDiffError("llama.cpp headers do not parse")

    monkeypatch.setattr(ApiTarget, "load", broken)
    root = consumer(tmp_path, {"dump.cpp": DUMP_VIEW})
    plan = api_plan(root, old_tree, new_tree)
    assert plan.edits and not [m for m in plan.manual if m.rule == RULE_ID]
    assert "Not computed: llama.cpp headers do not parse" in plan.api_section
    assert any("API diff not computed" in d for d in plan.decisions)
