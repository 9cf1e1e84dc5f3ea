"""The consumer's own checks: pytest tests over the builds under test, run beside the checklist.

A user test is a pytest test that asks for the plugin's fixtures (verify/pytest_plugin.py: `llama_api`, `llama_lib`,
`llama_model`, ...). The runner treats it as one more check: its name is the test's pytest node id (relative to
the consumer's root, which is what tells it from a built-in check: it has `::`), it runs on each build in its own
child process (verify/runner.py: an abort, a segfault or a hang fails that test alone, with the signal), and its
`CheckResult` is compared across the builds exactly as a built-in check's (verify/differential.py `classify`).

Where they come from: `[verify] tests = ["tests/llama"]` in the consumer config (relative to its folder); `--tests
PATH` adds absolute paths to that list (verify/cli.py `with_tests_option`). They are collected once, by pytest in a
child process (the consumer's test modules are never imported into the harness).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from verify.errors import ToolError
from verify.session import Options, Target

PLUGIN = "verify.pytest_plugin"
COLLECT_TIMEOUT_S = 300.0
# pytest's own plugins that would change what a child does: no cache folder written into the consumer's tree, no
# faulthandler (its Python stack would push the library's own abort message out of the stderr tail)
CHILD_PYTEST_ARGS = ("-p", PLUGIN, "-p", "no:cacheprovider", "-p", "no:faulthandler", "-q", "--no-header")


class UserTestsError(ToolError):
    """The user's tests cannot be collected (no such path, a syntax error, a collection error): bad input."""


def is_user_test(name: str) -> bool:
    """A pytest node id (`file::test`), as opposed to a built-in check's name."""
    return "::" in name


@dataclass(frozen=True)
class UserTests:
    """Where the user's tests are and the folder their node ids are relative to (pytest's rootdir)."""

    paths: tuple[Path, ...]
    root: Path


def configured(target: Target) -> UserTests | None:
    """The tests a run is asked for: the `[verify] tests` of the build's config (relative to the config's folder,
    or absolute); None when it names none."""
    listed = target.verify.get("tests") or []
    if isinstance(listed, str):
        listed = [listed]
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise UserTestsError(f"[verify] tests must be a list of paths, got {listed!r}")
    root = (target.config_root or Path.cwd()).resolve()
    paths = [(root / p).resolve() for p in listed]
    if not paths:
        return None
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserTestsError(f"user tests not found: {', '.join(missing)} (`[verify] tests` or --tests)")
    # node ids relative to the consumer's root when every path is inside it, else to their common folder
    if not all(p.is_relative_to(root) for p in paths):
        root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in paths]))
    return UserTests(tuple(dict.fromkeys(paths)), root)


def plugin_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A pytest child's environment: the plugin importable, other installed plugins not autoloaded (a user test
    runs the same whatever else is installed; the plugin itself is passed with -p)."""
    from verify.runner import child_env

    return child_env(extra) | {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def collect(tests: UserTests) -> list[str]:
    """The node ids of the tests that use the plugin's fixtures (the others are the consumer's own business), in
    pytest's order. Raises UserTestsError with pytest's first complaint when collection fails."""
    with tempfile.TemporaryDirectory(prefix="llama-migrate-collect-") as tmp:
        out = Path(tmp) / "ids.json"
        cmd = [sys.executable, "-m", "pytest", "--collect-only", *CHILD_PYTEST_ARGS, "--rootdir", str(tests.root),
               f"--llama-migrate-collect={out}", *map(str, tests.paths)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=plugin_env(),
                              cwd=tests.root, timeout=COLLECT_TIMEOUT_S, check=False)  # fmt: skip
        if proc.returncode not in (0, 5) or not out.is_file():  # 5: nothing collected
            raise UserTestsError(f"pytest could not collect {', '.join(map(str, tests.paths))}: "
                                 f"{first_complaint(proc.stdout + proc.stderr)}")  # fmt: skip
        return list(json.loads(out.read_text(encoding="utf-8")))


def first_complaint(output: str) -> str:
    """The line of pytest's output that says what went wrong: an E line naming an error (`E   SyntaxError: ...`),
    else the first E line, else an ERROR line, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ") and "Error" in line]
    for found in (errors, *([line for line in lines if line.startswith(p)] for p in ("E ", "ERROR", "error:"))):
        if found:
            return found[0].removeprefix("E ").strip()
    return lines[-1] if lines else "no output"


def names(target: Target, options: Options) -> list[str]:
    """The user tests of a run, as check names (node ids); [] when none are configured. The root they are
    relative to is kept in `options.tests_root` for the children."""
    tests = configured(target)
    if tests is None:
        return []
    options.tests_root = str(tests.root)
    return collect(tests)


# --- the child ----------------------------------------------------------------------------------------------------


def child_main(job: Path, name: str, result_file: Path, parametrised: bool = False) -> int:
    """Run one user test on the build of `job` in this process (the runner's child): the plugin binds the fixtures
    to that build and writes the test's CheckResult to `result_file` the way the runner reads a check's."""
    import pytest

    from verify.runner import read_job

    _, options, _ = read_job(job)
    root = Path(options.tests_root or Path.cwd())
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    args = [*CHILD_PYTEST_ARGS, "-s", "-x", "--rootdir", str(root), f"--llama-migrate-job={job}",
            f"--llama-migrate-result={result_file}", str(root / name)]  # fmt: skip
    if parametrised:
        args.append("--llama-migrate-parametrised")
    code = pytest.main(args)
    if not result_file.is_file():  # pytest never ran the test: a wrong node id, or a collection error
        from verify.checks import ERROR, CheckResult
        from verify.runner import _write

        message = f"pytest could not run {name} (exit {int(code)}): not found, or its module does not import"
        _write(result_file, {"result": CheckResult(name, ERROR, {"pytest_exit": int(code)}, message).to_json(),
                             "closed": True})  # fmt: skip
    return 0
