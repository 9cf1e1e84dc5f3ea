"""Bad input is never the consumer's failure, and "nothing written" means nothing was written (issue #20).

Every input the issue lists, each through the real entry point (`migrate.cli.main`, in process: an escaping
exception fails the test with its own traceback): one line `migrate <command>: ...` naming the flag, the documented
exit code, no traceback, and the user's tree byte-identical where nothing may be written. The verify cases run the
real preflight: the fixture shim built against b5421 (cached), the generated tiny model, llama.cpp's own loader in
a probe child.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from migrate import cli, gate
from migrate.build import BuildResult
from migrate.cli import main
from migrate.exit_codes import ExitCode
from migrate.rewrite import command as rewrite_command
from tests.conftest import LOCALLLM_HEADER, REPO

PRELUDE = '#include "llama.h"\n'
REWRITTEN = PRELUDE + "void f(llama_context * c) { llama_kv_self_clear(c); }\n"  # b5421 -> b7785 rewrites it
QUIET = ["--no-cache", "--no-diff"]


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: file bytes, symlink targets, folders: equal snapshots mean a byte-identical tree."""
    seen: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                seen[rel] = "dir"
            else:
                seen[rel] = path.read_bytes()
    return seen


def consumer(tmp_path: Path, files: dict[str, str] | None = None, name: str = "consumer") -> Path:
    root = tmp_path / name
    for rel, text in (files or {"a.cpp": REWRITTEN}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, says: str) -> str:
    """Run the command; assert its exit code and that stderr ends in one `migrate <command>: ...` line saying
    `says`, with no traceback anywhere."""
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse
        got = int(exc.code or 0)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    command = next(a for a in argv if not a.startswith("-") and a not in (cli_cache_value(argv),))
    assert "Traceback" not in captured.err + captured.out
    assert got == code, f"exit {got}, want {code}: {captured.err[-2000:]}"
    assert last.startswith(f"migrate {command}"), last
    assert says in last, last
    return last


def cli_cache_value(argv: list[str]) -> str | None:
    return argv[argv.index("--cache") + 1] if "--cache" in argv else None


# --- 1. apply: "nothing written" means nothing was written ---------------------------------------------------------


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--json", "/proc/llama-migrate-test.json", "--json '/proc/llama-migrate-test.json': cannot be written"),
    ("--json", "{tmp}/no/such/folder/p.json", "its folder"),
    ("--report", "{tmp}", "--report '{tmp}': is a folder"),
    ("--backup-dir", "/proc/llama-migrate-backups", "--backup-dir '/proc/llama-migrate-backups': cannot be written"),
])  # fmt: skip
def test_apply_checks_every_output_path_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str,
                                                       value: str, says: str) -> None:  # fmt: skip
    root = consumer(tmp_path)
    before = snapshot(root)
    value, says = value.format(tmp=tmp_path), says.format(tmp=tmp_path)
    one_line(capsys, ["apply", str(root), "--force", flag, value, *QUIET], 2, says)
    assert snapshot(root) == before


def test_apply_writes_when_outputs_are_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The control: the same tree and flags with writable outputs is rewritten, outputs written."""
    root = consumer(tmp_path)
    out = tmp_path / "plan.json"
    assert main(["apply", str(root), "--force", "--json", str(out), "--report", str(tmp_path / "r.md"),
                 "--backup-dir", str(tmp_path / "b"), *QUIET]) == 0  # fmt: skip
    assert (root / "a.cpp").read_text() != REWRITTEN and out.is_file()


def test_a_report_in_a_new_folder_is_still_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The report's folder is created (as before the checks): a missing one is not refused, an impossible one is."""
    root = consumer(tmp_path)
    report = tmp_path / "new" / "deeper" / "report.md"
    assert main(["plan", str(root), "--report", str(report), *QUIET]) == 0
    assert report.is_file()
    one_line(capsys, ["plan", str(root), "--report", "/proc/x/report.md", *QUIET], 2,
             "--report '/proc/x/report.md': cannot be written in /proc")  # fmt: skip


def test_apply_failing_after_writing_says_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An output that fails after the rewrite was written (a full disk) is exit 5, saying the files WERE written."""
    root = consumer(tmp_path)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rewrite_command, "_write_outputs", full_disk)
    last = one_line(capsys, ["apply", str(root), "--force", "--backup-dir", str(tmp_path / "b"), *QUIET], 5,
                    "1 file(s) WERE written")  # fmt: skip
    assert "No space left on device" in last
    assert (root / "a.cpp").read_text() != REWRITTEN


# --- 2. bad inputs to verify: exit 2 before any check, never "the library failed" -----------------------------------


@pytest.fixture(scope="module")
def library(localllm_old_build: BuildResult) -> Path:
    return Path(localllm_old_build.library)


def verify_argv(library: Path, model: Path, *extra: str) -> list[str]:
    return ["verify", "--lib", str(library), "--model", str(model), "--checks", "model_load", *extra]


def test_verify_refuses_a_text_file_as_model(tmp_path: Path, library: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "model.gguf"
    text.write_text("not a model\n")
    one_line(capsys, verify_argv(library, text), 2, f"--model '{text}': not a GGUF model (no GGUF magic")


def test_verify_refuses_a_truncated_gguf_with_llama_cpps_reason(tmp_path: Path, library: Path, tiny_model: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The first 1000 bytes of a real model pass the header check; llama.cpp's loader (probe child) says why not."""
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_model.read_bytes()[:1000])
    last = one_line(capsys, verify_argv(library, truncated), 2, "llama.cpp cannot load it")
    assert "gguf_init_from_file_impl" in last or "llama_model_load" in last  # llama.cpp's own words


def test_verify_refuses_a_model_truncated_in_its_tensor_data(tmp_path: Path, library: Path, tiny_model: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    data = tiny_model.read_bytes()
    truncated = tmp_path / "short.gguf"
    truncated.write_bytes(data[: len(data) * 9 // 10])
    one_line(capsys, verify_argv(library, truncated), 2, "llama.cpp cannot load it")


@pytest.mark.parametrize(("extra", "says"), [
    (("--max-tokens", "-5"), "--max-tokens -5: must be at least 1"),
    (("--max-tokens", "0"), "--max-tokens 0: must be at least 1"),
    (("--timeout", "0"), "--timeout 0.0: must be above 0"),
    (("--timeout", "nan"), "--timeout nan: is not a number"),
    (("--threads", "0"), "--threads 0: must be at least 1"),
    (("--tie-margin", "-1"), "--tie-margin -1.0: must be at least 0"),
    (("--json", "/proc/x/verify.json"), "--json '/proc/x/verify.json'"),
    (("--junit", "/proc/x/junit.xml"), "--junit '/proc/x/junit.xml'"),
])  # fmt: skip
def test_verify_refuses_bad_numbers_and_outputs(library: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str],
                                                extra: tuple[str, ...], says: str) -> None:  # fmt: skip
    one_line(capsys, verify_argv(library, tiny_model, *extra), 2, says)


def elf_copy(source: Path, dest: Path, offset: int, value: bytes) -> Path:
    data = bytearray(source.read_bytes())
    data[offset : offset + len(value)] = value
    dest.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize(("case", "says"), [
    ("truncated", "truncated or damaged"),
    ("32-bit", "a 32-bit ELF file; this host loads 64-bit"),
    ("other machine", "built for"),
    ("not elf", "not a shared library (no ELF header)"),
    ("folder", "is a folder, not a file"),
    ("dangling", "dangling symlink"),
])  # fmt: skip
def test_verify_refuses_libraries_this_host_cannot_load(tmp_path: Path, library: Path, tiny_model: Path,
                                                       capsys: pytest.CaptureFixture[str], case: str,
                                                       says: str) -> None:  # fmt: skip
    """A truncated ELF used to die with SIGBUS in every check, "the library crashed"; a 32-bit one gave ctypes
    internals per check. Now: exit 2 naming --lib, before any check."""
    bad = tmp_path / "lib.so"
    if case == "truncated":
        bad.write_bytes(library.read_bytes()[:200_000])
    elif case == "32-bit":
        elf_copy(library, bad, 4, b"\x01")  # EI_CLASS = ELFCLASS32
    elif case == "other machine":
        other = b"\xb7\x00" if os.uname().machine == "x86_64" else b"\x3e\x00"  # AArch64 / x86-64
        elf_copy(library, bad, 18, other)
    elif case == "not elf":
        bad.write_bytes(b"#!/bin/sh\n")
    elif case == "folder":
        bad.mkdir()
    elif case == "dangling":
        bad.symlink_to(tmp_path / "gone.so")
    last = one_line(capsys, verify_argv(bad, tiny_model, "--header", str(LOCALLLM_HEADER)), 2, says)
    assert f"migrate verify: --lib '{bad}': " in last


def test_verify_refuses_an_unrelated_library_with_the_consumers_header(library: Path, tiny_model: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A real shared library of this host that is not the consumer's: the functions the checklist would call
    through the header are not exported (was exit 3 with ctypes internals per check)."""
    candidates = [p for d in ("/lib", "/usr/lib", "/lib64", "/usr/lib64") for p in sorted(Path(d).glob("*/libm.so.6"))
                  + sorted(Path(d).glob("libm.so.6"))]  # fmt: skip
    assert candidates, "no system libm to stand for an unrelated library"
    unrelated = candidates[0]
    last = one_line(capsys, verify_argv(unrelated, tiny_model, "--header", str(LOCALLLM_HEADER)), 2,
                    "does not export")  # fmt: skip
    assert "localllm_" in last and "--header" in last


def test_verify_names_a_folder_given_as_header(tmp_path: Path, library: Path, tiny_model: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    one_line(capsys, verify_argv(library, tiny_model, "--header", str(tmp_path)), 2,
             f"--header '{tmp_path}': is a folder, not a file")  # fmt: skip


@pytest.mark.parametrize(("adapter", "says"), [
    (None, "no such file"),
    ("def generate(:\n", "syntax error at line 1"),
    ("raise RuntimeError('adapter needs a GPU')\n", "raises on import: RuntimeError: adapter needs a GPU"),
    ("import not_a_module_anywhere\n", "raises on import: ModuleNotFoundError"),
])  # fmt: skip
def test_verify_adapter_problems_are_bad_input(tmp_path: Path, library: Path, tiny_model: Path,
                                               capsys: pytest.CaptureFixture[str], adapter: str | None,
                                               says: str) -> None:  # fmt: skip
    config = tmp_path / "llama-migrate.toml"
    config.write_text('[verify]\nadapter = "my_adapter.py"\n')
    if adapter is not None:
        (tmp_path / "my_adapter.py").write_text(adapter)
    one_line(capsys, verify_argv(library, tiny_model, "--config", str(config)), 2, says)


@pytest.mark.parametrize("command", ["run", "gate"])
def test_run_and_gate_refuse_a_broken_adapter_and_a_text_model_before_building(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:  # fmt: skip
    """run/gate bind the consumer's API (adapter included) and read the model's header before anything is built."""
    from tests.conftest import LOCALLLM

    root = tmp_path / "localllm"
    shutil.copytree(LOCALLLM, root, ignore=shutil.ignore_patterns("build*"))
    config = root / "llama-migrate.toml"
    config.write_text(config.read_text() + '\n[verify]\nadapter = "adapter.py"\n')
    (root / "adapter.py").write_text("raise ImportError('needs numpy 3')\n")
    before = snapshot(root)
    one_line(capsys, [command, str(root), "--quiet", "--no-predict"], 2, "adapter")
    text_model = tmp_path / "model.gguf"
    text_model.write_text("hello\n")
    one_line(capsys, [command, str(root), "--quiet", "--model", str(text_model)], 2, "not a GGUF model")
    assert snapshot(root) == before


def test_without_a_llama_tree_the_model_is_parsed_as_gguf_instead(tmp_path: Path, tiny_model: Path) -> None:
    """A library whose llama.cpp tree cannot be found (no manifest, no paths in it) cannot be probed: the model is
    then read whole by the gguf reader, and a truncated one is still refused, never passed unchecked."""
    from verify.inputs import BadInput
    from verify.preflight import check_model
    from verify.session import Target

    libm = next(p for d in ("/lib", "/usr/lib") for p in sorted(Path(d).glob("*/libm.so.6")) + [Path(d) / "libm.so.6"]
                if p.is_file())  # fmt: skip
    target = Target(libm, LOCALLLM_HEADER, tiny_model, "build")
    assert "parsed as GGUF (llama.cpp's loader not probed" in check_model([target], "--model", tiny_model).model_probe
    truncated = tmp_path / "short.gguf"
    truncated.write_bytes(tiny_model.read_bytes()[:100_000])
    with pytest.raises(BadInput, match="not a readable GGUF model"):
        check_model([target], "--model", truncated)


def test_the_model_probe_loads_a_good_model_and_says_its_cost(library: Path, tiny_model: Path) -> None:
    """The control for the cases above, and the probe's cost (a child process loading the tiny model)."""
    from verify.modelprobe import ProbeStatus, probe_model
    from verify.observe import find_llama_tree

    result = probe_model(tiny_model, library, find_llama_tree(library))
    assert result.status is ProbeStatus.LOADED, result.reason
    assert result.seconds < 30


# --- 3. what used to print a traceback --------------------------------------------------------------------------


def test_a_symlink_loop_in_the_tree_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = consumer(tmp_path)
    (root / "loop1.cpp").symlink_to(root / "loop2.cpp")
    (root / "loop2.cpp").symlink_to(root / "loop1.cpp")
    before = snapshot(root)
    for command in ("plan", "apply"):
        extra = ["--force", "--no-report"] if command == "apply" else ["--no-report"]
        one_line(capsys, [command, str(root), *extra, *QUIET], 2, "is a symlink loop")
    assert snapshot(root) == before


def git_tree(tmp_path: Path) -> Path:
    root = consumer(tmp_path)
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def test_apply_refuses_a_bad_branch_name_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = git_tree(tmp_path)
    before = snapshot(root)
    one_line(capsys, ["apply", str(root), "--branch", "bad..name", "--no-report", *QUIET], 2,
             "--branch 'bad..name': not a valid git branch name")  # fmt: skip
    assert snapshot(root) == before


def test_binary_rules_files_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "rules.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    one_line(capsys, ["rules", "check", str(binary)], 2, "not a rules file (not UTF-8 text")
    root = consumer(tmp_path)
    one_line(capsys, ["plan", str(root), "--rules", str(binary), "--no-report", *QUIET], 2, "not a rules file")


def test_ctrl_c_during_apply_is_one_line_130_and_all_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Ctrl-C after the first of two files was replaced: both restored, no temporary file left, one line, 130."""
    root = consumer(tmp_path, {"a.cpp": REWRITTEN, "b.cpp": REWRITTEN})
    before = snapshot(root)
    real_replace = os.replace
    calls = []

    def interrupted(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr("migrate.rewrite.apply.os.replace", interrupted)
    one_line(capsys, ["apply", str(root), "--force", "--backup-dir", str(tmp_path / "b"), "--no-report", *QUIET],
             130, "interrupted (Ctrl-C)")  # fmt: skip
    assert len(calls) == 2 and snapshot(root) == before


def test_an_unforeseen_error_is_one_line_70_and_debug_shows_it(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    def bug(request: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(rewrite_command, "plan_only", bug)
    one_line(capsys, ["plan", str(REPO)], ExitCode.INTERNAL, "internal error, a bug in llama-migrate "
             "(ZeroDivisionError: a bug); set LLAMA_MIGRATE_DEBUG=1")  # fmt: skip
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ZeroDivisionError):
        main(["plan", str(REPO)])


# --- 4. an empty SRC is refused, never the current folder ---------------------------------------------------------


@pytest.mark.parametrize("command", ["plan", "apply", "build", "run", "gate", "api-diff", "mutate"])
def test_an_empty_src_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch, command: str) -> None:  # fmt: skip
    root = consumer(tmp_path)
    monkeypatch.chdir(root)  # what an unset "$SRC" would migrate
    before = snapshot(root)
    extra = {"plan": ["--no-report"], "apply": ["--force", "--no-report"], "build": ["--llama", "b5421"],
             "run": ["--quiet"], "gate": ["--quiet"], "api-diff": ["--from", "b5421", "--to", "b7785"],
             "mutate": ["--list"]}[command]  # fmt: skip
    one_line(capsys, [command, "", *extra], 2, "SRC '': an empty path")
    assert snapshot(root) == before


# --- 5. what was silently wrong ----------------------------------------------------------------------------------


def test_a_config_that_is_a_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = consumer(tmp_path)
    (root / "llama-migrate.toml").mkdir()
    one_line(capsys, ["plan", str(root), "--no-report", *QUIET], 2, "llama-migrate.toml: is a folder, not a config")


def test_build_refuses_a_non_source_file_and_a_missing_source(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    one_line(capsys, ["build", str(REPO / "README.md"), "--llama", "b5421"], 2, "not a C/C++ source file")
    one_line(capsys, ["build", str(tmp_path), "--source", "/none.cpp", "--llama", "b5421"], 2,
             "--source '/none.cpp': no such file")  # fmt: skip


def test_plan_refuses_a_target_no_tree_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As api-diff does (exit 2), instead of a plan that silently stops at the newest tree it has."""
    one_line(capsys, ["plan", str(consumer(tmp_path)), "--to", "b99999", "--no-report", *QUIET], 2, "--to b99999")


# --- 6. messages name the input ----------------------------------------------------------------------------------


def test_messages_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = consumer(tmp_path)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    one_line(capsys, ["plan", str(dangling), "--no-report", *QUIET], 2, "dangling symlink")
    one_line(capsys, ["--cache", "/proc/llama-migrate-cache", "plan", str(root), *QUIET], 2,
             "--cache '/proc/llama-migrate-cache': cannot be created")  # fmt: skip
    one_line(capsys, ["model", "--seed", "-5"], 2, "--seed -5: must be at least 0")
    one_line(capsys, ["plan", str(root), "--report", str(tmp_path), *QUIET], 2, f"--report '{tmp_path}': is a folder")
    # argparse: the sub-command's name and its help, on one line
    one_line(capsys, ["plan"], 2, "the following arguments are required: src (see `migrate plan --help`)")
    one_line(capsys, ["plan", str(root), "--bogus"], 2, "unrecognized arguments: --bogus (see `migrate plan --help`)")


def test_a_bad_mutants_entry_is_shown_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = ", ".join(f'{{ id = "src/x.c:f{i}:*", reason = "judged equivalent by review number {i}" }}'
                        for i in range(200))  # fmt: skip
    root = consumer(tmp_path, {"a.cpp": REWRITTEN, "llama-migrate.toml": f"mutants = [{entries}, {{ id = 3 }}]\n"})
    last = one_line(capsys, ["plan", str(root), "--no-report", *QUIET], 2, "item 201 of 201")
    assert "{'id': 3}" in last and len(last) < 1000


def test_the_console_script_prints_one_line_for_usage_errors(tmp_path: Path) -> None:
    """Out of process: the console script's own exit codes for an empty SRC and an argparse error."""
    for argv, code in ((["plan", ""], 2), (["verify"], 2), (["apply", "", "--bogus"], 2)):
        proc = subprocess.run([sys.executable, "-m", "migrate", *argv], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(f"migrate {argv[0]}: ")


# --- the documented exit-code table is the code's ------------------------------------------------------------------

TABLE_HEAD = "| command | code | meaning |"


def exit_code_table() -> str:
    """The documentation page that holds the exit-code table: README.md, else the one page of docs/ with it."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    holding = [page for page in pages if TABLE_HEAD in page.read_text(encoding="utf-8")]
    assert len(holding) == 1, f"the exit-code table should be on one page, found on {holding}"
    return holding[0].read_text(encoding="utf-8")


def readme_exit_codes() -> dict[str, set[int]]:
    """{command: codes} from the table (`| command | code | meaning |`); "every command" rows under "*"."""
    text = exit_code_table()
    table = text[text.index(TABLE_HEAD) :].split("\n\n", 1)[0].splitlines()[2:]
    codes: dict[str, set[int]] = {}
    for row in table:
        label, code = (cell.strip() for cell in row.strip("|").split("|")[:2])
        for command in ("*",) if label == "every command" else (c.strip(" `") for c in label.split(",")):
            codes.setdefault(command, set()).add(int(code))
    return codes


def test_readme_exit_code_table_matches_the_code() -> None:
    """Each command family's codes are its enum's (migrate/exit_codes.py, verify/outcomes.py), plus every
    command's `ExitCode`; the gate's are its failure classes'."""
    from migrate.exit_codes import (
        ApiDiffExit,
        BuildExit,
        ExitCode,
        GateExit,
        ModelExit,
        MutateExit,
        PlanExit,
        RulesExit,
        RunExit,
        VerifyExit,
    )

    everywhere = set(ExitCode)
    code_says: dict[tuple[str, ...], set[int]] = {
        ("plan", "apply"): set(PlanExit),
        ("verify",): set(VerifyExit),
        ("run",): set(RunExit),
        ("gate",): set(GateExit),
        ("sources", "build"): set(BuildExit),
        ("api-diff",): set(ApiDiffExit),
        ("model",): set(ModelExit),
        ("rules",): set(RulesExit),
        ("mutate",): set(MutateExit),
    }
    assert {GateExit.OK} | {kind.code for kind in gate.CLASSES} == set(GateExit)  # a class per code, a code per class
    documented = readme_exit_codes()
    assert documented["*"] == everywhere
    for names, codes in code_says.items():
        found = set().union(*(documented.get(name, set()) for name in names)) | documented["*"]
        assert found == codes | everywhere, f"{'/'.join(names)}: documented {sorted(found)}, code {sorted(codes)}"
    registered = set(cli.build_parser()._subparsers._group_actions[0].choices)  # every command has rows
    assert registered <= {name for names in code_says for name in names}, registered


@pytest.mark.parametrize(("argv", "says"), [
    (["sources", ""], "an empty llama.cpp version"),
    (["model", "--llama", ""], "an empty llama.cpp version"),
    (["rules", "check", ""], "FILE '': an empty path"),
    (["rules", "check", "/"], "FILE '/': is a folder, not a file"),
    (["rules", "draft", "--from", "b7785", "--to", "b10361", "--out", "/proc/x/y.yaml"], "--out '/proc/x/y.yaml'"),
    (["gate", "--max-tps-regression", "nan", "--quiet"], "argument --max-tps-regression: must be >= 0, got nan"),
    (["api-diff", "--from", "b5421", "--to", "b7785", "--json", "/proc/x/d.json"], "--json '/proc/x/d.json'"),
])  # fmt: skip
def test_empty_and_unwritable_values_of_the_other_commands(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                           says: str) -> None:  # fmt: skip
    one_line(capsys, argv, 2, says)


def test_an_empty_backup_dir_is_refused_not_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = consumer(tmp_path)
    before = snapshot(root)
    one_line(capsys, ["apply", str(root), "--force", "--backup-dir", "", *QUIET], 2, "--backup-dir '': an empty path")
    assert snapshot(root) == before


def test_a_real_ctrl_c_is_one_line_and_130(tmp_path: Path) -> None:
    """SIGINT to the console script while it plans (after it said which config it read): one line, exit 130."""
    import signal

    from tests.conftest import LOCALLLM

    root = tmp_path / "localllm"
    shutil.copytree(LOCALLLM, root, ignore=shutil.ignore_patterns("build*"))
    proc = subprocess.Popen([sys.executable, "-m", "migrate", "plan", str(root), "--no-cache", "--no-report"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "config: ...": past the imports, inside the command
    assert first.startswith("config: "), first
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == ExitCode.INTERRUPTED, rest
    assert "Traceback" not in rest and rest.strip().splitlines() == ["migrate plan: interrupted (Ctrl-C)"]
