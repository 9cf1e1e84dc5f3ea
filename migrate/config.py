"""Consumer configuration: `llama-migrate.toml` in the consumer's tree, or `[tool.llama-migrate]` in its
pyproject.toml. Command-line flags override it; an unknown key is an error naming the key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migrate.build_settings import BuildSettings, settings_from_table
from verify.errors import ToolError

CONFIG_FILE = "llama-migrate.toml"
# The --from/--to defaults of `migrate plan`, `apply`, `run`, `gate` and `mutate`: the first step in rules/
# (rules/b5421-b7785.yaml), the bump the bundled fixture (fixtures/localllm) was written for. A constant rather than
# read from rules/ when the parser is built: `--help` of every command would otherwise load and validate every
# rules file. tests/test_cli_defaults.py keeps it equal to the first step.
DEFAULT_FROM, DEFAULT_TO = "b5421", "b7785"


class ConfigError(ToolError):
    """The consumer's config is not valid: the message names the key, the value and what is expected."""


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
    mined_rules: bool = True  # mined rules where no rules file covers part of a bump (docs/rules-mining.md)
    # gate thresholds; None: the gate's defaults (migrate/gate.py)
    tie_margin: float | None = None  # top-2 logit margin under which a greedy divergence is a near-tie
    max_tps_regression: float | None = None  # percent tokens/s the new build may lose against the old one
    verify: dict[str, Any] = field(default_factory=dict)  # [verify]: the harness's own settings (checked there)
    # `migrate mutate`: mutants the consumer has judged equivalent, each {id = "<id or glob>", reason = "..."}
    mutants: tuple[dict[str, str], ...] = ()
    build: BuildSettings = field(default_factory=BuildSettings)  # [build]: what the shim's compile and link add

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
                raise ConfigError(f"model {path} not found: fix --model or `model` in llama-migrate.toml")
            from verify.inputs import check_gguf_header

            check_gguf_header("--model (or `model` in llama-migrate.toml)", path)  # llama.cpp's loader: at verify
            return path
        from migrate.model import ensure_model

        return ensure_model("tiny", cache=cache)

    def with_thresholds(self, tie_margin: float | None, max_tps_regression: float | None) -> ConsumerConfig:
        """Command-line thresholds (None: not given) over the config's."""
        return replace(self, tie_margin=self.tie_margin if tie_margin is None else tie_margin,
                       max_tps_regression=self.max_tps_regression if max_tps_regression is None
                       else max_tps_regression)  # fmt: skip


NORMALISE_MODES = ("none", "strip", "whitespace")
# Every key with what it must be (said when refused); `verify` is the harness's table, its contents checked there.
EXPECTED = {
    "enable": 'a list of rule ids (strings), e.g. enable = ["kv-unified"]',
    "options": 'a table of strings, numbers or booleans, e.g. options = { clear_data = true }',
    "header": "a string (the C API header, relative to the tree)",
    "model": "a string (the path of a GGUF model)",
    "normalise": f"one of {', '.join(repr(m) for m in NORMALISE_MODES)}",
    "llama_checkout": "a string (the consumer's llama.cpp checkout, relative to the tree)",
    "allow_syntactic": "a boolean, true or false (unquoted)",
    "mined_rules": "a boolean, true or false (unquoted)",
    "tie_margin": "a non-negative number",
    "max_tps_regression": "a non-negative number (percent)",
    "verify": "a table ([verify] in llama-migrate.toml)",
    "build": "a table ([build] in llama-migrate.toml: flags, include_dirs, defines, sources, link_libraries)",
    "mutants": 'a list of tables with a string id (a mutant id or glob) and a string reason, e.g. '
               'mutants = [{ id = "src/x.c:f:*", reason = "unreachable from the C API" }]',
}
KNOWN_KEYS = set(EXPECTED)


def _table(src: Path) -> tuple[dict[str, Any], str]:
    own = src / CONFIG_FILE
    if own.is_file():
        return _read(own), str(own)
    if own.exists() or own.is_symlink():  # a folder or a dangling link by that name: never silently no config
        what = "a folder" if own.is_dir() else "a dangling symlink" if own.is_symlink() else "not a regular file"
        raise ConfigError(f"{own}: is {what}, not a config file; make it the TOML file or remove it")
    pyproject = src / "pyproject.toml"
    if pyproject.is_file():
        tool = _read(pyproject).get("tool", {})
        table = tool.get("llama-migrate") if isinstance(tool, dict) else None
        if table is not None:
            return table, f"{pyproject} [tool.llama-migrate]"
    return {}, "defaults"


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def load_config(src: Path) -> ConsumerConfig:
    """The config in `src` (a tree, or a file in one), every value checked against the type its key takes: a wrong
    type is refused with the key, the value and what was expected, never coerced (`"false"` is not false)."""
    if not src.exists():
        raise ConfigError(f"{src}: no such file or directory")
    root = src if src.is_dir() else src.parent
    table, source = _table(root)
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [tool.llama-migrate] must be a table, got {_shown(table)}")
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_KEYS))}")
    check = _Checker(source, table)
    checkout = check.string("llama_checkout")
    return ConsumerConfig(
        source=source,
        enable=check.enable(),
        options=check.options(),
        header=check.string("header"),
        model=check.string("model"),
        normalise=check.normalise(),
        llama_checkout=str(root / checkout) if checkout else None,
        allow_syntactic=check.boolean("allow_syntactic"),
        mined_rules=check.boolean("mined_rules", default=True),
        tie_margin=check.threshold("tie_margin"),
        max_tps_regression=check.threshold("max_tps_regression"),
        verify=check.table_value("verify"),
        mutants=check.mutants(),
        build=settings_from_table(table.get("build", {}), root, source),
    )


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "a list",
             dict: "a table"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


SHOWN_LIMIT = 200  # characters of a refused value shown: a long list must not become a line of kilobytes


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > SHOWN_LIMIT:
        text = text[: SHOWN_LIMIT - 1] + "…"
    return f"{text} ({_type_name(value)})"


@dataclass(frozen=True)
class _Checker:
    """Typed reads of one config table; each refusal names the source, the key, the value and the expected type."""

    source: str
    table: dict[str, Any]

    def refuse(self, key: str, value: Any, detail: str = "") -> ConfigError:
        return ConfigError(f"{self.source}: {key} must be {EXPECTED[key]}; got {_shown(value)}{detail}")

    def string(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.refuse(key, value)
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.refuse(key, value)
        return value

    def threshold(self, key: str) -> float | None:
        """A non-negative number, or absent; a string or a bool here is a typo the gate must not guess around."""
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.refuse(key, value)
        return float(value)

    def table_value(self, key: str) -> dict[str, Any]:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise self.refuse(key, value)
        return value

    def enable(self) -> tuple[str, ...]:
        value = self.table.get("enable", [])
        if not isinstance(value, list):
            raise self.refuse("enable", value)
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise self.refuse("enable", value, f": item {_shown(item)} is not a rule id")
        return tuple(item.strip() for item in value)

    def options(self) -> dict[str, str]:
        value = self.table_value("options")
        options = {}
        for name, item in value.items():
            if isinstance(item, bool):
                options[str(name)] = "true" if item else "false"
            elif isinstance(item, str | int | float):
                options[str(name)] = str(item)
            else:
                raise self.refuse("options", value, f": options.{name} is {_shown(item)}")
        return options

    def mutants(self) -> tuple[dict[str, str], ...]:
        value = self.table.get("mutants", [])
        if not isinstance(value, list):
            raise self.refuse("mutants", value)
        for item in value:
            if not isinstance(item, dict) or set(item) != {"id", "reason"} or \
                    not all(isinstance(v, str) and v.strip() for v in item.values()):  # fmt: skip
                raise self.refuse("mutants", item, f" as item {value.index(item) + 1} of {len(value)}, which is not "
                                  "{id, reason} (two strings)")  # fmt: skip
        return tuple({"id": item["id"], "reason": item["reason"]} for item in value)

    def normalise(self) -> str:
        value = self.table.get("normalise", "none")
        if value not in NORMALISE_MODES or not isinstance(value, str):
            raise self.refuse("normalise", value)
        return value
