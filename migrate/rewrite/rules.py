"""Rules are data: one YAML file per migration step under rules/, loaded and checked into `Rule` objects.

A rule names the declaration it must resolve to (a function and its header, or a struct field), the
replacement, the options it reads, and its own test cases (`invalid`: snippet and expected output; `valid`:
snippets to leave alone). The engine implements one handler per rule *kind*; the YAML says which kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migrate.paths import data_dir
from verify.errors import ToolError

# Each kind is a handler in the engine; a rule of another kind is an error in the rules file.
KINDS = {
    "memory_call",  # llama_kv_self_* / llama_kv_cache_* → llama_memory_* on llama_get_memory(ctx)
    "no_successor",  # removed at the target with nothing to call instead: remove the statement or list it
    "manual_call",  # a use that needs a person (signature or semantics changed); listed, never rewritten
    "append_argument",  # a function gained a trailing parameter with a value that keeps the old behaviour
    "bool_field_to_enum",  # a bool struct field became an enum field
    "params_insert",  # opt-in: add a field assignment to llama_context_params set-ups
    "decode_error",  # llama_decode checks → a switch on the return code, rendered from templates/
}
ACTIONS = {"remove_statement", "manual"}
# libyaml's loader when present: the pure-Python one takes ~0.4 s on the rules file.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)")
# Placeholders a fix template may use besides option names: see engine.render_fix.
FIX_NAMES = {"mem", "ctx", "args", "rest", "name", "target", "value", "params", "expr"}


class RuleError(ToolError):
    """The rules file is malformed; the message names the file and the rule."""


@dataclass(frozen=True)
class Match:
    """The declaration a site must resolve to: `function` (+ header) or `field` (struct.member, + header)."""

    header: str
    function: str | None = None
    field: str | None = None
    when: str | None = None  # an extra condition the kind understands (e.g. "const_argument")

    @property
    def struct(self) -> str | None:
        return self.field.split(".")[0] if self.field else None

    @property
    def member(self) -> str | None:
        return self.field.split(".")[1] if self.field else None

    @property
    def name(self) -> str:
        return self.function or self.member or ""


@dataclass(frozen=True)
class RuleCase:
    """A test case beside a rule: `code` rewritten must give `output` (None: left alone)."""

    rule: str
    name: str
    code: str
    output: str | None
    options: dict[str, Any] = field(default_factory=dict)
    enable: tuple[str, ...] = ()
    lang: str = "c++"
    manual: bool = False  # the rule must also list a manual item for this code
    prelude: bool = True  # prepend the rules file's test_prelude (llama.h) to code and output


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    description: str
    match: Match
    fix: str | None = None
    action: str | None = None
    guidance: str | None = None
    opt_in: bool = False
    options: tuple[str, ...] = ()
    invalid: tuple[RuleCase, ...] = ()
    valid: tuple[RuleCase, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # kind-specific data (e.g. the enum values of a field)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.match.name,)


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    description: str


@dataclass
class RuleSet:
    path: Path
    from_version: str
    to_version: str
    rules: list[Rule]
    options: dict[str, Option]
    test_prelude: dict[str, str]

    def by_id(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise RuleError(f"no rule {rule_id!r} in {self.path}; known: {', '.join(r.id for r in self.rules)}")

    def active(self, enabled: set[str] | frozenset[str] = frozenset()) -> list[Rule]:
        """Rules that run: all but the opt-in ones, plus the opt-in ones enabled by id (an unknown id is refused,
        naming the opt-in ids there are: a typo must not silently turn a rule off)."""
        unknown = sorted(set(enabled) - {r.id for r in self.rules})
        if unknown:
            opt_in = ", ".join(r.id for r in self.rules if r.opt_in) or "none"
            raise RuleError(f"enable: no rule {', '.join(map(repr, unknown))} in {self.path.name} "
                            f"({self.from_version} → {self.to_version}); the opt-in rules there are: {opt_in} — fix "
                            "`enable` in llama-migrate.toml or --enable")  # fmt: skip
        return [r for r in self.rules if not r.opt_in or r.id in enabled]

    def resolve_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Option values: defaults overridden by `given` (strings from the command line are converted)."""
        values = {name: option.default for name, option in self.options.items()}
        for name, value in given.items():
            if name not in self.options:
                raise RuleError(f"unknown option {name!r}; known: {', '.join(sorted(self.options))}")
            try:
                values[name] = _convert(value, self.options[name].default)
            except RuleError as exc:
                raise RuleError(f"option {name}: {exc}") from None
        return values

    def names(self) -> set[str]:
        """Every identifier a rule matches (for a cheap text pre-filter of files)."""
        return {rule.match.name for rule in self.rules}

    def covered(self) -> set[str]:
        """What these rules handle, spelled as the API diff names it: function names and "struct.field" (hook for
        migrate.apidiff.cross_reference's `covered`: a use of anything else removed or changed is manual)."""
        return {rule.match.function or rule.match.field or "" for rule in self.rules} - {""}


def _convert(value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return value
    if isinstance(default, bool):
        lowered = value.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise RuleError(f"expected true or false, got {value!r}")
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise RuleError(f"expected an integer, got {value!r}") from None
    return value


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data or data[key] in (None, ""):
        raise RuleError(f"{where}: missing {key!r}")
    return data[key]


def _cases(raw: dict[str, Any], rule_id: str, where: str, kind: str) -> tuple[RuleCase, ...]:
    cases = []
    for number, case in enumerate(raw.get(kind) or [], start=1):
        name = case.get("name") or f"{kind} {number}"
        code = _require(case, "code", f"{where} {kind} case {number}")
        output = case.get("output") if kind == "invalid" else None
        if kind == "invalid" and output is None:
            raise RuleError(f"{where} {kind} case {number}: missing 'output'")
        lang = case.get("lang", "c++")
        if lang not in ("c", "c++"):
            raise RuleError(f"{where} {kind} case {number}: lang must be c or c++")
        cases.append(RuleCase(rule_id, name, code, output, dict(case.get("options") or {}),
                              tuple(case.get("enable") or ()), lang, bool(case.get("manual", False)),
                              bool(case.get("prelude", True))))  # fmt: skip
    return tuple(cases)


def _rule(raw: dict[str, Any], path: Path, options: dict[str, Option]) -> Rule:
    rule_id = _require(raw, "id", f"{path}: a rule")
    where = f"{path}: rule {rule_id}"
    kind = _require(raw, "kind", where)
    if kind not in KINDS:
        raise RuleError(f"{where}: unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    match_raw = _require(raw, "match", where)
    match = Match(
        header=_require(match_raw, "header", f"{where} match"),
        function=match_raw.get("function"),
        field=match_raw.get("field"),
        when=match_raw.get("when"),
    )
    if bool(match.function) == bool(match.field):
        raise RuleError(f"{where}: match needs exactly one of 'function' or 'field'")
    if match.field and "." not in match.field:
        raise RuleError(f"{where}: match.field must be struct.member")
    fix = raw.get("fix")
    action = raw.get("action")
    if action is not None and action not in ACTIONS:
        raise RuleError(f"{where}: unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")
    rule_options = tuple(raw.get("options") or ())
    for name in rule_options:
        if name not in options:
            raise RuleError(f"{where}: option {name!r} is not declared under 'options'")
    if fix:
        for name in PLACEHOLDER.findall(fix):
            if name not in FIX_NAMES and name not in rule_options:
                raise RuleError(f"{where}: fix uses {{{name}}}, neither a known placeholder nor one of its options")
    if kind in ("memory_call", "append_argument", "bool_field_to_enum", "params_insert") and not fix:
        raise RuleError(f"{where}: kind {kind} needs a 'fix'")
    if kind in ("no_successor", "manual_call") and not raw.get("guidance"):
        raise RuleError(f"{where}: kind {kind} needs 'guidance' (what the person should do)")
    tests = raw.get("tests") or {}
    return Rule(
        id=rule_id,
        kind=kind,
        description=" ".join(str(_require(raw, "description", where)).split()),
        match=match,
        fix=fix,
        action=action,
        guidance=" ".join(str(raw["guidance"]).split()) if raw.get("guidance") else None,
        opt_in=bool(raw.get("opt_in", False)),
        options=rule_options,
        invalid=_cases(tests, rule_id, where, "invalid"),
        valid=_cases(tests, rule_id, where, "valid"),
        params=_params(raw.get("params") or {}, kind, where),
    )


# Keys each kind needs under `params`.
REQUIRED_PARAMS = {
    "bool_field_to_enum": ("member", "true", "false"),
    "params_insert": ("after",),
}


def _params(raw: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    params = {str(key).lower() if isinstance(key, bool) else str(key): value for key, value in raw.items()}
    for key in REQUIRED_PARAMS.get(kind, ()):
        if key not in params:
            raise RuleError(f"{where}: kind {kind} needs params.{key}")
    return params


def load_rules(path: Path) -> RuleSet:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise RuleError(f"{path}: cannot read rules ({exc})") from exc
    if not isinstance(raw, dict):
        raise RuleError(f"{path}: expected a mapping at the top level")
    try:
        step = _require(raw, "migration", str(path))
        options = {
            name: Option(name, spec.get("default"), " ".join(str(spec.get("description", "")).split()))
            for name, spec in (raw.get("options") or {}).items()
        }
        rules = [_rule(entry, path, options) for entry in _require(raw, "rules", str(path))]
        step["from"], step["to"]  # noqa: B018 - both must be there
    except (TypeError, AttributeError, KeyError) as exc:  # a list where a mapping belongs, and the like
        raise RuleError(f"{path}: not a rules file of the expected shape ({type(exc).__name__}: {exc}); see "
                        "rules/b5421-b7785.yaml for the format") from exc  # fmt: skip
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RuleError(f"{path}: duplicate rule id {rule.id!r}")
        seen.add(rule.id)
    prelude = raw.get("test_prelude") or {}
    return RuleSet(path, str(step["from"]), str(step["to"]), rules, options, dict(prelude))


def rules_dir() -> Path:
    return data_dir("rules")


def find_rules(from_version: str, to_version: str, directory: Path | None = None) -> RuleSet:
    """The rules file for one migration step (`migration: {from, to}` inside the file decides)."""
    folder = directory or rules_dir()
    available = []
    for path in sorted(folder.glob("*.y*ml")):
        ruleset = load_rules(path)
        if (ruleset.from_version, ruleset.to_version) == (from_version, to_version):
            return ruleset
        available.append(f"{ruleset.from_version} → {ruleset.to_version}")
    raise RuleError(
        f"no rules for {from_version} → {to_version} in {folder}; available: {', '.join(available) or 'none'} — "
        "pick --from/--to from those (a stand-in build is found by the tag asked for), or add a rules file there"
    )
