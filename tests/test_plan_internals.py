"""llama.cpp internals in the plan and in the API diff (issue 24, item 2): a consumer that includes headers of the
version's `src/` (`llama-vocab.h`, `llama-sampling.h`, as its own build puts `src/` on the include path) gets them
resolved from the tree at hand, after its own include paths, so its files are parsed fully; the plan says once that
the code uses internals, and the internal declarations it uses that changed between the trees are cross-referenced
(plan and `migrate api-diff`). Real libclang parses of the b5421 stand-in tree, diffed with the b7785 stand-in."""

from __future__ import annotations

import json
from pathlib import Path

from migrate.apidiff import cross_reference, load_surface
from migrate.apidiff import diff as api_diff
from migrate.cli import main
from migrate.paths import data_dir
from migrate.rewrite.apicheck import RULE_ID, ApiTarget
from migrate.rewrite.engine import EngineConfig, build_plan
from migrate.rewrite.plan import ACTION, Plan, ReadMode
from migrate.rewrite.rules import load_rules
from migrate.sources import SourceTree
from tests.conftest import consumer

RULESET = load_rules(data_dir("rules") / "b5421-b7785.yaml")

# llama_sampler_chain.samplers: std::vector<llama_sampler *> at b5415, std::vector<info> at b7836 (src/llama-sampling.h)
VOCAB_AND_CHAIN = """\
#include "llama.h"
#include "llama-vocab.h"
#include "llama-sampling.h"

int vocab_size(const llama_vocab & vocab) {
    return (int) vocab.n_tokens();
}

int chain_length(struct llama_sampler * smpl) {
    auto * chain = (llama_sampler_chain *) smpl->ctx;
    return (int) chain->samplers.size();
}
"""

OWN_UNICODE = """\
#pragma once
int own_unicode_helper(void);
"""

USES_OWN_UNICODE = """\
#include "llama.h"
#include "unicode.h"

int helper(llama_context * ctx) {
    llama_kv_self_clear(ctx);
    return own_unicode_helper();
}
"""


def api_plan(root: Path, old: SourceTree, new: SourceTree) -> Plan:
    return build_plan(EngineConfig(root, old.path, RULESET, api=ApiTarget(old, new), jobs=0))


def internals_decisions(plan: Plan) -> list[str]:
    return [d for d in plan.decisions if d.startswith("This code uses llama.cpp internals")]


def test_internal_headers_are_parsed_and_their_changes_cross_referenced(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree) -> None:  # fmt: skip
    root = consumer(tmp_path, {"addon.cpp": VOCAB_AND_CHAIN})
    plan = api_plan(root, old_tree, new_tree)
    (report,) = plan.file_reports
    assert report.mode == ReadMode.LIBCLANG and not report.problems  # not "by name only": src/ was on the path
    private = plan.api_summary["private_headers"]
    assert private["src/llama-sampling.h"] == "compared: 0 removed, 1 changed"
    assert private["src/llama-vocab.h"].startswith("compared: ")
    (item,) = [m for m in plan.manual if m.rule == RULE_ID]
    assert (item.file, item.line, item.kind) == ("addon.cpp", 11, ACTION)
    assert "llama_sampler_chain.samplers" in item.message
    assert item.old == "std::vector<struct llama_sampler *> llama_sampler_chain.samplers"
    assert item.new == "std::vector<info> llama_sampler_chain.samplers"
    (said,) = internals_decisions(plan)  # said once, naming the headers
    assert "`src/llama-sampling.h`" in said and "`src/llama-vocab.h`" in said and "API stability" in said


def test_the_consumers_own_header_wins_over_src(tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree) -> None:
    """src/ comes after the consumer's own include paths: its own unicode.h is the one found, no internal used."""
    root = consumer(tmp_path, {"own/unicode.h": OWN_UNICODE, "own/helper.cpp": USES_OWN_UNICODE})
    plan = api_plan(root, old_tree, new_tree)
    assert [r.mode for r in plan.file_reports] == [ReadMode.LIBCLANG]
    assert plan.file_reports[0].problems == []
    assert plan.api_summary["private_headers"] == {} and internals_decisions(plan) == []


def test_plan_cli_exit_code_and_json_with_internals(tmp_path: Path, old_tree: SourceTree) -> None:
    root = consumer(tmp_path, {"addon.cpp": VOCAB_AND_CHAIN})
    out = tmp_path / "plan.json"
    code = main(["plan", str(root), "--json", str(out), "--no-report", "--no-cache", "--no-diff"])
    data = json.loads(out.read_text())
    assert code == 1  # a manual action: the retyped internal field
    assert [f["mode"] for f in data["files"]] == ["libclang"]
    assert any(m["rule"] == RULE_ID and "llama_sampler_chain.samplers" in m["why"] for m in data["manual"])


def test_api_diff_cross_reference_covers_internals(tmp_path: Path, old_tree: SourceTree,
                                                   new_tree: SourceTree) -> None:  # fmt: skip
    root = consumer(tmp_path, {"addon.cpp": VOCAB_AND_CHAIN})
    old, new = load_surface(old_tree), load_surface(new_tree)
    result = api_diff(old, new)
    files = [root / "addon.cpp"]
    public_only = cross_reference(result, files, old_tree, set(), old_headers=old.headers)
    assert public_only.internal == {} and public_only.manual == []  # without the target tree: the public diff only
    xref = cross_reference(result, files, old_tree, set(), old_headers=old.headers, new_tree=new_tree)
    assert xref.internal["src/llama-sampling.h"] == "compared: 0 removed, 1 changed"
    (use,) = xref.manual
    assert (use.symbol, use.line) == ("llama_sampler_chain.samplers", 11)
    assert not [e for e in xref.parse_errors if "file not found" in e]


# llama_vocab_pre_type and its constants: public (include/llama.h) at b5415, in src/llama-vocab.h at b7836
MOVED_IN = """\
#include "llama.h"
#include "llama-vocab.h"

bool is_llama3(const llama_vocab & vocab) {
    return vocab.get_pre_type() == LLAMA_VOCAB_PRE_TYPE_LLAMA3;
}
"""
PUBLIC_ONLY = """\
#include "llama.h"

int pre_type_llama3(void) { return (int) LLAMA_VOCAB_PRE_TYPE_LLAMA3; }
"""


def test_a_public_declaration_moved_into_an_included_internal_header_compiles(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree) -> None:  # fmt: skip
    """Gone from llama.h, declared in src/llama-vocab.h at the target: a review where the unit includes that header,
    still an action where it does not; the parallel plan (merged records) says the same as the sequential loop."""
    root = consumer(tmp_path, {"a_vocab.cpp": MOVED_IN, "b_public.cpp": PUBLIC_ONLY})
    config = EngineConfig(root, old_tree.path, RULESET, api=ApiTarget(old_tree, new_tree), jobs=0)
    plan = build_plan(config)
    items = {(m.file, m.kind) for m in plan.manual if m.rule == RULE_ID}
    assert items == {("a_vocab.cpp", "review"), ("b_public.cpp", ACTION)}
    moved = next(m for m in plan.manual if m.file == "a_vocab.cpp")
    assert "`src/llama-vocab.h`, which this code includes" in moved.message
    parallel = build_plan(EngineConfig(root, old_tree.path, RULESET, api=ApiTarget(old_tree, new_tree), jobs=2))
    assert json.dumps(parallel.to_json(), sort_keys=True) == json.dumps(plan.to_json(), sort_keys=True)


def test_api_diff_says_moved_into_an_included_internal_header(
        tmp_path: Path, old_tree: SourceTree, new_tree: SourceTree) -> None:  # fmt: skip
    root = consumer(tmp_path, {"a_vocab.cpp": MOVED_IN, "b_public.cpp": PUBLIC_ONLY})
    old, new = load_surface(old_tree), load_surface(new_tree)
    xref = cross_reference(api_diff(old, new), sorted(root.glob("*.cpp")), old_tree, set(), old_headers=old.headers,
                           new_tree=new_tree)  # fmt: skip
    assert [(Path(u.file).name, u.kind.value) for u in xref.review] == [("a_vocab.cpp", "moved to another header")]
    assert [Path(u.file).name for u in xref.manual] == ["b_public.cpp"]
