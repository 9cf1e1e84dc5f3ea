"""CPU against GPU on one build: the same greedy prompts, token by token, with the logit margin where they part.

The GPU side is the build's own `generate_matches_reference` run with layers offloaded (the checklist ran it
already). The CPU side is the same check on the same library with no layer offloaded and every GPU hidden from it
(CUDA_VISIBLE_DEVICES empty): ggml then registers no CUDA device, so not even the large matrix products of a
prompt batch are sent to the GPU, which ggml's scheduler does for a CUDA build at n_gpu_layers 0. The library
is the same object code as a CPU build of that version plus the CUDA backend, so the comparison isolates the
device; the CPU run records the GPU devices it saw, and a CPU run that saw one is reported, not compared.

Without a GPU (or with n_gpu_layers 0) there is nothing to compare: the comparison is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from verify.checks import FAILED, SKIPPED, CheckResult
from verify.differential import REFERENCE_CHECK, GreedyComparison, Sides, compare_greedy
from verify.gpu import GPU_ENV
from verify.outcomes import DeviceStatus, GreedyVerdict
from verify.runner import run_checks
from verify.session import Options, Target

# What the CPU side's child process gets on top of the parent's environment.
HIDE_GPUS = {"CUDA_VISIBLE_DEVICES": "", GPU_ENV: "none"}
COMPARED, SKIPPED_COMPARISON, NOT_COMPARED = DeviceStatus.COMPARED, DeviceStatus.SKIPPED, DeviceStatus.NOT_COMPARED
DEVICES = Sides(pair="CPU and GPU", plural="CPU and GPU", second="the GPU")
# greedy verdicts that are a finding: a confident difference, or a prompt the two sides cannot be compared on
PARTED = (GreedyVerdict.DIVERGENCE, GreedyVerdict.NOT_COMPARABLE)


@dataclass
class DeviceComparison:
    """One build's greedy prompts on its CPU and on its GPU (`old` fields of the greedy rows are the CPU)."""

    build: str
    status: DeviceStatus
    message: str
    greedy: list[GreedyComparison] = field(default_factory=list)
    cpu: CheckResult | None = None

    def verdicts(self) -> dict[GreedyVerdict, int]:
        return _count(self.greedy)

    @property
    def parted(self) -> list[GreedyComparison]:
        """Prompts where CPU and GPU differ for real (not a near-tie) or cannot be compared."""
        return [g for g in self.greedy if g.verdict in PARTED]

    @property
    def failed(self) -> bool:
        """A real CPU/GPU difference, a prompt not comparable, or a comparison that broke."""
        return self.status == NOT_COMPARED or bool(self.parted)

    def to_json(self) -> dict[str, Any]:
        return {"build": self.build, "status": self.status, "message": self.message, "failed": self.failed,
                "verdicts": self.verdicts(),
                "greedy": [g.to_json() for g in self.greedy],
                "cpu": self.cpu.to_json() if self.cpu else None}  # fmt: skip


def cpu_reference(target: Target, options: Options, run: Callable[..., list[CheckResult]] = run_checks,
                  hide: dict[str, str] | None = None) -> CheckResult:  # fmt: skip
    """`generate_matches_reference` on the CPU alone: no layer offloaded, every GPU hidden from the library."""
    cpu_options = replace(options, n_gpu_layers=0)
    return run(target, cpu_options, [REFERENCE_CHECK], env=HIDE_GPUS if hide is None else hide)[0]


def compare_devices(target: Target, gpu_result: CheckResult | None, options: Options,
                    run: Callable[..., list[CheckResult]] = run_checks,
                    hide: dict[str, str] | None = None) -> DeviceComparison:  # fmt: skip
    """Compare `gpu_result` (the reference check run with `options.n_gpu_layers` offloaded) with a CPU run."""
    if options.n_gpu_layers == 0:
        return DeviceComparison(target.label, SKIPPED_COMPARISON, "n_gpu_layers 0, nothing ran on a GPU")
    if gpu_result is None:
        return DeviceComparison(target.label, SKIPPED_COMPARISON, f"{REFERENCE_CHECK} was not run")
    if gpu_result.status == SKIPPED:  # no GPU here: the check said why ("skipped: no GPU: ...")
        return DeviceComparison(target.label, SKIPPED_COMPARISON, gpu_result.message.removeprefix("skipped: "))
    if not gpu_result.evidence.get("traces"):
        return DeviceComparison(target.label, NOT_COMPARED, f"no greedy traces on the GPU: {gpu_result.message}")
    cpu = cpu_reference(target, options, run, hide)
    seen = cpu.evidence.get("gpu_devices") or []
    if seen:
        return DeviceComparison(target.label, NOT_COMPARED, f"the CPU run still saw GPU devices {seen}", cpu=cpu)
    if cpu.status == FAILED and not cpu.evidence.get("traces"):
        return DeviceComparison(target.label, NOT_COMPARED, f"the CPU run failed: {cpu.message}", cpu=cpu)
    greedy = compare_greedy(cpu, gpu_result, options.tie_margin, DEVICES)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(_count(greedy).items()))
    return DeviceComparison(target.label, COMPARED, f"{len(greedy)} prompts: {counts}", greedy, cpu)


def _count(greedy: list[GreedyComparison]) -> dict[GreedyVerdict, int]:
    counts: dict[GreedyVerdict, int] = {}
    for g in greedy:
        counts[g.verdict] = counts.get(g.verdict, 0) + 1
    return counts
