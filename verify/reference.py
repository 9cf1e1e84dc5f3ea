"""llama.cpp's own primitives as the reference answer of every operation (the oracle).

What a consumer's operation must return is computed independently, from libllama's public C API bound out of the
same library (the shim links libllama whole, so `llama_*` is exported beside the consumer's functions):

- tokenize: `llama_tokenize(vocab, text, add_special, parse_special)`, `parse_special` as the consumer's
  operation promises (`[verify.reference] parse_special`, default true: markup such as `<s>` is a special token);
- detokenize: `llama_detokenize(..., remove_special, unparse_special)` as configured (default false, false);
- generate: the prompt decoded in sequence 0, then `llama_sampler_sample` over a sampler chain built from the same
  parameters, in llama.cpp common's documented order (penalties, top-k, top-p, min-p, temperature, then the
  seeded distribution); values the consumer's API does not take are fixed by config (`[verify.reference.fixed]`),
  else llama.cpp common's defaults, read from the tree's `common/common.h`: an assumed value is no knowledge of the
  consumer's sampler, so a sampled comparison with one is reported, not judged (`not_judged`); generated pieces
  rendered as configured (default: special tokens not rendered); it stops at an end-of-generation token, at
  max_tokens, or when the context is full;
- generate_parallel: each prompt alone, as an independent sequence (its output is what `generate` gives it);
  a prompt that cannot run (no text, more tokens than one sequence holds or one batch takes) has no result.

Where the consumer's API promises less the comparison is narrowed and the evidence says so: `sampled = false`
(its sampler order or seeding is its own: sampled outputs are not compared, greedy ones are), and any fixed value.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cffi

from verify.bindings import BindingError, preprocess_header
from verify.driver import Sampling
from verify.observe import DECODE, ObserveError, Observer, _cffi_ready, closure, parse_declarations

# libllama functions the reference calls besides the observer's (DECODE, memory clearing)
TEXT = ("llama_tokenize", "llama_detokenize", "llama_token_to_piece", "llama_model_get_vocab")
SAMPLERS = (
    "llama_sampler_chain_default_params", "llama_sampler_chain_init", "llama_sampler_chain_add",
    "llama_sampler_init_penalties", "llama_sampler_init_top_k", "llama_sampler_init_top_p",
    "llama_sampler_init_min_p", "llama_sampler_init_temp_ext", "llama_sampler_init_dist", "llama_sampler_sample",
    "llama_sampler_free",
)  # fmt: skip
REFERENCE_FUNCTIONS = TEXT + SAMPLERS
# used through pointers only; its vtable names ggml backend types at b7836, which llama.h does not declare
OPAQUE = ("struct llama_sampler", "struct llama_sampler_i")
# llama.cpp common's sampler order (common_params_sampling::samplers, b5415 and b7836 alike); DRY, top-n-sigma,
# typical-p and XTC sit at their disabled values there (multiplier 0, -1, 1.0, probability 0) and leave the
# candidates untouched, so the chain omits them
COMMON_ORDER = ("penalties", "top_k", "top_p", "min_p", "temperature")
SAMPLER_NAMES = frozenset(COMMON_ORDER)
# common_params_sampling's field for each sampling role, and the value used when common/common.h cannot be read
COMMON_FIELDS = {"temperature": ("temp", 0.8), "top_k": ("top_k", 40), "top_p": ("top_p", 0.95),
                 "min_p": ("min_p", 0.05), "repeat_penalty": ("penalty_repeat", 1.0),
                 "repeat_last_n": ("penalty_last_n", 64)}  # fmt: skip
SAMPLING_ROLES = tuple(COMMON_FIELDS) + ("seed", "max_tokens")
# the sampling roles each sampler of the chain reads
ROLES_OF = {"penalties": ("repeat_penalty", "repeat_last_n"), "top_k": ("top_k",), "top_p": ("top_p",),
            "min_p": ("min_p",), "temperature": ("temperature",)}  # fmt: skip
LLAMA_DEFAULT_SEED = 0xFFFFFFFF


class ReferenceError(Exception):  # noqa: N818 - the reference could not be computed (a harness problem)
    """libllama's primitives are not available or refused an input: the comparison cannot be made."""


class ReferenceConfigError(ValueError):
    """`[verify.reference]` has a key or value the reference does not know."""


@dataclass(frozen=True)
class ReferenceConfig:
    """`[verify.reference]` in llama-migrate.toml: what the consumer's operations promise, where it is less than
    (or other than) llama.cpp's defaults."""

    parse_special: bool = True
    remove_special: bool = False
    unparse_special: bool = False
    render_special: bool = False  # generated pieces: special tokens rendered as text
    sampled: bool = True  # sampled outputs compared token for token (false: the consumer's sampler is its own)
    order: tuple[str, ...] = COMMON_ORDER
    fixed: dict[str, float] = field(default_factory=dict)  # sampling values the consumer's API does not take

    @classmethod
    def from_table(cls, table: dict[str, Any] | None) -> ReferenceConfig:
        table = dict(table or {})
        known = {"parse_special", "remove_special", "unparse_special", "render_special", "sampled", "order", "fixed"}
        unknown = set(table) - known
        if unknown:
            raise ReferenceConfigError(f"[verify.reference]: unknown key(s) {', '.join(sorted(unknown))}; known: "
                                       f"{', '.join(sorted(known))}")  # fmt: skip
        flags = {k: table[k] for k in known - {"order", "fixed"} if k in table}
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise ReferenceConfigError(f"[verify.reference] {key} must be true or false, got {value!r}")
        order = tuple(table.get("order", COMMON_ORDER))
        if not set(order) <= SAMPLER_NAMES:
            raise ReferenceConfigError(f"[verify.reference] order: unknown sampler(s) "
                                       f"{', '.join(sorted(set(order) - SAMPLER_NAMES))}; known: "
                                       f"{', '.join(COMMON_ORDER)}")  # fmt: skip
        fixed = dict(table.get("fixed", {}))
        if not set(fixed) <= set(COMMON_FIELDS):
            raise ReferenceConfigError(f"[verify.reference.fixed]: unknown value(s) "
                                       f"{', '.join(sorted(set(fixed) - set(COMMON_FIELDS)))}; known: "
                                       f"{', '.join(COMMON_FIELDS)}")  # fmt: skip
        return cls(**flags, order=order, fixed={k: float(v) for k, v in fixed.items()})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def common_defaults(tree: Path) -> dict[str, float]:
    """llama.cpp common's sampling defaults (`common_params_sampling` in the tree's common/common.h), by role."""
    header = tree / "common" / "common.h"
    text = header.read_text(errors="replace") if header.is_file() else ""
    values: dict[str, float] = {}
    for role, (name, fallback) in COMMON_FIELDS.items():
        found = re.search(rf"\b(?:float|int32_t)\s+{name}\s*=\s*(-?[0-9.]+)f?\s*;", text)
        values[role] = float(found.group(1)) if found else float(fallback)
    return values


def reference_declarations(tree: Path) -> tuple[str, dict[str, str]]:
    """cdef text of the reference's libllama functions out of the tree's own llama.h (the sampler opaque)."""
    include = [tree / "include", tree / "ggml" / "include"]
    try:
        source = preprocess_header(tree / "include" / "llama.h", include)
    except (BindingError, subprocess.SubprocessError, OSError) as exc:
        raise ReferenceError(f"cannot read {tree}/include/llama.h: {exc}") from exc
    decls = {name: d for name, d in parse_declarations(source).items() if name not in OPAQUE}
    chosen, missing = closure(decls, list(REFERENCE_FUNCTIONS))
    return "struct llama_sampler;\n" + "\n".join(_cffi_ready(d) for d in chosen), missing


def c_string(data: bytes) -> str:
    """What a C API returning `char *` can hand over: the text up to its first NUL (a byte token <0x00> ends it)."""
    return data.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


@dataclass
class Generation:
    """The reference's answer for one prompt: tokens chosen, the text a consumer returns for them, why it stopped."""

    prompt_tokens: list[int]
    tokens: list[int]
    text: str | None  # None: the prompt cannot run (see `stopped`)
    stopped: str  # max_tokens | eog | context_full | prompt_empty | prompt_too_long

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Reference:
    """The oracle of one build: libllama's public primitives on the consumer's own model and context."""

    def __init__(self, observer: Observer, config: ReferenceConfig, declarations: tuple[str, dict[str, str]] | None
                 = None) -> None:  # fmt: skip
        self.obs = observer
        self.ffi: cffi.FFI = observer.ffi
        self.config = config
        text, missing = declarations if declarations is not None else reference_declarations(observer.tree)
        if missing:
            raise ReferenceError("libllama primitives missing from llama.h: "
                                 + "; ".join(f"{k}: {v}" for k, v in missing.items()))  # fmt: skip
        try:
            self.ffi.cdef(text, override=True)
        except cffi.CDefError as exc:
            raise ReferenceError(f"cffi cannot read the reference's llama.h declarations: {exc}") from exc
        self.lib: Any = self.ffi.dlopen(str(observer.bindings.library_path))
        absent = [n for n in REFERENCE_FUNCTIONS if not hasattr(self.lib, n)]
        if absent or not observer.has(*DECODE):
            raise ReferenceError("libllama primitives not exported by the library: "
                                 + ", ".join(absent + [observer.why_not(*DECODE)]))  # fmt: skip
        self.defaults = common_defaults(observer.tree)

    # -- text

    def vocab(self, model: Any) -> Any:
        return self.lib.llama_model_get_vocab(self.obs.model_of(model))

    def tokenize(self, model: Any, text: str, add_special: bool) -> list[int]:
        data = text.encode()
        vocab = self.vocab(model)
        capacity = len(data) + 8
        for _ in range(2):
            buf = self.ffi.new("llama_token[]", capacity)
            n = int(self.lib.llama_tokenize(vocab, data, len(data), buf, capacity, add_special,
                                            self.config.parse_special))  # fmt: skip
            if n >= 0:
                return [int(buf[i]) for i in range(n)]
            capacity = -n
        raise ReferenceError(f"llama_tokenize refused {text[:40]!r} twice")

    def detokenize(self, model: Any, tokens: list[int]) -> str:
        vocab = self.vocab(model)
        array = self.ffi.new("llama_token[]", tokens or [0])
        capacity = 8 * len(tokens) + 16
        for _ in range(2):
            buf = self.ffi.new("char[]", capacity)
            n = int(self.lib.llama_detokenize(vocab, array, len(tokens), buf, capacity, self.config.remove_special,
                                              self.config.unparse_special))  # fmt: skip
            if n >= 0:
                return c_string(self.ffi.unpack(buf, n))
            capacity = -n
        raise ReferenceError(f"llama_detokenize refused {len(tokens)} tokens twice")

    def piece(self, vocab: Any, token: int) -> bytes:
        buf = self.ffi.new("char[]", 256)
        n = int(self.lib.llama_token_to_piece(vocab, token, buf, 256, 0, self.config.render_special))
        return self.ffi.unpack(buf, max(0, n))

    # -- sampling

    def effective(self, sampling: Sampling, taken: set[str]) -> dict[str, float]:
        """The values the consumer's sampler runs with: its own where its API takes them, else fixed by config,
        else llama.cpp common's default."""
        values = {}
        for role in COMMON_FIELDS:
            if role in taken:
                values[role] = float(sampling.value(role))
            else:
                values[role] = self.config.fixed.get(role, self.defaults[role])
        values["seed"] = sampling.seed if "seed" in taken else LLAMA_DEFAULT_SEED
        return values

    def chain(self, values: dict[str, float]) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        made = {
            "penalties": lambda: lib.llama_sampler_init_penalties(int(values["repeat_last_n"]),
                                                                  values["repeat_penalty"], 0.0, 0.0),
            "top_k": lambda: lib.llama_sampler_init_top_k(int(values["top_k"])),
            "top_p": lambda: lib.llama_sampler_init_top_p(values["top_p"], 0),
            "min_p": lambda: lib.llama_sampler_init_min_p(values["min_p"], 0),
            # temp_ext with no dynamic range is the plain temperature sampler; <= 0 keeps the top token only
            "temperature": lambda: lib.llama_sampler_init_temp_ext(values["temperature"], 0.0, 1.0),
        }  # fmt: skip
        for name in self.config.order:
            lib.llama_sampler_chain_add(chain, made[name]())
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(int(values["seed"]) & 0xFFFFFFFF))
        return chain

    def greedy(self, sampling: Sampling, taken: set[str]) -> bool:
        return sampling.temperature <= 0 or ("temperature" not in taken and self.defaults["temperature"] <= 0)

    def comparable(self, sampling: Sampling, taken: set[str]) -> str:
        """Why a generation with these settings cannot be judged token for token ("" when it can)."""
        if self.greedy(sampling, taken):
            return ""
        if not self.config.sampled:
            return "sampled outputs not compared: [verify.reference] sampled = false (the consumer's sampler)"
        if "seed" not in taken:
            return "sampled outputs not compared: the API takes no seed (each call draws one)"
        return self.not_judged(sampling, taken)

    def assumed(self, sampling: Sampling, taken: set[str]) -> list[str]:
        """The chain's roles that the API does not take and config does not fix: their value (common's default)
        is a guess about the consumer's sampler, not knowledge of it."""
        roles = [role for name in self.config.order for role in ROLES_OF[name]]
        if "repeat_last_n" in roles and self.effective(sampling, taken)["repeat_penalty"] == 1.0:
            roles.remove("repeat_last_n")  # penalty 1 (frequency and presence 0): the window changes nothing
        return [r for r in roles if r not in taken and r not in self.config.fixed]

    def not_judged(self, sampling: Sampling, taken: set[str]) -> str:
        """Why a sampled comparison cannot fail the consumer ("" when every role of the chain is known)."""
        assumed = [] if self.greedy(sampling, taken) else self.assumed(sampling, taken)
        if not assumed:
            return ""
        guesses = ", ".join(f"{r} (llama.cpp common's default {self.defaults[r]:g} would be assumed)" for r in assumed)
        keys = ", ".join(f"fixed.{r}" for r in assumed)
        return (f"not judged: the API does not take {guesses}; set [verify.reference] {keys} to the value your "
                "sampler uses to compare")  # fmt: skip

    # -- generation

    def generate(self, ctx: Any, model: Any, prompt: str, sampling: Sampling, taken: set[str]) -> Generation:
        """The prompt alone in sequence 0 of the consumer's context (memory cleared before and after)."""
        if prompt == "":
            return Generation([], [], None, "prompt_empty")
        prompt_tokens = self.tokenize(model, prompt, True)
        lctx = self.obs._ctx(ctx)
        info = self.obs.context_info(lctx)
        # one sequence's room: n_ctx_seq where the release splits the context per sequence (b7836), else n_ctx;
        # a prompt is decoded in one batch of at most n_batch tokens (llama.cpp aborts on more at b7836)
        n_ctx = info.get("n_ctx_seq", info["n_ctx"])
        if not prompt_tokens or len(prompt_tokens) >= n_ctx or len(prompt_tokens) > info.get("n_batch", n_ctx):
            return Generation(prompt_tokens, [], None, "prompt_too_long" if prompt_tokens else "prompt_empty")
        vocab = self.vocab(model)
        chain = self.chain(self.effective(sampling, taken))
        self.obs.clear_memory(lctx)
        try:
            return self._run(lctx, vocab, chain, prompt_tokens, sampling.max_tokens, n_ctx)
        finally:
            self.lib.llama_sampler_free(chain)
            self.obs.clear_memory(lctx)

    def _run(self, lctx: Any, vocab: Any, chain: Any, prompt_tokens: list[int], max_tokens: int,
             n_ctx: int) -> Generation:  # fmt: skip
        ret = self.obs._decode(lctx, prompt_tokens, 0)
        if ret != 0:
            raise ReferenceError(f"llama_decode of the prompt returned {ret}")
        tokens: list[int] = []
        text = b""
        pos, stopped = len(prompt_tokens), "max_tokens"
        while len(tokens) < max_tokens:
            if pos >= n_ctx:
                stopped = "context_full"
                break
            token = int(self.lib.llama_sampler_sample(chain, lctx, -1))
            if self.obs.lib.llama_vocab_is_eog(vocab, token):
                stopped = "eog"
                break
            tokens.append(token)
            text += self.piece(vocab, token)
            ret = self.obs._decode(lctx, [token], pos)
            if ret != 0:
                raise ReferenceError(f"llama_decode of generated token at position {pos} returned {ret}")
            pos += 1
        return Generation(list(prompt_tokens), tokens, c_string(text), stopped)

    def generate_parallel(self, ctx: Any, model: Any, prompts: list[str], sampling: Sampling,
                          taken: set[str]) -> list[Generation]:  # fmt: skip
        """Independent sequences: each prompt's answer is its answer alone."""
        return [self.generate(ctx, model, p, sampling, taken) for p in prompts]


def sampling_taken(driver: Any, op: str) -> set[str]:
    """The sampling roles the consumer's function for `op` takes (a parameter or a sampling-struct field)."""
    if driver._adapted(op) is not None:
        return set(SAMPLING_ROLES)
    bound = driver.binding.get(op)
    if bound is None:
        return set()
    return {r for r in SAMPLING_ROLES if bound.has(r) or r in bound.fields.values()}


def reference_for(session: Any) -> Reference:
    """The session's reference (made once per child), or ObserveError/ReferenceError with the reason."""
    cached = getattr(session, "_reference", None)
    if cached is not None:
        return cached
    obs = session.need_observer(*DECODE)
    if not session.can_observe_context():
        session.shim.llama_context(None)  # raises Skip with the reason and the config line to add
    config = ReferenceConfig.from_table(session.target.verify.get("reference"))
    try:
        reference = Reference(obs, config)
    except ObserveError as exc:
        raise ReferenceError(str(exc)) from exc
    session._reference = reference
    return reference
