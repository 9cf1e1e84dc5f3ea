"""Answers instead of crashes (issue #11): every command turns bad input into one line and its documented exit code,
never a traceback; the consumer config is validated, not coerced; a plan says what it did not check (files read by
name only, code newer than --from, headers included from llama.cpp's tree); the decode template only adds cases that
can run. Fast: real libclang parses against the cached trees, nothing is built."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from migrate import apidiff, build, config, cuda, pipeline, sources
from migrate.cli import build_parser, error_line, main
from migrate.cli.run import run_request
from migrate.paths import data_dir
from migrate.rewrite import apply, edits, rules
from migrate.rewrite import command as rewrite_command
from migrate.rewrite.apicheck import RULE_ID, ApiTarget
from migrate.rewrite.engine import EngineConfig, build_plan
from migrate.rewrite.plan import ACTION
from migrate.sources import SourceTree
from tests.conftest import LOCALLLM, REPO
from verify.errors import ToolError

RULESET = rules.load_rules(data_dir("rules") / "b5421-b7785.yaml")
PRELUDE = '#include "llama.h"\n'
NAPI_ADDON = '#include <napi.h>\n#include "llama.h"\nvoid reset(llama_context * c) {\n    llama_kv_self_clear(c);\n}\n'
SYNTAX_ERROR = PRELUDE + "void f(llama_context * ctx) { llama_kv_self_clear(ctx) }\n"
# Code written for a llama.cpp newer than b5421: swa_full (a field added later) and llama_kv_self_seq_pos_min (added
# after b5421, removed again before b7785).
NEWER_CODE = """\
#include "llama.h"
llama_context * open(llama_model * model) {
    llama_context_params p = llama_context_default_params();
    p.swa_full = false;
    llama_context * ctx = llama_init_from_model(model, p);
    llama_pos lo = llama_kv_self_seq_pos_min(ctx, 0);
    (void) lo;
    return ctx;
}
"""


def tree_with(tmp_path: Path, files: dict[str, str], name: str = "consumer") -> Path:
    root = tmp_path / name
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def localllm_with(tmp_path: Path, name: str, extra: dict[str, str] | None = None,
                  config_text: str | None = None) -> Path:  # fmt: skip
    """A copy of the fixture (it has a C API header, so run/gate get as far as the plan), with changes; `name` keeps
    run's scratch copies apart (they are named by tree, second and process)."""
    root = tmp_path / name
    shutil.copytree(LOCALLLM, root)
    for rel, text in (extra or {}).items():
        (root / rel).write_text(text)
    if config_text is not None:
        (root / "llama-migrate.toml").write_text(config_text)
    return root


# --- one base class, one line, the documented code ---------------------------------------------------------------


@pytest.mark.parametrize("error", [config.ConfigError, sources.SourceError, build.BuildError, apidiff.ApiDiffError,
                                   apply.ApplyRefused, edits.InputError, rules.RuleError, pipeline.UsageError,
                                   cuda.CudaError])  # fmt: skip
def test_every_input_error_is_a_tool_error(error: type[Exception]) -> None:
    assert issubclass(error, ToolError)


def test_error_line_is_one_line() -> None:
    assert error_line(ValueError("a\n  b"), "plan") == "migrate plan: a b"


def bad_inputs(tmp_path: Path) -> list[tuple[str, list[str], int, str]]:
    """(case, argv, exit code, what the line must say) for every command."""
    missing = str(tmp_path / "missing")
    napi = str(tree_with(tmp_path, {"addon.cpp": NAPI_ADDON}, "napi"))
    syntax = str(tree_with(tmp_path, {"bad.cpp": SYNTAX_ERROR}, "syntax"))
    ok = {"a.cpp": PRELUDE + "void f(llama_context * c) { llama_kv_self_clear(c); }\n"}
    enable_string = str(tree_with(tmp_path, {**ok, "llama-migrate.toml": 'enable = "kv-unified"\n'}, "enable_str"))
    syntactic_string = str(tree_with(tmp_path, {**ok, "llama-migrate.toml": 'allow_syntactic = "false"\n'}, "synt"))
    bad_toml = str(tree_with(tmp_path, {**ok, "llama-migrate.toml": "enable = [\n"}, "bad_toml"))
    bad_db = str(tree_with(tmp_path, {**ok, "compile_commands.json": '[{"directory": "/"}]'}, "bad_db"))
    plain = str(tree_with(tmp_path, ok, "plain"))
    plan = ["--no-cache", "--no-report", "--no-diff"]
    cases = [
        ("plan missing path", ["plan", missing, *plan], 2, "no such file or directory"),
        ("plan enable string", ["plan", enable_string, *plan], 2, "enable must be a list of rule ids"),
        ("plan allow_syntactic string", ["plan", syntactic_string, *plan], 2, "allow_syntactic must be a boolean"),
        ("plan bad toml", ["plan", bad_toml, *plan], 2, "not valid TOML"),
        ("plan unknown rule", ["plan", plain, "--enable", "nope", *plan], 2, "opt-in rules there are"),
        ("plan syntax error", ["plan", syntax, *plan], 2, "syntax errors"),
        ("plan bad --from", ["plan", plain, "--from", "notatag", *plan], 2, "no rules for notatag → b7785"),
        ("plan bad --source-tree", ["plan", plain, "--source-tree", "notatag", *plan], 2, "neither a build tag"),
        ("plan no rules for --to", ["plan", plain, "--to", "b5421", *plan], 2, "no rules for b5421 → b5421"),
        ("plan bad option value", ["plan", plain, "--option", "error_message_arg=x", *plan], 2, "expected an integer"),
        ("plan --json nowhere", ["plan", plain, "--json", f"{missing}/p.json", *plan], 2, "--json"),
        ("plan bad compile db", ["plan", bad_db, *plan], 2, "not a compile database"),
        ("apply name only", ["apply", napi, "--force", "--backup-dir", missing, *plan], 3, "include paths"),
        ("apply syntax error", ["apply", syntax, "--force", *plan], 2, "syntax errors"),
        ("apply bad config", ["apply", enable_string, "--force", *plan], 2, "enable must be"),
        ("verify missing lib", ["verify", "--lib", f"{missing}.so"], 2, "no such library"),
        ("build missing src", ["build", missing, "--llama", "b5421"], 2, "no such file or directory"),
        ("sources bad spec", ["sources", "notatag"], 2, "neither a build tag"),
        ("api-diff bad --from", ["api-diff", "--from", "notatag", "--to", "b7785"], 2, "neither a build tag"),
        ("model bad --llama", ["model", "--llama", missing], 2, "neither a build tag"),
    ]
    for command in ("run", "gate"):
        fixture, run_syntax, run_napi, run_enable, run_syntactic = (
            localllm_with(tmp_path, f"{command}-fixture"),
            str(localllm_with(tmp_path, f"{command}-syntax", {"custom_files/bad.cpp": SYNTAX_ERROR})),
            str(localllm_with(tmp_path, f"{command}-napi", {"custom_files/addon.cpp": NAPI_ADDON})),
            str(localllm_with(tmp_path, f"{command}-enable", config_text='enable = "kv-unified"\n')),
            str(localllm_with(tmp_path, f"{command}-syntactic", config_text='allow_syntactic = "false"\n')),
        )
        rule_fixture, to_fixture = localllm_with(tmp_path, f"{command}-rule"), localllm_with(tmp_path, f"{command}-to")
        cases += [
            (f"{command} missing src", [command, missing, "--quiet"], 2, "no such file or directory"),
            (f"{command} enable string", [command, run_enable, "--quiet"], 2, "enable must be a list"),
            (f"{command} allow_syntactic string", [command, run_syntactic, "--quiet"], 2, "allow_syntactic must be"),
            (f"{command} unknown rule", [command, str(rule_fixture), "--enable", "nope", "--quiet"], 2,
             "opt-in rules there are: flash-attn-auto, kv-unified"),
            (f"{command} no rules for --to", [command, str(to_fixture), "--to", "b5421", "--quiet"], 2, "no rules for"),
            (f"{command} bad --from", [command, str(fixture), "--from", "notatag", "--quiet"], 2, "neither a build"),
            (f"{command} syntax error", [command, run_syntax, "--quiet"], 2, "syntax errors"),
            (f"{command} name only", [command, run_napi, "--quiet"], 2, "matched by name only"),
            (f"{command} unknown check", [command, str(fixture), "--checks", "nope", "--quiet"], 2, "unknown check"),
        ]  # fmt: skip
    return cases


def test_no_command_prints_a_traceback_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command, a set of bad inputs each: the documented exit code and one line `migrate <command>: ...`
    naming the problem — in process, so an escaping exception fails the test with its own traceback."""
    failures = []
    for case, argv, code, said in bad_inputs(tmp_path):
        try:
            got = main(argv)
        except SystemExit as exc:  # argparse: its own usage line, exit 2
            got = int(exc.code or 0)
        err = capsys.readouterr().err
        last = [line for line in err.splitlines() if line.strip()][-1:] or [""]
        command = argv[0]
        if got != code or "Traceback" in err or not last[0].startswith(f"migrate {command}: ") or said not in last[0]:
            failures.append(f"{case}: exit {got} (want {code}); last line {last[0]!r}")
    assert not failures, "\n".join(failures)


def test_the_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    bad = tree_with(tmp_path, {"a.cpp": PRELUDE, "llama-migrate.toml": 'allow_syntactic = "false"\n'})
    for argv in (["plan", str(tmp_path / "missing")], ["run", str(bad), "--quiet"], ["gate", str(bad), "--quiet"],
                 ["verify", "--lib", str(tmp_path / "missing.so")]):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "migrate", *argv], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        assert proc.stderr.strip().splitlines()[-1].startswith(f"migrate {argv[0]}: ")


# --- the consumer config: validated, never coerced --------------------------------------------------------------


@pytest.mark.parametrize(("text", "key", "shown"), [
    ('enable = "kv-unified"', "enable", "'kv-unified' (a string)"),
    ("enable = [1]", "enable", "[1] (a list)"),
    ('allow_syntactic = "false"', "allow_syntactic", "'false' (a string)"),
    ("allow_syntactic = 0", "allow_syntactic", "0 (an integer)"),
    ("header = 3", "header", "3 (an integer)"),
    ("model = true", "model", "True (a boolean)"),
    ('normalise = "fancy"', "normalise", "'fancy' (a string)"),
    ("llama_checkout = []", "llama_checkout", "[] (a list)"),
    ("options = [1]", "options", "[1] (a list)"),
    ("options = { clear_data = [true] }", "options", "options.clear_data is [True] (a list)"),
    ('tie_margin = "0.1"', "tie_margin", "'0.1' (a string)"),
    ("verify = 1", "verify", "1 (an integer)"),
])  # fmt: skip
def test_config_values_are_validated_by_type(tmp_path: Path, text: str, key: str, shown: str) -> None:
    (tmp_path / "llama-migrate.toml").write_text(text + "\n")
    with pytest.raises(config.ConfigError) as raised:
        config.load_config(tmp_path)
    message = str(raised.value)
    assert f"{key} must be {config.EXPECTED[key]}" in message and shown in message


def test_config_keeps_good_values_and_the_verify_table(tmp_path: Path) -> None:
    (tmp_path / "llama-migrate.toml").write_text(
        'enable = ["kv-unified"]\nallow_syntactic = false\nnormalise = "strip"\n'
        "options = { clear_data = true, error_message_arg = 1, error_function = \"SetError\" }\n"
        '[verify]\nprefix = "textgen_"\n[verify.generate]\nmax_tokens = 8\n'
    )
    loaded = config.load_config(tmp_path)
    assert loaded.enable == ("kv-unified",) and loaded.allow_syntactic is False and loaded.normalise == "strip"
    assert loaded.options == {"clear_data": "true", "error_message_arg": "1", "error_function": "SetError"}
    assert loaded.verify == {"prefix": "textgen_", "generate": {"max_tokens": 8}}


def test_unknown_rule_id_is_refused_with_the_opt_in_ids() -> None:
    with pytest.raises(rules.RuleError, match=r"no rule 'kv-unifed'.*opt-in rules there are: flash-attn-auto, kv-un"):
        RULESET.active({"kv-unifed"})


# --- a plan says what it did not check ---------------------------------------------------------------------------


def test_files_read_by_name_only_make_the_plan_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree_with(tmp_path, {"addon.cpp": NAPI_ADDON})
    out = tmp_path / "plan.json"
    assert main(["plan", str(root), "--no-cache", "--no-report", "--no-diff", "--json", str(out)]) == 4
    err = capsys.readouterr().err
    assert "files: 0 parsed with their headers, 1 by name only" in err
    assert "BY NAME ONLY: addon.cpp: 'napi.h' file not found (line 1)" in err
    assert re.search(r"API diff .*: 0 use\(s\) covered by rules, 0 manual, 0 to review — it covered nothing: no file "
                     r"was parsed with its headers \(1 by name only\)", err)  # fmt: skip
    assert json.loads(out.read_text())["files"][0]["mode"] == "tree-sitter"
    # with a file parsed fully beside it, the line says what it checked and what it did not
    (root / "other.cpp").write_text(PRELUDE + "int n(llama_context * c) { return llama_n_ctx(c); }\n")
    assert main(["plan", str(root), "--no-cache", "--no-report", "--no-diff"]) == 4
    assert "in 1 file(s) parsed with their headers; NOT checked: 1 file(s) by name only" in capsys.readouterr().err


def test_apply_says_which_kind_of_name_only_edit_it_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unparsed = tree_with(tmp_path, {"addon.cpp": NAPI_ADDON}, "unparsed")
    newer = tree_with(tmp_path, {"open.cpp": NEWER_CODE}, "newer")
    args = ["--no-cache", "--no-report", "--no-diff", "--force", "--backup-dir", str(tmp_path / "backups")]
    assert main(["apply", str(unparsed), *args]) == 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "libclang could not parse ('napi.h' file not found (line 1)): fix the include paths" in line
    assert "does not declare" not in line
    assert main(["apply", str(newer), *args]) == 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 of llama_kv_self_seq_pos_min (open.cpp:6), which llama.cpp b5421 does not declare" in line
    assert "name-only by nature" in line and "newer than --from" in line and "include paths" not in line


def test_code_newer_than_from_is_reported_with_its_evidence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree_with(tmp_path, {"open.cpp": NEWER_CODE})
    out, report = tmp_path / "plan.json", tmp_path / "report.md"
    assert main(["plan", str(root), "--no-cache", "--no-diff", "--json", str(out), "--report", str(report)]) == 4
    err = capsys.readouterr().err
    assert "NEWER THAN --from: the code uses swa_full (open.cpp:4), llama_kv_self_seq_pos_min (open.cpp:6)" in err
    evidence = {(e["name"], e["line"]) for e in json.loads(out.read_text())["newer_than_from"]}
    assert evidence == {("swa_full", 4), ("llama_kv_self_seq_pos_min", 6)}
    assert "The code looks newer than --from b5421" in report.read_text()


def fake_tree(root: Path, files: dict[str, str]) -> SourceTree:
    """A minimal llama.cpp tree: include/llama.h, ggml/, and the files given."""
    for rel, text in {"include/llama.h": "#pragma once\nstruct llama_context;\n", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "ggml" / "include").mkdir(parents=True, exist_ok=True)
    return SourceTree(root, root.name, root.name, "0" * 40, f"path:{root}")


def test_headers_included_from_the_tree_are_diffed_and_shadowing_is_flagged(tmp_path: Path) -> None:
    """src/helper.h is not public: its re-signatured function is a manual action like a public one; a new
    common/helper.h that comes first in the include order makes `#include "helper.h"` another file; a header gone
    at the target is an action at its #include."""
    old = fake_tree(tmp_path / "old", {"src/helper.h": "#pragma once\nint helper_count(const char * s);\n",
                                       "src/gone.h": "#pragma once\nint gone_value(void);\n"})  # fmt: skip
    new = fake_tree(tmp_path / "new", {"src/helper.h": "#pragma once\nint helper_count(const char * s, int n);\n",
                                       "common/helper.h": "#pragma once\nint common_helper(void);\n"})  # fmt: skip
    code = ('#include "llama.h"\n#include "helper.h"\n#include "src/gone.h"\n'
            'int f() { return helper_count("x") + gone_value(); }\n')  # fmt: skip
    root = tree_with(tmp_path, {"a.cpp": code})
    engine = EngineConfig(root, old.path, RULESET, extra_flags=(f"-I{old.path / 'src'}",),
                          api=ApiTarget(old, new, tmp_path / "cache"))  # fmt: skip
    plan = build_plan(engine)
    actions = {(m.line, m.message.split(":")[0]) for m in plan.manual if m.rule == RULE_ID and m.kind == ACTION}
    assert (4, "`helper_count`") in actions  # re-signatured in src/helper.h
    shadow = next(m for m in plan.manual if m.line == 2 and m.rule == RULE_ID)
    assert "finds `src/helper.h` at old, but at new it finds `common/helper.h` (new there)" in shadow.message
    assert (shadow.old, shadow.new) == ("src/helper.h", "common/helper.h")
    gone = next(m for m in plan.manual if m.line == 3 and m.rule == RULE_ID)
    assert "`src/gone.h`, included here from llama.cpp's tree, does not exist at new" in gone.message
    assert plan.api_summary["private_headers"]["src/helper.h"] == "compared: 0 removed, 1 changed"
    assert "Headers this tree includes from llama.cpp's tree that are not public" in plan.api_section


def test_unicode_h_shadowed_by_common_unicode_h_at_b7836(old_tree: SourceTree, new_tree: SourceTree,
                                                         tmp_path: Path) -> None:  # fmt: skip
    code = PRELUDE + '#include "unicode.h"\n#include <string>\nsize_t n(const std::string & s) ' \
                     "{ return unicode_cpts_from_utf8(s).size(); }\n"  # fmt: skip
    root = tree_with(tmp_path, {"u.cpp": code})
    engine = EngineConfig(root, old_tree.path, RULESET, extra_flags=(f"-I{old_tree.path / 'src'}",),
                          api=ApiTarget(old_tree, new_tree))  # fmt: skip
    plan = build_plan(engine)
    [item] = [m for m in plan.actions if m.rule == RULE_ID]
    assert item.line == 2 and "`common/unicode.h` (new there)" in item.message
    assert "src/unicode.h" in plan.api_summary["private_headers"]


# --- the decode template: only cases that can run -----------------------------------------------------------------

NESTED_CHECK = """\
#include <string>
struct Worker {
    void SetError(const std::string & message);
    bool Execute(llama_context * ctx, llama_batch batch) {
        int r = llama_decode(ctx, batch);
        if (r != 0) {
            if (r == 1) {
                SetError("no KV slot");
            } else {
                SetError("Eval has failed");
            }
            return false;
        }
        return true;
    }
};
"""


def plan_snippet(tmp_path: Path, code: str, options: dict[str, str] | None = None) -> tuple[str, list[str]]:
    root = tree_with(tmp_path, {"w.cpp": PRELUDE + code})
    from migrate.sources import resolve

    plan = build_plan(EngineConfig(root, resolve("b5421").path, RULESET, options or {}))
    path = (root / "w.cpp").resolve()
    after = plan.new_contents().get(path, path.read_bytes()).decode()[len(PRELUDE) :]
    return after, [a.message for a in plan.advisories]


def test_decode_switch_goes_where_every_nonzero_code_can_arrive(tmp_path: Path) -> None:
    after, _ = plan_snippet(tmp_path, NESTED_CHECK, {"error_function": "SetError"})
    then_branch = after[after.index("if (r == 1) {") : after.index("} else {")]
    assert "switch" not in then_branch  # `r == 1` admits only code 1: no switch there
    else_branch = after[after.index("} else {") :]
    assert "switch (r)" in else_branch and "case 1:" not in else_branch  # 1 never reaches the else
    assert "case 2:" in else_branch and "case -1:" in else_branch and "r < -1 ?" in else_branch


def test_decode_cases_follow_a_less_than_zero_check(tmp_path: Path) -> None:
    code = """\
void set_error(const char * message);
int run(llama_context * ctx, llama_batch batch) {
    int r = llama_decode(ctx, batch);
    if (r < 0) {
        set_error("decode failed");
        return 1;
    }
    return 0;
}
"""
    after, _ = plan_snippet(tmp_path, code)
    assert "case -1:" in after and "case 1:" not in after and "case 2:" not in after
    assert 'default: decode_message = "decode failed" " (llama_decode: fatal error' in after


def test_decode_cases_leave_out_codes_an_earlier_retry_took(tmp_path: Path) -> None:
    code = """\
void set_error(const char * message);
bool run(llama_context * ctx, llama_batch batch) {
    for (int attempt = 0; attempt < 3; ++attempt) {
        int ret = llama_decode(ctx, batch);
        if (ret > 0) {
            continue;
        }
        if (ret != 0) {
            set_error("decode failed");
            return false;
        }
        return true;
    }
    return false;
}
"""
    after, _ = plan_snippet(tmp_path, code)
    assert "switch (ret)" in after and "case -1:" in after
    assert "case 1:" not in after and "case 2:" not in after and "unknown error" not in after


def test_decode_check_that_already_tells_codes_apart_is_left(tmp_path: Path) -> None:
    code = """\
void set_error(const char * message);
int run(llama_context * ctx, llama_batch batch) {
    int r = llama_decode(ctx, batch);
    if (r != 0) {
        if (r == 1) {
            set_error("no KV slot");
        } else {
            if (r == 2) {
                set_error("aborted");
            }
        }
        return 1;
    }
    return 0;
}
"""
    after, advisories = plan_snippet(tmp_path, code)
    assert after == code
    assert any("already tells the return codes apart (line 7: code 1, line 10: code 2)" in a for a in advisories)


def test_decode_advisory_names_the_error_calls_it_saw(tmp_path: Path) -> None:
    after, advisories = plan_snippet(tmp_path, NESTED_CHECK)
    assert after == NESTED_CHECK
    [message] = advisories
    assert "it calls `SetError(...)`" in message and "set option error_function=SetError" in message


# --- report text speaks to the consumer; reports go beside its tree's output, not into ./reports -----------------


def test_shipped_text_cites_sources_not_our_documents() -> None:
    shipped = [*sorted((REPO / "rules").glob("*.yaml")), *sorted((REPO / "templates").glob("decode*.j2")),
               *sorted((REPO / "migrate").rglob("*.py"))]  # fmt: skip
    for path in shipped:
        text = path.read_text()
        for phrase in ("the seed", "seed item", "seed's", "the notes'", "/work/", "/home/"):
            assert phrase not in text, f"{path.relative_to(REPO)}: {phrase!r}"
    from migrate.rewrite.engine import CLEAR_FALSE

    assert "seed" not in CLEAR_FALSE and "PR 14030" in CLEAR_FALSE


def test_default_report_goes_to_the_cache_and_its_path_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tree_with(tmp_path, {"a.cpp": PRELUDE + "void f(llama_context * c) { llama_kv_self_clear(c); }\n"})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cache = tmp_path / "cache"
    monkeypatch.setattr(rewrite_command, "cache_root", lambda override=None: cache)  # the trees stay where they are
    assert main(["plan", str(root), "--no-cache", "--no-diff"]) == 0
    report = cache / "reports" / "consumer-b5421-b7785.md"
    assert report.is_file() and not (elsewhere / "reports").exists()
    assert f"report: {report}" in capsys.readouterr().err
    parser = build_parser()
    monkeypatch.setattr(pipeline, "cache_root", lambda override=None: cache)
    def request(*argv: str) -> pipeline.RunRequest:
        return run_request(parser.parse_args(["run", *argv]))

    assert pipeline.report_dir(request()) == cache / "reports"
    assert pipeline.report_dir(request("--out", "x")) == Path("x")
