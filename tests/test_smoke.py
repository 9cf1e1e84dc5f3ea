"""cffi smoke: the fixture built at b5415, bound from its own header, generates tokens from the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.build import BuildResult
from tests.conftest import LOCALLLM, LOCALLLM_HEADER
from verify.bindings import BindingError, find_header, load, preprocess_header
from verify.smoke import smoke_in_child


def test_header_declarations_come_from_the_header_itself() -> None:
    declarations = preprocess_header(LOCALLLM_HEADER)
    assert "localllm_generate_parallel" in declarations
    assert "typedef" in declarations and "__attribute__" not in declarations
    assert "extern \"C\"" not in declarations and "LOCALLLM_API" not in declarations
    assert "__uint32_t" not in declarations  # system headers left out


def test_find_header_picks_the_exporting_header() -> None:
    assert find_header(LOCALLLM) == LOCALLLM_HEADER


def test_missing_library_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BindingError, match="library not found"):
        load(tmp_path / "nope.so", LOCALLLM_HEADER)


def test_smoke_generates_tokens(localllm_old_build: BuildResult, tiny_model: Path) -> None:
    report = smoke_in_child(Path(localllm_old_build.library), LOCALLLM_HEADER, tiny_model, max_tokens=8)
    assert report["ok"], report
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["backend_init", "model_load", "context_create", "tokenize", "generate", "free"]
    assert steps["model_load"]["evidence"]["n_vocab"] == 32000
    assert steps["tokenize"]["evidence"]["tokens"][0] == 1  # BOS of the SentencePiece vocabulary
    assert len(steps["generate"]["evidence"]["text"]) > 0


def test_smoke_reports_a_crash_instead_of_dying(localllm_old_build: BuildResult, tmp_path: Path) -> None:
    bad_model = tmp_path / "truncated.gguf"
    bad_model.write_bytes(b"GGUF\x03\x00\x00\x00")
    report = smoke_in_child(Path(localllm_old_build.library), LOCALLLM_HEADER, bad_model)
    assert not report["ok"]
    assert "model_load" in report.get("error", ""), report
