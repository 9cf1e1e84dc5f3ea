"""API diff on the real cached trees (b5415 stands in for b5421, b7836 for b7785), parsed by libclang.

The surfaces come from the JSON cache after the first run (a cold parse costs a few seconds per tree).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from migrate.apidiff import (
    ApiDiff,
    ApiDiffError,
    ApiSurface,
    ChangeKind,
    CrossReference,
    FunctionDecl,
    const_dropped,
    cross_reference,
    diff,
    load_surface,
    read_cached,
    surface_cache_path,
    to_markdown,
)
from migrate.cli import build_parser
from migrate.sources import SourceTree

KV_SELF = ["clear", "seq_rm", "seq_cp", "seq_keep", "seq_add", "seq_div", "seq_pos_max", "defrag", "update",
           "can_shift", "n_tokens", "used_cells"]  # fmt: skip
MEMORY = ["clear", "seq_rm", "seq_cp", "seq_keep", "seq_add", "seq_div", "seq_pos_min", "seq_pos_max", "can_shift"]
COVERED = {"llama_kv_self_clear", "llama_context_params.flash_attn"}

# Line numbers matter: the assertions below name them.
SHIM = """\
#include "llama.h"
#include "common.h"
#include "sampling.h"

// llama_kv_self_clear(ctx) in a comment is no use
static const char * note = "llama_kv_self_defrag(ctx)";

namespace mine {
void llama_kv_self_seq_rm(int x) { (void) x; }
}

int run(llama_context * ctx, llama_batch batch, common_sampler * smpl) {
    llama_kv_self_clear(ctx);
    llama_kv_self_defrag(ctx);
    llama_context_params cparams = llama_context_default_params();
    cparams.flash_attn = true;
    mine::llama_kv_self_seq_rm(3);
    llama_token_data_array * cur = common_sampler_get_candidates(smpl);
    (void) cur;
    (void) note;
    return llama_decode(ctx, batch);
}
"""

C_SHIM = """\
#include "llama.h"

#define FORGET(c) llama_kv_self_seq_rm(c, 1, -1, -1)

int step(struct llama_context * ctx, struct llama_batch batch) {
    FORGET(ctx);
    return llama_decode(ctx, batch);
}
"""


@pytest.fixture(scope="module")
def surfaces(old_tree: SourceTree, new_tree: SourceTree) -> tuple[ApiSurface, ApiSurface]:
    return load_surface(old_tree), load_surface(new_tree)


@pytest.fixture(scope="module")
def api(surfaces: tuple[ApiSurface, ApiSurface]) -> ApiDiff:
    return diff(*surfaces)


@pytest.fixture(scope="module")
def shim_xref(api: ApiDiff, old_tree: SourceTree, tmp_path_factory: pytest.TempPathFactory) -> CrossReference:
    path = tmp_path_factory.mktemp("shim") / "shim.cpp"
    path.write_text(SHIM)
    return cross_reference(api, [path], old_tree, COVERED)


def _use_lines(uses: list) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for use in uses:
        found.setdefault(use.symbol, []).append(use.line)
    return found


# --- the diff ---------------------------------------------------------------------------------------------------


def test_removed_functions_match_the_notes(api: ApiDiff) -> None:
    removed = api.function_names("removed_functions")
    assert {f"llama_kv_self_{name}" for name in KV_SELF} <= removed
    others = {"llama_get_kv_self", "llama_sampler_init_softmax", "llama_kv_cache_clear", "llama_kv_cache_seq_rm",
              "llama_kv_cache_view_init", "llama_get_kv_cache_token_count", "common_kv_cache_dump_view"}  # fmt: skip
    assert others <= removed
    # Present at both builds: never reported removed or changed.
    kept = {"llama_decode", "llama_tokenize", "llama_model_load_from_file", "llama_init_from_model", "llama_batch_init"}
    assert not kept & removed
    assert not kept & {change.name for change in api.changed_functions}


def test_added_functions_match_the_notes(api: ApiDiff) -> None:
    added = api.function_names("added_functions")
    assert {f"llama_memory_{name}" for name in MEMORY} <= added
    others = {"llama_get_memory", "llama_n_ctx_seq", "llama_max_parallel_sequences", "llama_flash_attn_type_name"}
    assert others <= added
    clear = next(d for d in api.added_functions if d.name == "llama_memory_clear")
    assert clear.param_names == ["mem", "data"] and clear.header == "include/llama.h"


def test_resignatured_common_functions(api: ApiDiff) -> None:
    changes = {change.name: change for change in api.changed_functions}
    candidates = changes["common_sampler_get_candidates"]
    assert candidates.new[0].param_names == ["gsmpl", "do_sort"]
    assert candidates.old.param_types == ["common_sampler *"]
    init = changes["common_sampler_init"]
    assert init.old.param_types[1] == "const common_params_sampling &"
    assert init.new[0].param_types[1] == "common_params_sampling &"
    assert "const struct common_params_sampling & params" in init.old.declaration
    assert init.old.header == "common/sampling.h" and init.old.line > 0
    assert changes["common_init_from_params"].new[0].declaration.startswith("common_init_result_ptr ")


def test_struct_field_changes(api: ApiDiff) -> None:
    removed = {f.key for f in api.removed_fields}
    added = {f.key for f in api.added_fields}
    assert "llama_context_params.flash_attn" in removed
    params = {"flash_attn_type", "swa_full", "kv_unified", "samplers", "n_samplers"}
    assert {f"llama_context_params.{name}" for name in params} <= added
    model = {"use_direct_io", "use_extra_bufts", "no_host", "no_alloc"}
    assert {f"llama_model_params.{name}" for name in model} <= added
    flash = next(f for f in api.added_fields if f.key == "llama_context_params.flash_attn_type")
    assert flash.type == "enum llama_flash_attn_type"
    assert not {"llama_context_params.n_ctx", "llama_context_params.n_seq_max"} & (removed | added)


def test_enum_and_type_changes(api: ApiDiff) -> None:
    added = {c.name: c.value for c in api.added_constants}
    assert added["LLAMA_FLASH_ATTN_TYPE_AUTO"] == -1
    assert added["LLAMA_FLASH_ATTN_TYPE_DISABLED"] == 0 and added["LLAMA_FLASH_ATTN_TYPE_ENABLED"] == 1
    assert "struct llama_kv_cache_view" in {t.key for t in api.removed_types}
    assert {"typedef llama_memory_t", "enum llama_flash_attn_type"} <= {t.key for t in api.added_types}
    # Unchanged constants stay out of the diff.
    assert "LLAMA_VOCAB_TYPE_SPM" not in {c.old.name for c in api.revalued_constants}


def test_deprecation_is_read_from_the_attribute(surfaces: tuple[ApiSurface, ApiSurface]) -> None:
    old = {d.name: d for d in surfaces[0].functions}
    assert old["llama_kv_cache_clear"].deprecated
    assert old["llama_kv_cache_clear"].deprecation_hint == "use llama_kv_self_clear instead"
    assert not old["llama_kv_self_clear"].deprecated


def test_diff_json_round_trips(api: ApiDiff) -> None:
    data = json.loads(json.dumps(api.to_json()))
    assert data["counts"]["functions"]["removed"] == len(api.removed_functions)
    assert "breaks" not in data


# --- surface cache -------------------------------------------------------------------------------------------------


def test_second_load_comes_from_the_cache(old_tree: SourceTree, surfaces: tuple[ApiSurface, ApiSurface],
                                          tmp_path: Path) -> None:  # fmt: skip
    cached = surface_cache_path(old_tree)
    assert cached.is_file() and cached.name == f"{old_tree.commit[:12]}.json"
    again = load_surface(old_tree)
    assert again.from_cache and again.load_seconds < 1.0
    assert again.parse_seconds == surfaces[0].parse_seconds > 0  # the parse time recorded when it was parsed
    assert len(again.functions) == len(surfaces[0].functions)
    # A cache in another folder is used the same way once the file is there.
    copy = surface_cache_path(old_tree, tmp_path)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(cached, copy)
    assert load_surface(old_tree, tmp_path).from_cache


def test_stale_cache_entry_is_not_used(old_tree: SourceTree, surfaces: tuple[ApiSurface, ApiSurface],
                                       tmp_path: Path) -> None:  # fmt: skip
    data = surfaces[0].to_json()
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(data))
    assert read_cached(path, surfaces[0].fingerprint) is not None
    assert read_cached(path, "headers-edited") is None  # the tree's headers changed since
    path.write_text(json.dumps({**data, "format": 0}))
    assert read_cached(path, surfaces[0].fingerprint) is None  # written by an older apidiff
    path.write_text("{ truncated")
    assert read_cached(path, surfaces[0].fingerprint) is None


# --- cross reference ---------------------------------------------------------------------------------------------


def test_cross_reference_splits_covered_and_manual(shim_xref: CrossReference) -> None:
    assert shim_xref.parse_errors == []
    assert _use_lines(shim_xref.covered) == {"llama_kv_self_clear": [13], "llama_context_params.flash_attn": [16]}
    assert _use_lines(shim_xref.manual) == {"llama_kv_self_defrag": [14], "common_sampler_get_candidates": [18]}
    # the defaults llama_context_default_params() hands out changed (yarn_*), and the shim assigns none of them
    [review] = shim_xref.review
    assert (review.symbol, review.line, review.kind, review.compiles) == (
        "llama_context_default_params()", 15, ChangeKind.DEFAULT_CHANGED, True)
    assert "`yarn_beta_fast`: `32.0f` → `-1.0f`" in (review.note or "")


def test_manual_actions_carry_position_and_declarations(shim_xref: CrossReference) -> None:
    manual = {use.symbol: use for use in shim_xref.manual}
    defrag = manual["llama_kv_self_defrag"]
    assert (defrag.line, defrag.column, defrag.kind) == (14, 5, ChangeKind.REMOVED)
    assert defrag.old == "void llama_kv_self_defrag(struct llama_context * ctx)" and defrag.new is None
    assert Path(defrag.file).name == "shim.cpp" and not defrag.in_macro
    candidates = manual["common_sampler_get_candidates"]
    assert candidates.kind == ChangeKind.RESIGNATURED
    assert candidates.column == SHIM.splitlines()[17].index("common_sampler_get_candidates") + 1
    assert candidates.new is not None and "bool do_sort" in candidates.new
    flash = next(use for use in shim_xref.covered if use.symbol == "llama_context_params.flash_attn")
    assert (flash.column, flash.kind) == (13, ChangeKind.FIELD_REMOVED)


def test_cross_reference_in_c_and_through_a_macro(api: ApiDiff, old_tree: SourceTree, tmp_path: Path) -> None:
    path = tmp_path / "shim.c"
    path.write_text(C_SHIM)
    xref = cross_reference(api, [path], old_tree, set())
    assert xref.parse_errors == [] and xref.covered == []
    [use] = xref.manual
    assert (use.symbol, use.line, use.in_macro) == ("llama_kv_self_seq_rm", 6, True)


def test_cross_reference_of_macros(api: ApiDiff, old_tree: SourceTree, tmp_path: Path) -> None:
    """`migrate api-diff SRC` sees macro uses too: its own parse keeps the preprocessing record."""
    path = tmp_path / "macros.cpp"
    path.write_text('#include "common.h"\n#include "log.h"\n'
                    'const char * p() { LOG_INF("%s", "x"); return DEFAULT_MODEL_PATH; }\n')
    xref = cross_reference(api, [path], old_tree, set())
    assert [(u.symbol, u.line, u.kind) for u in xref.manual] == [("DEFAULT_MODEL_PATH", 3, ChangeKind.MACRO_REMOVED)]
    assert [(u.symbol, u.line, u.kind) for u in xref.review] == [("LOG_INF", 3, ChangeKind.MACRO_CHANGED)]


def test_const_dropped_only_for_pointer_params_losing_const_alone() -> None:
    def decl(result: str, *params: str) -> FunctionDecl:
        n = len(params)
        return FunctionDecl("f", "", result, list(params), [""] * n, [None] * n, False, False, None, "llama.h", 1)

    assert const_dropped(decl("void", "const T *", "int"), decl("void", "T *", "int")) == (0,)
    assert const_dropped(decl("void", "const T *", "const U *"), decl("void", "T *", "U *")) == (0, 1)
    assert const_dropped(decl("void", "T *"), decl("void", "const T *")) == ()  # gaining const always compiles
    assert const_dropped(decl("void", "const T *", "int"), decl("void", "T *", "long")) == ()  # and another change
    assert const_dropped(decl("int", "const T *"), decl("void", "T *")) == ()
    assert const_dropped(decl("void", "const T *"), decl("void", "T *", "int")) == ()


def test_qualified_call_is_one_use_at_its_name(api: ApiDiff, old_tree: SourceTree, tmp_path: Path) -> None:
    """libclang reports `console::set_display(...)` as the call (at `console`) and as the callee (at the name):
    `migrate api-diff` counts it once, at the name, not as a macro expansion."""
    path = tmp_path / "c.cpp"
    path.write_text('#include "console.h"\nvoid f() {\n    console::set_display(console::reset);\n}\n')
    xref = cross_reference(api, [path], old_tree, set(), extra_args=[f"-I{old_tree.path / 'common'}"])
    found = sorted((u.symbol, u.line, u.column, u.in_macro) for u in xref.manual)
    assert found == [("console::reset", 3, 35, False), ("console::set_display", 3, 14, False)]


def test_cross_reference_bad_inputs(api: ApiDiff, old_tree: SourceTree, tmp_path: Path) -> None:
    with pytest.raises(ApiDiffError, match="no such file"):
        cross_reference(api, [tmp_path / "missing.cpp"], old_tree, set())
    # A syntax error and bytes that are not UTF-8: what libclang resolved is still reported, the error with it.
    broken = tmp_path / "broken.cpp"
    lines = [b'#include "llama.h"', b"// caf\xe9", b"void f(llama_context * ctx) {", b"    llama_kv_self_clear(ctx);",
             b"    int x = ;", b"}"]  # fmt: skip
    broken.write_bytes(b"\n".join(lines) + b"\n")
    xref = cross_reference(api, [broken], old_tree, set())
    assert [(use.symbol, use.line) for use in xref.manual] == [("llama_kv_self_clear", 4)]
    assert len(xref.parse_errors) == 1 and "broken.cpp:5" in xref.parse_errors[0]


def test_markdown_report(api: ApiDiff, shim_xref: CrossReference) -> None:
    text = to_markdown(api, shim_xref)
    assert "| functions | " in text and "#### Functions re-signatured" in text
    assert "`llama_memory_clear`" in text  # added functions as a compact list
    assert "#### Manual action required" in text and ":14:5 | `llama_kv_self_defrag` | removed |" in text
    assert "#### Covered by rules" in text
    assert "#### To review: uses that still compile" in text and "`llama_context_default_params()`" in text
    assert len(text.splitlines()) < 210


def test_cli_api_diff(shim_xref: CrossReference, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "shim.cpp").write_text(SHIM)
    out = tmp_path / "api.json"
    args = parser.parse_args(["api-diff", "--from", "b5421", "--to", "b7785", "--json", str(out),
                              "--covered", ",".join(sorted(COVERED)), str(tmp_path / "src")])  # fmt: skip
    assert args.func(args) == 1  # manual actions remain
    printed = capsys.readouterr().out
    assert "from cache" in printed and "MANUAL" in printed and "llama_kv_self_defrag" in printed
    data = json.loads(out.read_text())
    assert data["diff"]["counts"]["functions"]["removed"] > 0
    assert len(data["cross_reference"]["manual"]) == len(shim_xref.manual)
