"""The plan cache's key covers the code and data a plan is made by (migrate/rewrite/fingerprint.py): editing a handler,
or any module the rewrite package reaches, gives another key; an identical copy of the code gives the same key.
Edits are made to a copy of the checkout's packages in a temporary folder, never to the checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from migrate.paths import data_dir
from migrate.rewrite import fingerprint
from migrate.rewrite.engine import EngineConfig, _config_digest
from migrate.rewrite.rules import load_rules
from tests.conftest import REPO


@pytest.fixture(scope="module")
def config() -> EngineConfig:
    # the key needs no llama.cpp tree: the tree's path is a setting, not read
    return EngineConfig(Path("consumer"), Path("llama.cpp"), load_rules(data_dir("rules") / "b5421-b7785.yaml"))


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The checkout's two packages copied: returns the copied migrate package."""
    for name in ("migrate", "verify"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "migrate"


def test_every_module_of_the_rewrite_package_and_its_data_are_covered() -> None:
    covered = set(fingerprint.code_files())
    assert set((REPO / "migrate" / "rewrite").rglob("*.py")) <= covered
    assert REPO / "migrate" / "rewrite" / "handlers" / "memory_call.py" in covered
    assert REPO / "migrate" / "apidiff" / "__init__.py" in covered  # reached by import: the engine's API diff
    assert {p.name for p in fingerprint.data_files()} >= {"b5421-b7785.yaml", "decode_error.cpp.j2"}


@pytest.mark.parametrize("edited", ["rewrite/handlers/memory_call.py", "rewrite/handlers/base.py", "rewrite/engine.py",
                                    "apidiff/compare.py", "tree.py"])  # fmt: skip
def test_editing_a_module_the_plan_runs_changes_the_key(config: EngineConfig, copy: Path, edited: str) -> None:
    before = _config_digest(config, copy)
    assert before == _config_digest(config, REPO / "migrate")  # the same code, wherever it lies: the same key
    with (copy / edited).open("a", encoding="utf-8") as file:
        file.write("\n# edited\n")
    assert _config_digest(config, copy) != before


def test_a_new_handler_module_changes_the_key(config: EngineConfig, copy: Path) -> None:
    before = _config_digest(config, copy)
    (copy / "rewrite" / "handlers" / "new_kind.py").write_text('"""A kind not registered yet."""\n', encoding="utf-8")
    assert _config_digest(config, copy) != before


def test_a_module_the_plan_never_reaches_leaves_the_key(config: EngineConfig, copy: Path) -> None:
    """The key is not every file of the checkout: a change to the verifier's checks keeps cached plans."""
    assert copy.parent / "verify" / "checks" / "__init__.py" not in fingerprint.code_files(copy)
    before = _config_digest(config, copy)
    with (copy.parent / "verify" / "checks" / "__init__.py").open("a", encoding="utf-8") as file:
        file.write("\n# edited\n")
    assert _config_digest(config, copy) == before


def test_the_same_consumer_in_another_folder_is_served_its_plan_with_its_own_paths(
    old_tree: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `migrate run` plans a fresh copy of the consumer every run: the cached plan of one copy serves the next, its
    # paths moved, and it equals what planning that copy from nothing gives (the plan JSON, byte for byte)
    from migrate.cli import main as migrate_main
    from migrate.rewrite.engine import Engine

    planned: list[Path] = []
    real_plan = Engine.plan

    def counted(self: Engine) -> object:
        planned.append(self.config.root)
        return real_plan(self)

    monkeypatch.setattr(Engine, "plan", counted)
    plans = {}
    for name in ("first", "second"):
        shutil.copytree(REPO / "fixtures" / "clib", tmp_path / name)
        source = next((tmp_path / name).rglob("*.c"))  # unique to this test run: the first plan is never cached
        source.write_text(source.read_text() + f"\n/* {tmp_path} */\n")
    for name, extra in (("first", []), ("second", []), ("second-fresh", ["--no-cache"])):
        folder = tmp_path / name.split("-")[0]
        out = tmp_path / f"{name}.json"
        assert migrate_main(["plan", str(folder), "--json", str(out), *extra]) == 0
        plans[name] = out.read_text()
    assert planned == [tmp_path / "first", tmp_path / "second"]  # the second copy's first plan was served
    assert plans["second"] == plans["second-fresh"] != plans["first"]  # the same plan, each copy's own paths
    assert str(tmp_path / "second") in plans["second"] and str(tmp_path / "first") not in plans["second"]
