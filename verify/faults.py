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
            # the next generate continues the last one's context: A-B-A and the reference differ too; at b7785
            # the stale cells also collide with the new prompt's positions, so two identical calls differ
            {"b5421": ("generate_aba", "generate_matches_reference", "memory_cleared"),
             "b7785": ("generate_aba", "generate_matches_reference", "generate_repeatable", "memory_cleared")},
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
            # every parallel call mixes two prompts' cells; at b7785 generate_parallel's own call fails too
            {"b5421": ISOLATION, "b7785": (*ISOLATION, "generate_parallel")},
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
            # near-capacity one, which b7785 fails anyway) compares the two
            {"b5421": ("generate_matches_reference", "parallel_isolation_capacity", *ISOLATION),
             "b7785": ("generate_matches_reference", *ISOLATION)},
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
            # only a queue as long as n_seq_max reaches the last id
            {"b7785": ("parallel_isolation_queue",)},
            {"localllm-next": ((r"std::min<int>\(n_seq_max - first_seq, ", "std::min<int>(n_seq_max, "),)},
        ),
        Fault(
            "redecode_last_prefix_token",
            "a slot decodes the prefix's last token again at a position its sequence already holds",
            "parallel_isolation_shared_prefix",
            ("b7785",),
            ((r"slot\.n_past = static_cast<int>\(prefix_len\);", "slot.n_past = static_cast<int>(prefix_len) - 1;"),),
            # every parallel call with a shared prefix is rejected, and the prefix is counted twice
            {"b7785": (*ISOLATION, "generate_parallel", "shared_prefix_effective")},
            {"localllm-next": ((r"(s\.n_past = llama_(?:kv_self|memory)_seq_pos_max\([^;]*\) \+ 1);", r"\1 - 1;"),)},
        ),
        Fault(
            "partial_seq_cp",
            "the shared prefix is copied with a partial range: fine at b5421, an abort at b7785 without kv_unified",
            "parallel_isolation_shared_prefix",
            ("b7785",),
            ((r"(llama_(?:kv_self_seq_cp\(ctx|memory_seq_cp\(mem), 0, slot\.seq_id, )-1, -1\)",
              r"\g<1>0, static_cast<llama_pos>(prefix_len))"),),
            # the abort ends every check that runs generate_parallel on a shared prefix
            {"b7785": (*ISOLATION, "generate_parallel", "shared_prefix_effective", "error_prompt_too_long",
                       "memory_cleared")},
            {"localllm-next": ((r"(llama_(?:kv_self_seq_cp\(ctx_|memory_seq_cp\([^,]+), 0, s\.seq, )-1, -1\)",
                                r"\g<1>0, static_cast<llama_pos>(prefix_len_))"),)},
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
