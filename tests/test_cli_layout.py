"""One command layout (issue 22 item 4): every sub-command `migrate --help` lists has its module in migrate/cli/, which
owns its parser and turns the namespace into a frozen request; nothing outside migrate/cli/ reads the command line.
Static (ast) and the real parser; no command runs."""

from __future__ import annotations

import argparse
import ast
import importlib
from pathlib import Path

from migrate.cli import COMMAND_MODULES, build_parser

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "migrate" / "cli"
# migrate/cli/ modules that are not a sub-command: the assembly, `python -m migrate.cli`, the shared options
NOT_COMMANDS = {"__init__", "__main__", "arguments"}
# Modules outside migrate/cli/ that still parse a command line, each a child-process protocol or pytest's own options,
# none of them a `migrate` sub-command (their callers build the argv).
OWN_COMMAND_LINES = {
    "verify/runner.py": "the child process that runs one check (python -m verify.runner --job ...)",
    "verify/throughput.py": "the throughput worker processes (python -m verify.throughput --worker ...)",
    "verify/smoke.py": "the smoke run's child process (python -m verify.smoke --lib ...)",
    "verify/pytest_plugin.py": "pytest's own addoption (argparse.SUPPRESS hides the plugin's internal options)",
}


def sub_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def command_function(parser: argparse.ArgumentParser):  # noqa: ANN201 - the set_defaults(func=...) callable
    return parser._defaults.get("func")


def test_every_sub_command_lives_in_its_own_module_in_migrate_cli() -> None:
    commands = sub_commands(build_parser())
    assert {"sources", "build", "model", "plan", "apply", "api-diff", "verify", "run", "gate", "rules",
            "mutate"} <= set(commands)  # fmt: skip
    for name, parser in commands.items():
        module = f"migrate.cli.{name.replace('-', '_')}"
        assert command_function(parser).__module__ == module, name
        assert (CLI / f"{name.replace('-', '_')}.py").is_file(), name
        for action, sub in sub_commands(parser).items():  # `rules draft` etc.: in the command's module
            assert command_function(sub).__module__ == module, f"{name} {action}"


def test_every_module_in_migrate_cli_is_a_command_with_add_parser() -> None:
    modules = {p.stem for p in CLI.glob("*.py")} - NOT_COMMANDS
    assert {f"migrate.cli.{m}" for m in modules} == set(COMMAND_MODULES)
    for name in COMMAND_MODULES:
        assert callable(getattr(importlib.import_module(name), "add_parser", None)), name


def outside_cli() -> list[Path]:
    files = [*ROOT.glob("migrate/**/*.py"), *ROOT.glob("verify/**/*.py")]
    return sorted(p for p in files if not p.is_relative_to(CLI))


def reads_a_command_line(tree: ast.AST) -> list[str]:
    """argparse imported, or a parameter annotated with a Namespace: what a stage must not do."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            found.append(f"line {node.lineno}: import argparse")
        elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
            found.append(f"line {node.lineno}: from argparse import ...")
        elif isinstance(node, ast.arg) and node.annotation is not None and "Namespace" in ast.unparse(node.annotation):
            found.append(f"line {node.lineno}: parameter {node.arg}: {ast.unparse(node.annotation)}")
    return found


def test_no_stage_reads_the_command_line() -> None:
    offenders = {}
    for path in outside_cli():
        name = str(path.relative_to(ROOT))
        found = reads_a_command_line(ast.parse(path.read_text(encoding="utf-8")))
        if found and name not in OWN_COMMAND_LINES:
            offenders[name] = found
    assert not offenders, f"only migrate/cli/ reads the command line: {offenders}"
    for name in OWN_COMMAND_LINES:  # each exception is still needed (else it goes from the list)
        assert reads_a_command_line(ast.parse((ROOT / name).read_text(encoding="utf-8"))), name


def test_the_scan_finds_what_it_looks_for() -> None:
    code = "import argparse\ndef cmd(args: argparse.Namespace) -> int:\n    return 0\n"
    assert len(reads_a_command_line(ast.parse(code))) == 2
    assert reads_a_command_line(ast.parse("from argparse import Namespace\n"))
    assert not reads_a_command_line(ast.parse("def run(request: 'RunRequest') -> int:\n    return 0\n"))


def is_frozen_dataclass(node: ast.ClassDef) -> bool:
    return any(isinstance(d, ast.Call) and ast.unparse(d.func).endswith("dataclass")
               and any(k.arg == "frozen" and ast.unparse(k.value) == "True" for k in d.keywords)
               for d in node.decorator_list)  # fmt: skip


def test_every_request_type_is_a_frozen_dataclass() -> None:
    requests = {}
    for path in [*outside_cli(), *CLI.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Request"):
                requests[f"{path.relative_to(ROOT)}:{node.name}"] = is_frozen_dataclass(node)
    assert len(requests) >= 10, requests  # one per command at least (plan and apply, rules' actions: more)
    assert all(requests.values()), [name for name, frozen in requests.items() if not frozen]
