"""GPU checks where there is no GPU (here and in CI): skipped with the reason, never passed; and the evidence a GPU
run records (layers offloaded, flash attention as resolved, devices) read from sample library logs."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest

from migrate import gate
from migrate.build import BuildResult
from tests.conftest import LOCALLLM_HEADER
from verify import devices, gpu
from verify.checks import CHECK_ORDER, GPU_CHECKS, PASSED, SKIPPED, CheckResult, checklist, run_check
from verify.cli import run_verification
from verify.differential import REFERENCE_CHECK
from verify.report import RunReport, junit_xml, markdown_section
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


# --- CPU vs GPU on one build (verify/devices.py) ---------------------------------------------------------------


def reference_target(build: BuildResult, model: Path, label: str = "new") -> Target:
    return Target(Path(build.library), LOCALLLM_HEADER, model, label)


def test_cpu_side_runs_with_every_gpu_hidden(localllm_old_build: BuildResult, tiny_model: Path) -> None:
    [result] = run_checks(reference_target(localllm_old_build, tiny_model), Options(timeout=30), ["selftest_env"],
                          env=devices.HIDE_GPUS)  # fmt: skip
    assert result.evidence["env"] == {"CUDA_VISIBLE_DEVICES": "", "LLAMA_MIGRATE_GPU": "none"}


def test_cpu_vs_gpu_without_gpu_is_skipped_with_reason(localllm_old_build: BuildResult, tiny_model: Path) -> None:
    target = reference_target(localllm_old_build, tiny_model)
    report = run_verification([target], Options(n_gpu_layers=99, timeout=30), [REFERENCE_CHECK])
    [comparison] = report.devices
    assert comparison.status == devices.SKIPPED_COMPARISON and not comparison.failed and not comparison.greedy
    assert comparison.message.startswith(("no GPU:", "no GPU device in this library"))
    assert 'name="verify.cpu_vs_gpu"' in junit_xml(report) and "<skipped" in junit_xml(report)
    assert "CPU vs GPU" in markdown_section(report)
    cpu_only = run_verification([target], Options(timeout=30), [REFERENCE_CHECK])
    assert cpu_only.devices == []  # nothing offloaded: no comparison at all


@pytest.fixture(scope="module")
def stand_in_gpu_result(localllm_old_build: BuildResult, tiny_model: Path) -> CheckResult:
    """The reference check run for real, standing in for the GPU side where there is no GPU: everything of the
    comparison but the device is exercised (the CPU child with GPUs hidden, the traces, the verdicts)."""
    [result] = run_checks(reference_target(localllm_old_build, tiny_model), Options(timeout=60), [REFERENCE_CHECK])
    assert result.status == PASSED, result.message
    assert result.evidence["gpu_devices"] == []
    return result


def test_cpu_vs_gpu_identical_runs_compare_identical(localllm_old_build: BuildResult, tiny_model: Path,
                                                     stand_in_gpu_result: CheckResult) -> None:  # fmt: skip
    target = reference_target(localllm_old_build, tiny_model)
    comparison = devices.compare_devices(target, stand_in_gpu_result, Options(n_gpu_layers=99, timeout=60))
    assert comparison.status == devices.COMPARED and not comparison.failed, comparison.message
    assert set(comparison.verdicts()) == {"identical"} and len(comparison.greedy) >= 2
    assert comparison.cpu is not None and comparison.cpu.evidence["gpu_devices"] == []
    report = RunReport([target], {"new": [stand_in_gpu_result]}, Options(n_gpu_layers=99), 1.0, devices=[comparison])
    text = markdown_section(report)
    assert "| build | prompt | verdict | steps | first difference | CPU token / margin | GPU token / margin |" in text
    assert text.count("| new | ") == len(comparison.greedy)
    xml = junit_xml(report)
    assert 'name="greedy_new"' in xml and 'failures="0"' in xml.split('name="verify.cpu_vs_gpu"')[1].split(">")[0]


def test_cpu_vs_gpu_real_difference_is_reported_with_margins(localllm_old_build: BuildResult, tiny_model: Path,
                                                             stand_in_gpu_result: CheckResult) -> None:  # fmt: skip
    """Plant a confident different token at step 2 of one prompt on the "GPU" side: a divergence with both
    margins, a failed comparison, and a gate finding of class 13 for the new build."""
    gpu_result = copy.deepcopy(stand_in_gpu_result)
    prompt, trace = next(iter(gpu_result.evidence["traces"].items()))
    trace["tokens"][2] = trace["tokens"][2] + 1
    trace["margins"][2] = 3.0
    target = reference_target(localllm_old_build, tiny_model)
    options = Options(n_gpu_layers=99, timeout=60)
    comparison = devices.compare_devices(target, gpu_result, options)
    parted = [g for g in comparison.greedy if g.verdict != "identical"]
    assert comparison.failed and [g.prompt for g in parted] == [prompt]
    assert parted[0].verdict == "divergence" and parted[0].first_difference == 2
    assert parted[0].new["margin"] == 3.0 and parted[0].old["margin"] is not None
    assert "CPU and GPU were sure of different tokens" in parted[0].note
    findings = gate._devices([comparison], gate.Thresholds())
    assert [f.kind.code for f in findings] == [13] and "step 2" in findings[0].where
    old_side = copy.deepcopy(comparison)
    old_side.build = "old"
    assert gate._devices([old_side], gate.Thresholds()) == []  # the baseline's own pair is not the upgrade's doing
    # a near-tie at the same step is not a failure
    trace["margins"][2] = 0.001
    assert not devices.compare_devices(target, gpu_result, options).failed


def test_cpu_run_that_still_sees_a_gpu_is_not_compared(tiny_model: Path, stand_in_gpu_result: CheckResult) -> None:
    seen = CheckResult(REFERENCE_CHECK, PASSED, stand_in_gpu_result.evidence | {"gpu_devices": ["NVIDIA H200"]})
    target = Target(Path("/nonexistent/lib.so"), LOCALLLM_HEADER, tiny_model, "new")
    comparison = devices.compare_devices(target, stand_in_gpu_result, Options(n_gpu_layers=99),
                                         run=lambda *a, **k: [seen])  # fmt: skip
    assert comparison.status == devices.NOT_COMPARED and comparison.failed
    assert "still saw GPU devices ['NVIDIA H200']" in comparison.message
