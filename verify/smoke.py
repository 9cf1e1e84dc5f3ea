"""Smoke run of a consumer's C API (any shape the driver binds): init, model, context, tokenize, generate, free.

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

from verify.binding import infer
from verify.bindings import Bindings, load
from verify.capi import read_api
from verify.driver import Call, Driver, Sampling


@dataclass
class SmokeStep:
    name: str
    ok: bool
    evidence: dict[str, Any] = field(default_factory=dict)


class SmokeFailure(Exception):
    pass


def run_smoke(b: Bindings, model_path: Path, prompt: str, max_tokens: int) -> list[SmokeStep]:
    """The operations in order through the driver, bound from the consumer's own header (any API shape)."""
    binding = infer(read_api(b.header))
    driver = Driver(b, binding)
    steps: list[SmokeStep] = []

    def need(step: str, call: Call) -> Any:
        if not call.ok:
            raise SmokeFailure(f"{step} returned {call.code}: {call.message}")
        return call.value

    need("backend_init", driver.backend_init())
    steps.append(SmokeStep("backend_init", True))
    model = need("model_load", driver.load_model(model_path))
    steps.append(SmokeStep("model_load", True, {"n_vocab": driver.info("n_vocab", model)}))
    ctx = need("context_create", driver.create_context(model, 512, 1, 2))
    steps.append(SmokeStep("context_create", True, {"n_ctx": driver.info("n_ctx", ctx)}))
    tokens = need("tokenize", driver.tokenize(model, prompt, True))
    steps.append(SmokeStep("tokenize", True, {"n_tokens": len(tokens), "tokens": tokens}))
    text = need("generate", driver.generate(ctx, prompt, Sampling(max_tokens=max_tokens)))
    steps.append(SmokeStep("generate", bool(text), {"text": text}))
    driver.free_context(ctx)
    driver.free_model(model)
    driver.backend_free()
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
