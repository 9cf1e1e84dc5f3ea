"""What `verify` (and `run`/`gate`, which verify through the same `run_verification`) checks before the first check
runs: the numeric options, the output paths, each library (an ELF shared object this host loads, whole, exporting
the functions the checklist will call through its header) and the model (a GGUF header llama.cpp reads, then
llama.cpp's own loader in a probe child). Each refusal is a `BadInput` (exit 2) naming the flag: a bad input must
never come out as every check failing, crashing or hanging on the consumer's library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verify.inputs import (
    BadInput,
    PathKind,
    check_gguf_header,
    check_library,
    existing_path,
    int_at_least,
    number_in,
    output_dir,
    output_file,
    require_exports,
)
from verify.modelprobe import ProbeStatus, probe_model

if TYPE_CHECKING:
    from verify.binding import Binding
    from verify.session import Target

MODEL_REMEDY = "pass a GGUF model llama.cpp can load (`migrate model` makes a tiny one)"


@dataclass(frozen=True)
class Preflight:
    """What the checks before the checklist found: the model probe's outcome and cost, for the summary."""

    model_probe: str
    seconds: float


def check_options(request: Any) -> None:
    """A VerifyRequest's numbers and output paths, before anything runs or is written."""
    int_at_least("--max-tokens", request.max_tokens, 1, "tokens generated per prompt")
    int_at_least("--threads", request.threads, 1)
    int_at_least("--generated", request.generated, 0, "inputs drawn per operation (0: generated_inputs skips)")
    int_at_least("--n-gpu-layers", request.n_gpu_layers, -1, "0 for the CPU, -1 or N layers to offload")
    number_in("--timeout", request.timeout, 0.0, low_open=True, remedy="seconds per check before it is a hang")
    number_in("--tie-margin", request.tie_margin, 0.0, remedy="a top-2 logit margin, e.g. 0.05")
    for flag, value in (("--json", request.json_path), ("--junit", request.junit_path),
                        ("--markdown", request.markdown_path)):  # fmt: skip
        output_file(flag, value)
    output_dir("--trace-dir", request.trace_dir)


def check_model_file(flag: str, value: str | Path) -> Path:
    """A model path: a file, with a GGUF header llama.cpp reads (cheap; the loader probe comes later)."""
    path = existing_path(flag, value, PathKind.FILE, MODEL_REMEDY, noun="model")
    check_gguf_header(flag, path)
    return path


def library_flag(label: str) -> str:
    return "--baseline-lib" if label == "old" else "--lib"


def check_targets(targets: list[Target], bindings: dict[str, Binding], eog_model: str = "") -> Preflight:
    """Every library loadable here and exporting what its binding calls; the model(s) loadable by llama.cpp."""
    for target in targets:
        flag = library_flag(target.label)
        library = check_library(flag, target.library)
        require_exports(flag, library, target.header, bound_functions(bindings[target.label]))
    probe = check_model(targets, "--model", targets[0].model)
    if eog_model:
        check_model(targets[-1:], "--eog-model", Path(eog_model))
    return probe


def bound_functions(binding: Binding) -> list[str]:
    """The consumer functions the checklist will call: those its operations are bound to."""
    return [op.function.name for op in binding.ops.values() if op.function is not None]


def check_model(targets: list[Target], flag: str, model: Path) -> Preflight:
    """GGUF header, then llama.cpp's loader through each build. Refused only when no build loads it (one build
    loading it and the other not is a difference between the builds, for the checks to show); when no build can
    be probed (the llama.cpp tree behind the library is unknown), the file is parsed as GGUF in full instead."""
    check_model_file(flag, model)
    from verify.observe import ObserveError, find_llama_tree

    reasons, seconds = [], 0.0
    for target in reversed(targets):  # the build under test first: one load is enough
        try:
            tree = find_llama_tree(target.library, target.llama_tree)
        except ObserveError as exc:
            reasons.append((ProbeStatus.UNAVAILABLE, str(exc)))
            continue
        result = probe_model(model, target.library, tree)
        seconds += result.seconds
        if result.status is ProbeStatus.LOADED:
            return Preflight(f"llama.cpp loads {model.name} ({target.label} build, {result.seconds:.1f} s)", seconds)
        reasons.append((result.status, result.reason))
    refused = [reason for status, reason in reasons if status is ProbeStatus.REFUSED]
    if refused:
        raise BadInput(flag, str(model), f"llama.cpp cannot load it: {refused[-1]}", MODEL_REMEDY)
    parse_gguf(flag, model)
    return Preflight(f"{model.name} parsed as GGUF (llama.cpp's loader not probed: {reasons[-1][1]})", seconds)


def parse_gguf(flag: str, model: Path) -> None:
    """The whole file through the gguf reader: every tensor's data inside the file."""
    import gguf

    try:
        gguf.GGUFReader(model)
    except Exception as exc:  # noqa: BLE001 - the reader raises anything from ValueError to struct errors
        raise BadInput(flag, str(model), f"not a readable GGUF model ({type(exc).__name__}: {exc})",
                       MODEL_REMEDY) from exc  # fmt: skip
