"""Shared, session-scoped real components: llama.cpp trees, the built fixture, the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.build import BuildResult, build
from migrate.sources import SourceTree, resolve

REPO = Path(__file__).resolve().parent.parent
LOCALLLM = REPO / "fixtures" / "localllm"
LOCALLLM_HEADER = LOCALLLM / "custom_files" / "localllm_capi.h"


@pytest.fixture(scope="session")
def old_tree() -> SourceTree:
    return resolve("b5421")


@pytest.fixture(scope="session")
def new_tree() -> SourceTree:
    return resolve("b7785")


@pytest.fixture(scope="session")
def localllm_old_build(old_tree: SourceTree) -> BuildResult:
    """The fixture shim built against the source version (b5415 stand-in); llama.cpp libs from the cache."""
    result = build(LOCALLLM, old_tree)
    assert result.ok, "\n".join(map(str, result.errors)) or result.log[-3000:]
    return result


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from migrate.model import ensure_model

    return ensure_model("tiny", "b5421")


@pytest.fixture(scope="session")
def eog_model() -> Path:
    """The stop model (`migrate model --eog`): greedy decoding ends on EOS within a few tokens on some prompts."""
    return stop_model()


def stop_model() -> Path:
    from migrate.model import ensure_model

    return ensure_model("tiny", "b5421", eog=True)


def consumer(tmp_path: Path, files: dict[str, str]) -> Path:
    """A small consumer tree under tmp_path/consumer: {relative path: text}."""
    root = tmp_path / "consumer"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root
