"""Can llama.cpp load this model? Asked of llama.cpp itself, in a child process, before any check runs.

A model llama.cpp cannot load (a text file, a truncated GGUF, an unknown architecture) would otherwise fail every
check, each "the consumer's failure". The parent (`probe_model`) runs this module as a child with the library
under test: it binds llama.cpp's own `llama_model_load_from_file` from the library (the shim links llama.cpp
whole, so it exports it), with declarations from the llama.h of the tree the library was built from, and loads
the model on the CPU. A child, because a loader that crashes must not take the command with it. llama.cpp logs
why it refused on stderr; the parent keeps those lines as the reason.

Cost: one Python start, a preprocess of llama.h and a model load (about a second for the tiny model; `probe_model`
returns the figure).
"""

from __future__ import annotations

import enum
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from verify.sanitize import load_env

PROBE_FUNCTIONS = ("llama_backend_init", "llama_model_default_params", "llama_model_load_from_file",
                   "llama_load_model_from_file", "llama_model_free", "llama_free_model")  # fmt: skip
EXIT_LOADED, EXIT_REFUSED, EXIT_CANNOT_PROBE = 0, 1, 3
REASON_WORDS = ("error", "failed", "invalid", "unknown", "unsupported", "corrupt", "truncated", "exceed")


class ProbeStatus(enum.Enum):
    LOADED = "loaded"  # llama.cpp loaded it
    REFUSED = "refused"  # llama.cpp could not load it: bad input
    UNAVAILABLE = "unavailable"  # the probe could not be made (no llama.cpp tree, nothing to bind): not a verdict


@dataclass(frozen=True)
class ProbeResult:
    status: ProbeStatus
    reason: str = ""
    seconds: float = 0.0


def probe_model(model: Path, library: Path, tree: Path, timeout: float = 120.0) -> ProbeResult:
    """Load `model` with llama.cpp from `library` (built from `tree`) in a child process."""
    started = time.monotonic()
    cmd = [sys.executable, "-m", "verify.modelprobe", str(library), str(tree), str(model)]
    try:
        # a sanitized library loads only with its runtime preloaded (verify/sanitize.py)
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                              env=load_env(library))  # fmt: skip
    except subprocess.TimeoutExpired:
        return ProbeResult(ProbeStatus.REFUSED, f"llama.cpp did not finish loading it in {timeout:g} s",
                           time.monotonic() - started)  # fmt: skip
    seconds = time.monotonic() - started
    if proc.returncode == EXIT_LOADED:
        return ProbeResult(ProbeStatus.LOADED, "", seconds)
    if proc.returncode == EXIT_CANNOT_PROBE:
        return ProbeResult(ProbeStatus.UNAVAILABLE, _last_line(proc.stdout) or "the probe could not run", seconds)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        reason = f"llama.cpp crashed loading it ({name})"
        said = llama_reason(proc.stderr)
        return ProbeResult(ProbeStatus.REFUSED, f"{reason}: {said}" if said else reason, seconds)
    return ProbeResult(ProbeStatus.REFUSED, llama_reason(proc.stderr) or "llama.cpp returned no model", seconds)


def llama_reason(log: str) -> str:
    """llama.cpp's own words for a failed load: its log lines that say what went wrong (the last three)."""
    lines = [" ".join(line.split()) for line in log.splitlines()]
    said = [line for line in lines if line and any(word in line.lower() for word in REASON_WORDS)]
    return " / ".join(dict.fromkeys(said[-3:]))


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _child(library: str, tree: str, model: str) -> int:
    """In the child: bind llama.cpp's loader out of the library and load the model (CPU only)."""
    import cffi

    from verify.backends import BackendsError, load_backends
    from verify.observe import ObserveError

    try:
        text, missing = loader_declarations(Path(tree))
        ffi = cffi.FFI()
        ffi.cdef(text)
        lib = ffi.dlopen(library)
        load_backends(Path(library))  # prebuilt llama.cpp: its CPU backend is loaded at run time (verify/backends.py)
    except (ObserveError, cffi.CDefError, OSError, BackendsError) as exc:
        print(f"cannot bind llama.cpp's loader: {exc}")
        return EXIT_CANNOT_PROBE
    load = _first(lib, missing, "llama_model_load_from_file", "llama_load_model_from_file")
    free = _first(lib, missing, "llama_model_free", "llama_free_model")
    if load is None or "llama_model_default_params" in missing:
        print(f"{library} does not export llama.cpp's model loader")
        return EXIT_CANNOT_PROBE
    lib.llama_backend_init()
    params = lib.llama_model_default_params()
    params.n_gpu_layers = 0
    loaded = load(model.encode(), params)
    if loaded == ffi.NULL:
        return EXIT_REFUSED
    if free is not None:
        free(loaded)
    return EXIT_LOADED


def loader_declarations(tree: Path) -> tuple[str, dict[str, str]]:
    """cdef text for llama.cpp's loader out of the tree's llama.h. `llama_model_params` names ggml types that
    llama.h does not define (device and buffer-type handles, ggml enums): the loader only passes them through, so
    opaque stand-ins of the same size (pointers, ints) are declared for them."""
    from verify.bindings import BindingError, preprocess_header
    from verify.observe import ObserveError, closure, parse_declarations

    try:
        source = preprocess_header(tree / "include" / "llama.h", [tree / "include", tree / "ggml" / "include"])
    except (BindingError, subprocess.SubprocessError) as exc:
        raise ObserveError(str(exc)) from exc
    declarations = parse_declarations(source)
    chosen, missing = closure(declarations, list(PROBE_FUNCTIONS))
    outside = sorted({name for why in missing.values() if "outside llama.h: " in why
                      for name in why.split("outside llama.h: ", 1)[1].split(", ")})  # fmt: skip
    if outside:
        declarations = {**_stand_ins(outside), **declarations}
        chosen, missing = closure(declarations, list(PROBE_FUNCTIONS))
    return "\n".join(d.text for d in chosen), missing


def _stand_ins(names: list[str]) -> dict[str, object]:
    """`ggml_backend_dev_t` -> an opaque pointer typedef; `enum ggml_type` -> an enum (int-sized, as C has it)."""
    from verify.observe import Declaration

    stand_ins: dict[str, object] = {}
    for name in names:
        if name.startswith("enum "):
            tag = name.split()[1]
            stand_ins[name] = Declaration("enum", name, f"{name} {{ {tag.upper()}_STAND_IN_ = 0 }};")
        else:
            stand_ins[name] = Declaration("typedef", name, f"typedef struct stand_in_{name} * {name};")
    return stand_ins


def _first(lib: object, missing: dict[str, str], *names: str) -> object | None:
    for name in names:
        if name in missing:
            continue
        try:
            return getattr(lib, name)
        except AttributeError:
            continue
    return None


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:4]))
