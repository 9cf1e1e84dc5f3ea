"""`migrate run` end to end on the bundled fixture, and the consumer config it reads."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from migrate.config import ConfigError, load_config
from tests.conftest import LOCALLLM


def test_fixture_config_enables_kv_unified() -> None:
    config = load_config(LOCALLLM)
    assert config.enable == ("kv-unified",)
    assert config.header == "custom_files/localllm_capi.h"
    assert config.options == {"error_function": "set_error"}


def test_flags_override_config() -> None:
    config = load_config(LOCALLLM).override(enable=["flash-attn-auto"], options=["clear_data=true"], model=None)
    assert config.enable == ("kv-unified", "flash-attn-auto")
    assert config.options["clear_data"] == "true" and config.options["error_function"] == "set_error"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.override(enable=[], options=["novalue"], model=None)


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "llama-migrate.toml").write_text('enable = []\nkv_unifed = true\n')
    with pytest.raises(ConfigError, match="unknown key.*kv_unifed"):
        load_config(tmp_path)


def test_pyproject_table_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.llama-migrate]\nenable = ["kv-unified"]\nnormalise = "strip"\n')
    config = load_config(tmp_path)
    assert config.enable == ("kv-unified",) and config.normalise == "strip"
    assert "[tool.llama-migrate]" in config.source


def test_run_on_the_bundled_fixture(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "migrate", "run", "--quiet", "--out", str(tmp_path),
           "--json", str(tmp_path / "run.json"), "--junit", str(tmp_path / "run.xml")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = Path(proc.stdout.strip())
    assert report == tmp_path / "localllm-b5421-b7785.md"
    text = report.read_text()
    for heading in ("## llama.cpp builds used", "## Changes", "## Builds", "### API cross reference", "## Verdict"):
        assert heading in text
    assert "b5415 (stand-in)" in text and "b7836 (stand-in)" in text
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["problems"] == [] and data["exit_code"] == 0
    assert data["builds"]["to"]["ok"] and data["builds"]["to"]["llama"]["provided"] == "b7836"
    assert not (LOCALLLM / "custom_files" / "localllm_capi.cpp").read_text().count("llama_memory_clear")
    cases = ET.parse(tmp_path / "run.xml").getroot().iter("testcase")
    assert len(list(cases)) >= 2 * 20


def test_run_with_a_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "llama-migrate.toml").write_text("bogus = 1\n")
    proc = subprocess.run([sys.executable, "-m", "migrate", "run", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "bogus" in proc.stderr
