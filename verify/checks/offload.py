"""gpu: layers offloaded to the GPU (joins the checklist when layers are offloaded)."""

from __future__ import annotations

from verify import gpu
from verify.checks.framework import Verdict, check, failures
from verify.prompts import PROMPT_A
from verify.session import Session, Skip


def _expected_offload(n_gpu_layers: int, total: int) -> int:
    return total if n_gpu_layers < 0 else min(n_gpu_layers, total)


def _gpu_memory(devices: list[gpu.Device]) -> dict[str, dict[str, int]]:
    return {d.name: {"free": d.memory_free, "total": d.memory_total} for d in devices if d.is_gpu}


@check("gpu_offload", "gpu", "layers offloaded to the GPU: device, layers offloaded, flash attention as used")
def gpu_offload(s: Session) -> Verdict:
    if s.options.n_gpu_layers == 0:
        raise Skip("not asked: --n-gpu-layers 0 runs everything on the CPU")
    library = gpu.Library(s.target.library)
    s.backend()  # the consumer's init installs its log callback; the capture replaces it for this child
    capture = gpu.LogCapture(library)
    before = library.devices()
    model = s.model()
    after = library.devices()
    out = s.shim.generate(s.context(512, 1), PROMPT_A, s.options.sampling())
    found = gpu.log_evidence(capture.text)
    used = {name: before_mem["free"] - _gpu_memory(after).get(name, before_mem)["free"]
            for name, before_mem in _gpu_memory(before).items()}  # fmt: skip
    evidence = found | {"devices": [d.description or d.name for d in after if d.is_gpu], "n_gpu_layers":
                        s.options.n_gpu_layers, "model_bytes_on_gpu": used, "n_vocab": s.n_vocab(model),
                        "generate": out.evidence() | {"text": out.value}}  # fmt: skip
    problems: list[str] = []
    if "layers_offloaded" not in found:
        problems.append("the library logged no 'offloaded N/M layers to GPU' line")
    elif found["layers_offloaded"] != _expected_offload(s.options.n_gpu_layers, found["layers_total"]):
        problems.append(f"offloaded {found['layers_offloaded']}/{found['layers_total']} layers, "
                        f"asked for {s.options.n_gpu_layers}")  # fmt: skip
    if not out.ok:
        problems.append(f"generate on the GPU failed: {out.message}")
    summary = (f"{', '.join(evidence['devices']) or 'no device'}: {found.get('layers_offloaded', '?')}/"
               f"{found.get('layers_total', '?')} layers, flash attention used={found.get('flash_attn_used')}")
    return Verdict(not problems, evidence, failures(problems), summary)
