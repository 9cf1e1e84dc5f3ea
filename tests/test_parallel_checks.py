"""Checks in parallel (verify/runner.py run_builds): the same results in the same order as one at a time, the
timing checks alone after the others, a progress callback that stops the run stops it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import verify.runner as runner
from migrate.build import BuildResult
from tests.conftest import LOCALLLM_HEADER
from verify.checks import PASSED, CheckResult
from verify.differential import run_differential
from verify.runner import CheckTask, run_builds, run_checks
from verify.session import Options, Prepared, Target


class FakeChildren:
    """Stands in for the check processes: records which checks overlap in time."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.overlaps: dict[str, set[str]] = {}
        self.order: list[str] = []

    def run(self, task: CheckTask, options: Options, workdir: Path, env: dict[str, str] | None,
            zygotes: object = None) -> CheckResult:  # fmt: skip
        key = f"{task.target.label}:{task.name}"
        with self.lock:
            self.overlaps[key] = set(self.running)
            for other in self.running:
                self.overlaps[other].add(key)
            self.running.add(key)
            self.order.append(key)
        time.sleep(self.seconds)
        with self.lock:
            self.running.discard(key)
        return CheckResult(task.name, PASSED, {"key": key}, build=task.target.label)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeChildren:
    children = FakeChildren()
    monkeypatch.setattr(runner, "_run_task", children.run)
    monkeypatch.setattr(runner, "prepare", lambda target: Prepared())
    return children


def _targets() -> list[Target]:
    return [Target(Path(f"/x/{k}.so"), Path("/x/h.h"), Path("/x/m.gguf"), k) for k in ("old", "new")]


def test_throughput_runs_alone_after_every_other_check(fake: FakeChildren) -> None:
    names = ["model_load", "throughput", "generate", "tokenize_detokenize"]
    results = run_builds(_targets(), Options(jobs=3), names)
    assert {label: [r.name for r in rs] for label, rs in results.items()} == {"old": names, "new": names}
    assert fake.overlaps["old:throughput"] == set() and fake.overlaps["new:throughput"] == set()
    assert fake.order[-2:] == ["old:throughput", "new:throughput"]
    assert any(fake.overlaps[k] for k in fake.order[:-2])  # the others did share the machine


def test_progress_sees_results_in_the_sequential_order(fake: FakeChildren) -> None:
    names = ["model_load", "generate", "tokenize_detokenize", "state_across_calls"]
    seen: dict[int, list[tuple[str, str]]] = {}
    for jobs in (1, 4):
        order: list[tuple[str, str]] = []
        run_builds(_targets(), Options(jobs=jobs), names, lambda n, r, order=order: order.append((r.build, n)))
        seen[jobs] = order
    assert seen[4] == seen[1] == [(label, n) for label in ("old", "new") for n in names]


def test_a_progress_that_stops_the_run_drops_what_is_queued(fake: FakeChildren) -> None:
    class Stop(Exception):
        pass

    def stop_at_first(name: str, result: CheckResult) -> None:
        raise Stop

    names = [f"check_{i}" for i in range(12)]
    with pytest.raises(Stop):
        run_checks(_targets()[0], Options(jobs=2), names, stop_at_first)
    assert len(fake.order) < len(names)


def test_differential_runs_both_builds_checks_in_one_pool(fake: FakeChildren) -> None:
    diff = run_differential(*_targets(), Options(jobs=2), ["model_load", "generate", "context_reuse"])
    assert [c.name for c in diff.comparisons] == ["model_load", "generate", "context_reuse"]
    assert all(c.classification == "passes on both" for c in diff.comparisons)
    # the new build's first check did not wait for all of the old build's
    assert fake.order.index("new:model_load") < fake.order.index("old:context_reuse") + 2
    assert any(k.startswith("new:") for k in fake.overlaps["old:generate"] | fake.overlaps["old:context_reuse"])


# --- real children on the real build (b5415) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_targets(localllm_old_build: BuildResult, tiny_model: Path) -> list[Target]:
    return [Target(Path(localllm_old_build.library), LOCALLLM_HEADER, tiny_model, label) for label in ("a", "b")]


def test_real_checks_in_parallel_give_the_sequential_results(built_targets: list[Target]) -> None:
    names = ["model_load", "selftest_abort", "generate", "selftest_raise", "tokenize_detokenize", "selftest_pass"]
    sequential = run_builds(built_targets, Options(jobs=1, timeout=60), names)
    parallel = run_builds(built_targets, Options(jobs=2, timeout=60), names)
    for label in ("a", "b"):
        assert [r.name for r in parallel[label]] == names
        assert [(r.status, r.message) for r in parallel[label]] == [(r.status, r.message) for r in sequential[label]]
    assert parallel["a"][2].evidence["text"] == sequential["a"][2].evidence["text"]  # generate: greedy, the same


def test_real_checks_overlap_in_time(built_targets: list[Target]) -> None:
    # two hangs, one per build, each killed at the timeout: together they take one timeout, not two
    timeout = 6.0
    started = time.monotonic()
    results = run_builds(built_targets, Options(jobs=2, timeout=timeout), ["selftest_hang"])
    elapsed = time.monotonic() - started
    assert all(r[0].message.startswith("hang") for r in results.values())
    assert elapsed < 1.7 * timeout, f"{elapsed:.1f} s: the two checks did not run at once"
