"""API diff completeness (issue 14, item 6): headers removed or renamed, declarations moved to another header,
macros, params defaults, and the compile verdicts as typed values. Small header pairs written in tmp_path, parsed
without a cache; one test on the real b5415 -> b7836 trees (their surfaces come from the cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.apidiff import (
    ApiDiff,
    ChangeKind,
    DeclKind,
    DefaultSource,
    Where,
    cross_reference,
    diff,
    load_surface,
    parse_surface,
    surface_fingerprint,
    to_markdown,
)
from migrate.apidiff.defaults import mask
from migrate.rewrite.apicheck import _message
from migrate.sources import SourceTree

LLAMA_H_OLD = """\
#ifndef LLAMA_H
#define LLAMA_H
#include <stdbool.h>
#define LLAMA_DEFAULT_SEED 0xFFFFFFFF
#define LLAMA_SESSION_VERSION 9
#define LLAMA_GONE 3
#define LLAMA_PICK(a, b) ((a) + (b))
#ifdef __cplusplus
extern "C" {
#endif
struct llama_context_params {
    int n_ctx;
    float rope_freq_base;
    bool offload;
    const char * name;
    int n_gpu_layers;
};
struct llama_context_params llama_context_default_params(void);
void llama_moves(void);
int llama_grow(int a);
void llama_take(const struct llama_context_params * p);
enum llama_mode { LLAMA_MODE_A = 0, LLAMA_MODE_B = 1 };
#ifdef __cplusplus
}
#endif
#endif
"""

LLAMA_H_NEW = """\
#ifndef LLAMA_H
#define LLAMA_H
#include <stdbool.h>
#define LLAMA_DEFAULT_SEED 0xFFFFFFFF
#define LLAMA_SESSION_VERSION 10
#define LLAMA_PICK(a, b, c) ((a) + (b) + (c))
#define LLAMA_FRESH 1
#ifdef __cplusplus
extern "C" {
#endif
struct llama_context_params {
    int n_ctx;
    float rope_freq_base;
    bool offload;
    const char * name;
    int n_gpu_layers;
};
struct llama_context_params llama_context_default_params(void);
enum llama_mode { LLAMA_MODE_A = 0, LLAMA_MODE_B = 2 };
void llama_take(struct llama_context_params * p);
#ifdef __cplusplus
}
int llama_grow(int a, int b = 0);
#endif
#endif
"""

# Positional, with the names in comments (as llama.cpp writes them); a string holding a comma and a brace, a
# comment holding a comma, and an assignment under #ifdef after the initialiser.
CONTEXT_CPP_OLD = """\
#include "llama.h"
static int unrelated() { return 1; }
llama_context_params llama_context_default_params() {
    llama_context_params result = {
        /*.n_ctx          =*/ 512, // a comment, with a comma
        /*.rope_freq_base =*/ 0.0f,
        /*.offload        =*/ true,
        /*.name           =*/ "a, {b}",
        /*.n_gpu_layers   =*/ 0,
    };
#ifdef GGML_USE_METAL
    result.n_gpu_layers = 999;
#endif
    return result;
}
"""

CONTEXT_CPP_NEW = """\
#include "llama.h"
llama_context_params llama_context_default_params() {
    llama_context_params result = {
        /*.n_ctx          =*/ 4096,
        /*.rope_freq_base =*/ 0.0f,
        /*.offload        =*/ true,
        /*.name           =*/ "a, {b}",
        /*.n_gpu_layers   =*/ -1,
    };
    result.offload = false;
    return result;
}
"""

COMMON_H_OLD = """\
#pragma once
#include "llama.h"
struct common_params {
    int n_predict = -1;
    float temp{0.80f};
    int plain;
    int zeroed{};
};
void common_stays(void);
"""

COMMON_H_NEW = COMMON_H_OLD.replace("temp{0.80f}", "temp{1.0f}") + "void llama_moves(void);\n"

# common/old-name.h becomes common/new-name.h (renamed), common/gone.h disappears with what it declared.
OLD_NAME_H = "#pragma once\nvoid renamed_a(void);\nvoid renamed_b(void);\nstruct renamed_s { int x; };\n"
GONE_H = "#pragma once\nvoid gone_fn(void);\n#define GONE_MACRO 1\n"

SHIM = """\
#include "llama.h"
#include "common.h"
int use(void) {
    llama_context_params p = llama_context_default_params();
    const llama_context_params * fixed = &p;
    llama_take(&p);
    llama_take(fixed);
    return llama_grow(1) + LLAMA_MODE_B;
}
"""


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    old = _tree(tmp_path_factory.mktemp("old"), {
        "include/llama.h": LLAMA_H_OLD, "src/llama-context.cpp": CONTEXT_CPP_OLD, "common/common.h": COMMON_H_OLD,
        "common/old-name.h": OLD_NAME_H, "common/gone.h": GONE_H})  # fmt: skip
    new = _tree(tmp_path_factory.mktemp("new"), {
        "include/llama.h": LLAMA_H_NEW, "src/llama-context.cpp": CONTEXT_CPP_NEW, "common/common.h": COMMON_H_NEW,
        "common/new-name.h": OLD_NAME_H})  # fmt: skip
    return old, new


@pytest.fixture(scope="module")
def small(trees: tuple[Path, Path]) -> ApiDiff:
    return diff(parse_surface(trees[0], "old", "0" * 12), parse_surface(trees[1], "new", "1" * 12))


def test_removed_and_renamed_headers(small: ApiDiff) -> None:
    headers = {h.header: h for h in small.removed_headers}
    assert set(headers) == {"common/old-name.h", "common/gone.h"}
    renamed, gone = headers["common/old-name.h"], headers["common/gone.h"]
    assert renamed.kind == ChangeKind.HEADER_RENAMED and renamed.new == Where("common/new-name.h", 1)
    assert renamed.moved_to == {"common/new-name.h": 3} and renamed.gone == 0
    assert gone.kind == ChangeKind.HEADER_REMOVED and gone.new is None and gone.gone == 2
    # what a removed header declared and nothing else has is removed, not silently dropped
    assert "gone_fn" in small.function_names("removed_functions")
    assert "GONE_MACRO" in {m.name for m in small.removed_macros}
    assert small.counts()["headers"] == {"removed": 1, "renamed": 1}


def test_moved_declarations_are_not_removed(small: ApiDiff) -> None:
    moved = {(m.kind, m.name): m for m in small.moved}
    assert moved[(DeclKind.FUNCTION, "llama_moves")].old == Where("include/llama.h", 19)
    assert moved[(DeclKind.FUNCTION, "llama_moves")].new == Where("common/common.h", 10)
    assert (DeclKind.FUNCTION, "renamed_a") in moved and (DeclKind.TYPE, "struct renamed_s") in moved
    assert not {"llama_moves", "renamed_a"} & small.function_names("removed_functions")


def test_macros_removed_added_and_changed(small: ApiDiff) -> None:
    assert {m.name for m in small.removed_macros} == {"LLAMA_GONE", "GONE_MACRO"}
    assert {m.name for m in small.added_macros} == {"LLAMA_FRESH"}  # include guards are no API
    changed = {c.old.name: c for c in small.changed_macros}
    assert set(changed) == {"LLAMA_SESSION_VERSION", "LLAMA_PICK"}
    version = changed["LLAMA_SESSION_VERSION"]
    assert (version.old.value, version.new.value, version.kind) == ("9", "10", ChangeKind.MACRO_CHANGED)
    assert version.old.where == Where("include/llama.h", 5) and version.new.where == Where("include/llama.h", 5)
    pick = changed["LLAMA_PICK"]
    assert pick.old.params == ["a", "b"] and pick.new.params == ["a", "b", "c"]
    assert pick.new.declaration == "#define LLAMA_PICK(a, b, c) ( ( a ) + ( b ) + ( c ) )"


def test_params_defaults_from_default_params_bodies_and_member_initialisers(small: ApiDiff) -> None:
    changed = {c.key: c for c in small.changed_defaults}
    assert set(changed) == {"llama_context_params.n_ctx", "llama_context_params.offload",
                            "llama_context_params.n_gpu_layers", "common_params.temp"}  # fmt: skip
    n_ctx = changed["llama_context_params.n_ctx"]
    assert (n_ctx.old.value, n_ctx.new.value, n_ctx.kind) == ("512", "4096", ChangeKind.DEFAULT_CHANGED)
    assert n_ctx.old.where == Where("src/llama-context.cpp", 5) and n_ctx.new.where == Where("src/llama-context.cpp", 4)
    assert n_ctx.new.function == "llama_context_default_params" and n_ctx.new.source == DefaultSource.DEFAULT_PARAMS
    # an unconditional assignment after the initialiser replaces the value; one under #ifdef is kept beside it
    assert changed["llama_context_params.offload"].new.where == Where("src/llama-context.cpp", 10)
    gpu = changed["llama_context_params.n_gpu_layers"]
    assert gpu.old.shown() == "0; 999 if GGML_USE_METAL" and gpu.new.shown() == "-1"
    temp = changed["common_params.temp"]
    assert (temp.old.value, temp.new.value, temp.new.source) == ("0.80f", "1.0f", DefaultSource.MEMBER_INITIALIZER)
    assert temp.old.where == Where("common/common.h", 5)


def test_defaults_values_keep_literals_and_drop_comments(trees: tuple[Path, Path]) -> None:
    surface = parse_surface(trees[0])
    values = {d.key: d.value for d in surface.defaults}
    assert values["llama_context_params.name"] == '"a, {b}"'
    assert values["llama_context_params.n_ctx"] == "512" and values["common_params.n_predict"] == "-1"
    assert "common_params.plain" not in values and values["common_params.zeroed"] == "{}"
    text = 'x = "a // b", /* c, } */ d; // e {\n'
    assert mask(text) == 'x = "      ", ' + " " * 10 + " d; " + " " * 6 + "\n"
    assert len(mask(text)) == len(text)


def test_markdown_names_each_new_kind_with_evidence(small: ApiDiff) -> None:
    text = to_markdown(small)
    assert "- `common/old-name.h`: header renamed → `common/new-name.h`" in text
    assert "- `common/gone.h`: header removed; its declarations moved to: —, 2 gone" in text
    assert "- function `llama_moves`: include/llama.h:19 → common/common.h:10" in text
    assert "- `LLAMA_SESSION_VERSION`: `9` (include/llama.h:5) → `10` (include/llama.h:5)" in text
    assert ("| `llama_context_params.n_ctx` | `512` (src/llama-context.cpp:5) | `4096` (src/llama-context.cpp:4) | "
            "`llama_context_default_params()` |") in text  # fmt: skip
    assert "| headers | 1 |  | 1 |  |" in text


def test_compile_verdicts_are_set_by_the_diff(small: ApiDiff, trees: tuple[Path, Path], tmp_path: Path) -> None:
    revalued = small.breaks["e:LLAMA_MODE_B"]
    assert revalued.kind == ChangeKind.CONSTANT_REVALUED and revalued.compiles
    grow = small.breaks["f:llama_grow"]
    assert grow.kind == ChangeKind.RESIGNATURED and grow.compiles  # the new parameter has a default
    shim = tmp_path / "shim.cpp"
    shim.write_text(SHIM)
    xref = cross_reference(small, [shim], trees[0], set(), extra_args=[f"-I{trees[0] / 'common'}"])
    assert xref.parse_errors == []
    verdicts = {(use.symbol, use.line): (use.compiles, use.judged_on_call) for use in xref.manual + xref.review}
    assert all(use.compiles for use in xref.review) and not any(use.compiles for use in xref.manual)
    assert verdicts == {("llama_grow", 8): (True, False), ("LLAMA_MODE_B", 8): (True, False),
                        ("llama_take", 6): (True, True), ("llama_take", 7): (False, True),
                        # n_ctx's default changed, and nothing here assigns it: reviewed where the defaults come from
                        ("llama_context_default_params()", 4): (True, False)}  # fmt: skip
    # the plan's API check reads the verdict, not the note's words
    messages = {use.line: _message(use, "new") for use in xref.manual + xref.review if use.symbol == "llama_take"}
    assert "check the object may be changed" in messages[6] and "change this code by hand" in messages[7]


def test_fingerprint_covers_the_defaults_sources(trees: tuple[Path, Path], tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", {"include/llama.h": LLAMA_H_OLD, "src/llama-context.cpp": CONTEXT_CPP_OLD})
    before = surface_fingerprint(root)
    (root / "src/llama-context.cpp").write_text(CONTEXT_CPP_NEW)
    assert surface_fingerprint(root) != before  # a cached surface of the edited tree is not reused


# --- the real trees -------------------------------------------------------------------------------------------


def test_real_b5415_to_b7836(old_tree: SourceTree, new_tree: SourceTree) -> None:
    old, new = load_surface(old_tree), load_surface(new_tree)
    result = diff(old, new)
    by_key = {d.key: d for d in old.defaults}
    # positional values land on the fields the header declares, in order
    assert by_key["llama_context_params.n_ctx"].value == "512"
    assert by_key["llama_context_params.n_batch"].value == "2048"
    changed = {c.key: c for c in result.changed_defaults}
    gpu = changed["llama_model_params.n_gpu_layers"]
    assert gpu.old.shown() == "0; 999 if GGML_USE_METAL" and gpu.new.value == "-1"
    assert gpu.old.file == gpu.new.file == "src/llama-model.cpp"
    assert changed["common_params.n_ctx"].new.value == "0"
    moved = {m.name: m for m in result.moved}
    assert moved["common_remote_get_content"].old.file == "common/arg.h"
    assert moved["common_remote_get_content"].new.file == "common/download.h"
    assert "common_remote_get_content" not in result.function_names("removed_functions")
    macros = {c.old.name: c for c in result.changed_macros}
    assert macros["LOG_DEFAULT_DEBUG"].new.value == "LOG_LEVEL_DEBUG"
    assert result.removed_headers == []
