"""The command line is read in one place per command (typed requests), the --from/--to defaults come from one
constant that names the first step in rules/, and a plan is not patched after it is built."""

from __future__ import annotations

import re
from pathlib import Path

from migrate import pipeline
from migrate.cli import apply as apply_command
from migrate.cli import build_parser
from migrate.cli import gate as gate_command
from migrate.cli import plan as plan_command
from migrate.cli import run as run_command
from migrate.cli import verify as verify_command
from migrate.config import DEFAULT_FROM, DEFAULT_TO
from migrate.rewrite.command import PlanRequest
from migrate.rewrite.rules import rule_files
from verify import cli as verify_cli

ROOT = Path(__file__).resolve().parent.parent


def parse(*argv: str):  # noqa: ANN201 - an argparse.Namespace
    return build_parser().parse_args(list(argv))


def test_from_to_defaults_are_the_first_step_in_rules() -> None:
    first = rule_files()[0]
    assert (first.from_version, first.to_version) == (DEFAULT_FROM, DEFAULT_TO)
    for command in ("plan", "apply", "run", "gate"):
        args = parse(command, "src")
        assert (args.from_version, args.to_version) == (DEFAULT_FROM, DEFAULT_TO), command
    assert parse("mutate", "src").from_version == DEFAULT_FROM


def test_no_step_is_hard_coded_as_a_command_line_default() -> None:
    for path in sorted((ROOT / "migrate").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        hard_coded = re.search(r"""["']--(?:from|to)["'][^)]*default=["']b\d+["']""", text)
        assert not hard_coded, f"{path.name}: use migrate.config.DEFAULT_FROM/TO"


def test_run_and_gate_requests_carry_the_command_line() -> None:
    args = parse("--cache", "/c", "gate", "tree", "--from", "b5500", "--checks", "generate", "--enable", "kv-unified",
                 "--option", "a=b", "--cmake-arg=-DX=1", "--no-predict", "--quiet", "--json", "out.json",
                 "--tie-margin", "0.1")  # fmt: skip
    request = gate_command.gate_request(args)
    run = request.run
    assert (run.src, run.from_version, run.to_version, run.cache) == ("tree", "b5500", DEFAULT_TO, "/c")
    assert run.checks == ("generate",) and run.enable == ("kv-unified",) and run.options == ("a=b",)
    assert run.cmake_args == ("-DX=1",) and not run.predict and run.quiet and run.json_path == "out.json"
    assert (request.tie_margin, request.max_tps_regression) == (0.1, None)
    assert run_command.run_request(parse("run")) == pipeline.RunRequest()  # the flags' defaults are the request's


def test_plan_and_apply_requests_carry_the_command_line() -> None:
    args = parse("apply", "tree", "--to", "b7800", "--flag=-DX", "--no-cache", "--force")
    request = apply_command.apply_request(args)
    assert request.force and not request.allow_syntactic
    plan = request.plan
    assert (plan.src, plan.from_version, plan.to_version, plan.flags, plan.no_cache) == (
        "tree", DEFAULT_FROM, "b7800", ("-DX",), True)  # fmt: skip
    assert plan_command.plan_request(parse("plan", "tree")) == PlanRequest("tree")


def test_verify_request_carries_the_command_line() -> None:
    args = parse("verify", "--lib", "x.so", "--checks", "generate, parallel", "--trace")
    request = verify_command.verify_request(args)
    assert request.lib == "x.so" and request.checks == ("generate", "parallel") and request.trace
    assert verify_command.verify_request(parse("verify", "--lib", "x.so")) == verify_cli.VerifyRequest("x.so")


def test_a_plan_is_not_patched_after_it_is_built() -> None:
    """Only the engine, while it builds a plan, sets its API section; builds are given when the plan is made."""
    builders = {"migrate/rewrite/engine.py", "migrate/rewrite/apicheck.py"}
    for path in sorted(ROOT.glob("migrate/**/*.py")):
        name = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        if name not in builders:
            assert not re.search(r"\.(builds|api_section)\s*=[^=]", text), f"{name} patches a plan"
