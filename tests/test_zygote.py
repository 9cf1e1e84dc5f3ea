"""Check processes forked from a warm interpreter (verify/zygote.py), on the real fixture build: each fork is its own
process in its own session with the environment its check asked for; variables only a start reads get a zygote of
their own; a zygote that died is replaced by a started process, never a harness error. (Crashes, hangs and exit
handlers in forks: tests/test_verify.py::test_runner_isolates_aborts_segfaults_hangs_and_exceptions.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrate.build import BuildResult
from tests.conftest import LOCALLLM_HEADER
from verify.checks import PASSED, CheckResult
from verify.runner import run_in_child, write_job
from verify.session import Options, Target, prepare
from verify.zygote import Zygotes, startup_part


@pytest.fixture(scope="module")
def job(localllm_old_build: BuildResult, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = Target(Path(localllm_old_build.library or ""), LOCALLLM_HEADER, tiny_model, "old")
    path = tmp_path_factory.mktemp("zygote") / "old-job.json"
    write_job(path, target, Options(), prepare(target))
    return path


def _process(job: Path, zygotes: Zygotes | None, env: dict[str, str]) -> CheckResult:
    result = run_in_child(job, "selftest_process", "old", 60, job.parent, env, zygotes=zygotes)
    assert result.status == PASSED, result
    return result


def test_forks_share_a_zygote_get_their_own_environment_and_session(job: Path) -> None:
    with Zygotes() as zygotes:
        first = _process(job, zygotes, {"LLAMA_MIGRATE_SELFTEST": "one"})
        second = _process(job, zygotes, {"LLAMA_MIGRATE_SELFTEST": "two"})
    assert first.evidence["env"]["LLAMA_MIGRATE_SELFTEST"] == "one"
    assert second.evidence["env"]["LLAMA_MIGRATE_SELFTEST"] == "two"
    assert first.evidence["ppid"] == second.evidence["ppid"] != os.getpid()  # forks of one zygote
    assert first.evidence["pid"] != second.evidence["pid"]
    assert all(r.evidence["sid"] == r.evidence["pid"] for r in (first, second))  # killed as a group at a timeout


def test_variables_only_a_start_reads_get_a_zygote_of_their_own(job: Path) -> None:
    assert startup_part({"MALLOC_PERTURB_": "165", "HOME": "/x"}) == (("MALLOC_PERTURB_", "165"),)
    with Zygotes() as zygotes:
        plain = _process(job, zygotes, {"MALLOC_PERTURB_": "0"})
        filled = _process(job, zygotes, {"MALLOC_PERTURB_": "165"})
    assert plain.evidence["env"]["MALLOC_PERTURB_"] == "0" and filled.evidence["env"]["MALLOC_PERTURB_"] == "165"
    assert plain.evidence["ppid"] != filled.evidence["ppid"]


def test_a_zygote_that_died_is_replaced_by_a_started_process(job: Path) -> None:
    with Zygotes() as zygotes:
        before = _process(job, zygotes, {})
        for zygote in zygotes._by_startup.values():
            zygote.proc.kill()
            zygote.proc.wait()
        after = _process(job, zygotes, {})
    assert before.evidence["ppid"] != os.getpid()
    assert after.evidence["ppid"] == os.getpid()  # started by this process, as without a zygote
