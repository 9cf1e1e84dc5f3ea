"""The only llama.cpp names the rewrite engine knows by itself: documented defaults, one table.

Everything a migration step changes lives in its rules file (rules/*.yaml): the names a rule matches, the text it
writes, the handle it hoists, the advisories it raises. What is here is a fact about llama.cpp that holds for every
step (so a rules file need not repeat it, and may still override it). tests/test_no_api_names.py keeps every other
module of migrate/rewrite/ free of API names.
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
