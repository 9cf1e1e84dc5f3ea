#!/usr/bin/env python3
"""Throughput of the fixture's C API, old build vs new builds, on one device in one run.

For the b5415 build of the fixture and for migrated b7836 builds with the opt-in rules on or off
(flash-attn-auto: flash attention AUTO instead of off; kv-unified: one shared KV buffer instead of one stream per
sequence) it measures, through the fixture's own C API (`localllm_generate`, `localllm_generate_parallel`):

  prompt tokens/s      a long prompt, one token generated (best of --repeats)
  generate tokens/s    decode rate: (tokens(N) - 1) / (t(N) - t(1)) on a short prompt
  parallel@S tokens/s  generated tokens of S prompts in one generate_parallel call / its wall time, S in --slots

Each build runs in its own child process (one CUDA context, one set of llama_* symbols per process). The library's
own log says how many layers went to the GPU and whether flash attention was used. The gate's tokens/s regression
threshold (--max-tps-regression, default the consumer config's or the gate's 25 %) applies to the new build as the
consumer configures it (fixtures/localllm/llama-migrate.toml) against the old one: exit 14 when a figure drops more.

  CPU, tiny model (proves it runs):  .venv/bin/python scripts/bench_gpu.py --size tiny --slots 1,8
  GPU:  python3 scripts/bench_gpu.py --gpu cuda --n-gpu-layers 99 --size 1b --json out/bench.json --markdown out/b.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing (the GPU machine has no venv)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SPEED = 0, 1, 2, 14
FIXTURE = REPO / "fixtures" / "localllm"
HEADER = Path("custom_files") / "localllm_capi.h"
PROMPT = "The old lighthouse keeper climbed the stairs every evening and"


@dataclass(frozen=True)
class Variant:
    label: str
    version: str  # "old" or "new"
    enable: tuple[str, ...] = ()

    @property
    def flash_attn(self) -> str:
        return "auto" if "flash-attn-auto" in self.enable else "off"

    @property
    def kv_unified(self) -> str:
        if self.version == "old":
            return "n/a (shared)"
        return "on" if "kv-unified" in self.enable else "off"


VARIANTS = {
    "old": Variant("old b5415", "old"),
    "new": Variant("new b7836", "new", ("kv-unified",)),  # the fixture's configuration: what the gate compares
    "new-fa": Variant("new b7836 +fa", "new", ("kv-unified", "flash-attn-auto")),
    "new-nokvu": Variant("new b7836 -kv_unified", "new", ()),
    "new-fa-nokvu": Variant("new b7836 +fa -kv_unified", "new", ("flash-attn-auto",)),
}
FIGURES = ("prompt", "generate")


# --- the child: measure one build ----------------------------------------------------------------------------


def rate(tokens: int, seconds: float) -> float | None:
    return round(tokens / seconds, 1) if seconds > 0 and tokens > 0 else None


class Bench:
    """One loaded build: the fixture's C API through the harness's bindings, and the library's log captured."""

    def __init__(self, job: dict[str, Any]) -> None:
        from verify import gpu
        from verify.binding import infer
        from verify.bindings import load
        from verify.capi import read_api
        from verify.driver import Driver, Sampling

        self.job = job
        self.Sampling = Sampling
        bindings = load(Path(job["library"]), Path(job["header"]))
        self.shim = Driver(bindings, infer(read_api(Path(job["header"]))))
        self.shim.backend_init()
        self.gpu = gpu
        self.log = gpu.LogCapture(gpu.Library(job["library"]))  # replaces the fixture's quiet callback
        started = time.perf_counter()
        call = self.shim.load_model(job["model"], job["n_gpu_layers"])
        if not call.ok:
            raise RuntimeError(f"model load failed: {call.message}")
        self.load_seconds = time.perf_counter() - started
        self.model = call.value

    def best(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        from verify.checks import best_time

        return best_time(fn, self.job["repeats"])

    def context(self, n_ctx: int, n_seq_max: int) -> Any:
        call = self.shim.create_context(self.model, n_ctx, n_seq_max, self.job["threads"])
        if not call.ok:
            raise RuntimeError(f"context (n_ctx {n_ctx}, n_seq_max {n_seq_max}) failed: {call.message}")
        return call.value

    def count(self, text: str | None, add_special: bool = False) -> int:
        if not text:
            return 0
        call = self.shim.tokenize(self.model, text, add_special)
        return len(call.value) if call.ok else 0

    def generate(self, ctx: Any, prompt: str, max_tokens: int) -> str:
        call = self.shim.generate(ctx, prompt, self.Sampling(max_tokens=max_tokens))
        if not call.ok:
            raise RuntimeError(f"generate failed: {call.message}")
        return call.value

    def prompt_rate(self, ctx: Any, tokens: int) -> dict[str, Any]:
        from verify.prompts import grow_to_tokens

        long = grow_to_tokens(lambda t: self.count(t, True), tokens)
        n = self.count(long, True)
        seconds, _ = self.best(lambda: self.generate(ctx, long, 1))
        return {"tokens": n, "seconds": round(seconds, 4), "tokens_per_s": rate(n, seconds)}

    def generate_rate(self, ctx: Any, tokens: int) -> dict[str, Any]:
        one, _ = self.best(lambda: self.generate(ctx, PROMPT, 1))
        full, text = self.best(lambda: self.generate(ctx, PROMPT, tokens))
        n = self.count(text)
        return {"tokens": n, "seconds": round(full - one, 4), "tokens_per_s": rate(n - 1, full - one)}

    def parallel_rate(self, slots: int, tokens: int) -> dict[str, Any]:
        prompts = [f"Story {i}: {PROMPT}" for i in range(slots)]
        per_seq = max(self.count(p, True) for p in prompts) + tokens + 16
        n_ctx = -(-slots * per_seq // 256) * 256  # b7836 pads to 256; non-unified caches get n_ctx / slots each
        ctx = self.context(n_ctx, slots)
        try:
            sampling = self.Sampling(max_tokens=tokens)
            self.shim.generate_parallel(ctx, prompts, self.Sampling(max_tokens=2))  # warm-up: graphs, buffers
            seconds, call = self.best(lambda: self.shim.generate_parallel(ctx, prompts, sampling))
            if not call.ok:
                return {"slots": slots, "error": call.message}
            n = sum(self.count(t) for t in call.value or [])
            return {"slots": slots, "n_ctx": n_ctx, "tokens": n, "seconds": round(seconds, 4),
                    "tokens_per_s": rate(n, seconds)}  # fmt: skip
        finally:
            self.shim.free_context(ctx)

    def run(self) -> dict[str, Any]:
        job = self.job
        ctx = self.context(job["prompt_tokens"] + job["gen_tokens"] + 64, 1)
        try:
            self.generate(ctx, PROMPT, 2)  # warm-up
            result: dict[str, Any] = {"prompt": self.prompt_rate(ctx, job["prompt_tokens"]),
                                      "generate": self.generate_rate(ctx, job["gen_tokens"])}  # fmt: skip
        finally:
            self.shim.free_context(ctx)
        result["parallel"] = {str(s): self.parallel_rate(s, job["gen_tokens"]) for s in job["slots"]}
        devices = [d.description or d.name for d in self.gpu.Library(job["library"]).devices() if d.is_gpu]
        result |= {"load_seconds": round(self.load_seconds, 3), "devices": devices,
                   "log": self.gpu.log_evidence(self.log.text)}  # fmt: skip
        return result


def child_main(job_file: Path, out_file: Path) -> int:
    job = json.loads(job_file.read_text())
    try:
        result = Bench(job).run()
    except RuntimeError as exc:
        result = {"error": str(exc)}
    out_file.write_text(json.dumps(result, indent=1))
    return EXIT_OK


# --- the parent: build, run a child per build, tabulate -------------------------------------------------------


def build_variant(name: str, work: Path, args: argparse.Namespace) -> tuple[Path | None, Path, str]:
    """(library or None, header, message): the old fixture as is, the new ones migrated by `migrate apply`."""
    from migrate.build import BuildOptions, build
    from migrate.sources import resolve
    from verify.faults import migrate_copy

    variant = VARIANTS[name]
    options = BuildOptions(backend=args.gpu or "cpu", cuda_arch=args.cuda_arch)
    src = FIXTURE
    if variant.version == "new":
        src = migrate_copy(FIXTURE, work / name / FIXTURE.name, variant.enable, args.cache)
    tree = resolve(args.old if variant.version == "old" else args.new, cache=args.cache)
    result = build(src, tree, options, cache=args.cache)
    message = f"{tree.provided} {options.backend}, {result.seconds:.1f} s"
    if not result.ok:
        return None, src / HEADER, f"build failed: {'; '.join(map(str, result.errors[:3])) or result.log[-500:]}"
    return Path(result.library), src / HEADER, message


def run_child(job: dict[str, Any], work: Path, name: str, timeout: float) -> dict[str, Any]:
    job_file, out_file = work / f"{name}.job.json", work / f"{name}.result.json"
    job_file.write_text(json.dumps(job))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(job_file), str(out_file)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if out_file.is_file():
        return json.loads(out_file.read_text())
    return {"error": f"child exited {proc.returncode}: {proc.stderr[-1500:]}"}


def figure(result: dict[str, Any], key: str) -> float | None:
    if key in FIGURES:
        return (result.get(key) or {}).get("tokens_per_s")
    return ((result.get("parallel") or {}).get(key.split("@")[1]) or {}).get("tokens_per_s")


def figure_keys(slots: list[int]) -> list[str]:
    return [*FIGURES, *(f"parallel@{s}" for s in slots)]


def regressions(rows: dict[str, dict[str, Any]], slots: list[int], threshold: float) -> list[str]:
    """The gate's rule on these figures: the configured new build may be at most `threshold` % slower than old."""
    old, new = rows.get("old", {}).get("result", {}), rows.get("new", {}).get("result", {})
    found = []
    for key in figure_keys(slots):
        before, after = figure(old, key), figure(new, key)
        if before and after and after < before * (1 - threshold / 100):
            found.append(f"{key}: {before} -> {after} tokens/s (-{(1 - after / before) * 100:.0f}%, "
                         f"allowed -{threshold:g}%)")  # fmt: skip
    return found


def markdown(rows: dict[str, dict[str, Any]], args: argparse.Namespace, found: list[str]) -> str:
    keys = figure_keys(args.slots)
    lines = [f"Model `{args.model_path}`, backend {args.gpu or 'cpu'}, n_gpu_layers {args.n_gpu_layers}, "
             f"threads {args.threads}, prompt {args.prompt_tokens} tokens, {args.gen_tokens} generated, best of "
             f"{args.repeats}; device: {rows_device(rows)}", "",
             "| build | flash attn (rule) | FA used | kv_unified | layers on GPU | " + " | ".join(
                 f"{k} tok/s" for k in keys) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---:" for _ in keys) + " |"]  # fmt: skip
    for name, row in rows.items():
        variant, result = VARIANTS[name], row.get("result", {})
        log = result.get("log", {})
        layers = f"{log['layers_offloaded']}/{log['layers_total']}" if "layers_offloaded" in log else "0"
        cells = [str(figure(result, k) if figure(result, k) is not None else "—") for k in keys]
        lines.append(f"| {variant.label} | {variant.flash_attn} | {log.get('flash_attn_used', '?')} | "
                     f"{variant.kv_unified} | {layers} | " + " | ".join(cells) + " |")  # fmt: skip
    errors = [f"- {name}: {row['result']['error']}" for name, row in rows.items() if "error" in row.get("result", {})]
    lines += ["", *errors] if errors else []
    verdict = "regression: " + "; ".join(found) if found else f"no figure of the new build below old by more " \
        f"than {args.max_tps_regression:g}%"
    return "\n".join([*lines, "", f"Gate threshold (new as configured vs old): {verdict}", ""])


def rows_device(rows: dict[str, dict[str, Any]]) -> str:
    for row in rows.values():
        devices = row.get("result", {}).get("devices")
        if devices:
            return ", ".join(devices)
    return "CPU"


def threshold(args: argparse.Namespace) -> float:
    if args.max_tps_regression is not None:
        return args.max_tps_regression
    from migrate.config import load_config
    from migrate.gate import DEFAULT_MAX_TPS_REGRESSION

    configured = getattr(load_config(FIXTURE), "max_tps_regression", None)
    return DEFAULT_MAX_TPS_REGRESSION if configured is None else float(configured)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", choices=["cuda"], help="build llama.cpp with this GPU backend")
    parser.add_argument("--cuda-arch", help="CUDA architecture (default: the visible GPU's)")
    parser.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload (99: all)")
    parser.add_argument("--size", default="tiny", help="generated model size (tiny, small, 1b)")
    parser.add_argument("--model", help="GGUF model instead of a generated one")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    parser.add_argument("--slots", default="1,8,32", help="generate_parallel slot counts")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--old", default="b5421", help="llama.cpp release migrated from")
    parser.add_argument("--new", default="b7785", help="llama.cpp release migrated to")
    parser.add_argument("--cache", help="llama-migrate cache dir")
    parser.add_argument("--work", help="folder for migrated copies and child results (default: a temp folder)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per build's measurement")
    parser.add_argument("--max-tps-regression", type=float, help="percent (default: consumer config, else gate's)")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    args.slots = [int(s) for s in args.slots.split(",") if s]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    return args


def write_outputs(rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> tuple[str, list[str]]:
    """The table and JSON so far: written after every build, so a run cut short by its time budget keeps its rows."""
    found = regressions(rows, args.slots, args.max_tps_regression)
    table = markdown(rows, args, found)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.json:
        data = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "rows": rows, "regressions": found, "complete": list(rows) == args.variants}  # fmt: skip
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return table, found


def bench(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    from migrate.model import ensure_model

    args.model_path = Path(args.model) if args.model else ensure_model(args.size, args.old, cache=args.cache)
    rows: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        variant = VARIANTS[name]
        library, header, message = build_variant(name, work, args)
        print(f"{variant.label}: {message}", file=sys.stderr)
        row: dict[str, Any] = {"variant": asdict(variant) | {"flash_attn": variant.flash_attn,
                                                             "kv_unified": variant.kv_unified},
                               "build": message, "library": str(library) if library else None}  # fmt: skip
        if library is None:
            row["result"] = {"error": message}
        else:
            job = {"library": str(library), "header": str(header), "model": str(args.model_path),
                   "n_gpu_layers": args.n_gpu_layers, "threads": args.threads, "slots": args.slots,
                   "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens, "repeats": args.repeats}
            row["result"] = run_child(job, work, name, args.timeout)
        rows[name] = row
        write_outputs(rows, args)
    return rows


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child_main(Path(sys.argv[2]), Path(sys.argv[3]))
    args = parse_args(argv)
    args.max_tps_regression = threshold(args)
    with tempfile.TemporaryDirectory(prefix="llama-migrate-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = bench(args, work)
    table, found = write_outputs(rows, args)
    print(table)
    if any("error" in row.get("result", {}) for row in rows.values()):
        return EXIT_FAILED
    return EXIT_SPEED if found else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
