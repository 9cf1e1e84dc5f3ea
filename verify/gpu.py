"""Is there a GPU for this build to offload to, and what did the library do with it?

A check runs with layers offloaded only when the library under test enumerates a GPU device through ggml's backend
registry (a CPU build never does, nor a CUDA build on a machine whose driver it cannot reach). Otherwise it is
skipped with the reason, which `nvidia-smi -L` refines (no driver at all, or a GPU this build does not use):
running it on the CPU and calling that a GPU pass would be a lie.

The library's own log carries the GPU evidence (layers offloaded, flash attention as resolved); `LogCapture`
collects it through llama_log_set, which also routes ggml's log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cffi

# Set to "none" to behave as if no GPU were present (a GPU machine running the CPU checklist).
GPU_ENV = "LLAMA_MIGRATE_GPU"
# enum ggml_backend_dev_type: CPU 0 and GPU (dedicated memory) 1 in both releases; 2 is ACCEL at b5415 but IGPU
# at b7836, so only 1 counts: an integrated GPU is no target for this harness's offload checks.
DEVICE_CPU, DEVICE_GPU = 0, 1

GGML_DEVICES = """
typedef struct ggml_backend_device * ggml_backend_dev_t;
size_t ggml_backend_dev_count(void);
ggml_backend_dev_t ggml_backend_dev_get(size_t index);
const char * ggml_backend_dev_name(ggml_backend_dev_t device);
const char * ggml_backend_dev_description(ggml_backend_dev_t device);
void ggml_backend_dev_memory(ggml_backend_dev_t device, size_t * free, size_t * total);
int ggml_backend_dev_type(ggml_backend_dev_t device);
void llama_log_set(void (*callback)(int level, const char * text, void * user_data), void * user_data);
"""

OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
FLASH_ATTN = re.compile(r"flash_attn\s*=\s*(\S+)")
FLASH_AUTO = re.compile(r"Flash Attention was auto, set to (\w+)")
CUDA_DEVICE = re.compile(r"Device \d+: ([^,]+), compute capability (\d+\.\d+)")


@dataclass
class Device:
    index: int
    name: str
    description: str
    type: int
    memory_free: int
    memory_total: int

    @property
    def is_gpu(self) -> bool:
        return self.type == DEVICE_GPU


@dataclass
class Probe:
    """What the machine and the library show; `missing` is the skip reason, empty when a GPU can be used."""

    system: list[str] = field(default_factory=list)  # nvidia-smi -L lines
    system_note: str = ""
    devices: list[Device] = field(default_factory=list)
    library_note: str = ""

    @property
    def gpus(self) -> list[Device]:
        return [d for d in self.devices if d.is_gpu]

    @property
    def missing(self) -> str:
        if os.environ.get(GPU_ENV, "").lower() == "none":
            return f"no GPU: {GPU_ENV}=none"
        if self.gpus:
            return ""
        if not self.system:
            return f"no GPU: {self.system_note or 'nvidia-smi -L lists none'}"
        seen = ", ".join(d.name for d in self.devices) or "none"
        note = f" ({self.library_note})" if self.library_note else ""
        return (f"no GPU device in this library (ggml devices: {seen}){note}; the machine has "
                f"{len(self.system)}: build with --gpu cuda, or check the driver")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"missing": self.missing}


def system_gpus() -> tuple[list[str], str]:
    """`nvidia-smi -L` lines ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: ...)"), or none with the reason."""
    if not shutil.which("nvidia-smi"):
        return [], "nvidia-smi not found (no NVIDIA driver on this machine)"
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi -L failed: {exc}"
    lines = [line.strip() for line in proc.stdout.splitlines() if line.startswith("GPU ")]
    if proc.returncode != 0 or not lines:
        return [], f"nvidia-smi -L: {(proc.stderr or proc.stdout).strip()[:200] or 'no GPU listed'}"
    return lines, ""


class Library:
    """ggml's device registry and llama_log_set in a built library, through a cffi binding of their own."""

    def __init__(self, path: Path | str) -> None:
        self.ffi = cffi.FFI()
        self.ffi.cdef(GGML_DEVICES)
        self.lib: Any = self.ffi.dlopen(str(path))

    def _text(self, ptr: Any) -> str:
        return "" if ptr == self.ffi.NULL else self.ffi.string(ptr).decode(errors="replace")

    def devices(self) -> list[Device]:
        found = []
        for i in range(int(self.lib.ggml_backend_dev_count())):
            dev = self.lib.ggml_backend_dev_get(i)
            free, total = self.ffi.new("size_t *"), self.ffi.new("size_t *")
            self.lib.ggml_backend_dev_memory(dev, free, total)
            found.append(Device(i, self._text(self.lib.ggml_backend_dev_name(dev)),
                                self._text(self.lib.ggml_backend_dev_description(dev)),
                                int(self.lib.ggml_backend_dev_type(dev)), int(free[0]), int(total[0])))  # fmt: skip
        return found


def library_devices(path: Path | str) -> tuple[list[Device], str]:
    try:
        return Library(path).devices(), ""
    except (OSError, AttributeError, cffi.FFIError) as exc:  # not loadable, or ggml's registry not exported
        return [], f"cannot enumerate ggml devices: {exc}"


def probe(library: Path | str | None) -> Probe:
    """The library's own devices first (already loaded, and decisive when it has a GPU); nvidia-smi only to say
    why there is none, so a GPU run of the checklist costs no nvidia-smi call per check."""
    result = Probe()
    if library is not None:
        result.devices, result.library_note = library_devices(library)
    if not result.gpus:
        result.system, result.system_note = system_gpus()
    return result


def missing_gpu(library: Path | str | None, n_gpu_layers: int) -> str:
    """The skip reason for a check asked to offload `n_gpu_layers` layers, or "" when it can."""
    if n_gpu_layers == 0:
        return ""
    return probe(library).missing


# --- evidence from the library's log --------------------------------------------------------------------------


class LogCapture:
    """Route llama.cpp's and ggml's log into a list (replaces the consumer's callback in this child process)."""

    def __init__(self, library: Library) -> None:
        self.lines: list[str] = []
        self._library = library

        def callback(level: int, text: Any, user_data: Any) -> None:
            if text != library.ffi.NULL:
                self.lines.append(library.ffi.string(text).decode(errors="replace"))

        self._callback = library.ffi.callback("void(int, const char *, void *)", callback)
        library.lib.llama_log_set(self._callback, library.ffi.NULL)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def log_evidence(text: str) -> dict[str, Any]:
    """Layers offloaded, flash attention as configured and as resolved, CUDA devices ggml reported."""
    evidence: dict[str, Any] = {}
    offloaded = OFFLOADED.findall(text)
    if offloaded:
        done, total = offloaded[-1]
        evidence["layers_offloaded"], evidence["layers_total"] = int(done), int(total)
    flash = FLASH_ATTN.findall(text)
    if flash:
        evidence["flash_attn_configured"] = flash[-1]
    auto = FLASH_AUTO.findall(text)
    evidence["flash_attn_used"] = flash_attn_used(flash[-1] if flash else None, auto[-1] if auto else None)
    devices = CUDA_DEVICE.findall(text)
    if devices:
        evidence["cuda_devices"] = [{"name": n.strip(), "compute_capability": cc} for n, cc in devices]
    return evidence


def flash_attn_used(configured: str | None, auto_resolution: str | None) -> bool | None:
    """b5415 logs 0/1; b7836 logs enabled/disabled/auto, and how auto was resolved. None: the log does not say."""
    if auto_resolution:
        return auto_resolution == "enabled"
    if configured is None:
        return None
    if configured in ("1", "enabled", "true"):
        return True
    if configured in ("0", "disabled", "false"):
        return False
    return None
