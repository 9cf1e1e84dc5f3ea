"""scripts/bench_gpu.py: the gate's threshold on its figures, its table, and a real (CPU, tiny model) run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from migrate.build import BuildResult
from migrate.sources import SourceTree
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def row(prompt: float, generate: float, parallel: dict[str, float]) -> dict:
    return {"result": {"prompt": {"tokens_per_s": prompt}, "generate": {"tokens_per_s": generate},
                       "parallel": {k: {"tokens_per_s": v} for k, v in parallel.items()}}}  # fmt: skip


def test_threshold_applies_to_the_configured_new_build_only(bench: ModuleType) -> None:
    rows = {"old": row(1000, 100, {"1": 100, "8": 400}), "new": row(900, 70, {"1": 100, "8": 410}),
            "new-fa": row(10, 1, {"1": 1, "8": 1})}  # fmt: skip
    found = bench.regressions(rows, [1, 8], 25.0)
    assert found == ["generate: 100 -> 70 tokens/s (-30%, allowed -25%)"]
    assert bench.regressions(rows, [1, 8], 35.0) == []


def test_markdown_table_names_variants_and_missing_figures(bench: ModuleType) -> None:
    rows = {"old": row(1000, 100, {"1": 100}), "new-nokvu": {"result": {"error": "context failed"}}}
    args = SimpleNamespace(slots=[1], model_path=Path("m.gguf"), gpu=None, n_gpu_layers=0, threads=1,
                           prompt_tokens=8, gen_tokens=4, repeats=1, max_tps_regression=25.0)  # fmt: skip
    text = bench.markdown(rows, args, [])
    assert "| old b5415 | off |" in text and "| new b7836 -kv_unified | off | ? | off | 0 | — | — | — |" in text
    assert "- new-nokvu: context failed" in text and "no figure of the new build below old" in text


def test_cpu_run_with_the_tiny_model(tmp_path: Path, localllm_old_build: BuildResult, new_tree: SourceTree,
                                     tiny_model: Path) -> None:  # fmt: skip
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--variants", "old,new-fa", "--slots", "1,2", "--prompt-tokens", "32",
           "--gen-tokens", "4", "--repeats", "1", "--threads", "1", "--model", str(tiny_model),
           "--work", str(tmp_path / "work"), "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode in (0, 14), proc.stderr[-3000:] + proc.stdout[-2000:]  # 14: noisy CPU figures
    data = json.loads(out.read_text())
    for name in ("old", "new-fa"):
        result = data["rows"][name]["result"]
        assert "error" not in result, result
        assert result["prompt"]["tokens_per_s"] > 0 and set(result["parallel"]) == {"1", "2"}
    # the library's own log says flash attention was resolved on for the opt-in rule, off at b5415
    assert data["rows"]["new-fa"]["result"]["log"]["flash_attn_used"] is True
    assert data["rows"]["old"]["result"]["log"]["flash_attn_used"] is False
    assert "| new b7836 +fa | auto | True |" in proc.stdout
