"""The plan of a consumer as it lives today (fixtures/localllm-today, issue 24): its shim includes `common/chat.h`
(which needs llama.cpp's `vendor/` from b7836 on) and `llama-arch.h` of llama.cpp's `src/`, compiles only with its
config's `[build] flags` (`-include filesystem`), and carries an R glue file that includes <R.h> and names nothing of
llama.cpp. `migrate plan` must be complete (exit 0 or 1, never 4), parse the shim with its headers and no
diagnostics, and cross-reference the internal it uses that changes between the trees (`LLM_ARCH_UNKNOWN`, re-valued
in src/llama-arch.h: a review item). Real libclang parses of the stand-in trees (b5415, b7836, b10361)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrate.cli import main
from tests.conftest import REPO

TODAY = REPO / "fixtures" / "localllm-today"
TODAY_NEXT = REPO / "fixtures" / "localllm-today-next"
SHIM = "custom_files/localllm_capi.cpp"


def plan_json(src: Path, tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "plan.json"
    code = main(["plan", str(src), "--json", str(out), "--no-report", "--no-cache", "--no-diff", *args])
    return code, json.loads(out.read_text())


def arch_review(data: dict) -> dict:
    (item,) = [m for m in data["manual"] if m["rule"] == "api-diff" and "`LLM_ARCH_UNKNOWN`" in m["why"]]
    return item


@pytest.mark.skipif(not TODAY.is_dir(), reason="fixtures/localllm-today not in this checkout")
def test_localllm_today_plan_is_complete_and_cross_references_its_internal(tmp_path: Path) -> None:
    code, data = plan_json(TODAY, tmp_path)
    assert code in (0, 1)
    files = {f["path"]: f for f in data["files"]}
    assert files[SHIM]["mode"] == "libclang" and files[SHIM]["problems"] == []  # [build] flags, vendor/, src/
    assert not [f for f in data["files"] if f["mode"] == "tree-sitter"]
    assert data["api"]["private_headers"]["src/llama-arch.h"].startswith("compared: ")
    item = arch_review(data)
    assert (item["file"], item["kind"]) == (SHIM, "review")
    assert (item["old"], item["new"]) == ("LLM_ARCH_UNKNOWN = 67", "LLM_ARCH_UNKNOWN = 114")
    internals = [d for d in data["decisions"] if d.startswith("This code uses llama.cpp internals")]
    assert len(internals) == 1 and "`src/llama-arch.h`" in internals[0]


@pytest.mark.skipif(not TODAY_NEXT.is_dir(), reason="fixtures/localllm-today-next not in this checkout")
def test_localllm_today_next_plan_b7785_to_b10361_is_complete(tmp_path: Path) -> None:
    code, data = plan_json(TODAY_NEXT, tmp_path, "--from", "b7785", "--to", "b10361")
    assert code in (0, 1)
    files = {f["path"]: f for f in data["files"]}
    assert files[SHIM]["mode"] == "libclang" and files[SHIM]["problems"] == []  # common/chat.h found vendor/
    item = arch_review(data)
    assert (item["old"], item["new"]) == ("LLM_ARCH_UNKNOWN = 114", "LLM_ARCH_UNKNOWN = 141")


def test_build_settings_that_reach_the_parse() -> None:
    """Of `[build]`, what changes what a parse sees: include folders, definitions, forced includes, -D/-U/-I/-std=;
    optimisation and warning flags (some gcc's alone) stay out of libclang's way."""
    from migrate.rewrite.parse import build_parse_flags

    flags = ("-include", "filesystem", "-O2", "-Wall", "-DFAST", "-std=gnu++17", "-fno-plt", "-isystem", "/opt/x")
    kept = ("-I/abs/inc", "-DLEVEL=2", "-include", "filesystem", "-DFAST", "-std=gnu++17", "-isystem", "/opt/x")
    assert build_parse_flags(("/abs/inc",), ("LEVEL=2",), flags) == kept
