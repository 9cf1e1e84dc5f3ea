"""GPU checks where there is no GPU (here and in CI): skipped with the reason, never passed; and the evidence a GPU
run records (layers offloaded, flash attention as resolved, devices) read from sample library logs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from migrate.build import BuildResult
from tests.conftest import LOCALLLM_HEADER
from verify import gpu
from verify.checks import CHECK_ORDER, GPU_CHECKS, PASSED, SKIPPED, checklist, run_check
from verify.runner import run_checks
from verify.session import Options, Target

NO_DRIVER = ([], "nvidia-smi not found (no NVIDIA driver on this machine)")


def fake_session(n_gpu_layers: int) -> SimpleNamespace:
    """Enough of a Session for run_check; any use of the library or model would raise AttributeError."""
    target = SimpleNamespace(library=Path("/nonexistent/libshim.so"), label="new")
    return SimpleNamespace(target=target, options=Options(n_gpu_layers=n_gpu_layers))


@pytest.mark.parametrize("name", ["generate", "model_load", "gpu_offload"])
def test_offloading_check_without_gpu_is_skipped_never_passed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "system_gpus", lambda: NO_DRIVER)
    result = run_check(name, fake_session(99))  # type: ignore[arg-type]
    assert result.status == SKIPPED and result.status != PASSED
    assert result.message == "skipped: no GPU: nvidia-smi not found (no NVIDIA driver on this machine)"


def test_gpu_check_on_a_cpu_run_is_skipped_as_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "system_gpus", lambda: NO_DRIVER)
    result = run_check("gpu_offload", fake_session(0))  # type: ignore[arg-type]
    assert result.status == SKIPPED and "not asked" in result.message


def test_env_override_hides_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "system_gpus", lambda: (["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)"], ""))
    monkeypatch.setenv(gpu.GPU_ENV, "none")
    assert gpu.missing_gpu("/nonexistent.so", 99) == f"no GPU: {gpu.GPU_ENV}=none"
    assert gpu.missing_gpu("/nonexistent.so", 0) == ""


def test_gpu_machine_with_cpu_only_library_names_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpu.GPU_ENV, raising=False)
    monkeypatch.setattr(gpu, "system_gpus", lambda: (["GPU 0: NVIDIA H200 (UUID: GPU-x)"], ""))
    cpu = gpu.Device(0, "CPU", "AMD EPYC", gpu.DEVICE_CPU, 1, 2)
    monkeypatch.setattr(gpu, "library_devices", lambda path: ([cpu], ""))
    reason = gpu.missing_gpu("/lib.so", 99)
    assert reason.startswith("no GPU device in this library (ggml devices: CPU)") and "--gpu cuda" in reason
    h200 = gpu.Device(1, "CUDA0", "NVIDIA H200", gpu.DEVICE_GPU, 100, 200)
    monkeypatch.setattr(gpu, "library_devices", lambda path: ([cpu, h200], ""))
    assert gpu.missing_gpu("/lib.so", 99) == ""


def test_default_checklist_adds_gpu_checks_only_when_offloading() -> None:
    assert checklist(0) == CHECK_ORDER and "gpu_offload" not in CHECK_ORDER
    assert checklist(99) == CHECK_ORDER + GPU_CHECKS


B5415_LOG = """\
load_tensors: offloading 2 repeating layers to GPU
load_tensors: offloaded 3/3 layers to GPU
llama_context: flash_attn    = 0
"""
B7836_LOG = """\
ggml_cuda_init: found 1 CUDA devices:
  Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, VMM: yes
load_tensors: offloaded 3/3 layers to GPU
llama_context: flash_attn    = auto
llama_context: Flash Attention was auto, set to enabled
"""


def test_log_evidence_b5415_and_b7836() -> None:
    old = gpu.log_evidence(B5415_LOG)
    assert old == {"layers_offloaded": 3, "layers_total": 3, "flash_attn_configured": "0", "flash_attn_used": False}
    new = gpu.log_evidence(B7836_LOG)
    assert new["flash_attn_configured"] == "auto" and new["flash_attn_used"] is True
    assert new["cuda_devices"] == [{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}]
    assert gpu.log_evidence("")["flash_attn_used"] is None


# --- on the real CPU build: the library's own device registry, and the skip through the child runner --------


def test_cpu_build_enumerates_no_gpu_device(localllm_old_build: BuildResult) -> None:
    devices, note = gpu.library_devices(localllm_old_build.library)
    assert not note and devices and not [d for d in devices if d.is_gpu]
    assert devices[0].type == gpu.DEVICE_CPU


def test_gpu_run_of_the_checklist_without_gpu_skips_with_reason(localllm_old_build: BuildResult,
                                                                 tiny_model: Path) -> None:  # fmt: skip
    target = Target(Path(localllm_old_build.library), LOCALLLM_HEADER, tiny_model, "old")
    results = run_checks(target, Options(n_gpu_layers=99, timeout=30), ["generate", "gpu_offload"])
    assert [r.status for r in results] == [SKIPPED, SKIPPED]
    for result in results:
        # here and in CI: no driver; on a GPU machine this CPU build has no GPU device; never a pass
        assert result.message.startswith(("skipped: no GPU:", "skipped: no GPU device in this library")), result
