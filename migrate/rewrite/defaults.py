"""The only llama.cpp names the rewrite engine knows by itself: documented defaults, one table.

Everything a migration step changes lives in its rules file (rules/*.yaml): the names a rule matches, the text it
writes, the handle it hoists, the advisories it raises. What is here is either a fact about llama.cpp that holds for
every step (so a rules file need not repeat it, and may still override it), or what the b5421 → b7785 advisories
still written in Python (advisories.py, run for a rules file with `builtin_advisories: true`) read — those go when
those advisories become data. tests/test_no_api_names.py keeps every other module of migrate/rewrite/ free of API
names.
"""

from __future__ import annotations

# --- facts of llama.cpp's API used when a rule does not say otherwise -----------------------------------------

# The handle a `memory_call` rule hoists (`{type} mem = {init};`, {ctx}: the call's first argument as written) when
# its rule has no `handle:`: llama.cpp's memory API since the KV cache became one kind of memory (b5421 → b7785).
MEMORY_HANDLE_TYPE = "llama_memory_t"
MEMORY_HANDLE_INIT = "llama_get_memory({ctx})"

# How llama.cpp names the function that returns a params struct's defaults (`llama_context_params` →
# `llama_context_default_params()`): where a `params_insert` rule recognises a set-up when it has no `setup_call`.
PARAMS_SUFFIX = "_params"
DEFAULT_PARAMS_SUFFIX = "_default_params"


def default_params_call(struct: str) -> str:
    """The defaults function of a params struct, by llama.cpp's naming convention."""
    stem = struct.removesuffix(PARAMS_SUFFIX)
    return f"{stem}{DEFAULT_PARAMS_SUFFIX}"


# Names that make a consumer file worth parsing besides the rules' own: code that uses llama.cpp through a header of
# its own (not llama.h by name) still decodes, sets up a context, or sizes its sequences.
PREFILTER_NAMES = frozenset({"llama_decode", "llama_context_params", "flash_attn", "n_seq_max"})

# --- what the Python advisories of b5421 → b7785 (advisories.py) read ------------------------------------------

# The params struct whose fields they watch, the fields, and the calls (sequence handling, context size).
WATCHED_STRUCT = "llama_context_params"
WATCHED_MEMBERS = frozenset({"n_seq_max", "n_ctx", "kv_unified", "flash_attn"})
WATCHED_CALLS = frozenset({"llama_n_ctx", "llama_batch_add", "common_batch_add", "llama_batch_get_one",
                           "llama_n_seq_max"})  # fmt: skip
# An active rule that sets this field makes their warnings about one stream per sequence moot (sequences share one
# buffer as at b5421).
UNIFIED_MEMBER = "kv_unified"
