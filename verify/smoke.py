"""Smoke run of a localllm-shaped C API: backend init → model load → context → tokenize → generate → free.

Run it as a child process (`python -m verify.smoke --lib ... --model ...`) so that an abort or a
segfault inside the library under test is reported by the parent instead of killing it. Prints one JSON
object: the steps with the values seen, and `ok`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verify.bindings import Bindings, load


@dataclass
class SmokeStep:
    name: str
    ok: bool
    evidence: dict[str, Any] = field(default_factory=dict)


class SmokeFailure(Exception):
    pass


def _error(b: Bindings, err: Any) -> str:
    return b.ffi.string(err[0]).decode(errors="replace") if err[0] != b.ffi.NULL else ""


def _check(b: Bindings, step: str, code: int, err: Any) -> None:
    if code != 0:
        raise SmokeFailure(f"{step} returned {code}: {_error(b, err)}")


def run_smoke(b: Bindings, model_path: Path, prompt: str, max_tokens: int) -> list[SmokeStep]:
    ffi, lib = b.ffi, b.lib
    steps: list[SmokeStep] = []
    err = ffi.new("const char **")
    lib.localllm_backend_init()
    steps.append(SmokeStep("backend_init", True))
    model_out = ffi.new("localllm_model_handle *")
    _check(b, "model_load", lib.localllm_model_load(str(model_path).encode(), 0, True, False, model_out, err), err)
    model = model_out[0]
    steps.append(SmokeStep("model_load", True, {"n_vocab": lib.localllm_n_vocab(model)}))
    ctx_out = ffi.new("localllm_context_handle *")
    _check(b, "context_create", lib.localllm_context_create(model, 512, 2, 1, ctx_out, err), err)
    ctx = ctx_out[0]
    steps.append(SmokeStep("context_create", True, {"n_ctx": lib.localllm_n_ctx(ctx)}))
    tokens = ffi.new("int32_t **")
    n_tokens = ffi.new("size_t *")
    _check(b, "tokenize", lib.localllm_tokenize(model, prompt.encode(), True, tokens, n_tokens, err), err)
    token_ids = [tokens[0][i] for i in range(n_tokens[0])]
    lib.localllm_free_tokens(tokens[0])
    steps.append(SmokeStep("tokenize", len(token_ids) > 0, {"prompt": prompt, "tokens": token_ids}))
    params = ffi.new("localllm_sampling_params *")
    params.max_tokens, params.temperature, params.top_k, params.top_p = max_tokens, 0.0, 1, 1.0
    params.repeat_penalty, params.seed = 1.0, 42
    result = ffi.new("char **")
    _check(b, "generate", lib.localllm_generate(ctx, prompt.encode(), params, result, err), err)
    text = ffi.string(result[0]).decode(errors="replace")
    lib.localllm_free_string(result[0])
    steps.append(SmokeStep("generate", len(text) > 0, {"max_tokens": max_tokens, "text": text}))
    lib.localllm_context_free(ctx)
    lib.localllm_model_free(model)
    lib.localllm_backend_free()
    steps.append(SmokeStep("free", True))
    return steps


def smoke_in_child(library: Path, header: Path, model: Path, timeout: float = 120.0, max_tokens: int = 8) -> dict:
    """Run the smoke in a child process; a crash or hang becomes a failed result with signal and stderr tail."""
    cmd = [sys.executable, "-m", "verify.smoke", "--lib", str(library), "--header", str(header),
           "--model", str(model), "--max-tokens", str(max_tokens)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return {"ok": False, "error": f"timed out after {timeout} s", "stderr_tail": str(exc.stderr or "")[-2000:]}
    if proc.returncode < 0 or not proc.stdout.strip():
        return {"ok": False, "error": f"child died (exit {proc.returncode})", "stderr_tail": proc.stderr[-2000:]}
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lib", required=True, type=Path)
    parser.add_argument("--header", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    bindings = load(args.lib, args.header)
    try:
        steps = run_smoke(bindings, args.model, args.prompt, args.max_tokens)
        report = {"ok": all(s.ok for s in steps), "steps": [asdict(s) for s in steps]}
    except SmokeFailure as exc:
        report = {"ok": False, "error": str(exc)}
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
