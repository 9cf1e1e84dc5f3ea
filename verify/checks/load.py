"""basic: backend init, model load (+ errors on missing, corrupt and truncated files), context create."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from verify.checks.framework import Verdict, check, failures
from verify.prompts import CAPACITY_N_CTX, CAPACITY_N_SEQ_MAX
from verify.session import Session


@check("backend_init", "basic", "backend init")
def backend_init(s: Session) -> Verdict:
    # init twice (the R package calls it on every load), free, init again: then a model must still load
    calls = [s.shim.backend_init(), s.shim.backend_init()]
    s.shim.backend_free()
    s.backend()  # once more through the session, which frees the backend at the end
    model = s.model()
    evidence = {"sequence": "init, init, free, init, model load", "model_loaded": True,
                "init_calls": [c.evidence() for c in calls]}  # fmt: skip
    problems = [f"init {i + 1} reported an error: {c.message}" for i, c in enumerate(calls) if not c.ok]
    return Verdict(model is not None and not problems, evidence, failures(problems),
                   "init twice, free, init: model loads")  # fmt: skip


@check("model_load", "basic", "model load")
def model_load(s: Session) -> Verdict:
    started = time.monotonic()
    model = s.model()
    seconds = time.monotonic() - started
    n_vocab = s.n_vocab(model)
    bos, eos = s.shim.info("token_bos", model), s.shim.info("token_eos", model)
    again = s.shim.load_model(s.target.model, s.options.n_gpu_layers, use_mmap=False)
    if again.ok:
        s.shim.free_model(again.value)
    evidence = {"model": str(s.target.model), "n_vocab": n_vocab, "bos": bos, "eos": eos,
                "load_seconds": round(seconds, 3), "second_load_without_mmap": again.evidence()}  # fmt: skip
    problems = [] if n_vocab > 0 else [f"n_vocab {n_vocab}"]
    problems += [] if again.ok else [f"second load (no mmap) failed: {again.message}"]
    summary = f"n_vocab {n_vocab}, bos {bos}, eos {eos}, {seconds:.2f} s; reload without mmap ok={again.ok}"
    return Verdict(not problems, evidence, failures(problems), summary)


def _bad_model_files(model: Path, folder: Path) -> dict[str, Path | None]:
    data = model.read_bytes()
    files: dict[str, bytes] = {
        "empty_file": b"",
        "not_gguf": b"this is not a model\n" * 64,
        "header_only": data[:8],
        "truncated_1k": data[:1024],
        "truncated_half": data[: len(data) // 2],
        # valid magic and version, absurd tensor and key counts
        "corrupt_counts": data[:8] + (2**62).to_bytes(8, "little") + (2**62).to_bytes(8, "little") + data[24:4096],
    }
    paths: dict[str, Path | None] = {"missing_file": folder / "does-not-exist.gguf", "directory": folder}
    for name, content in files.items():
        path = folder / f"{name}.gguf"
        path.write_bytes(content)
        paths[name] = path
    return paths


@check("model_load_errors", "basic", "missing file and corrupt/truncated GGUF give an error, no crash")
def model_load_errors(s: Session) -> Verdict:
    import tempfile

    s.backend()
    evidence: dict[str, Any] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="verify-bad-models-") as tmp:
        for case, path in _bad_model_files(s.target.model, Path(tmp)).items():
            call = s.shim.load_model(path, s.options.n_gpu_layers)
            evidence[case] = call.evidence()
            if call.ok:
                s.shim.free_model(call.value)
                problems.append(f"{case}: loaded without error")
            elif not call.message:
                problems.append(f"{case}: error code but no message")
    model = s.model()  # the process is alive and a good model still loads
    evidence["good_model_after"] = {"loaded": model is not None}
    cases = [k for k in evidence if k != "good_model_after"]
    summary = f"{len(cases)} bad files ({', '.join(cases)}) all refused with a message; good model loads after"
    return Verdict(not problems, evidence, failures(problems), summary)


@check("context_create", "basic", "context create")
def context_create(s: Session) -> Verdict:
    evidence: dict[str, Any] = {}
    problems: list[str] = []
    for n_ctx, n_seq_max in ((512, 1), (512, 4), (CAPACITY_N_CTX, CAPACITY_N_SEQ_MAX)):
        ctx = s.context(n_ctx, n_seq_max)
        got = s.n_ctx(ctx)
        info = s.observer.context_info(ctx) if s.observer and s.can_observe_context() else {}
        evidence[f"n_ctx={n_ctx},n_seq_max={n_seq_max}"] = {"api_n_ctx": got, "llama": info}
        if got < n_ctx:
            problems.append(f"asked n_ctx {n_ctx}, got {got}")
        s.release(ctx)
    summary = "; ".join(f"{k}: n_ctx {v['api_n_ctx']}" for k, v in evidence.items())
    return Verdict(not problems, evidence, failures(problems), summary)
