"""Consumer configuration: `llama-migrate.toml` in the consumer's tree, or `[tool.llama-migrate]` in its
pyproject.toml. Command-line flags override it; an unknown key is an error naming the key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

CONFIG_FILE = "llama-migrate.toml"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class ConsumerConfig:
    source: str = "defaults"  # where it was read from
    enable: tuple[str, ...] = ()  # opt-in rule ids
    options: dict[str, str] = field(default_factory=dict)  # rule options, e.g. clear_data, error_function
    header: str | None = None  # C API header, relative to the tree
    model: str | None = None  # GGUF for verification; default the generated tiny model
    normalise: str = "none"  # text normalisation before parallel-vs-single comparison
    llama_checkout: str | None = None  # the consumer's llama.cpp checkout (submodule), relative to the tree
    allow_syntactic: bool = False  # apply edits matched by name only (libclang could not parse)
    # gate thresholds; None: the gate's defaults (migrate/gate.py)
    tie_margin: float | None = None  # top-2 logit margin under which a greedy divergence is a near-tie
    max_tps_regression: float | None = None  # percent tokens/s the new build may lose against the old one

    def override(self, enable: list[str], options: list[str], model: str | None) -> ConsumerConfig:
        merged = dict(self.options)
        for pair in options:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ConfigError(f"--option takes KEY=VALUE, got {pair!r}")
            merged[key.strip()] = value.strip()
        return replace(self, enable=tuple(dict.fromkeys([*self.enable, *enable])), options=merged,
                       model=model or self.model)  # fmt: skip

    def model_path(self, cache: str | None) -> Path:
        if self.model:
            path = Path(self.model)
            if not path.is_file():
                raise ConfigError(f"model {path} not found")
            return path
        from migrate.model import ensure_model

        return ensure_model("tiny", "b5421", cache=cache)

    def with_thresholds(self, tie_margin: float | None, max_tps_regression: float | None) -> ConsumerConfig:
        """Command-line thresholds (None: not given) over the config's."""
        return replace(self, tie_margin=self.tie_margin if tie_margin is None else tie_margin,
                       max_tps_regression=self.max_tps_regression if max_tps_regression is None
                       else max_tps_regression)  # fmt: skip


KNOWN_KEYS = {"enable", "options", "header", "model", "normalise", "llama_checkout", "allow_syntactic",
              "tie_margin", "max_tps_regression"}  # fmt: skip


def _table(src: Path) -> tuple[dict[str, Any], str]:
    own = src / CONFIG_FILE
    if own.is_file():
        return _read(own), str(own)
    pyproject = src / "pyproject.toml"
    if pyproject.is_file():
        table = _read(pyproject).get("tool", {}).get("llama-migrate")
        if table is not None:
            return table, f"{pyproject} [tool.llama-migrate]"
    return {}, "defaults"


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def load_config(src: Path) -> ConsumerConfig:
    if not src.exists():
        raise ConfigError(f"{src}: no such file or directory")
    root = src if src.is_dir() else src.parent
    table, source = _table(root)
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_KEYS))}")
    checkout = table.get("llama_checkout")
    return ConsumerConfig(
        source=source,
        enable=tuple(table.get("enable", ())),
        options={str(k): str(v) for k, v in table.get("options", {}).items()},
        header=table.get("header"),
        model=table.get("model"),
        normalise=table.get("normalise", "none"),
        llama_checkout=str(root / checkout) if checkout else None,
        allow_syntactic=bool(table.get("allow_syntactic", False)),
        tie_margin=_threshold(table, "tie_margin", source),
        max_tps_regression=_threshold(table, "max_tps_regression", source),
    )


def _threshold(table: dict[str, Any], key: str, source: str) -> float | None:
    """A non-negative number, or absent; a string or a bool here is a typo the gate must not guess around."""
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{source}: {key} must be a non-negative number, got {value!r}")
    return float(value)
