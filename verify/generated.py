"""Generated inputs: property-based runs of each operation against the oracle (verify/reference.py).

Hypothesis draws the inputs (deterministically: `derandomize`, no example database, so two runs draw the same
ones), `max_examples` bounds each property, and a failure is shrunk to the smallest input that still fails. What is
drawn:

- tokenize: texts with special-token markup (the model's own BOS/EOS text), Unicode, empty and long, with and
  without add_special; detokenize: token id lists over the whole vocabulary;
- generate: prompts and sampling settings across their ranges (greedy and sampled: temperature, top_k, top_p,
  min_p, repeat_penalty, seed, max_tokens), on one context, so calls are interleaved with earlier ones;
- generate_parallel (greedy): prompt lists shorter than, as long as and longer than the slots, sharing a prefix,
  with at most one prompt that cannot run (more tokens than the context holds).

A failure is a `Finding`: the shrunk input, the reference's answer and the consumer's. Shrinking is bounded too:
after `shrink_calls` further calls only the smallest failing input found so far still counts as failing, so
Hypothesis settles on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from verify.driver import Sampling
from verify.reference import Reference, sampling_taken

WORDS = ("The", "stone", "and", "the", "north", "glass", "water", "river", "light", "chair", "table", "bell")
UNICODE = ("é", "日本", "Ω", "ß", "😀", "\n", "\t", "  ", "ਿ", "ä")
LONG_WORDS = 700  # a prompt this many words long (~700 tokens) outgrows a sequence and a batch of n_ctx 512
N_CTX = 512


class PropertyFailed(AssertionError):
    """The consumer's answer differs from the reference's on one generated input."""


@dataclass
class Finding:
    """A property that failed: the (shrunk) input, the reference's answer and what the consumer returned."""

    prop: str
    input: dict[str, Any]
    reference: Any
    observed: Any
    problem: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"{self.prop}: {self.problem}; shrunk input {self.input!r}; reference {self.reference!r}"


@dataclass
class PropertyRun:
    prop: str
    examples: int = 0  # calls of the property (drawn examples and shrink steps)
    seconds: float = 0.0
    finding: Finding | None = None
    not_run: str = ""  # why the property could not run here
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["finding"] = self.finding.to_json() if self.finding else None
        return data


@dataclass
class Budget:
    examples: int = 25  # drawn examples per property
    shrink_calls: int = 200  # property calls after the first failure before shrinking stops


Check = Callable[[dict[str, Any]], Finding | None]


def run_property(prop: str, strategy: Any, check: Check, budget: Budget) -> PropertyRun:
    """Draw inputs from `strategy`, call `check` on each; the first failure is shrunk within the budget."""
    from hypothesis import HealthCheck, given, settings

    run = PropertyRun(prop)
    smallest: list[Finding] = []
    calls_after_failure = [0]

    def outcome(example: dict[str, Any]) -> Finding | None:
        if smallest:
            calls_after_failure[0] += 1
            if calls_after_failure[0] > budget.shrink_calls:
                # shrinking budget spent: only the smallest failing input found so far fails from here on
                return smallest[-1] if example == smallest[-1].input else None
        finding = check(example)
        if finding is not None and finding is not (smallest[-1] if smallest else None):
            smallest.append(finding)
        return finding

    def body(example: dict[str, Any]) -> None:
        run.examples += 1
        finding = outcome(example)
        if finding is not None:
            raise PropertyFailed(finding.problem)  # one raising line: Hypothesis sees one failure, and shrinks it

    runner = settings(max_examples=budget.examples, derandomize=True, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck), print_blob=False)(given(strategy)(body))  # fmt: skip
    started = time.monotonic()
    try:
        runner()
    except (PropertyFailed, ExceptionGroup) as exc:  # a group: Hypothesis saw the failure change on replay
        if not smallest:
            raise
        run.finding = smallest[-1]  # Hypothesis replays the shrunk example last
        if isinstance(exc, ExceptionGroup):
            run.notes.append(f"Hypothesis: {type(exc).__name__}: the smallest failing input kept")
    run.seconds = round(time.monotonic() - started, 3)
    return run


# --- strategies ----------------------------------------------------------------------------------------------------


def texts(markup: tuple[str, ...]) -> Any:
    """Texts with special-token markup, Unicode, empty and long (no NUL: a C string ends there)."""
    from hypothesis import strategies as st

    plain = st.text(st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)), max_size=24)
    piece = st.one_of(st.sampled_from(markup + WORDS + UNICODE + (" ",)), plain)
    joined = st.lists(piece, max_size=12).map("".join)
    long = st.integers(60, 400).map(lambda n: " ".join(WORDS[i % len(WORDS)] for i in range(n)))
    return st.one_of(joined, st.just(""), long)


def prompts() -> Any:
    from hypothesis import strategies as st

    words = st.lists(st.sampled_from(WORDS + UNICODE), min_size=1, max_size=10).map(" ".join)
    return words.filter(lambda p: p.strip() != "")


def samplings(taken: set[str]) -> Any:
    """Sampling settings across the ranges the consumer's header defines (top_p in (0, 1], penalty >= 1)."""
    from hypothesis import strategies as st

    greedy = st.just(0.0)
    sampled = st.floats(0.1, 2.0, allow_nan=False).map(lambda t: round(t, 3))
    return st.fixed_dictionaries({
        "max_tokens": st.integers(1, 16),
        "temperature": st.one_of(greedy, sampled),
        "top_k": st.integers(0, 100),
        "top_p": st.floats(0.05, 1.0).map(lambda p: round(p, 3)),
        "min_p": st.floats(0.0, 0.5).map(lambda p: round(p, 3)),
        "repeat_penalty": st.one_of(st.just(1.0), st.floats(1.0, 2.0).map(lambda p: round(p, 3))),
        "seed": st.integers(0, 2**31 - 1),
    }).map(lambda d: {k: v for k, v in d.items() if k in taken or k == "max_tokens"})  # fmt: skip


def prompt_lists(max_slots: int) -> Any:
    """n_seq_max, and a prompt list around the slot count, sharing a prefix, with at most one prompt too long."""
    from hypothesis import strategies as st

    @st.composite
    def draw(d: Any) -> dict[str, Any]:
        n_seq_max = d(st.integers(1, max_slots))
        prefix = d(st.sampled_from(("", "The", "The stone and")))
        n = d(st.integers(1, n_seq_max + 2))
        suffixes = d(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),
                              min_size=n, max_size=n))  # fmt: skip
        items = [(prefix + " " + s).strip() for s in suffixes]
        failing = d(st.one_of(st.none(), st.integers(0, n - 1)))
        if failing is not None:
            items[failing] = " ".join(WORDS[i % len(WORDS)] for i in range(LONG_WORDS))
        return {"n_seq_max": n_seq_max, "prompts": items}

    return draw()


# --- properties ----------------------------------------------------------------------------------------------------


def clip(value: Any, n: int = 200) -> Any:
    if isinstance(value, str) and len(value) > n:
        return value[:n] + f"... ({len(value)} chars)"
    if isinstance(value, list):
        return [clip(v, n) for v in value]
    if isinstance(value, dict):
        return {k: clip(v, n) for k, v in value.items()}
    return value


class Properties:
    """Each operation against the reference on one session (model loaded once, contexts reused)."""

    def __init__(self, session: Any, reference: Reference, budget: Budget) -> None:
        self.s = session
        self.ref = reference
        self.budget = budget
        self.model = session.model()
        self.taken = sampling_taken(session.shim, "generate")
        self._contexts: dict[int, Any] = {}

    def context(self, n_seq_max: int) -> Any:
        if n_seq_max not in self._contexts:
            self._contexts[n_seq_max] = self.s.context(N_CTX, n_seq_max)
        return self._contexts[n_seq_max]

    def markup(self) -> tuple[str, ...]:
        vocab = self.ref.vocab(self.model)
        specials = []
        for name in ("llama_vocab_bos", "llama_vocab_eos"):
            if self.s.observer is not None and self.s.observer.has(name):
                token = int(getattr(self.s.observer.lib, name)(vocab))
                specials.append(self.s.observer.piece(vocab, token, special=True))
        return tuple(t for t in specials if t)

    def all(self) -> list[PropertyRun]:
        runs = [self.tokenize(), self.detokenize(), self.generate()]
        if self.s.shim.has("generate_parallel"):
            runs.append(self.generate_parallel())
        return runs

    def tokenize(self) -> PropertyRun:
        from hypothesis import strategies as st

        def check(example: dict[str, Any]) -> Finding | None:
            text, add = example["text"], example["add_special"]
            call = self.s.shim.tokenize(self.model, text, add)
            want = self.ref.tokenize(self.model, text, add)
            if call.ok and call.value == want:
                return None
            problem = f"tokenize failed: {call.message}" if not call.ok else "tokens differ from llama_tokenize's"
            return Finding("tokenize", clip(example), want, call.value, problem)

        strategy = st.fixed_dictionaries({"text": texts(self.markup()), "add_special": st.booleans()})
        run = run_property("tokenize", strategy, check, self.budget)
        run.notes.append(f"parse_special {self.ref.config.parse_special} ([verify.reference])")
        return run

    def detokenize(self) -> PropertyRun:
        from hypothesis import strategies as st

        n_vocab = self.s.n_vocab(self.model)

        def check(example: dict[str, Any]) -> Finding | None:
            tokens = example["tokens"]
            call = self.s.shim.detokenize(self.model, tokens)
            want = self.ref.detokenize(self.model, tokens)
            if call.ok and call.value == want:
                return None
            problem = f"detokenize failed: {call.message}" if not call.ok else "text differs from llama_detokenize's"
            return Finding("detokenize", example, want, call.value, problem)

        strategy = st.fixed_dictionaries({"tokens": st.lists(st.integers(0, n_vocab - 1), max_size=24)})
        return run_property("detokenize", strategy, check, self.budget)

    def generate(self) -> PropertyRun:
        from hypothesis import strategies as st

        ctx = self.context(1)
        notes: set[str] = set()

        def check(example: dict[str, Any]) -> Finding | None:
            sampling = replace(Sampling(), **example["sampling"])
            why_not = self.ref.comparable(sampling, self.taken)
            if why_not:
                notes.add(why_not)
                sampling = replace(sampling, temperature=0.0)
            call = self.s.shim.generate(ctx, example["prompt"], sampling)
            want = self.ref.generate(ctx, self.model, example["prompt"], sampling, self.taken)
            if call.ok and call.value == want.text:
                return None
            problem = f"generate failed: {call.message}" if not call.ok else "text differs from the reference's"
            return Finding("generate", example, {"text": want.text, "stopped": want.stopped}, call.value, problem)

        strategy = st.fixed_dictionaries({"prompt": prompts(), "sampling": samplings(self.taken)})
        run = run_property("generate", strategy, check, self.budget)
        run.notes += sorted(notes)
        return run

    def generate_parallel(self) -> PropertyRun:
        greedy = Sampling()
        taken = sampling_taken(self.s.shim, "generate_parallel")

        def check(example: dict[str, Any]) -> Finding | None:
            ctx = self.context(example["n_seq_max"])
            items = example["prompts"]
            call = self.s.shim.generate_parallel(ctx, items, greedy)
            wants = self.ref.generate_parallel(ctx, self.model, items, greedy, taken)
            expected = [w.text for w in wants]
            got = call.value if call.value is not None else [None] * len(items)
            problems = [f"prompt {i}: {'no result' if g is None else repr(clip(g, 60))} where the reference gives "
                        f"{'no result' if w is None else repr(clip(w, 60))}"
                        for i, (g, w) in enumerate(zip(got, expected, strict=True)) if g != w]  # fmt: skip
            if not problems:
                return None
            slots = {"n_prompts": len(items)}
            return Finding("generate_parallel", clip(example | slots, 60), clip(expected, 60), clip(got, 60),
                           "; ".join(problems))  # fmt: skip

        run = run_property("generate_parallel", prompt_lists(4), check, self.budget)
        run.notes.append("greedy; each prompt's reference is its output alone (independent sequences); a prompt "
                         f"of {LONG_WORDS} words holds more tokens than a sequence or a batch of a context of "
                         f"{N_CTX}: no result expected for it")  # fmt: skip
        return run
