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


def test_the_small_throughput_model_only_where_a_threshold_decides() -> None:
    from migrate.config import ConsumerConfig

    assert pipeline._throughput_model(ConsumerConfig(), None, None) is None  # a plain run: its own (tiny) model
    assert pipeline._throughput_model(ConsumerConfig(max_tps_regression=25.0, model="/x/m.gguf"), None, None) is None
    assert pipeline._throughput_model(ConsumerConfig(max_tps_regression=25.0), ["generate"], None) is None
    small = pipeline._throughput_model(ConsumerConfig(max_tps_regression=25.0), None, None)
    assert small is not None and small.name.startswith("llama-small-")
