"""Planted faults: small variants of a consumer's shim, each of which one named check must catch.

They prove the harness can fail: a check that passes on every variant proves nothing. Each fault is a regular
expression substitution that must match exactly once, written to match the shim before migration (llama_kv_self_*)
and after it (llama_memory_*), so the same fault can be planted on both sides of the upgrade. `versions` says
where the fault is a defect: some are harmless at b5421 and break only at b7785 (sequence ids, cross-sequence
copies and positions are checked strictly there).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SHIM = Path("custom_files") / "localllm_capi.cpp"
DEFAULT_FIXTURE = "localllm"
# each fixture's shim, relative to the fixture; a fault names its edits per fixture
SHIMS = {"localllm": SHIM, "localllm-next": SHIM}


class FaultError(Exception):
    """A fault's pattern did not match the shim exactly once: the fixture changed under it."""


@dataclass(frozen=True)
class Fault:
    key: str
    description: str
    check: str  # the check that must fail
    versions: tuple[str, ...]  # llama.cpp versions at which the variant is broken
    edits: tuple[tuple[str, str], ...]  # (regex, replacement), each matching exactly once
    # every check of the checklist (throughput aside) the variant fails, by version where it is a defect: the
    # named check and the ones the same defect reaches (why, beside each fault). At b7785 the migrated fixture
    # (default rules) also fails BASELINE_B7785 without any fault.
    breaks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # the same defect in other fixtures' shims (`edits` is fixtures/localllm's), by fixture folder name
    elsewhere: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def edits_for(self, fixture: str) -> tuple[tuple[str, str], ...]:
        if fixture == DEFAULT_FIXTURE:
            return self.edits
        if fixture not in self.elsewhere:
            raise FaultError(f"fault {self.key} has no edits for fixture {fixture!r}")
        return self.elsewhere[fixture]


# Without kv_unified, b7785 gives each sequence n_ctx / n_seq_max cells: the unfaulted migrated fixture fails this.
BASELINE_B7785 = ("parallel_isolation_capacity",)
# generate_parallel compared with generate alone, for every prompt set of the isolation checks
ISOLATION = ("parallel_isolation_last_token", "parallel_isolation_prefix_prompt", "parallel_isolation_queue",
             "parallel_isolation_shared_prefix")  # fmt: skip
# the blind-spot checks that run generate_parallel (a parallel call that fails fails each of them)
PARALLEL_CALLERS = ("state_across_calls", "parallel_uneven_finish", "parallel_result_order", "sampling_top_k_disabled",
                    "sampling_seed")  # fmt: skip
# the blind-spot checks that call generate several times on one context
REPEATED_GENERATE = ("generate_stops_at_eog", "sampling_top_k_disabled", "sampling_seed")
# the blind-spot checks that compare generate's text with libllama's own greedy decode
GENERATE_REFERENCE = ("generate_stops_at_eog", "generate_context_full", "sampling_top_k_disabled")
# the checks that call generate on the same prompt more than once, each output also against llama.cpp's sampler chain
SAME_TWICE = ("generate_repeatable", "generate_aba")


FAULTS: dict[str, Fault] = {
    f.key: f
    for f in (
        Fault(
            "generate_keeps_memory",
            "generate does not clear the memory before decoding the prompt",
            "memory_cleared",
            ("b5421", "b7785"),
            ((r"(// start from an empty cache[^\n]*\n\s*)llama_(?:kv_self_clear\(ctx\)|memory_clear\(mem, \w+\));",
              r"\1/* planted fault: memory not cleared */"),),
            # the next generate continues the last one's context: A-B-A and the reference differ too, and so does
            # every check that calls generate several times on one context (the stop prompts, the sampling
            # checks); at b7785 the stale cells also collide with the new prompt's positions, so two identical
            # calls differ; the leak check's 27 generate calls on one context fill it, and the calls fail; at b5421
            # the control-token prompts run one after another on one context too, and the failing calls' later
            # decodes run at positions growing from call to call, so their heap does not settle
            {"b5421": ("generate_aba", "generate_matches_reference", "memory_cleared", "frees_release_memory",
                       *REPEATED_GENERATE, "generate_control_tokens", "failed_calls_release_memory"),
             "b7785": ("generate_aba", "generate_matches_reference", "generate_repeatable", "memory_cleared",
                       "frees_release_memory", *REPEATED_GENERATE)},
            {"localllm-next": ((r"(std::string & output, std::string & err\) \{\n(?:[^\n]*\n){0,3}?\s*)"
                                r"llama_(?:kv_self_clear\(ctx\)|memory_clear\(mem, \w+\));",
                                r"\1/* planted fault: memory not cleared */"),)},
        ),
        Fault(
            "slots_share_sequence",
            "two parallel slots decode into the same sequence id",
            "parallel_isolation_shared_prefix",
            ("b5421", "b7785"),
            ((r"slots\[s\]\.seq_id = first_seq \+ s;", "slots[s].seq_id = first_seq + s / 2;"),),
            # every parallel call mixes two prompts' cells (those compared with a reference fail: the stop
            # prompts, greedy with top_k 0, the seeded parallel outputs against llama.cpp's sampler chain, the
            # control-token prompts); at b7785 every parallel call fails outright
            {"b5421": (*ISOLATION, "parallel_uneven_finish", "sampling_top_k_disabled", "sampling_seed",
                       "generate_control_tokens"),
             "b7785": (*ISOLATION, "generate_parallel", *PARALLEL_CALLERS)},
            {"localllm-next": ((r"slots_\[s\]\.seq = first_seq \+ s;", "slots_[s].seq = first_seq + s / 2;"),)},
        ),
        Fault(
            "first_token_wrong_logits",
            "the first generated token is sampled from the first prompt row's logits, not the last one's",
            "generate_matches_reference",
            ("b5421", "b7785"),
            (
                (r"(common_batch_add\(batch, prompt_tokens\[i\], i, \{0\}, )i == n_prompt - 1\);", r"\1true);"),
                (r"common_sampler_sample\(smpl\.get\(\), ctx, -1\)",
                 "common_sampler_sample(smpl.get(), ctx, n_generated == 0 ? 0 : -1)"),
            ),
            # generate alone is wrong, generate_parallel is not: every isolation check (and, at b5421, the
            # near-capacity one, which b7785 fails anyway) compares the two, and every check comparing generate
            # with libllama's decode fails (the stop prompts, the end of the context, greedy with top_k 0), and so do
            # the seeded outputs against llama.cpp's sampler chain (sampling_seed), and the same wrong text each time
            # is compared with the reference too (generate_repeatable, generate_aba); at b5421 also the checks on
            # the model variants, which compare generate's text with llama.cpp's (the control tokens, the window)
            {"b5421": ("generate_matches_reference", "parallel_isolation_capacity", *ISOLATION, *GENERATE_REFERENCE,
                       "sampling_seed", *SAME_TWICE, "generate_control_tokens", "sampling_penalty_window"),
             "b7785": ("generate_matches_reference", *ISOLATION, *GENERATE_REFERENCE, "sampling_seed", *SAME_TWICE)},
            {"localllm-next": (
                (r"(common_batch_add\(guard\.batch, tokens\[i\], i, \{seq\}, )i == to - 1\);", r"\1true);"),
                (r"sample_next\(smpl\.get\(\), ctx, -1, token, err\)",
                 "sample_next(smpl.get(), ctx, n_generated == 0 ? 0 : -1, token, err)"),
            )},
        ),
        Fault(
            "slot_ids_reach_n_seq_max",
            "slots use sequence ids 1..n_seq_max (one too many): accepted at b5421, an abort at b7785",
            "parallel_isolation_queue",
            ("b7785",),
            ((r"int n_slots = n_seq_max > 1 \? n_seq_max - 1 : 1;", "int n_slots = n_seq_max > 1 ? n_seq_max : 1;"),),
            # only a queue longer than the slots reaches the last id: the queue set, the stop prompts (6 prompts
            # on 2 and 3 slots) and the longer queue of state_across_calls; out of order (3 prompts, 2 slots) too;
            # the control-token prompts (5 on 2 slots)
            {"b7785": ("parallel_isolation_queue", "parallel_uneven_finish", "parallel_result_order",
                       "state_across_calls", "generate_control_tokens")},
            {"localllm-next": ((r"std::min<int>\(n_seq_max - first_seq, ", "std::min<int>(n_seq_max, "),)},
        ),
        Fault(
            "redecode_last_prefix_token",
            "a slot decodes the prefix's last token again at a position its sequence already holds",
            "parallel_isolation_shared_prefix",
            ("b7785",),
            ((r"slot\.n_past = static_cast<int>\(prefix_len\);", "slot.n_past = static_cast<int>(prefix_len) - 1;"),),
            # every parallel call with a shared prefix is rejected (the leak check's and the control-token
            # prompts' too), and the prefix is counted twice
            {"b7785": (*ISOLATION, "generate_parallel", "shared_prefix_effective", "frees_release_memory",
                       *PARALLEL_CALLERS, "generate_control_tokens")},
            {"localllm-next": ((r"(s\.n_past = llama_(?:kv_self|memory)_seq_pos_max\([^;]*\) \+ 1);", r"\1 - 1;"),)},
        ),
        Fault(
            "partial_seq_cp",
            "the shared prefix is copied with a partial range: fine at b5421, an abort at b7785 without kv_unified",
            "parallel_isolation_shared_prefix",
            ("b7785",),
            ((r"(llama_(?:kv_self_seq_cp\(ctx|memory_seq_cp\(mem), 0, slot\.seq_id, )-1, -1\)",
              r"\g<1>0, static_cast<llama_pos>(prefix_len))"),),
            # the abort ends every check that runs generate_parallel on a shared prefix (the leak check's and the
            # control-token prompts' too)
            {"b7785": (*ISOLATION, "generate_parallel", "shared_prefix_effective", "error_prompt_too_long",
                       "memory_cleared", "frees_release_memory", *PARALLEL_CALLERS, "generate_control_tokens")},
            {"localllm-next": ((r"(llama_(?:kv_self_seq_cp\(ctx_|memory_seq_cp\([^,]+), 0, s\.seq, )-1, -1\)",
                                r"\g<1>0, static_cast<llama_pos>(prefix_len_))"),)},
        ),
        # --- the blind-spot checks (state across calls, stops, result order, sampling, context parameters): each
        # fault below is caught by its own check alone, on the default tiny model or the stop model
        Fault(
            "parallel_keeps_memory",
            "generate_parallel does not clear the memory first: what an earlier call left in sequence 0 stays",
            "state_across_calls",
            ("b5421", "b7785"),
            ((r"(try \{\n\s*)llama_(?:kv_self_clear\(ctx\)|memory_clear\(mem, \w+\));"
              r"(\n\n\s*const llama_model \* model)", r"\1/* planted fault: memory not cleared */\2"),),
            # every other check runs generate_parallel on a fresh context or after a call that cleaned up after
            # itself (generate_parallel removes its sequences; generate clears first): only a parallel call right
            # after generate meets the stale cells (at b7785 its prefix decode is refused)
            {"b5421": ("state_across_calls",), "b7785": ("state_across_calls",)},
            {"localllm-next": ((r"(try \{\n\s*)llama_(?:kv_self_clear\(ctx\)|memory_clear\(mem, \w+\));"
                                r"(\n\s*parallel_run run)", r"\1/* planted fault: memory not cleared */\2"),)},
        ),
        Fault(
            "generate_ignores_eog",
            "generate does not stop at an end-of-generation token: it decodes it and goes on to max_tokens",
            "generate_stops_at_eog",
            ("b5421", "b7785"),
            ((r"(if \(llama_vocab_is_eog\(vocab, token\)\) \{\n\s*)break;", r"\1/* planted fault: no stop */"),),
            # only the stop model emits EOS; the checks running it in parallel compare with libllama's decode
            {"b5421": ("generate_stops_at_eog",), "b7785": ("generate_stops_at_eog",)},
            {"localllm-next": ((r"(if \(llama_vocab_is_eog\(vocab, token\)\) \{\n\s*)break;",
                                r"\1/* planted fault: no stop */"),)},
        ),
        Fault(
            "slot_ignores_eog",
            "a parallel slot does not finish at an end-of-generation token: it decodes it and goes on",
            "parallel_uneven_finish",
            ("b5421", "b7785"),
            ((r"(if \(llama_vocab_is_eog\(vocab, token\)\) \{\n\s*)return true;", r"\1/* planted fault: no stop */"),),
            # each result still starts with its own prompt's output: the order check sees no other prompt's there
            {"b5421": ("parallel_uneven_finish",), "b7785": ("parallel_uneven_finish",)},
            {"localllm-next": ((r"(if \(llama_vocab_is_eog\(vocab_, token\)\) \{\n\s*)return true;",
                                r"\1/* planted fault: no stop */"),)},
        ),
        Fault(
            "results_compacted",
            "parallel results are stored by the index among the prompts that could run: a failed prompt shifts "
            "the later ones into its place",
            "parallel_result_order",
            ("b5421", "b7785"),
            ((r"results\[idx\] = dup_cstring\(slot\.text\);",
              "results[idx - static_cast<int>(std::count_if(prompt_errors.begin(), prompt_errors.begin() + idx, "
              "[](const std::string & e) { return !e.empty(); }))] = dup_cstring(slot.text);"),),
            # the other checks' failing prompts come last (error_prompt_too_long) or fail the whole call
            {"b5421": ("parallel_result_order",), "b7785": ("parallel_result_order",)},
            {"localllm-next": ((r"texts_\[s\.prompt\] = s\.text;\n(\s*)done_\[s\.prompt\]  = true;",
                                r"const int at = s.prompt - static_cast<int>(std::count_if(errors_.begin(), "
                                r"errors_.begin() + s.prompt, [](const std::string & e) { return !e.empty(); }));"
                                r"\n\1texts_[at] = s.text;\n\1done_[at] = true;"),)},
        ),
        Fault(
            "decode_past_context_end",
            "generate stops one position too late: it decodes a token at position n_ctx, which fails",
            "generate_context_full",
            ("b5421", "b7785"),
            ((r"if \(n_past >= n_ctx\) \{(\n\s*break;)", r"if (n_past > n_ctx) {\1"),),
            # no other check generates up to the end of the context
            {"b5421": ("generate_context_full",), "b7785": ("generate_context_full",)},
            {"localllm-next": ((r"n_generated < cfg\.max_tokens && n_past < n_ctx;",
                                "n_generated < cfg.max_tokens && n_past <= n_ctx;"),)},
        ),
        Fault(
            "greedy_only_with_top_k_1",
            "greedy is chosen by top_k == 1 rather than temperature <= 0, and temperature 0 then means 'default 0.8'",
            "sampling_top_k_disabled",
            ("b5421", "b7785"),
            ((r"if \(p\.temperature <= 0\.0f\) \{", "if (p.top_k == 1) {"),
             (r"sparams\.temp  = p\.temperature;", "sparams.temp  = p.temperature > 0.0f ? p.temperature : 0.8f;")),
            # every other check samples with top_k 1 (greedy either way) or a positive temperature
            {"b5421": ("sampling_top_k_disabled",), "b7785": ("sampling_top_k_disabled",)},
            {"localllm-next": ((r"if \(c\.temperature <= 0\.0f \|\| c\.top_k == 1\) \{", "if (c.top_k == 1) {"),
                               (r"p\.temp  = c\.temperature;",
                                "p.temp  = c.temperature > 0.0f ? c.temperature : 0.8f;"))},
        ),
        Fault(
            "seed_ignored",
            "the caller's seed never reaches the sampler: llama.cpp's default seed draws a random one per call",
            "sampling_seed",
            ("b5421", "b7785"),
            ((r"\n\s*sparams\.seed\s*= p\.seed;", "\n    /* planted fault: seed not set */"),),
            # only sampling_seed samples with a temperature above 0
            {"b5421": ("sampling_seed",), "b7785": ("sampling_seed",)},
            {"localllm-next": ((r"\n\s*p\.seed\s*= static_cast<uint32_t>\(c\.seed\);",
                                "\n    /* planted fault: seed not set */"),)},
        ),
        Fault(
            "threads_batch_ignored",
            "prompt processing ignores the caller's n_threads: n_threads_batch is left at llama.cpp's default",
            "context_params",
            ("b5421", "b7785"),
            ((r"\n\s*ctx_params\.n_threads_batch = n_threads;", "\n        /* planted fault: batch threads */"),),
            # a prompt decoded on llama.cpp's default threads is slower, not different
            {"b5421": ("context_params",), "b7785": ("context_params",)},
            {"localllm-next": ((r"\n\s*params\.n_threads_batch = n_threads;",
                                "\n        /* planted fault: batch threads */"),)},
        ),
        Fault(
            "repeat_penalty_dropped",
            "the caller's repeat_penalty never reaches the sampler (the common sampler's field left at its default)",
            "sampling_seed",
            ("b5421", "b7785"),
            ((r"\n\s*sparams\.penalty_repeat = p\.repeat_penalty > 0\.0f \? p\.repeat_penalty : 1\.0f;",
              "\n    /* planted fault: repeat penalty not set */"),),
            # every other check samples with the penalty at 1.0 (none), but the penalty window's (its cycles turn
            # away only where the penalty is applied)
            {"b5421": ("sampling_seed", "sampling_penalty_window"),
             "b7785": ("sampling_seed", "sampling_penalty_window")},
            {"localllm-next": ((r"\n\s*p\.penalty_repeat = c\.penalty_repeat > 0\.0f \? c\.penalty_repeat : 1\.0f;",
                                "\n    /* planted fault: repeat penalty not set */"),)},
        ),
        Fault(
            "result_string_leaked",
            "free_string_array frees the array and every string but the first: one result string lost per call",
            "frees_release_memory",
            ("b5421", "b7785"),
            ((r"for \(int32_t i = 0; (i < n; \+\+i\) \{\n\s*std::free\(strings\[i\]\);)",
              r"for (int32_t i = 1; \1"),),
            # results are read before they are freed: only the heap shows the lost string
            {"b5421": ("frees_release_memory",), "b7785": ("frees_release_memory",)},
            {"localllm-next": ((r"for \(int32_t i = 0; (i < n; \+\+i\) \{\n\s*std::free\(strings\[i\]\);)",
                                r"for (int32_t i = 1; \1"),)},
        ),
    )
}  # fmt: skip


def plant(text: str, fault: Fault, fixture: str = DEFAULT_FIXTURE) -> str:
    for pattern, replacement in fault.edits_for(fixture):
        found = len(re.findall(pattern, text))
        if found != 1:
            raise FaultError(f"fault {fault.key}: /{pattern}/ matches {found} times, not once")
        text = re.sub(pattern, replacement, text)
    return text


def copy_fixture(src: Path, dest: Path) -> Path:
    """A copy of a consumer fixture to change freely (build folders and backups left behind)."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("build*", "reports", ".git"))
    return dest


def make_variant(src: Path, dest: Path, fault: Fault, fixture: str = DEFAULT_FIXTURE) -> Path:
    """Copy the fixture at `src` to `dest` with the fault planted in its shim (`fixture`: which fixture's edits)."""
    copy_fixture(src, dest)
    shim = dest / SHIMS[fixture]
    shim.write_text(plant(shim.read_text(encoding="utf-8"), fault, fixture), encoding="utf-8")
    return dest


def migrate_copy(src: Path, dest: Path, enable: tuple[str, ...] = (), cache: str | None = None) -> Path:
    """Copy the fixture and run the rewriter (`migrate apply`) on the copy, b5421 → b7785, with exactly the opt-in
    rules in `enable` (the fixture's own config, which enables kv-unified, is ignored: callers choose)."""
    copy_fixture(src, dest)
    cmd = [sys.executable, "-m", "migrate"] + (["--cache", cache] if cache else [])
    cmd += ["apply", str(dest), "--from", "b5421", "--to", "b7785", "--force", "--no-report", "--no-config"]
    for rule in enable:
        cmd += ["--enable", rule]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=dest)
    if proc.returncode not in (0, 1):  # 1: applied, manual actions remain (reported, not fatal here)
        raise FaultError(f"migrate apply failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dest


# --- planted slowdowns: the tokens/s gate's own faults -------------------------------------------------------------
# Kept out of FAULTS (each of those fails a check of the checklist; these fail none): `generate` and
# `generate_parallel` busy-wait at return until the calling thread has spent 1 / (1 - f) times the CPU time the
# call took, so tokens/s drops by f whatever the model, the machine or its load (a wall-clock wait would grow with
# the time the thread waited for a CPU on a busy machine). Only in the new build (LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
# is defined by llama.h at b7836, not at b5415): planted in the original, they survive `migrate apply` and slow the
# migrated shim.
NEW_BUILD_ONLY = "LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY"


def _slowdown_guard(fraction: float) -> str:
    factor = 1 / (1 - fraction)
    return (f"#ifdef {NEW_BUILD_ONLY}\n"
            f"    struct planted_slowdown {{  // planted fault: tokens/s x {1 - fraction:g} (new build only)\n"
            "        static double cpu() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); "
            "return t.tv_sec + t.tv_nsec * 1e-9; }\n"
            "        double t0 = cpu();\n"
            "        ~planted_slowdown() {\n"
            f"            const double until = t0 + (cpu() - t0) * {factor:.6f};\n"
            "            while (cpu() < until) {}\n"
            "        }\n"
            "    } planted_slowdown_guard;\n"
            "#endif\n")  # fmt: skip


def _slowdown(key: str, fraction: float) -> Fault:
    guard = _slowdown_guard(fraction).replace("\\", "\\\\")
    function = r"(LOCALLLM_API localllm_error_code localllm_{name}\([^)]*\) \{{\n)"
    edits = ((r"(#include <thread>\n)", r"\1#include <time.h>\n"),
             (function.format(name="generate"), r"\1" + guard),
             (function.format(name="generate_parallel"), r"\1" + guard))  # fmt: skip
    return Fault(key, f"generate and generate_parallel {fraction:.0%} fewer tokens/s (a busy-wait), new build only",
                 "throughput", ("b7785",), edits, {}, {"localllm-next": edits})  # fmt: skip


SLOWDOWNS: dict[str, Fault] = {f.key: f for f in (_slowdown("slow_30", 0.30), _slowdown("slow_5", 0.05))}


# --- planted defects for the triage (verify/causes.py): one defect failing many checks the same way. Kept out of
# FAULTS (whose variants run over the whole checklist at both versions with exact break sets): tests/test_triage_e2e.py
# runs it with another fault and asserts the causes.
TRIAGE_FAULTS: dict[str, Fault] = {
    f.key: f
    for f in (
        Fault(
            "parallel_strips_leading_space",
            "generate_parallel's results lose their leading spaces (the R backend's case: the parallel path's text "
            "lacks the leading space the single path's has)",
            "parallel_isolation_shared_prefix",
            ("b5421", "b7785"),
            ((r"results\[idx\] = dup_cstring\(slot\.text\);",
              "results[idx] = dup_cstring(slot.text.substr(std::min(slot.text.size(), "
              "slot.text.find_first_not_of(' '))));"),),
        ),
    )
}  # fmt: skip


# --- planted defects for the mechanisms beyond the checklist (issue 25): each reported by the mechanism meant for it,
# with its input, and kept out of FAULTS (whose variants are run over the whole checklist with exact break sets)
ORACLE_FAULTS: dict[str, Fault] = {
    f.key: f
    for f in (
        Fault(
            "tokenize_ignores_parse_special",
            "tokenize passes parse_special = false: markup such as <s> is tokenized as text, not as the special token",
            "tokenize_detokenize",  # its oracle cases: llama_tokenize with parse_special as [verify.reference] says
            ("b5421", "b7785"),
            ((r"tokenize_text\(vocab_of\(model\), text, add_special, true, tokens, err\)",
              "tokenize_text(vocab_of(model), text, add_special, false, tokens, err)"),),
        ),
        Fault(
            "parallel_loses_last_result",
            "a prompt list one longer than the slots (n_seq_max prompts: slot 0 holds the prefix) loses its last "
            "result: an empty text instead of its output",
            "generated_inputs",  # the generate_parallel property, shrunk to n_seq_max prompts
            ("b5421", "b7785"),
            ((r"results\[idx\] = dup_cstring\(slot\.text\);",
              "results[idx] = dup_cstring(n_seq_max > 1 && n_prompts == n_seq_max && idx == n_prompts - 1 "
              "? std::string() : slot.text);"),),
        ),
        Fault(
            "chat_template_one_byte_short",
            "apply_chat_template returns its text one byte short when it is longer than 200 bytes",
            "exported_functions",  # old build vs new: the long inputs' results differ
            ("b5421", "b7785"),
            ((r"\*result_out = dup_cstring\(std::string\(buf\.data\(\), static_cast<size_t>\(n\)\)\);",
              "*result_out = dup_cstring(std::string(buf.data(), static_cast<size_t>(n > 200 ? n - 1 : n)));"),),
        ),
    )
}  # fmt: skip
