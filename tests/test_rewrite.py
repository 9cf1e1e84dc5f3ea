"""The rewrite engine beyond single rules: memory-handle hoisting, decode error handling, CRLF, idempotence,
bad inputs, `migrate plan` / `migrate apply` (atomic, dirty-tree refusal, branch), the report, and the two
fixtures (localllm: every old-API site covered and the result compiles at b7836; clib: its traps hold).
Every parse is a real libclang parse against the b5421 stand-in tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from migrate.cli import main
from migrate.paths import data_dir
from migrate.report import render_report
from migrate.rewrite import apply as apply_module
from migrate.rewrite.apply import ApplyRefused, apply_plan
from migrate.rewrite.edits import SYNTACTIC, Edit, EditConflict, InputError, SourceFile, apply_edits
from migrate.rewrite.engine import EngineConfig, build_plan
from migrate.rewrite.plan import ACTION, REVIEW, Plan
from migrate.rewrite.rules import load_rules
from migrate.rewrite.tokens import tokenize
from migrate.sources import SourceTree

REPO = Path(__file__).resolve().parent.parent
LOCALLLM = REPO / "fixtures" / "localllm"
CLIB = REPO / "fixtures" / "clib"
RULESET = load_rules(data_dir("rules") / "b5421-b7785.yaml")
PRELUDE = '#include "llama.h"\n'


def plan_code(tmp_path: Path, tree: SourceTree, code: str, lang: str = "c++", options: dict | None = None,
              enable: set[str] | None = None, prelude: str = PRELUDE) -> tuple[str, Plan]:  # fmt: skip
    """Plan a one-file consumer; returns the file's text after the plan (without the prelude) and the plan."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    path = src / ("snippet.c" if lang == "c" else "snippet.cpp")
    path.write_bytes((prelude + code).encode())
    plan = build_plan(EngineConfig(src, tree.path, RULESET, options or {}, enable or set()))
    after = plan.new_contents().get(path.resolve(), path.read_bytes()).decode()
    return after[len(prelude) :], plan


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def git_repo(path: Path) -> Path:
    git("init", "-q", "-b", "main", cwd=path)
    git("config", "user.email", "t@example.invalid", cwd=path)
    git("config", "user.name", "test", cwd=path)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "start", cwd=path)
    return path


def code_tokens(path: Path, name: str) -> list[int]:
    """Lines where `name` appears as code (not in a comment or string)."""
    data = path.read_bytes()
    lines = SourceFile.from_bytes(path, data)
    return [lines.line_of(t.start) for t in tokenize(data) if t.name == name]


# --- memory handle hoisting -------------------------------------------------------------------------------------


def test_one_handle_reused_by_every_site_of_a_function(old_tree: SourceTree, tmp_path: Path) -> None:
    code = """\
int run(llama_context * ctx, bool parallel) {
    if (ctx == nullptr) {
        return -1;
    }
    // start empty
    llama_kv_self_clear(ctx);
    if (parallel) {
        llama_kv_self_seq_cp(ctx, 0, 1, -1, -1);
    }
    try {
        llama_kv_self_seq_rm(ctx, 1, 0, -1);
    } catch (...) {
        llama_kv_self_clear(ctx);
    }
    return 0;
}
"""
    after, plan = plan_code(tmp_path, old_tree, code)
    assert (
        after
        == """\
int run(llama_context * ctx, bool parallel) {
    if (ctx == nullptr) {
        return -1;
    }
    llama_memory_t mem = llama_get_memory(ctx);
    // start empty
    llama_memory_clear(mem, false);
    if (parallel) {
        llama_memory_seq_cp(mem, 0, 1, -1, -1);
    }
    try {
        llama_memory_seq_rm(mem, 1, 0, -1);
    } catch (...) {
        llama_memory_clear(mem, false);
    }
    return 0;
}
"""
    )
    assert any("hoisted `mem`" in d for d in plan.decisions)


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (
            """\
void f(llama_context * ctx, llama_context * other) {
    llama_kv_self_clear(ctx);
    ctx = other;
    llama_kv_self_clear(ctx);
}
""",
            "reassigned",
        ),
        (
            """\
void f(llama_context * a, llama_context * b) {
    llama_kv_self_clear(a);
    llama_kv_self_clear(b);
}
""",
            "different context expressions",
        ),
        (
            """\
void f(llama_context * ctx, int n) {
    if (n > 0) {
        if (!ctx) {
            return;
        }
        llama_kv_self_clear(ctx);
    }
    llama_kv_self_seq_rm(ctx, 0, 0, -1);
}
""",
            "null-tested",
        ),
    ],
    ids=["reassigned", "two-contexts", "null-test-between"],
)
def test_handle_inline_where_hoisting_is_unsafe(old_tree: SourceTree, tmp_path: Path, code: str, why: str) -> None:
    after, plan = plan_code(tmp_path, old_tree, code)
    assert "llama_memory_t" not in after
    assert "llama_kv_self" not in after
    assert after.count("llama_get_memory(") == 2
    notes = [e.note for e in plan.edits if e.rule.startswith("kv-self")]
    assert notes and all(why in note for note in notes), notes


def test_lambda_with_explicit_captures_gets_the_handle_inline(old_tree: SourceTree, tmp_path: Path) -> None:
    code = """\
void f(llama_context * ctx) {
    llama_kv_self_clear(ctx);
    auto drop = [ctx](int seq) { llama_kv_self_seq_rm(ctx, seq, 0, -1); };
    drop(1);
}
"""
    after, _ = plan_code(tmp_path, old_tree, code)
    assert (
        after
        == """\
void f(llama_context * ctx) {
    llama_memory_t mem = llama_get_memory(ctx);
    llama_memory_clear(mem, false);
    auto drop = [ctx](int seq) { llama_memory_seq_rm(llama_get_memory(ctx), seq, 0, -1); };
    drop(1);
}
"""
    )


def test_handle_name_never_collides(old_tree: SourceTree, tmp_path: Path) -> None:
    code = """\
static int mem_1 = 0;
void f(llama_context * ctx) {
    int mem = 3;
    llama_kv_self_seq_rm(ctx, mem, 0, -1);
}
"""
    after, _ = plan_code(tmp_path, old_tree, code)
    assert "llama_memory_t mem_2 = llama_get_memory(ctx);" in after
    assert "llama_memory_seq_rm(mem_2, mem, 0, -1);" in after


def test_file_scope_and_goto_keep_the_handle_inline(old_tree: SourceTree, tmp_path: Path) -> None:
    code = """\
static llama_context * g_ctx;
static bool g_shift = llama_kv_self_can_shift(g_ctx);
int f(struct llama_context * ctx, int fail) {
    if (fail) {
        goto out;
    }
    llama_kv_self_clear(ctx);
out:
    llama_kv_self_seq_rm(ctx, 0, 0, -1);
    return 0;
}
"""
    after, _ = plan_code(tmp_path, old_tree, code, lang="c++")
    assert "static bool g_shift = llama_memory_can_shift(llama_get_memory(g_ctx));" in after
    assert "llama_memory_t" not in after  # a goto jumps past where the handle would be declared


def test_macro_body_rewritten_once_and_its_uses_untouched(old_tree: SourceTree, tmp_path: Path) -> None:
    code = """\
#define RESET(c) llama_kv_self_clear(c)
#define FORGET(c, s) \\
    llama_kv_self_seq_rm((c), (s), 0, -1)
void f(llama_context * ctx) {
    RESET(ctx);
    FORGET(ctx, 1);
}
"""
    after, plan = plan_code(tmp_path, old_tree, code)
    assert (
        after
        == """\
#define RESET(c) llama_memory_clear(llama_get_memory(c), false)
#define FORGET(c, s) \\
    llama_memory_seq_rm(llama_get_memory((c)), (s), 0, -1)
void f(llama_context * ctx) {
    RESET(ctx);
    FORGET(ctx, 1);
}
"""
    )
    assert all(e.confidence == "semantic" for e in plan.edits)  # both macros are expanded, so resolved
    assert sum("definition rewritten once" in d for d in plan.decisions) == 2


def test_macro_defined_outside_the_tree_is_a_manual_action(old_tree: SourceTree, tmp_path: Path) -> None:
    outside = tmp_path / "vendor" / "ext.h"
    outside.parent.mkdir()
    outside.write_text("#define EXT_RESET(c) llama_kv_self_clear(c)\n")
    code = f'#include "{outside}"\nvoid f(llama_context * ctx) {{ EXT_RESET(ctx); }}\n'
    after, plan = plan_code(tmp_path, old_tree, code)
    assert after == code and outside.read_text() == "#define EXT_RESET(c) llama_kv_self_clear(c)\n"
    assert [(m.rule, m.kind) for m in plan.manual] == [("kv-self-clear", ACTION)]
    assert "macro EXT_RESET, defined outside this tree" in plan.manual[0].message


def test_old_api_used_as_a_value_is_a_manual_action(old_tree: SourceTree, tmp_path: Path) -> None:
    code = "void (*reset_fn)(llama_context *) = llama_kv_self_clear;\n"
    after, plan = plan_code(tmp_path, old_tree, code)
    assert after == code
    assert [m.rule for m in plan.manual if m.kind == ACTION] == ["kv-self-clear"]


# --- decode error handling --------------------------------------------------------------------------------------

CXX_ERROR = """\
#include <string>
static void set_error(const char ** out, const std::string & message) { (void) out; (void) message; }
"""


def test_decode_retry_logic_kept_and_message_variable_gets_the_detail(old_tree: SourceTree, tmp_path: Path) -> None:
    code = (
        CXX_ERROR
        + """\
bool run(llama_context * ctx, llama_batch batch, std::string & last_error) {
    for (int attempt = 0; attempt < 3; ++attempt) {
        int ret = llama_decode(ctx, batch);
        if (ret > 0) {
            continue;  // retry: the KV cache may have room after a shift
        }
        if (ret != 0) {
            last_error = "decode failed";
            return false;
        }
        return true;
    }
    return false;
}
"""
    )
    after, plan = plan_code(tmp_path, old_tree, code)
    assert (
        """\
        if (ret > 0) {
            continue;  // retry: the KV cache may have room after a shift
        }
        if (ret != 0) {
            const char * decode_detail;
            switch (ret) {
"""
        in after
    )
    assert 'last_error = std::string("decode failed") + " (" + decode_detail + ")";' in after
    assert "            return false;\n        }\n        return true;" in after
    assert any("retry logic" in e.note for e in plan.edits)


def test_decode_check_recording_nothing_is_left_and_said(old_tree: SourceTree, tmp_path: Path) -> None:
    code = """\
int run(llama_context * ctx, llama_batch batch) {
    int ret = llama_decode(ctx, batch);
    if (ret > 0) {
        return 1;  // caller retries with a smaller batch
    }
    if (ret != 0) {
        return -1;
    }
    return 0;
}
"""
    after, plan = plan_code(tmp_path, old_tree, code)
    assert after == code
    assert len(plan.advisories) == 1
    assert "retry logic" in plan.advisories[0].message and "records no error" in plan.advisories[0].message


def test_decode_ignored_return_code_is_an_advisory(old_tree: SourceTree, tmp_path: Path) -> None:
    code = "void run(llama_context * ctx, llama_batch batch) {\n    llama_decode(ctx, batch);\n}\n"
    after, plan = plan_code(tmp_path, old_tree, code)
    assert after == code
    assert "ignored" in plan.advisories[0].message


def test_decode_names_do_not_shadow_and_sites_get_distinct_names(old_tree: SourceTree, tmp_path: Path) -> None:
    code = (
        CXX_ERROR
        + """\
int run(llama_context * ctx, llama_batch a, llama_batch b, const char ** err) {
    int decode_ret = 0;
    if (llama_decode(ctx, a) != 0) {
        set_error(err, "first");
        return 1;
    }
    if (llama_decode(ctx, b)) {
        set_error(err, "second");
        return 2;
    }
    return decode_ret;
}
"""
    )
    after, _ = plan_code(tmp_path, old_tree, code)
    assert "const int32_t decode_ret_1 = llama_decode(ctx, a);" in after
    assert "const int32_t decode_ret_2 = llama_decode(ctx, b);" in after
    assert "if (decode_ret_2 != 0) {" in after
    assert after.count("const char * decode_detail") == 2


def test_decode_error_function_is_configurable(old_tree: SourceTree, tmp_path: Path) -> None:
    code = (
        CXX_ERROR
        + """\
static void fail(const std::string & why) { (void) why; }
int run(llama_context * ctx, llama_batch batch) {
    if (llama_decode(ctx, batch) != 0) {
        fail("decode");
        return 1;
    }
    return 0;
}
"""
    )
    after, plan = plan_code(tmp_path, old_tree, code)
    assert after == code and "records no error" in plan.advisories[0].message
    after, _ = plan_code(tmp_path, old_tree, code, options={"error_function": "fail"})
    assert 'fail(std::string("decode") + " (" + decode_detail + ")");' in after


# --- static advisories -------------------------------------------------------------------------------------------


def test_advisories_for_behaviour_that_changed(old_tree: SourceTree, tmp_path: Path) -> None:
    code = """\
#include "common.h"
int serve(llama_context * ctx, llama_batch & batch, llama_token last, int n_past, int n_prompt) {
    if (n_prompt >= (int) llama_n_ctx(ctx)) {
        return -1;
    }
    const int n_seq = (int) llama_n_seq_max(ctx);
    llama_kv_self_seq_cp(ctx, 0, 2, 0, n_past);
    common_batch_add(batch, last, n_past - 1, {0}, true);
    return n_seq;
}
void forget(llama_context * ctx, int seq) {
    llama_kv_self_seq_rm(ctx, seq, 0, -1);
}
"""
    _, plan = plan_code(tmp_path, old_tree, code)
    found = [(a.line, a.rule, a.message) for a in plan.advisories]

    def has(line: int, rule: str, text: str) -> bool:
        return any(found_line == line and found_rule == rule and text in message
                   for found_line, found_rule, message in found)  # fmt: skip

    assert has(4, "per-sequence-context", "llama_n_ctx_seq")
    assert has(8, "kv-self-seq-cp", "needs n_seq_max >= 3")
    assert has(8, "kv-self-seq-cp", "partial-range seq_cp")
    assert has(9, "held-position", "positions must continue")
    assert has(13, "sequence-ids", "not bounded by n_seq_max in forget()")
    assert len(found) == 5
    _, unified = plan_code(tmp_path, old_tree, code, enable={"kv-unified"})
    assert [a.rule for a in unified.advisories] == ["held-position"]  # positions must continue even then


# --- formatting, encoding, idempotence ----------------------------------------------------------------------------


def test_crlf_and_utf8_comments_are_kept(old_tree: SourceTree, tmp_path: Path) -> None:
    code = (
        "/* Überprüfung — 检查 */\r\n"
        "void set_error(char ** out, const char * message);\r\n"
        "int f(struct llama_context * ctx, struct llama_batch batch, char ** err) {\r\n"
        "    llama_kv_self_clear(ctx); /* 清空 */\r\n"
        "    if (llama_decode(ctx, batch) != 0) {\r\n"
        '        set_error(err, "decode failed");\r\n'
        "        return 1;\r\n"
        "    }\r\n"
        "    return 0;\r\n"
        "}\r\n"
    )
    after, _ = plan_code(tmp_path, old_tree, code, lang="c", prelude='#include "llama.h"\r\n')
    raw = after.encode()
    assert raw.count(b"\n") == raw.count(b"\r\n") > code.count("\n")
    assert after.startswith("/* Überprüfung — 检查 */\r\n")
    assert "    llama_memory_clear(mem, false); /* 清空 */\r\n" in after


def test_second_plan_after_apply_is_empty(old_tree: SourceTree, tmp_path: Path) -> None:
    code = (
        CXX_ERROR
        + """\
int run(llama_context * ctx, llama_batch batch, const char ** err, llama_context_params & p) {
    p.flash_attn = true;
    llama_kv_self_clear(ctx);
    if (llama_decode(ctx, batch) != 0) {
        set_error(err, "decode failed");
        return 1;
    }
    return 0;
}
"""
    )
    after, plan = plan_code(tmp_path, old_tree, code, enable={"kv-unified"})
    apply_plan(plan, force=True, backup_root=tmp_path / "backups")
    again = build_plan(EngineConfig(tmp_path / "src", old_tree.path, RULESET, {}, {"kv-unified"}))
    assert again.edits == [] and again.new_contents() == {}
    assert (tmp_path / "src" / "snippet.cpp").read_text() == PRELUDE + after


def test_overlapping_edits_are_refused() -> None:
    path = Path("x.c")
    first = Edit(path, 0, 5, "a", "r1", 1, "")
    second = Edit(path, 3, 8, "b", "r2", 1, "")
    with pytest.raises(EditConflict, match="r1.*r2"):
        apply_edits(b"0123456789", [first, second])
    insert = Edit(path, 5, 5, "+", "r3", 1, "")
    assert apply_edits(b"0123456789", [first, insert]) == b"a+56789"


# --- bad inputs: a clear message, nothing written ------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    return main(["plan", *argv, "--no-report", "--no-cache"])


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_syntax_error_is_refused(old_tree: SourceTree, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.cpp").write_text(PRELUDE + "void f(llama_context * ctx) { llama_kv_self_clear(ctx) }\n")
    before = snapshot(tmp_path)
    assert main(["apply", str(tmp_path), "--no-report", "--no-cache", "--force", "--backup-dir", str(tmp_path)]) == 2
    assert "syntax errors" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_non_utf8_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "latin.c").write_bytes(b'#include "llama.h"\n/* caf\xe9 */ void f(struct llama_context * c) '
                                       b"{ llama_kv_self_clear(c); }\n")  # fmt: skip
    before = snapshot(tmp_path)
    assert run_cli(str(tmp_path)) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_empty_tree_and_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(str(tmp_path)) == 2
    assert "no C/C++ source files" in capsys.readouterr().err
    assert run_cli(str(tmp_path / "nope")) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_missing_header_falls_back_to_tree_sitter(old_tree: SourceTree, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code = """\
#include "not_there.h"
/* llama_kv_self_clear(ctx) in a comment */
static const char * s = "llama_kv_self_clear(ctx)";
void f(struct llama_context * ctx, struct llama_context_params * p) {
    llama_kv_self_clear(ctx);
    p->flash_attn = false;
#if 0
    llama_kv_self_seq_rm(ctx, 0, 0, -1);
#endif
}
"""
    (tmp_path / "x.c").write_text(PRELUDE + code)
    plan = build_plan(EngineConfig(tmp_path, old_tree.path, RULESET))
    after = plan.new_contents()[(tmp_path / "x.c").resolve()].decode()
    assert "    llama_memory_clear(llama_get_memory(ctx), false);\n" in after
    assert "p->flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;" in after
    assert "/* llama_kv_self_clear(ctx) in a comment */" in after and '"llama_kv_self_clear(ctx)"' in after
    assert "    llama_kv_self_seq_rm(ctx, 0, 0, -1);\n#endif" in after
    assert {e.confidence for e in plan.edits} == {SYNTACTIC}
    assert plan.file_reports[0].mode == "tree-sitter" and "not_there.h" in plan.file_reports[0].reason
    # apply refuses name-only edits unless asked, and writes nothing
    before = snapshot(tmp_path)
    assert main(["apply", str(tmp_path), "--no-report", "--no-cache", "--force", "--backup-dir", str(tmp_path)]) == 3
    assert "--allow-syntactic" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_unknown_option_and_rule_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "a.c").write_text(PRELUDE)
    assert run_cli(str(tmp_path), "--option", "nope=1") == 2
    assert run_cli(str(tmp_path), "--enable", "no-such-rule") == 2
    assert run_cli(str(tmp_path), "--option", "novalue") == 2


# --- apply: atomic, dirty tree, branch ----------------------------------------------------------------------------

TWO_FILES = {
    "a.cpp": PRELUDE + "void a(llama_context * ctx) {\n    llama_kv_self_clear(ctx);\n}\n",
    "b.cpp": PRELUDE + "void b(llama_context * ctx) {\n    llama_kv_self_seq_keep(ctx, 0);\n}\n",
}


def two_file_repo(tmp_path: Path) -> Path:
    root = tmp_path / "consumer"
    root.mkdir()
    for name, text in TWO_FILES.items():
        (root / name).write_text(text)
    return git_repo(root)


def test_apply_refuses_a_dirty_tree_unless_forced(old_tree: SourceTree, tmp_path: Path) -> None:
    root = two_file_repo(tmp_path)
    (root / "b.cpp").write_text(TWO_FILES["b.cpp"] + "// local change\n")
    plan = build_plan(EngineConfig(root, old_tree.path, RULESET))
    before = snapshot(root)
    with pytest.raises(ApplyRefused, match="uncommitted changes.*b.cpp"):
        apply_plan(plan, backup_root=tmp_path / "backups")
    assert snapshot(root) == before
    result = apply_plan(plan, force=True, backup_root=tmp_path / "backups")
    assert sorted(p.name for p in result.written) == ["a.cpp", "b.cpp"]
    assert (result.backup_dir / "a.cpp").read_text() == TWO_FILES["a.cpp"]


def test_apply_is_all_or_nothing(old_tree: SourceTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = two_file_repo(tmp_path)
    plan = build_plan(EngineConfig(root, old_tree.path, RULESET))
    real_replace = os.replace
    calls = []

    def failing_replace(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(apply_module.os, "replace", failing_replace)
    with pytest.raises(ApplyRefused, match="every file was restored"):
        apply_plan(plan, backup_root=tmp_path / "backups")
    assert {p.name: p.read_text() for p in root.glob("*.cpp")} == TWO_FILES
    assert not list(root.glob("*.tmp"))


def test_apply_on_a_new_branch_commits(old_tree: SourceTree, tmp_path: Path) -> None:
    root = two_file_repo(tmp_path)
    backups = ["--backup-dir", str(tmp_path / "backups")]
    assert main(["apply", str(root), "--branch", "llama-b7785", "--no-report", "--no-cache", *backups]) == 0
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=root) == "llama-b7785"
    assert "llama-migrate" in git("log", "-1", "--format=%B", cwd=root)
    assert git("status", "--porcelain", cwd=root) == ""
    assert "llama_memory_seq_keep(mem, 0);" in (root / "b.cpp").read_text()
    # a second apply has nothing to do
    assert main(["apply", str(root), "--no-report", "--no-cache", *backups]) == 0
    assert git("status", "--porcelain", cwd=root) == ""


# --- CLI output and the report -------------------------------------------------------------------------------------


def test_plan_json_and_report(old_tree: SourceTree, tmp_path: Path) -> None:
    root = two_file_repo(tmp_path)
    out = tmp_path / "plan.json"
    report = tmp_path / "report.md"
    before = snapshot(root)
    assert main(["plan", str(root), "--json", str(out), "--report", str(report), "--no-cache"]) == 0
    assert snapshot(root) == before
    data = json.loads(out.read_text())
    assert {"edits", "manual", "advisories"} <= set(data)
    first = data["edits"][0]
    assert {"file", "line", "rule", "before", "after"} <= set(first)
    assert (first["file"], first["rule"]) == ("a.cpp", "kv-self-clear")
    text = report.read_text()
    for heading in ("## llama.cpp builds used", "## Changes", "## Manual actions required", "## Advisories", "## Diff"):
        assert heading in text
    assert "b5415" in text and "stand-in" in text
    assert "llama_memory_clear(mem, false): metadata only" in text


def test_report_takes_extra_sections(old_tree: SourceTree, tmp_path: Path) -> None:
    _, plan = plan_code(tmp_path, old_tree, "void f(llama_context * c) { llama_kv_self_seq_keep(c, 0); }\n")
    text = render_report(plan, sections=["## Verification\n\nall green"])
    assert text.rstrip().endswith("## Verification\n\nall green")
    assert "| `snippet.cpp:2` | `kv-self-seq-keep` | semantic |" in text


def test_clear_data_option_changes_call_and_report(old_tree: SourceTree, tmp_path: Path) -> None:
    after, plan = plan_code(tmp_path, old_tree, "void f(llama_context * c) {\n    llama_kv_self_clear(c);\n}\n",
                            options={"clear_data": "true"})  # fmt: skip
    assert "llama_memory_clear(mem, true);" in after
    assert "zeroed, as the old llama_kv_self_clear did" in plan.decisions[0]


# --- the fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_localllm(old_tree: SourceTree, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Plan]:
    copy = tmp_path_factory.mktemp("localllm") / "localllm"
    shutil.copytree(LOCALLLM, copy)
    plan = build_plan(EngineConfig(copy, old_tree.path, RULESET))
    apply_plan(plan, force=True, backup_root=tmp_path_factory.mktemp("backups"))
    return copy, plan


def test_localllm_plan_covers_every_old_api_site(migrated_localllm: tuple[Path, Plan]) -> None:
    _, plan = migrated_localllm
    original = LOCALLLM / "custom_files" / "localllm_capi.cpp"
    old_lines = sorted(
        line
        for name in (
            "llama_kv_self_clear",
            "llama_kv_self_seq_rm",
            "llama_kv_self_seq_cp",
            "common_sampler_get_candidates",
        )
        for line in code_tokens(original, name)
    )
    assert len(old_lines) >= 9  # the seed's 8 memory sites and the sampler
    edited = {e.line for e in plan.edits}
    assert [line for line in old_lines if line not in edited] == []
    assert {e.rule for e in plan.edits} >= {"kv-self-clear", "kv-self-seq-rm", "kv-self-seq-cp", "flash-attn-type",
                                           "sampler-get-candidates-sort", "decode-error-detail"}  # fmt: skip
    assert plan.actions == []
    decode_lines = code_tokens(original, "llama_decode")
    reported = {e.line for e in plan.edits if e.rule == "decode-error-detail"}
    reported |= {a.line for a in plan.advisories if a.rule == "decode-error-detail"}
    assert set(decode_lines) <= reported  # every decode check rewritten or explained


def test_localllm_migrated_compiles_against_b7836_and_second_plan_is_empty(
    migrated_localllm: tuple[Path, Plan], old_tree: SourceTree, new_tree: SourceTree
) -> None:
    copy, _ = migrated_localllm
    text = (copy / "custom_files" / "localllm_capi.cpp").read_text()
    assert "llama_kv_self" not in "".join(t.name for t in tokenize(text.encode()) if t.kind == "ident")
    assert text.count("llama_memory_t mem = llama_get_memory(ctx);") == 2
    t = new_tree.path
    compiler = shutil.which("g++")
    assert compiler, "g++ is needed to check the migrated fixture compiles"
    proc = subprocess.run(
        [compiler, "-std=c++17", "-fsyntax-only", "-Wall", f"-I{t}/include", f"-I{t}/ggml/include", f"-I{t}/common",
         f"-I{copy}/custom_files", str(copy / "custom_files" / "localllm_capi.cpp")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deprecated" not in proc.stderr
    again = build_plan(EngineConfig(copy, old_tree.path, RULESET))
    assert again.edits == []


def test_clib_traps(old_tree: SourceTree, new_tree: SourceTree, tmp_path: Path) -> None:
    copy = tmp_path / "clib"
    shutil.copytree(CLIB, copy)
    plan = build_plan(EngineConfig(copy, old_tree.path, RULESET))
    engine = copy / "src" / "engine.c"
    shadow_before = (copy / "src" / "shadow.c").read_bytes()
    header_before = (copy / "src" / "engine.h").read_bytes()
    apply_plan(plan, force=True, backup_root=tmp_path / "backups")
    text = engine.read_bytes().decode()
    assert text.count("\n") == text.count("\r\n")  # CRLF everywhere, new lines included
    assert "#define ENGINE_RESET(e) llama_memory_clear(llama_get_memory((e)->ctx), false)\r\n" in text
    assert "    ENGINE_RESET(s);\r\n" in text  # the use site is untouched
    assert "s->ops.llama_kv_self_clear(s);" in text and "s->ops.llama_kv_self_seq_rm(s, seq);" in text
    assert "s->ops.llama_kv_self_clear = count_reset;" in text
    assert "/* llama_kv_self_clear(ctx) used to be called" in text
    assert '"llama_kv_self_seq_rm failed"' in text
    assert "#if 0\r\n" in text and "    llama_kv_self_clear(ctx);\r\n}\r\n#endif" in text
    assert "cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;" in text
    assert "llama_memory_seq_cp(llama_get_memory(s->ctx), 0, 1, -1, -1);" in text
    assert (copy / "src" / "shadow.c").read_bytes() == shadow_before
    assert (copy / "src" / "engine.h").read_bytes() == header_before
    review = [m for m in plan.manual if m.kind == REVIEW]
    assert [(m.file, m.rule) for m in review] == [("src/engine.c", "kv-self-clear")]  # the #if 0 block, reported
    assert plan.actions == []
    t = new_tree.path
    command = ["gcc", "-std=c11", "-fsyntax-only", "-Werror=implicit-function-declaration", f"-I{t}/include",
               f"-I{t}/ggml/include", str(engine)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_input_error_type_for_bad_paths(old_tree: SourceTree, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        build_plan(EngineConfig(tmp_path / "missing", old_tree.path, RULESET))


# --- the consumer's config: plan and apply read it as `migrate run` does ---------------------------------------

OPENER = """\
llama_context * open(llama_model * model, int n_seq_max) {
    llama_context_params p = llama_context_default_params();
    p.n_seq_max = n_seq_max;
    llama_kv_self_clear(nullptr);
    return llama_init_from_model(model, p);
}
"""


def configured_tree(tmp_path: Path, config: str) -> Path:
    root = tmp_path / "consumer"
    root.mkdir()
    (root / "open.cpp").write_text(PRELUDE + OPENER)
    (root / "llama-migrate.toml").write_text(config)
    return root


def planned_rules(root: Path, tmp_path: Path, *flags: str) -> list[tuple[str, str]]:
    out = tmp_path / "plan.json"
    assert main(["plan", str(root), "--json", str(out), "--no-report", "--no-cache", "--no-diff", *flags]) == 0
    return [(e["rule"], e["after"]) for e in json.loads(out.read_text())["edits"]]


def test_plan_reads_the_consumer_config(old_tree: SourceTree, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    root = configured_tree(tmp_path, 'enable = ["kv-unified"]\n[options]\nclear_data = "true"\n')
    edits = planned_rules(root, tmp_path)
    assert any(r == "kv-unified" and "p.kv_unified = p.n_seq_max > 1;" in a for r, a in edits)
    assert any(r == "kv-self-clear" and "llama_memory_clear(" in a and "true)" in a for r, a in edits)
    assert "config: " in capsys.readouterr().err
    # flags override the config's options; --no-config leaves only the flags
    overridden = planned_rules(root, tmp_path, "--option", "clear_data=false")
    assert any(r == "kv-self-clear" and "false)" in a for r, a in overridden)
    bare = planned_rules(root, tmp_path, "--no-config")
    assert "kv-unified" not in [r for r, _ in bare] and any("false)" in a for r, a in bare if r == "kv-self-clear")


def test_bad_consumer_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = configured_tree(tmp_path, "enable = [\n")
    before = (root / "open.cpp").read_bytes()
    assert run_cli(str(root)) == 2
    assert "not valid TOML" in capsys.readouterr().err
    (root / "llama-migrate.toml").write_text('enabel = ["kv-unified"]\n')
    assert run_cli(str(root)) == 2
    assert "unknown key(s) enabel" in capsys.readouterr().err
    assert main(["apply", str(root), "--no-report", "--no-cache", "--force", "--backup-dir", str(tmp_path)]) == 2
    assert (root / "open.cpp").read_bytes() == before
