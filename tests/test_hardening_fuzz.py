"""Fuzz-style: generated bad inputs into plan, apply, verify and `rules check` (issue #20).

A fixed seed and a bounded count, so CI runs the same cases every time in well under a minute: random bytes as the
consumer config, as a source file, as a rules file and as a model; odd paths (empty, blank, control characters,
too long, dangling and looping symlinks, folders for files, device and /proc files) in every path argument. Each
case asserts what the toolkit promises for any input: no traceback, no internal error (exit 70), an exit code the
README documents for that command, one `migrate <command>: ...` line for bad input, and the consumer's tree
byte-identical whenever nothing was to be written (always for plan, verify and rules check; for apply unless it
reports done).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrate.build import BuildResult
from migrate.cli import main
from migrate.exit_codes import ExitCode
from tests.test_hardening_inputs import LOCALLLM_HEADER, REWRITTEN, readme_exit_codes, snapshot

# CI: this seed and count; LLAMA_MIGRATE_FUZZ_SEED / _CASES explore further by hand (a finding becomes a fixed test)
SEED = int(os.environ.get("LLAMA_MIGRATE_FUZZ_SEED", "20"))
CASES = int(os.environ.get("LLAMA_MIGRATE_FUZZ_CASES", "40"))
TOML_PIECES = ["enable", "options", "model", "header", "allow_syntactic", "verify", "mutants", "tie_margin", "=",
               "[", "]", "{", "}", '"', "true", "1e999", "-0", "[[mutants]]", "[verify]", "\n", "\\u0000",
               "nan"]  # fmt: skip
YAML_PIECES = ["migration:", "from:", "to:", "rules:", "- id:", "kind:", "rename", "&a", "*a", "!!python/object",
               "{", "[", "]", "'", '"', "\n  ", "\n", ": ", "- ", "~", "<<:"]  # fmt: skip


@dataclass
class Case:
    name: str
    argv: list[str]
    command: str  # the README's name for it
    tree: Path | None  # the consumer tree that must stay byte-identical (unless `wrote` says it may have changed)
    wrote: set[int]  # exit codes after which the tree may have changed (apply: done)


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 400)))


def random_text(rng: random.Random, pieces: list[str]) -> bytes:
    words = [rng.choice(pieces) if rng.random() < 0.7 else chr(rng.randrange(32, 0x2FF)) for _ in range(60)]
    return " ".join(words).encode("utf-8", errors="replace")


def odd_path(rng: random.Random, scratch: Path) -> str:
    loop_a, loop_b = scratch / "loop_a", scratch / "loop_b"
    if not loop_a.is_symlink():
        loop_a.symlink_to(loop_b)
        loop_b.symlink_to(loop_a)
        (scratch / "dangling").symlink_to(scratch / "nowhere")
        (scratch / "folder.json").mkdir()
    return rng.choice(["", " ", "\t", "a\nb", "x" * 300, str(scratch / ("y" * 300) / "z"), str(loop_a),
                       str(scratch / "dangling"), str(scratch / "folder.json"), str(scratch / "nö" / "dïr" / "f"),
                       "/dev/null", "/proc/self/status", "/proc/none/x",
                       str(scratch / "missing" / "f.json")])  # fmt: skip


def tree(tmp_path: Path, index: int, files: dict[str, bytes]) -> Path:
    root = tmp_path / f"case{index}"
    root.mkdir()
    for rel, data in {"a.cpp": REWRITTEN.encode(), **files}.items():
        (root / rel).write_bytes(data)
    return root


PLAN = ["--no-cache", "--no-diff", "--no-report"]


def config_case(rng: random.Random, tmp_path: Path, i: int, env: dict[str, Path]) -> Case:
    data = random_bytes(rng) if rng.random() < 0.4 else random_text(rng, TOML_PIECES)
    root = tree(tmp_path, i, {"llama-migrate.toml": data})
    return Case("config bytes", ["plan", str(root), *PLAN], "plan", root, set())


def source_case(rng: random.Random, tmp_path: Path, i: int, env: dict[str, Path]) -> Case:
    data = random_bytes(rng) if rng.random() < 0.5 else REWRITTEN.encode() + random_text(rng, ["{", "}", "(", ";"])
    root = tree(tmp_path, i, {"b.cpp": data})
    if rng.random() < 0.5:
        return Case("source bytes", ["plan", str(root), *PLAN], "plan", root, set())
    argv = ["apply", str(root), "--force", "--backup-dir", str(tmp_path / f"backups{i}"), *PLAN]
    return Case("source bytes", argv, "apply", root, {0, 1, 4})


def rules_case(rng: random.Random, tmp_path: Path, i: int, env: dict[str, Path]) -> Case:
    rules = tmp_path / f"rules{i}.yaml"
    rules.write_bytes(random_bytes(rng) if rng.random() < 0.4 else random_text(rng, YAML_PIECES))
    if rng.random() < 0.5:
        return Case("rules bytes", ["rules", "check", str(rules)], "rules", None, set())
    root = tree(tmp_path, i, {})
    return Case("rules bytes", ["plan", str(root), "--rules", str(rules), *PLAN], "plan", root, set())


def model_case(rng: random.Random, tmp_path: Path, i: int, env: dict[str, Path]) -> Case:
    model = tmp_path / f"model{i}.gguf"
    body = random_bytes(rng)
    if rng.random() < 0.5:  # past the magic: a version, counts and garbage for llama.cpp's own loader to refuse
        body = b"GGUF" + rng.choice([b"\x03\x00\x00\x00", b"\x02\x00\x00\x00", b"\x09\x00\x00\x00"]) + body
    model.write_bytes(body)
    argv = ["verify", "--lib", str(env["library"]), "--header", str(LOCALLLM_HEADER), "--model", str(model),
            "--checks", "model_load"]  # fmt: skip
    return Case("model bytes", argv, "verify", None, set())


def path_case(rng: random.Random, tmp_path: Path, i: int, env: dict[str, Path]) -> Case:
    scratch = tmp_path / "odd"
    scratch.mkdir(exist_ok=True)
    odd = odd_path(rng, scratch)
    root = tree(tmp_path, i, {})
    verify = ["verify", "--lib", str(env["library"]), "--header", str(LOCALLLM_HEADER), "--model", str(env["model"]),
              "--checks", "model_load"]  # fmt: skip
    choices = [
        (["plan", odd, *PLAN], "plan", None, set()),
        (["apply", odd, "--force", *PLAN], "apply", None, set()),
        (["plan", str(root), "--json", odd, *PLAN], "plan", root, set()),
        (["apply", str(root), "--force", "--json", odd, "--backup-dir", str(tmp_path / f"b{i}"), *PLAN], "apply",
         root, {0, 1, 4}),
        (["apply", str(root), "--force", "--backup-dir", odd, *PLAN], "apply", root, {0, 1, 4}),
        (["plan", str(root), "--rules", odd, *PLAN], "plan", root, set()),
        (["rules", "check", odd], "rules", None, set()),
        ([*verify, "--model", odd], "verify", None, set()),
        ([*verify, "--lib", odd], "verify", None, set()),
        ([*verify, "--json", odd], "verify", None, set()),
    ]  # fmt: skip
    argv, command, kept, wrote = rng.choice(choices)
    return Case(f"odd path {odd[:40]!r}", argv, command, kept, wrote)


MAKERS: list[Callable[[random.Random, Path, int, dict[str, Path]], Case]] = [
    config_case, source_case, rules_case, model_case, path_case]  # fmt: skip


@pytest.fixture(scope="module")
def env(localllm_old_build: BuildResult, tiny_model: Path) -> dict[str, Path]:
    return {"library": Path(localllm_old_build.library), "model": tiny_model}


def test_generated_bad_inputs_never_crash_and_never_touch_the_tree(tmp_path: Path, env: dict[str, Path],
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative odd paths ("a\nb") that are fine outputs land here, not in the checkout
    rng = random.Random(SEED)
    documented = readme_exit_codes()
    failures: list[str] = []
    seen: dict[str, int] = {}
    for i in range(CASES):
        case = MAKERS[i % len(MAKERS)](rng, tmp_path, i, env)  # every kind, in turn
        before = snapshot(case.tree) if case.tree else None
        try:
            code = main(case.argv)
        except SystemExit as exc:  # argparse: one line, exit 2
            code = int(exc.code or 0)
        except BaseException as exc:  # noqa: BLE001 - the finding itself
            failures.append(f"{i} {case.name} {case.argv[:2]}: raised {type(exc).__name__}: {exc}")
            continue
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        allowed = documented[case.command] | documented["*"]
        problems = []
        if "Traceback" in err:
            problems.append("a traceback")
        if code == ExitCode.INTERNAL:
            problems.append(f"internal error: {lines[-1:]}")
        elif code not in allowed:
            problems.append(f"exit {code} is not documented for {case.command} ({sorted(allowed)})")
        if code == 2 and not (lines and lines[-1].startswith(f"migrate {case.command}")):
            problems.append(f"no one-line reason: {lines[-1:]}")
        if before is not None and code not in case.wrote and snapshot(case.tree) != before:
            problems.append("the tree changed")
        if problems:
            failures.append(f"{i} {case.name} {case.argv}: exit {code}: {'; '.join(problems)}")
        seen[case.name.split(" '")[0]] = seen.get(case.name.split(" '")[0], 0) + 1
    assert not failures, "\n".join(failures)
    assert set(seen) == {"config bytes", "source bytes", "rules bytes", "model bytes", "odd path"}, seen
