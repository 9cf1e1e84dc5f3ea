"""Run housekeeping: old run copies pruned but never a running one; the model of the tokens/s comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from migrate import pipeline


def test_a_running_runs_copy_is_kept_a_finished_one_goes(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(pipeline, "KEEP_RUNS", 1)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    live = tmp_path / f"localllm-20261207-000000-{os.getpid()}"
    dead = tmp_path / f"localllm-20261207-000001-{dead_pid}"
    newest = tmp_path / "localllm-20261207-000002-1"
    for i, folder in enumerate((live, dead, newest)):
        folder.mkdir()
        os.utime(folder, (1_000_000 + i, 1_000_000 + i))
    pipeline._prune_old_runs(tmp_path)
    assert live.exists() and not dead.exists() and newest.exists()


def test_a_run_folder_another_run_removed_meanwhile_is_skipped(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    # two runs pruning side by side: the other one removed a folder after this one listed it (CI rehearsal at
    # ca86fc1: `migrate gate: <cache>/runs/run-syntax-…: No such file or directory`, six gate tests in error)
    monkeypatch.setattr(pipeline, "KEEP_RUNS", 1)
    for i, name in enumerate(("run-a-x", "gone-y", "run-c-z")):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1_000_000 + i, 1_000_000 + i))
    real_stat = Path.stat

    def stat(self: Path, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if self.name == "gone-y":
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    pipeline._prune_old_runs(tmp_path)
    monkeypatch.setattr(Path, "stat", real_stat)
    assert not (tmp_path / "run-a-x").exists() and (tmp_path / "run-c-z").exists()


def test_the_small_throughput_model_only_where_a_threshold_decides() -> None:
    from migrate.config import ConsumerConfig

    assert pipeline._throughput_model(ConsumerConfig(), None, None) is None  # a plain run: its own (tiny) model
    assert pipeline._throughput_model(ConsumerConfig(max_tps_regression=25.0, model="/x/m.gguf"), None, None) is None
    assert pipeline._throughput_model(ConsumerConfig(max_tps_regression=25.0), ["generate"], None) is None
    small = pipeline._throughput_model(ConsumerConfig(max_tps_regression=25.0), None, None)
    assert small is not None and small.name.startswith("llama-small-")
