"""Comparing outputs: normalisation, how far two texts agree, shared token prefixes, per-prompt rows."""

from __future__ import annotations

from typing import Any

# --- comparison helpers ------------------------------------------------------------------------------------------


def normalise(text: str | None, mode: str) -> str | None:
    if text is None or mode == "none":
        return text
    if mode == "strip":
        return text.strip()
    if mode == "whitespace":
        return " ".join(text.split())
    raise ValueError(f"unknown normalisation {mode!r}: none, strip or whitespace")


def agreement(a: str | None, b: str | None) -> dict[str, Any]:
    """How far two outputs agree: equal, or the length of their common beginning."""
    if a is None or b is None:  # one side produced nothing: not a match, whatever the other did
        return {"equal": False, "common_prefix_chars": 0, "missing": ["first" if a is None else "second"]}
    common = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        common += 1
    return {"equal": a == b, "common_prefix_chars": common, "chars": [len(a), len(b)]}


def common_token_prefix(token_lists: list[list[int]]) -> int:
    """Longest shared token prefix that still leaves every prompt at least one token of its own."""
    if not token_lists:
        return 0
    limit = min(len(t) for t in token_lists) - 1
    n = 0
    while n < limit and all(t[n] == token_lists[0][n] for t in token_lists):
        n += 1
    return max(0, n)


def clip(text: str | None, n: int = 120) -> str | None:
    return text if text is None or len(text) <= n else text[:n] + "…"


def compare_results(prompts: list[str], results: list[str | None] | None,
                    expected: dict[str, str | None]) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    """Each prompt's result against its expected text: rows for the evidence and the problems found."""
    got = results if results is not None else [None] * len(prompts)
    rows, problems = [], []
    for i, prompt in enumerate(prompts):
        want = expected.get(prompt)
        agree = agreement(want, got[i])
        rows.append({"prompt": clip(prompt, 60), "expected": want, "got": got[i], **agree})
        if got[i] is None:
            problems.append(f"prompt {i} ({clip(prompt, 30)!r}): no result")
        elif not agree["equal"]:
            problems.append(f"prompt {i} ({clip(prompt, 30)!r}): {got[i]!r} where the reference gives {want!r}")
    return rows, problems
